package auth

import (
	"bufio"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// maxDovecotLine bounds one line from the auth server, newline included.
// Real lines are a few hundred bytes; the bound only stops a broken or
// hostile peer from growing the buffer without end.
const maxDovecotLine = 64 << 10

// dovecotLine is one line of Dovecot's client auth protocol (version 1):
// a command and tab-separated arguments, without the newline. Arguments are
// kept unescaped.
type dovecotLine struct {
	cmd  string
	args []string
}

var errDovecotSyntax = errors.New("malformed line")

// parseDovecotLine reads one line without its newline. It copies what it
// keeps, so b may be a bufio buffer.
func parseDovecotLine(b []byte) (dovecotLine, error) {
	if len(b) >= maxDovecotLine {
		return dovecotLine{}, fmt.Errorf("%w: longer than %d bytes", errDovecotSyntax, maxDovecotLine)
	}
	fields := strings.Split(string(b), "\t")
	if !validDovecotCmd(fields[0]) {
		return dovecotLine{}, fmt.Errorf("%w: bad command", errDovecotSyntax)
	}
	l := dovecotLine{cmd: fields[0]}
	for _, f := range fields[1:] {
		if strings.IndexByte(f, '\n') >= 0 {
			return dovecotLine{}, fmt.Errorf("%w: newline inside", errDovecotSyntax)
		}
		l.args = append(l.args, tabUnescape(f))
	}
	return l, nil
}

// validDovecotCmd accepts the upper-case words Dovecot uses, and no more,
// so that garbage is reported as such instead of being ignored as an
// unknown command.
func validDovecotCmd(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('A' <= c && c <= 'Z' || c == '_' || c == '-' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// encode is the line as sent, newline included.
func (l dovecotLine) encode() string {
	var b strings.Builder
	b.WriteString(l.cmd)
	for _, a := range l.args {
		b.WriteByte('\t')
		b.WriteString(tabEscape(a))
	}
	b.WriteByte('\n')
	return b.String()
}

// tabEscape is Dovecot's str_tabescape: \001 introduces an escape, so tabs
// and line ends can travel inside a field.
func tabEscape(s string) string {
	if !strings.ContainsAny(s, "\x00\x01\t\r\n") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case 0:
			b.WriteString("\x010")
		case 1:
			b.WriteString("\x011")
		case '\t':
			b.WriteString("\x01t")
		case '\r':
			b.WriteString("\x01r")
		case '\n':
			b.WriteString("\x01n")
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// tabUnescape is Dovecot's str_tabunescape, which keeps an unknown escaped
// character as it is and a trailing \001 as well.
func tabUnescape(s string) string {
	i := strings.IndexByte(s, 1)
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		if s[i] != 1 || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case '0':
			b.WriteByte(0)
		case '1':
			b.WriteByte(1)
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case 'n':
			b.WriteByte('\n')
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// dovecotReply is an answer to one AUTH request: OK, FAIL or CONT.
type dovecotReply struct {
	cmd    string
	id     uint32
	params []string // OK and FAIL: key=value or a bare flag; CONT: the data
}

func parseDovecotReply(l dovecotLine) (dovecotReply, error) {
	if len(l.args) == 0 {
		return dovecotReply{}, fmt.Errorf("%w: %s without id", errDovecotSyntax, l.cmd)
	}
	id, err := strconv.ParseUint(l.args[0], 10, 32)
	if err != nil || strconv.FormatUint(id, 10) != l.args[0] {
		return dovecotReply{}, fmt.Errorf("%w: %s with bad id", errDovecotSyntax, l.cmd)
	}
	return dovecotReply{cmd: l.cmd, id: uint32(id), params: l.args[1:]}, nil
}

// param returns the value of key=value, or "" and true for a bare flag.
func (r dovecotReply) param(key string) (string, bool) {
	for _, p := range r.params {
		k, v, _ := strings.Cut(p, "=")
		if k == key {
			return v, true
		}
	}
	return "", false
}

// readDovecotLine returns the next line without its newline; the slice is
// valid until the next read. r's buffer must be maxDovecotLine bytes, so a
// longer line ends as bufio.ErrBufferFull.
func readDovecotLine(r *bufio.Reader) ([]byte, error) {
	b, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("line longer than %d bytes", maxDovecotLine)
		}
		return nil, err
	}
	return b[:len(b)-1], nil
}
