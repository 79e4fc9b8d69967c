package milter

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	gomilter "github.com/emersion/go-milter"
)

// ModKind says what a Modification does.
type ModKind int

const (
	ModAddHeader    ModKind = iota + 1 // append field Name: Value
	ModInsertHeader                    // insert field Name: Value before the Index'th field (0 = top)
	ModChangeHeader                    // replace the Index'th field called Name (1-based) with Name: Value
	ModDeleteHeader                    // delete the Index'th field called Name (1-based)
	ModChangeFrom                      // envelope sender becomes Addr, with ESMTP Args
	ModAddRcpt                         // add envelope recipient Addr, with ESMTP Args
	ModDeleteRcpt                      // delete envelope recipient Addr
	ModReplaceBody                     // the body becomes Body's content
	ModQuarantine                      // hold the message, for Reason
)

var modNames = [...]string{"", "add header", "insert header", "change header", "delete header",
	"change from", "add rcpt", "delete rcpt", "replace body", "quarantine"}

func (k ModKind) String() string {
	if k > 0 && int(k) < len(modNames) {
		return modNames[k]
	}
	return fmt.Sprintf("ModKind(%d)", int(k))
}

// Modification is one change the milter asked for at end of message, in
// the order it asked. The caller applies them to the queued message.
type Modification struct {
	Kind ModKind
	// Name and Value of a header field. Value is what follows the colon,
	// leading space included, continuation lines joined by CRLF: write
	// Name + ":" + Value + "\r\n".
	Name, Value string
	// Index is 1-based among the fields called Name for change and
	// delete; for insert it is the position among all fields, 0 being the
	// top (the milter's smfi_insheader index).
	Index int
	// Addr is an envelope address without angle brackets; Args its ESMTP
	// parameters, if any.
	Addr string
	Args []string
	// Body holds the replacement body (CRLF line endings), spooled to an
	// already-unlinked file under Config.TempDir and positioned at its
	// start. The caller must Close it; nothing is left on disk either way.
	Body *os.File
	// Reason is the quarantine reason.
	Reason string
}

// EndOfMessage sends the message, then asks for the milter's decision:
// the header block (the raw fields up to the empty line, CRLF or LF line
// endings) field by field, then the body (CRLF line endings, as received
// after DATA but without dot-stuffing) streamed from the reader in chunks
// of at most 65535 bytes, then end-of-message with its macros.
//
// The modifications are returned only for a message the milter lets
// through (Continue, Accept or Quarantine), never for Reject, Tempfail
// or Discard. A body replacement is spooled to a temporary file
// (Modification.Body), never held in memory.
//
// Local trouble is not the milter's fault: if reading body or spooling
// a replaced body fails, the verdict is a 451 tempfail with the error, and
// the milter stays usable for the next message.
func (s *Session) EndOfMessage(ctx context.Context, header []byte, body io.Reader) (Verdict, []Modification, error) {
	if s.done {
		return s.final, nil, nil
	}
	defer s.endMessage()
	if s.msgDone {
		return s.msgVerdict, nil, nil
	}
	cto := s.m.cfg.ContentTimeout
	defer arm(ctx, s.conn, cto)()

	v, err := s.sendHeader(ctx, header)
	if err == nil && v.Action == Continue {
		v, err = s.sendBody(ctx, body)
	}
	var local localError
	if errors.As(err, &local) {
		// The milter is in the middle of the message: abort it.
		rearm(ctx, s.conn, s.m.cfg.CommandTimeout)
		if aerr := s.abortTxn(); aerr != nil {
			v, aerr = s.fail(ctx, "abort", aerr)
			return v, nil, errors.Join(local, aerr)
		}
		return localFailure, nil, fmt.Errorf("milter %s: reading message: %w", s.m.cfg.Name, local.error)
	}
	if err != nil {
		return s.fail3(ctx, "message content", err)
	}
	if v.Action != Continue {
		// The milter decided during the content: no end of message.
		// It may still hold the message; the next Mail or Abort aborts.
		return v, nil, nil
	}

	rearm(ctx, s.conn, cto)
	if err := s.sendMacros(gomilter.CodeEOB, s.m.macros.EndOfMessage); err != nil {
		return s.fail3(ctx, "end of message", err)
	}
	if err := writePacket(s.conn, byte(gomilter.CodeEOB), nil); err != nil {
		return s.fail3(ctx, "end of message", err)
	}
	v, mods, err := s.readEndOfMessage(ctx)
	if errors.As(err, &local) {
		s.inTxn = false
		return localFailure, nil, fmt.Errorf("milter %s: spooling replaced body: %w", s.m.cfg.Name, local.error)
	}
	if err != nil {
		return s.fail3(ctx, "end of message", err)
	}
	// The milter's final reply ends the message on its side too.
	s.inTxn = false
	return v, mods, nil
}

