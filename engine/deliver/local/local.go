// Package local is larkpost's local delivery agent (Postfix's local(8)):
// it writes one recipient's copy into a Maildir or an mbox file, with the
// trace headers mail readers expect, and answers with a delivery status.
// It takes a plain Request and knows nothing of the queue or the policy.
package local

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/larkpost/larkpost/engine/deliver"
	"github.com/larkpost/larkpost/engine/deliver/maildir"
	"github.com/larkpost/larkpost/engine/deliver/mbox"
)

// Body is a queued message, read by offset so that a delivery streams it
// instead of holding it (the queue's Body, or a bytes.Reader).
type Body = deliver.Body

// Request is one local delivery.
type Request struct {
	QueueID   string
	Sender    string          // envelope sender, "" for <>
	Rcpt      string          // the recipient address as delivered
	OrigRcpt  string          // the original recipient, for X-Original-To ("" = Rcpt)
	Mailbox   string          // a path ending in "/" is a Maildir, anything else an mbox file
	Body      Body            // the queued message, CRLF line endings
	SizeLimit int64           // mailbox_size_limit: largest mbox file / Maildir message, 0 = none
	Folder    string          // "" the inbox; "Spam", "Lists/go": a Maildir++ folder, or an mbox file beside the inbox
	Commits   maildir.Commits // the queue's, see maildir.Commits; nil none
}

// Result is a delivery status.
type Result = deliver.Status

// Deliver writes the message for one recipient. Every I/O error defers
// (the queue keeps the message); only a mail loop and a size limit bounce.
func Deliver(req *Request) Result {
	if loops(req.Body, req.Rcpt) {
		return Result{Enhanced: "5.4.6", Text: "mail forwarding loop for " + req.Rcpt}
	}
	var hdr bytes.Buffer
	hdr.WriteString("Return-Path: <" + req.Sender + ">\n")
	hdr.WriteString("Delivered-To: " + req.Rcpt + "\n")
	orig := req.OrigRcpt
	if orig == "" {
		orig = req.Rcpt
	}
	hdr.WriteString("X-Original-To: " + orig + "\n")
	// The size with CRLF line ends: a little more than what is written,
	// never less, so the limit holds.
	size := int64(hdr.Len()) + req.Body.Size() + 1
	if req.SizeLimit > 0 && size > req.SizeLimit {
		return Result{Enhanced: "5.2.2", Text: fmt.Sprintf("message exceeds mailbox_size_limit (%d bytes)", req.SizeLimit)}
	}
	msg := func() io.Reader {
		return io.MultiReader(bytes.NewReader(hdr.Bytes()), NewLFReader(io.NewSectionReader(req.Body, 0, req.Body.Size())), finalNewline(req.Body))
	}
	if req.Body.Size() <= smallBody {
		// Most mail: converted in memory, in a buffer that goes back
		// to the pool when the delivery is over, and written in one go.
		buf := smallBufs.Get().(*[]byte)
		defer smallBufs.Put(buf)
		if b, err := smallMessage(*buf, hdr.Bytes(), req.Body); err == nil {
			*buf = b
			msg = func() io.Reader { return bytes.NewReader(b) }
		}
	}

	box := req.Mailbox
	if strings.HasSuffix(box, "/") {
		where := "maildir"
		if req.Folder != "" {
			// Maildir++ (Dovecot, Courier): .Lists.go/ beside cur/new/tmp.
			box += "." + strings.ReplaceAll(req.Folder, "/", ".") + "/"
			where = "maildir folder " + req.Folder
			if err := maildir.Create(box); err != nil {
				return ioFailure(where, err)
			}
			if f, err := os.OpenFile(box+"maildirfolder", os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
				f.Close()
			}
		}
		if _, err := maildir.DeliverWith(box, msg(), maildir.Options{Commits: req.Commits}); err != nil {
			return ioFailure(where+" "+box, err)
		}
		return Result{Enhanced: "2.0.0", Text: "delivered to " + where}
	}
	if req.Folder != "" {
		req.Mailbox = box + "." + strings.ReplaceAll(req.Folder, "/", ".")
	}
	if req.SizeLimit > 0 {
		if fi, err := os.Stat(req.Mailbox); err == nil && fi.Size()+size > req.SizeLimit {
			return Result{Enhanced: "5.2.2", Text: fmt.Sprintf("cannot update mailbox %s: exceeds mailbox_size_limit", req.Mailbox)}
		}
	}
	if _, err := mbox.Deliver(req.Mailbox, req.Sender, time.Now(), msg()); err != nil {
		return ioFailure("mailbox "+req.Mailbox, err)
	}
	if req.Folder != "" {
		return Result{Enhanced: "2.0.0", Text: "delivered to mailbox folder " + req.Folder}
	}
	return Result{Enhanced: "2.0.0", Text: "delivered to mailbox"}
}

func ioFailure(what string, err error) Result {
	switch {
	case errors.Is(err, mbox.ErrLocked):
		return Result{Enhanced: "4.2.0", Text: "cannot update " + what + ": it is locked"}
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return Result{Enhanced: "4.2.2", Text: "cannot update " + what + ": " + err.Error()}
	}
	return Result{Enhanced: "4.3.0", Text: "cannot update " + what + ": " + err.Error()}
}

