package smtpd

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"

	"github.com/larkpost/larkpost/engine/cleanup"
	"github.com/larkpost/larkpost/engine/milter"
	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
)

// BodyStore gives a message too large to keep in memory a file of its own
// (the queue's body file).
type BodyStore interface {
	CreateBody(id string) (*queue.BodyWriter, error)
}

// Errors that end a transfer early; the session answers them once the
// client has sent the rest.
var (
	errHeaderField = errors.New("header field too long")
	errHeaderTotal = errors.New("header too long")
	errInflight    = errors.New("too much message data in flight")
)

// errBareNewline carries the kind of the first bare line end.
type errBareNewline string

func (e errBareNewline) Error() string { return "bare <" + string(e) + "> received" }

// receiver takes a message as go-smtp hands it over (dot-unstuffed for
// DATA, raw for BDAT) and streams it to memory or disk while it watches
// line ends and the header. It never holds more than the header block,
// at most queue.InlineMax of data and a copy buffer.
type receiver struct {
	s         *Server
	bodies    BodyStore
	id        string
	set       *rules.Settings
	normalize bool // turn bare CR and LF into CRLF; otherwise the first one ends the transfer

	skipLF bool   // the last byte was a CR already written out as CRLF
	prevCR bool   // the last byte read was a CR (detection without normalizing)
	out    []byte // normalization scratch

	inHeader  bool
	hdr       []byte
	lineStart int   // where the header line being read starts in hdr
	field     int64 // length of the current header field so far

	data    []byte
	file    *queue.BodyWriter
	fw      *bufio.Writer
	size    int64
	charged int64
}

func newReceiver(s *Server, bodies BodyStore, id string, set *rules.Settings, normalize bool) *receiver {
	return &receiver{s: s, bodies: bodies, id: id, set: set, normalize: normalize, inHeader: true}
}

// readFrom reads the whole transfer. An error from r is returned as is;
// the receiver's own refusals are the errors above, errBareNewline,
// queue.ErrNoSpace (wrapped) and io.ErrShortWrite-like write errors.
func (r *receiver) readFrom(src io.Reader) error {
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	buf := *bp
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if werr := r.write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return r.flush()
		}
		if err != nil {
			return err
		}
	}
}

func (r *receiver) write(p []byte) error {
	if r.normalize {
		p = r.normalized(p)
	} else if bad := r.bare(p); bad != "" {
		return errBareNewline(bad)
	}
	r.size += int64(len(p))
	if r.inHeader {
		if err := r.header(p); err != nil {
			return err
		}
	}
	return r.store(p)
}

// bare reports "LF" or "CR" for the first line end in p that is not
// CRLF, looking across calls. It sees every byte a client outside
// mynetworks sends (smtpd_forbid_bare_newline = reject, the default), so
// it goes a line at a time: within a line only a CR right before its LF
// is allowed, and a CR that ends a read must meet an LF first in the next.
func (r *receiver) bare(p []byte) string {
	for len(p) > 0 {
		if r.prevCR {
			if p[0] != '\n' {
				return "CR"
			}
			r.prevCR = false
			p = p[1:]
			continue
		}
		line := p
		j := bytes.IndexByte(p, '\n')
		if j >= 0 {
			line = p[:j]
		}
		k := bytes.IndexByte(line, '\r')
		if k >= 0 && k != len(line)-1 {
			return "CR"
		}
		if j < 0 {
			r.prevCR = k >= 0
			return ""
		}
		if k < 0 {
			return "LF"
		}
		p = p[j+1:]
	}
	return ""
}

// readBufs are the receivers' read buffers: one a transfer, reused.
var readBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// hasBare reports a CR or LF in p that is not part of a CRLF within p.
// Every LF must follow a CR, and then the CRs must number the LFs: both
// counted with vectorized searches, since every byte of every message
// passes here.
func hasBare(p []byte) bool {
	lfs := 0
	for i := 0; ; {
		j := bytes.IndexByte(p[i:], '\n')
		if j < 0 {
			break
		}
		i += j
		if i == 0 || p[i-1] != '\r' {
			return true
		}
		lfs++
		i++
	}
	return bytes.Count(p, []byte{'\r'}) != lfs
}

// normalized turns bare CR and bare LF into CRLF, across calls. Data that
// has none (nearly all) passes through without a copy.
func (r *receiver) normalized(p []byte) []byte {
	if !r.skipLF && len(p) > 0 && p[len(p)-1] != '\r' && !hasBare(p) {
		return p
	}
	out := r.out[:0]
	for _, c := range p {
		switch {
		case c == '\r':
			out = append(out, '\r', '\n')
			r.skipLF = true
			continue
		case c == '\n' && r.skipLF:
		case c == '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, c)
		}
		r.skipLF = false
	}
	r.out = out
	return out
}