// localFailure is the verdict when the message could not be read or a
// replaced body could not be stored.
var localFailure = Verdict{Action: Tempfail, Code: 451, Status: "4.3.0", Text: "Error processing message - try again later"}

func (s *Session) fail3(ctx context.Context, stage string, err error) (Verdict, []Modification, error) {
	v, err := s.fail(ctx, stage, err)
	return v, nil, err
}

// localError marks a failure on our side (reading the caller's body,
// writing the spool file), as opposed to a failure of the milter.
type localError struct{ error }

// sendHeader sends the header fields, then end-of-header.
func (s *Session) sendHeader(ctx context.Context, header []byte) (Verdict, error) {
	if s.proto&gomilter.OptNoHeaders == 0 {
		leadSpace := s.proto&gomilter.OptHeaderLeadingSpace != 0
		for len(header) > 0 {
			var name, value string
			name, value, header = nextField(header)
			if name == "" {
				continue
			}
			if !leadSpace {
				// Sendmail, and so Postfix, drop one space (not a tab)
				// after the colon unless the milter asked for it.
				value = strings.TrimPrefix(value, " ")
			}
			rearm(ctx, s.conn, s.m.cfg.ContentTimeout)
			s.pkt = append(append(append(append(s.pkt[:0], name...), 0), value...), 0)
			if err := writePacket(s.conn, byte(gomilter.CodeHeader), s.pkt); err != nil {
				return Verdict{}, err
			}
			if s.proto&gomilter.OptNoHeaderReply != 0 {
				continue
			}
			code, data, err := s.readReply(ctx, s.m.cfg.ContentTimeout, s.buf)
			if err != nil {
				return Verdict{}, err
			}
			s.keep(data)
			if v, err := s.messageReply(code, data); err != nil || v.Action != Continue {
				return v, err
			}
		}
	}
	rearm(ctx, s.conn, s.m.cfg.ContentTimeout)
	if err := s.sendMacros(gomilter.CodeEOH, s.m.macros.EndOfHeader); err != nil {
		return Verdict{}, err
	}
	act, err := s.cs.HeaderEnd()
	if err != nil {
		return Verdict{}, err
	}
	return s.contentVerdict(act)
}

func (s *Session) contentVerdict(act *gomilter.Action) (Verdict, error) {
	v, err := verdictOf(act)
	if err == nil && v.Action != Continue {
		s.msgDone, s.msgVerdict = true, v
	}
	return v, err
}

// nextField splits the first header field off h: its name, and its value
// with continuation lines joined by "\n", the form Sendmail and Postfix
// send. A line without a colon yields an empty name and is skipped. An
// empty line ends the header.
func nextField(h []byte) (name, value string, rest []byte) {
	end := 0
	for {
		i := bytes.IndexByte(h[end:], '\n')
		if i < 0 {
			end = len(h)
			break
		}
		end += i + 1
		if end == len(h) || (h[end] != ' ' && h[end] != '\t') {
			break
		}
	}
	field, rest := h[:end], h[end:]
	field = bytes.TrimRight(field, "\r\n")
	if len(field) == 0 {
		return "", "", nil // the empty line: end of header
	}
	colon := bytes.IndexByte(field, ':')
	if colon <= 0 {
		return "", "", rest
	}
	name = string(bytes.TrimRight(field[:colon], " \t"))
	value = strings.ReplaceAll(string(field[colon+1:]), "\r\n", "\n")
	return name, value, rest
}

// chunkPool holds body chunk buffers, shared by all sessions: a session
// needs one only while it sends a body or receives a replacement.
var chunkPool = sync.Pool{New: func() any {
	b := make([]byte, gomilter.MaxBodyChunk)
	return &b
}}

// sendBody streams the body in chunks of at most gomilter.MaxBodyChunk
// through one buffer: the body is never held whole.
func (s *Session) sendBody(ctx context.Context, body io.Reader) (Verdict, error) {
	if s.proto&gomilter.OptNoBody != 0 || body == nil {
		return continueVerdict, nil
	}
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	chunk := *bp
	for {
		n, rerr := io.ReadFull(body, chunk)
		if n > 0 {
			rearm(ctx, s.conn, s.m.cfg.ContentTimeout)
			if err := writePacket(s.conn, byte(gomilter.CodeBody), chunk[:n]); err != nil {
				return Verdict{}, err
			}
			if s.proto&gomilter.OptNoBodyReply == 0 {
				code, data, err := s.readReply(ctx, s.m.cfg.ContentTimeout, s.buf)
				if err != nil {
					return Verdict{}, err
				}
				s.keep(data)
				if code == byte(gomilter.ActSkip) {
					return continueVerdict, nil
				}
				if v, err := s.messageReply(code, data); err != nil || v.Action != Continue {
					return v, err
				}
			}
		}
		switch rerr {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			return continueVerdict, nil
		default:
			return Verdict{}, localError{rerr}
		}
	}
}

