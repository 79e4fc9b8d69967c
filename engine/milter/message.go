package milter

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// MaxHeader is the default bound on the header block that milters'
// additions and changes may grow a message's header to: a milter is as
// untrusted as a client, and the header is held in memory
// (Message.LimitHeader sets another, e.g. header_total_limit).
const MaxHeader = 1 << 20

// Message is a message as the milters of a chain see it. Postfix gives
// each milter the message as the milters before it left it, so the
// header edits and a replaced body are applied here, between milters,
// not only once at the end.
type Message struct {
	header []byte // field lines, CRLF, no empty line
	body   io.ReaderAt
	off    int64 // where the body starts in body
	size   int64 // body bytes

	limit   int      // bound on the header's length
	spool   *os.File // a replaced body; owned, closed by Close
	edited  bool     // the header differs from the one given to NewMessage; it is then m's own copy
	changed bool     // the body was replaced
}

// NewMessage is a message whose header block is header (complete field
// lines, no empty line) and whose body is the size bytes of body from
// off on. Message does not copy the body; the header is copied when first
// edited.
func NewMessage(header []byte, body io.ReaderAt, off, size int64) *Message {
	return &Message{header: header, body: body, off: off, size: max(size, 0), limit: MaxHeader}
}

// LimitHeader bounds the header the milters may grow to n bytes (at
// least the header as it is).
func (m *Message) LimitHeader(n int64) {
	m.limit = int(max(n, int64(len(m.header))))
}

// Header is the current header block.
func (m *Message) Header() []byte { return m.header }

// Body reads the current body from its start.
func (m *Message) Body() io.Reader { return io.NewSectionReader(m.body, m.off, m.size) }

// BodySize is the current body's length in bytes.
func (m *Message) BodySize() int64 { return m.size }

// HeaderEdited says whether a milter changed the header block.
func (m *Message) HeaderEdited() bool { return m.edited }

// BodyReplaced says whether a milter replaced the body.
func (m *Message) BodyReplaced() bool { return m.changed }

// WriteTo writes the whole message: header, empty line, body.
func (m *Message) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(m.header)
	total := int64(n)
	if err != nil {
		return total, err
	}
	n, err = io.WriteString(w, "\r\n")
	total += int64(n)
	if err != nil {
		return total, err
	}
	c, err := io.Copy(w, m.Body())
	return total + c, err
}

// Close releases a replaced body.
func (m *Message) Close() error {
	if m.spool == nil {
		return nil
	}
	err := m.spool.Close()
	m.spool = nil
	return err
}

// ErrBadHeader is wrapped by Apply for a header change that would break
// the message or smuggle a field in: the change is not applied.
var ErrBadHeader = errors.New("bad header change")

// Apply makes one header or body modification; it reports false for the
// envelope ones (sender, recipients) and quarantine, which the caller
// applies. A body replacement's file is taken over (closed by Close or
// by the next replacement). A header change that is malformed, or that
// would grow the header beyond MaxHeader, is refused with ErrBadHeader
// and leaves the message as it was.
func (m *Message) Apply(mod Modification) (bool, error) {
	switch mod.Kind {
	case ModReplaceBody:
		if mod.Body == nil {
			return true, nil
		}
		st, err := mod.Body.Stat()
		if err != nil {
			mod.Body.Close()
			return true, fmt.Errorf("replaced body: %w", err)
		}
		m.Close()
		m.spool, m.body, m.off, m.size, m.changed = mod.Body, mod.Body, 0, st.Size(), true
		return true, nil
	case ModAddHeader, ModInsertHeader, ModChangeHeader, ModDeleteHeader:
	default:
		return false, nil
	}
	if err := checkField(mod.Name, mod.Value, mod.Kind == ModDeleteHeader); err != nil {
		return true, fmt.Errorf("%w: %s %q: %v", ErrBadHeader, mod.Kind, mod.Name, err)
	}
	if grown := len(m.header) + len(mod.Name) + len(mod.Value) + 3; grown > m.limit && mod.Kind != ModDeleteHeader {
		return true, fmt.Errorf("%w: %s %q: the header would exceed %d bytes", ErrBadHeader, mod.Kind, mod.Name, m.limit)
	}
	if mod.Kind == ModAddHeader {
		// The common change (rspamd, ClamAV add their fields): appended
		// in place, not by copying the header once per field.
		if !m.edited {
			m.header = append(make([]byte, 0, len(m.header)+4096), m.header...)
		}
		m.header = append(append(append(append(m.header, mod.Name...), ':'), mod.Value...), "\r\n"...)
		m.edited = true
		return true, nil
	}
	h, err := editHeader(m.header, mod)
	if err != nil {
		return true, fmt.Errorf("%w: %s %q: %v", ErrBadHeader, mod.Kind, mod.Name, err)
	}
	if len(h) > m.limit {
		return true, fmt.Errorf("%w: %s %q: the header would exceed %d bytes", ErrBadHeader, mod.Kind, mod.Name, m.limit)
	}
	m.header, m.edited = h, true
	return true, nil
}