// loops reports whether the header already has Delivered-To: rcpt, which
// means the message came back to a mailbox it was already delivered to
// (Postfix's loop detection).
func loops(body Body, rcpt string) bool {
	bp := scanBufs.Get().(*[]byte)
	defer scanBufs.Put(bp)
	sc := bufio.NewScanner(io.NewSectionReader(body, 0, body.Size()))
	sc.Buffer(*bp, 1<<20)
	want := []byte(rcpt)
	for sc.Scan() {
		line := bytes.TrimRight(sc.Bytes(), "\r")
		if len(line) == 0 {
			return false
		}
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(bytes.TrimSpace(k), []byte("Delivered-To")) &&
			bytes.EqualFold(bytes.TrimSpace(v), want) {
			return true
		}
	}
	return false
}

// scanBufs holds loops' line buffers (a header line longer than one
// grows a buffer of the scanner's own, which is not kept).
var scanBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// smallBody is the largest body converted in memory rather than streamed.
const smallBody = 256 << 10

// smallBufs holds the buffers small messages are converted in: a fresh
// copy of the body and another of the result for every delivery were
// half the bytes allocated by a server delivering 100 KB messages.
var smallBufs = sync.Pool{New: func() any { return new([]byte) }}

// smallMessage is hdr plus the body with LF line ends and a final LF,
// built in buf (grown if it is too small). The body is read in place
// and each CRLF becomes LF as the bytes move down: the write position
// never passes the read position, so nothing unread is overwritten.
func smallMessage(buf, hdr []byte, body Body) ([]byte, error) {
	n := int(body.Size())
	need := len(hdr) + n + 1
	if cap(buf) < need {
		buf = make([]byte, need)
	}
	out := buf[:len(hdr)+n]
	copy(out, hdr)
	if _, err := body.ReadAt(out[len(hdr):], 0); err != nil && err != io.EOF {
		return nil, err
	}
	w, r := len(hdr), len(hdr)
	for r < len(out) {
		i := bytes.Index(out[r:], []byte("\r\n"))
		if i < 0 {
			w += copy(out[w:], out[r:])
			break
		}
		w += copy(out[w:], out[r:r+i])
		out[w] = '\n'
		w++
		r += i + 2
	}
	out = out[:w]
	if w == len(hdr) || out[w-1] != '\n' { // as finalNewline: an empty body gets one too
		out = append(out, '\n')
	}
	return out, nil
}

// finalNewline is "\n" when the message does not end with a line end
// (mailbox formats need one), else nothing.
func finalNewline(b Body) io.Reader {
	var last [1]byte
	if n := b.Size(); n > 0 {
		if _, err := b.ReadAt(last[:], n-1); err == nil && last[0] == '\n' {
			return bytes.NewReader(nil)
		}
	}
	return strings.NewReader("\n")
}

// NewLFReader turns CRLF line ends into LF as it reads: the queue keeps
// CRLF, mailboxes and commands get LF. A bare CR is kept.
func NewLFReader(r io.Reader) io.Reader { return &lfReader{r: r} }

type lfReader struct {
	r  io.Reader
	br *bufio.Reader // Read's, made at its first call
}

func (l *lfReader) Read(p []byte) (int, error) {
	if l.br == nil {
		l.br = bufio.NewReaderSize(l.r, 32<<10)
	}
	n := 0
	for n < len(p) {
		// Copy up to the next CR in one go.
		chunk, _ := l.br.Peek(min(len(p)-n, l.br.Buffered()))
		if len(chunk) == 0 {
			if _, err := l.br.Peek(1); err != nil {
				if n > 0 {
					return n, nil
				}
				return 0, err
			}
			continue
		}
		if i := bytes.IndexByte(chunk, '\r'); i != 0 {
			if i < 0 {
				i = len(chunk)
			}
			n += copy(p[n:], chunk[:i])
			l.br.Discard(i)
			continue
		}
		l.br.Discard(1)
		if next, err := l.br.Peek(1); err == nil && next[0] == '\n' {
			continue // drop the CR of a CRLF
		}
		p[n] = '\r'
		n++
	}
	return n, nil
}

// lfBufs are WriteTo's chunks: a delivery's at a time (delivery_workers).
var lfBufs = sync.Pool{New: func() any { b := make([]byte, 128<<10); return &b }}

// WriteTo is the io.Copy path of a big body into a mailbox or a pipe: a
// chunk of 128 KB is read, converted where it lies and written, so a
// 1 MB body takes 8 reads and 8 writes (Read through io.Copy's 32 KB
// buffer: 32 of each, and a copy more).
func (l *lfReader) WriteTo(w io.Writer) (int64, error) {
	if l.br != nil {
		// Read was used: what it buffered comes first.
		return io.Copy(w, struct{ io.Reader }{l})
	}
	bp := lfBufs.Get().(*[]byte)
	defer lfBufs.Put(bp)
	buf := *bp
	var total int64
	cr := false // the last chunk ended in a CR, held back until the next byte is known
	for {
		start := 0
		if cr {
			buf[0], start = '\r', 1
		}
		n, rerr := l.r.Read(buf[start:])
		out := lfInPlace(buf[:start+n])
		cr = rerr == nil && len(out) > 0 && out[len(out)-1] == '\r'
		if cr {
			out = out[:len(out)-1]
		}
		if len(out) > 0 {
			m, err := w.Write(out)
			total += int64(m)
			if err != nil {
				return total, err
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// lfInPlace drops the CR of every CRLF in p, moving the rest left.
func lfInPlace(p []byte) []byte {
	i := bytes.Index(p, []byte("\r\n"))
	if i < 0 {
		return p
	}
	w, r := i, i+1 // r: the LF whose CR is dropped
	for {
		j := bytes.Index(p[r+1:], []byte("\r\n"))
		if j < 0 {
			return p[:w+copy(p[w:], p[r:])]
		}
		w += copy(p[w:], p[r:r+1+j])
		r += j + 2
	}
}