// readEndOfMessage collects the modifications that precede the milter's
// final reply. A body replacement (any number of SMFIR_REPLBODY packets
// in a row; like Postfix we refuse one interrupted by other requests) is
// copied straight from the connection to a temporary file. If that file
// cannot be written, the rest is still read, to stay in step with the
// milter, and a localError is returned with the tempfail verdict.
func (s *Session) readEndOfMessage(ctx context.Context) (v Verdict, mods []Modification, err error) {
	var (
		spool       *spoolFile
		copyBuf     *[]byte
		bodyDone    bool // the replacement body was followed by another request
		localErr    error
		quarantine  string
		quarantined bool
	)
	defer func() {
		if err != nil || v.Action == Reject || v.Action == Tempfail || v.Action == Discard {
			// Moot changes: drop them, and their spool files.
			for _, m := range mods {
				if m.Body != nil {
					m.Body.Close()
				}
			}
			mods = nil
			if spool != nil {
				spool.f.Close()
			}
		}
	}()
	for {
		rearm(ctx, s.conn, s.m.cfg.ContentTimeout)
		code, n, err := readHeader(s.conn)
		if err != nil {
			return Verdict{}, mods, err
		}
		if spool != nil && code != byte(gomilter.ActReplBody) {
			if localErr != nil {
				spool.f.Close()
			} else if f, err := spool.finish(); err != nil {
				localErr = err
			} else {
				mods = append(mods, Modification{Kind: ModReplaceBody, Body: f})
			}
			spool, bodyDone = nil, true
		}
		switch code {
		case replyProgress:
			if n != 0 {
				return Verdict{}, mods, fmt.Errorf("%w: progress with data", errProtocol)
			}
			continue
		case byte(gomilter.ActReplBody):
			if bodyDone {
				return Verdict{}, mods, fmt.Errorf("%w: body replacement mixed with other requests", errProtocol)
			}
			if spool == nil && localErr == nil {
				spool, localErr = newSpool(s.m.cfg.TempDir, s.m.cfg.MaxBody)
			}
			var w io.Writer = io.Discard
			if localErr == nil {
				w = spool
			}
			if copyBuf == nil {
				copyBuf = chunkPool.Get().(*[]byte)
				defer chunkPool.Put(copyBuf)
			}
			if err := copyPacket(w, s.conn, n, &localErr, *copyBuf); err != nil {
				return Verdict{}, mods, err
			}
			continue
		}
		data, err := readData(s.conn, n, s.buf)
		if err != nil {
			return Verdict{}, mods, err
		}
		s.keep(data)
		if code == byte(gomilter.ActQuarantine) {
			quarantine, quarantined = cstring(data), true
			mods = append(mods, Modification{Kind: ModQuarantine, Reason: quarantine})
			continue
		}
		if m, ok, err := s.parseMod(code, data); err != nil {
			return Verdict{}, mods, err
		} else if ok {
			mods = append(mods, m)
			continue
		}
		// Anything else must be the final reply.
		if code == byte(gomilter.ActReplyCode) {
			v, err = replyVerdict(cstring(data))
		} else {
			v, err = simpleVerdict(code)
		}
		if err != nil {
			return Verdict{}, mods, err
		}
		if localErr != nil {
			return localFailure, mods, localError{localErr}
		}
		if quarantined && (v.Action == Continue || v.Action == Accept) {
			v = Verdict{Action: Quarantine, Text: quarantine}
		}
		return v, mods, nil
	}
}

