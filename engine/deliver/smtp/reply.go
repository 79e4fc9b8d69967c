package smtp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"
)

// reply is one server reply, read by us during session set-up or by go-smtp
// afterwards.
type reply struct {
	code int
	enh  [3]int // zero when the server sent no enhanced status code
	text string // without code and enhanced code; lines joined by spaces
}

// parseReply splits msg as net/textproto returns it (code stripped, lines
// joined by "\n") into enhanced code and text.
func parseReply(code int, msg string) reply {
	r := reply{code: code}
	lines := strings.Split(msg, "\n")
	if first, rest, ok := strings.Cut(lines[0], " "); ok {
		if enh, ok := parseEnhanced(first); ok {
			r.enh = enh
			lines[0] = rest
			// RFC 2034 repeats the code on every line of a multi-line
			// reply; once is enough in a log or a bounce.
			for i := 1; i < len(lines); i++ {
				lines[i] = strings.TrimPrefix(lines[i], first+" ")
			}
		}
	}
	r.text = strings.Join(lines, " ")
	return r
}

func parseEnhanced(s string) ([3]int, bool) {
	var enh [3]int
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return enh, false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 999 {
			return enh, false
		}
		enh[i] = n
	}
	if c := enh[0]; c != 2 && c != 4 && c != 5 {
		return enh, false
	}
	return enh, true
}

// smtpReply extracts the server reply from a go-smtp error. false means the
// error did not come from the server: the connection is in doubt.
func smtpReply(err error) (reply, bool) {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return reply{}, false
	}
	r := reply{code: se.Code, text: strings.ReplaceAll(se.Message, "\n", " ")}
	if e := se.EnhancedCode; e[0] == 2 || e[0] == 4 || e[0] == 5 {
		r.enh = [3]int(e)
	}
	return r, true
}

// protoReply is smtpReply for errors from our own net/textproto reading.
func protoReply(err error) (reply, bool) {
	var te *textproto.Error
	if !errors.As(err, &te) {
		return reply{}, false
	}
	return parseReply(te.Code, te.Msg), true
}

func (r reply) class() int { return r.code / 100 }

// String gives the reply as a log or bounce shows it: "550 5.1.1 text".
func (r reply) String() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(r.code))
	if r.enh[0] != 0 {
		fmt.Fprintf(&b, " %d.%d.%d", r.enh[0], r.enh[1], r.enh[2])
	}
	if r.text != "" {
		b.WriteByte(' ')
		b.WriteString(r.text)
	}
	return b.String()
}

// status is the enhanced status code for the reply. The reply code decides
// the class, as in Postfix, because a server saying "550 4.1.1" means 550;
// a code outside 2xx-5xx where a final answer was due counts as temporary.
func (r reply) status() string {
	class := r.class()
	if class != 2 && class != 5 {
		class = 4
	}
	if r.enh[0] == 0 {
		return fmt.Sprintf("%d.0.0", class)
	}
	return fmt.Sprintf("%d.%d.%d", class, r.enh[1], r.enh[2])
}

// said quotes a reply the way Postfix does in bounces and logs.
func said(namaddr string, r reply, command string) string {
	return fmt.Sprintf("host %s said: %s (in reply to %s command)", namaddr, r, command)
}

// asTemporary turns a status into its class-4 form, for failures that must
// not bounce mail.
func asTemporary(status string) string {
	if strings.HasPrefix(status, "5.") || strings.HasPrefix(status, "2.") {
		return "4" + status[1:]
	}
	return status
}

// lost describes a connection that broke while stage was under way; it
// says why when the context ended it or it timed out, as Postfix does.
func lost(ctx context.Context, namaddr, stage string, err error) string {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Sprintf("delivery to %s stopped while %s: %v", namaddr, stage, cerr)
	}
	if isTimeout(err) {
		return fmt.Sprintf("conversation with %s timed out while %s", namaddr, stage)
	}
	return fmt.Sprintf("lost connection with %s while %s", namaddr, stage)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// errText gives the innermost cause of a dial error ("connection refused"),
// which is what an operator reading a bounce needs; the wrapping repeats the
// address.
func errText(err error) string {
	if isTimeout(err) {
		return "connection timed out"
	}
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err.Error()
		}
		err = u
	}
}