// header follows the header block line by line: it ends at the blank
// line, or at the first line that is neither a field nor a continuation
// (Postfix's cleanup takes such a line as the start of the body). Field
// and block sizes are bounded, and the block is charged to the sessions'
// shared memory budget. The line being read is kept at hdr[lineStart:].
func (r *receiver) header(p []byte) error {
	for len(p) > 0 && r.inHeader {
		i := bytes.IndexByte(p, '\n')
		take := p
		if i >= 0 {
			take = p[:i+1]
		}
		p = p[len(take):]
		if int64(len(r.hdr)+len(take)) > r.set.HeaderTotalLimit+r.set.HeaderSizeLimit {
			return errHeaderTotal
		}
		if !r.charge(int64(len(take))) {
			return errInflight
		}
		r.hdr = append(r.hdr, take...)
		line := r.hdr[r.lineStart:]
		cont := isWSP(line[0]) && r.lineStart > 0
		if i < 0 {
			// An unfinished line: refuse it as soon as it is too long
			// for a field; a body line that long just ends the header.
			cur := int64(len(line))
			if cont {
				cur += r.field
			}
			if cur > r.set.HeaderSizeLimit {
				if cont || cleanup.IsField(line) {
					return errHeaderField
				}
				r.endHeader()
			}
			continue
		}
		switch {
		case len(line) <= 2 && (len(line) == 1 || line[0] == '\r'):
			r.endHeader() // the blank line: the body starts with it
			continue
		case cont:
			r.field += int64(len(line))
		case cleanup.IsField(line):
			r.field = int64(len(line))
		default:
			r.endHeader()
			continue
		}
		if r.field > r.set.HeaderSizeLimit {
			return errHeaderField
		}
		if int64(len(r.hdr)) > r.set.HeaderTotalLimit {
			return errHeaderTotal
		}
		r.lineStart = len(r.hdr)
	}
	return nil
}

// endHeader drops the line that turned out not to belong to the header.
func (r *receiver) endHeader() {
	r.inHeader = false
	r.uncharge(int64(len(r.hdr) - r.lineStart))
	r.hdr = r.hdr[:r.lineStart:r.lineStart]
}

func isWSP(c byte) bool { return c == ' ' || c == '\t' }

// store keeps the data in memory while it is small and the budget allows,
// then moves it to its body file and streams the rest there.
func (r *receiver) store(p []byte) error {
	if r.file == nil {
		if len(r.data)+len(p) <= queue.InlineMax && r.charge(int64(len(p))) {
			r.data = append(r.data, p...)
			return nil
		}
		if r.bodies == nil {
			return errors.New("message too large for a server without a body store")
		}
		f, err := r.bodies.CreateBody(r.id)
		if err != nil {
			return err
		}
		r.file, r.fw = f, bufio.NewWriterSize(f, 32<<10)
		if _, err := r.fw.Write(r.data); err != nil {
			return err
		}
		r.uncharge(int64(len(r.data)))
		r.data = nil
	}
	_, err := r.fw.Write(p)
	return err
}

func (r *receiver) flush() error {
	if r.fw != nil {
		return r.fw.Flush()
	}
	return nil
}

func (r *receiver) charge(n int64) bool {
	if !r.s.charge(n) {
		return false
	}
	r.charged += n
	return true
}

func (r *receiver) uncharge(n int64) {
	r.s.uncharge(n)
	r.charged -= n
}

// content is what was received, for cleanup.
func (r *receiver) content() *cleanup.Content {
	if r.inHeader {
		r.endHeader() // data that ended inside a header line (BDAT)
	}
	return &cleanup.Content{Header: r.hdr, Data: r.data, File: r.file, Size: r.size}
}

// raw is the whole message as received (header and body, r.size bytes),
// read where it is, for checks such as dkim.verify.
func (r *receiver) raw() io.ReaderAt {
	if r.file == nil {
		return bytes.NewReader(r.data)
	}
	return r.file
}

// bodyStart is where the body starts in raw: after the header and the
// empty line (CRLF, or a bare LF if one was let through).
func (r *receiver) bodyStart() int64 {
	start := int64(len(r.hdr))
	sep := make([]byte, 2)
	n, _ := r.raw().ReadAt(sep, start)
	switch {
	case n == 2 && sep[0] == '\r' && sep[1] == '\n':
		return start + 2
	case n >= 1 && sep[0] == '\n':
		return start + 1
	}
	return min(start, r.size)
}

// bodyPrefix is the start of the body that msg.body shows the hooks.
func (r *receiver) bodyPrefix() []byte {
	limit := r.set.BodyChecksSizeLimit
	start := int64(len(r.hdr))
	if r.file == nil {
		body := r.data[start:]
		return body[:min(int64(len(body)), limit)]
	}
	buf := make([]byte, min(limit, r.size-start))
	n, _ := r.file.ReadAt(buf, start)
	return buf[:n]
}

// replace makes msg, as milters left it with a replaced body, the
// message: the received data is dropped and msg stored in its place,
// in memory or in a body file of the same id as any message.
func (r *receiver) replace(msg *milter.Message) error {
	if r.file != nil {
		r.file.Discard()
		r.file, r.fw = nil, nil
	}
	r.uncharge(int64(len(r.data)))
	r.data, r.size, r.inHeader = nil, 0, false
	r.hdr = append([]byte(nil), msg.Header()...)
	if _, err := msg.WriteTo(storeWriter{r}); err != nil {
		return err
	}
	return r.flush()
}

// storeWriter writes through receiver.store, counting the size.
type storeWriter struct{ r *receiver }

func (w storeWriter) Write(p []byte) (int, error) {
	if err := w.r.store(p); err != nil {
		return 0, err
	}
	w.r.size += int64(len(p))
	return len(p), nil
}

// release gives back the memory budget and removes a body file that was
// not queued.
func (r *receiver) release(queued bool) {
	r.s.uncharge(r.charged)
	r.charged = 0
	if r.file != nil && !queued {
		r.file.Discard()
	}
}