// copyPacket copies n bytes of packet data from c to w through buf. An
// error of w is recorded in *werr (once) and the rest of the data
// discarded, so that the conversation stays in step; the returned error is
// the connection's.
func copyPacket(w io.Writer, c io.Reader, n int64, werr *error, buf []byte) error {
	src := &io.LimitedReader{R: c, N: n}
	_, err := io.CopyBuffer(w, src, buf)
	var we writeError
	if errors.As(err, &we) {
		if *werr == nil {
			*werr = we.error
		}
		_, err = io.Copy(io.Discard, src)
	}
	if err == nil && src.N > 0 {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// parseMod decodes a header or envelope change; ok is false for a code
// that is not one.
func (s *Session) parseMod(code byte, data []byte) (m Modification, ok bool, err error) {
	bad := func() (Modification, bool, error) {
		return Modification{}, false, fmt.Errorf("%w: malformed %q request", errProtocol, code)
	}
	switch gomilter.ModifyActCode(code) {
	case gomilter.ActAddHeader, gomilter.ActChangeHeader, gomilter.ActInsertHeader:
		m.Kind = ModAddHeader
		if code != byte(gomilter.ActAddHeader) {
			if len(data) < 4 {
				return bad()
			}
			m.Index = int(binary.BigEndian.Uint32(data))
			data = data[4:]
			m.Kind = ModInsertHeader
			if code == byte(gomilter.ActChangeHeader) {
				m.Kind = ModChangeHeader
				if m.Index == 0 {
					m.Index = 1 // Sendmail compatibility, as in Postfix
				}
			}
		}
		f := cstrings(data)
		if len(f) != 2 || f[0] == "" {
			return bad()
		}
		m.Name, m.Value = f[0], s.headerValue(f[1])
		if m.Kind == ModChangeHeader && f[1] == "" {
			m.Kind, m.Value = ModDeleteHeader, ""
		}
	case gomilter.ActChangeFrom, gomilter.ActAddRcpt, replyAddRcptP:
		f := cstrings(data)
		if len(f) < 1 || len(f) > 2 {
			return bad()
		}
		m.Kind, m.Addr = ModAddRcpt, unbracket(f[0])
		if code == byte(gomilter.ActChangeFrom) {
			m.Kind = ModChangeFrom
		}
		if len(f) == 2 {
			m.Args = strings.Fields(f[1])
		}
	case gomilter.ActDelRcpt:
		m.Kind, m.Addr = ModDeleteRcpt, unbracket(cstring(data))
	default:
		return m, false, nil
	}
	return m, true, nil
}

// headerValue puts a value from the milter in the form of Modification:
// the separator space restored (unless the milter sends it itself) and
// continuation lines joined by CRLF, whichever line ending it used.
func (s *Session) headerValue(v string) string {
	if v == "" {
		return ""
	}
	v = strings.ReplaceAll(strings.ReplaceAll(v, "\r\n", "\n"), "\n", "\r\n")
	if s.proto&gomilter.OptHeaderLeadingSpace == 0 {
		v = " " + v
	}
	return v
}

func unbracket(a string) string {
	// go-milter's AddRecipient brackets what it is given, so a milter
	// that brackets too sends "<<x@y>>".
	for len(a) >= 2 && a[0] == '<' && a[len(a)-1] == '>' {
		a = a[1 : len(a)-1]
	}
	return a
}

// cstring returns the first NUL-terminated string in b.
func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// cstrings splits b into its NUL-terminated strings.
func cstrings(b []byte) []string {
	if len(b) == 0 {
		return nil
	}
	return strings.Split(string(bytes.TrimSuffix(b, []byte{0})), "\x00")
}

// spoolFile receives a replacement body on disk, turning bare LF into
// CRLF. The file is unlinked as soon as it exists, so no failure can leave
// it behind; the open descriptor keeps it readable until closed.
type spoolFile struct {
	f *os.File
	w *bufio.Writer
	crlf
}

func newSpool(dir string, limit int64) (*spoolFile, error) {
	f, err := os.CreateTemp(dir, "milter-body-*")
	if err != nil {
		return nil, err
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	sp := &spoolFile{f: f, w: bufio.NewWriterSize(f, 64<<10)}
	sp.crlf.w = sp.w
	if limit > 0 {
		sp.crlf.w = &capped{w: sp.w, left: limit}
	}
	return sp, nil
}

// finish flushes the file and rewinds it for the caller.
func (sp *spoolFile) finish() (*os.File, error) {
	err := sp.w.Flush()
	if err == nil {
		_, err = sp.f.Seek(0, io.SeekStart)
	}
	if err != nil {
		sp.f.Close()
		return nil, err
	}
	return sp.f, nil
}

// crlf writes through to w, turning bare LF into CRLF (go-milter's
// ReplaceBody, for one, sends LF) across Write boundaries.
type crlf struct {
	w      io.Writer
	prevCR bool
}

// capped fails a write that would take more than left bytes in all: a
// milter's replacement body must not fill the disk.
type capped struct {
	w    io.Writer
	left int64
}

func (c *capped) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		return 0, fmt.Errorf("replaced body larger than the limit")
	}
	c.left -= int64(len(p))
	return c.w.Write(p)
}

// writeError marks an error of the destination, as opposed to the source,
// in io.CopyN.
type writeError struct{ error }

func (c *crlf) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if _, err := c.w.Write(p); err != nil {
				return 0, writeError{err}
			}
			c.prevCR = p[len(p)-1] == '\r'
			break
		}
		cr := (i > 0 && p[i-1] == '\r') || (i == 0 && c.prevCR)
		seg := p[:i]
		if _, err := c.w.Write(seg); err != nil {
			return 0, writeError{err}
		}
		nl := "\n"
		if !cr {
			nl = "\r\n"
		}
		if _, err := io.WriteString(c.w, nl); err != nil {
			return 0, writeError{err}
		}
		c.prevCR = false
		p = p[i+1:]
	}
	return n, nil
}