// checkField refuses a field name that is not one (RFC 5322 section
// 3.6.8: printable ASCII but the colon) and a value whose line breaks
// are not folds: "x\r\nBcc: y" would add a field of the milter's choice
// that the change never named, and an empty line would end the header.
func checkField(name, value string, deleting bool) error {
	if name == "" {
		return errors.New("empty field name")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return fmt.Errorf("character %q in the field name", c)
		}
	}
	if deleting {
		return nil
	}
	for i := 0; i < len(value); i++ {
		switch value[i] {
		case '\r':
			if i+2 >= len(value) || value[i+1] != '\n' || (value[i+2] != ' ' && value[i+2] != '\t') {
				return errors.New("a line break in the value that is not a fold")
			}
		case '\n':
			if i == 0 || value[i-1] != '\r' {
				return errors.New("a bare LF in the value")
			}
		case 0:
			return errors.New("a NUL in the value")
		}
	}
	return nil
}

// editHeader returns header with mod applied, in a new slice. Indexes
// are the milter protocol's: for insert, the position among all fields
// (0 = top; past the end = append); for change and delete, the 1-based
// occurrence among the fields called Name (case-insensitive). Changing a
// field that is not there adds it, as Sendmail and Postfix do; deleting
// one that is not there changes nothing.
func editHeader(header []byte, mod Modification) ([]byte, error) {
	field := []byte(mod.Name + ":" + mod.Value + "\r\n")
	spans := fieldSpans(header)
	out := make([]byte, 0, len(header)+len(field))
	switch mod.Kind {
	case ModAddHeader:
		return append(append(out, header...), field...), nil
	case ModInsertHeader:
		at := len(header)
		if mod.Index >= 0 && mod.Index < len(spans) {
			at = spans[mod.Index][0]
		}
		return append(append(append(out, header[:at]...), field...), header[at:]...), nil
	}
	seen := 0
	for _, sp := range spans {
		name, _, _ := bytes.Cut(header[sp[0]:sp[1]], []byte(":"))
		if !strings.EqualFold(strings.TrimRight(string(name), " \t"), mod.Name) {
			continue
		}
		if seen++; seen != mod.Index {
			continue
		}
		out = append(out, header[:sp[0]]...)
		if mod.Kind == ModChangeHeader {
			out = append(out, field...)
		}
		return append(out, header[sp[1]:]...), nil
	}
	if mod.Kind == ModChangeHeader {
		return append(append(out, header...), field...), nil
	}
	return header, nil
}

// fieldSpans is where each field of the header block starts and ends
// (continuation lines included, line ending included).
func fieldSpans(h []byte) [][2]int {
	var spans [][2]int
	for start := 0; start < len(h); {
		end := start
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
		spans = append(spans, [2]int{start, end})
		start = end
	}
	return spans
}
