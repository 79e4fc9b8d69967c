package smtpd

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/larkpost/larkpost/rules"
)

var errTooBig = errors.New("message too big")

// Data receives the message, checks it, runs on_data and hands it to the
// sink. The reply is 250 only after the sink has it on disk.
func (sess *session) Data(r io.Reader) error {
	defer sess.cc.endTransfer()
	in := sess.in
	tx := in.Tx
	set := in.Policy.Settings
	arrival := time.Now()

	buf, err := readMessage(r, set.MessageSizeLimit, tx.Size)
	if err != nil {
		var ne net.Error
		switch {
		case errors.Is(err, errTooBig) || err == smtp.ErrDataTooLarge:
			sess.logReject("END-OF-MESSAGE", 552, "5.3.4", "Error: message file too big", "")
			return reply(552, "5.3.4", "Error: message file too big")
		case err == smtp.ErrDataReset:
			return err
		case errors.As(err, &ne) && ne.Timeout():
			sess.s.Log.Info("timeout after DATA (" + itoa(len(buf)) + " bytes) from " + sess.cc.client())
		default:
			sess.s.Log.Info("lost connection after DATA (" + itoa(len(buf)) + " bytes) from " + sess.cc.client())
		}
		// Whatever is left of the message must never be read as commands.
		sess.cc.kill()
		return reply(421, "4.4.2", set.Hostname+" Error: timeout exceeded")
	}

	if bad := bareNewline(buf); bad != "" {
		if set.ForbidBareNewline == "reject" && !sess.cc.info.InNetworks {
			text := "Error: bare <" + bad + "> received"
			sess.s.notify("protocol", sess.logReject("END-OF-MESSAGE", 550, "5.5.2", text, ""))
			return reply(550, "5.5.2", text)
		}
		buf = NormalizeNewlines(buf)
	}

	msg := rules.ParseMessage(buf)
	if err := sess.refusal(in.Data(sess.cc.ctx, msg), "END-OF-MESSAGE", ""); err != nil {
		return err
	}
	queued := &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as " + tx.ID}
	log := in.Log()
	if in.Discard {
		sess.s.Log.Info(tx.ID + ": discard: END-OF-MESSAGE from " + sess.cc.client() + ": " + decisionSource(log, rules.Discard))
		return queued
	}

	full := make([]byte, 0, len(buf)+256)
	full = append(full, sess.received(tx, arrival)...)
	effects := in.Effects()
	for _, e := range effects {
		if e.Kind == rules.Prepend {
			full = append(full, e.Text+"\r\n"...)
		}
	}
	full = append(full, buf...)
	env := &Envelope{
		ID: tx.ID, Sender: tx.Sender, Rcpts: tx.Rcpts, Client: sess.cc.info,
		Hold: in.Hold, HoldReason: in.HoldReason, Arrival: arrival, Decisions: log,
		Effects: effects,
		UTF8:    tx.UTF8, EnvID: sess.envID, RetFull: sess.retFull, Notify: sess.notify, ORcpt: sess.orcpt,
	}
	if err := sess.s.Sink.Accept(sess.cc.ctx, env, full); err != nil {
		if errors.Is(err, ErrPolicy) {
			sess.s.Log.Error(tx.ID + ": hook failed in cleanup: " + err.Error())
			sess.s.notify("software", tx.ID+": hook failed in cleanup: "+err.Error())
			return reply(451, "4.3.5", "Server configuration problem")
		}
		sess.s.Log.Warn(tx.ID + ": warning: queue file write error: " + err.Error())
		sess.s.notify("resource", tx.ID+": queue file write error: "+err.Error())
		return reply(451, "4.3.0", "Error: queue file write error")
	}
	if id := msg.Header.Get("Message-Id"); id != "" {
		sess.s.Log.Info(tx.ID + ": message-id=" + strings.TrimSpace(id))
	}
	return queued
}

func decisionSource(ds []rules.Step, k rules.Kind) string {
	for _, d := range ds {
		if d.Kind == k {
			return d.Hook + " at " + d.Source
		}
	}
	return ""
}

// readMessage reads the whole message, bounded by limit. The buffer starts
// at the client's declared SIZE so large messages are not copied repeatedly.
func readMessage(r io.Reader, limit, declared int64) ([]byte, error) {
	size := int64(16 << 10)
	if declared > size && declared <= limit {
		size = declared + 1024
	}
	buf := bytes.NewBuffer(make([]byte, 0, size))
	n, err := buf.ReadFrom(io.LimitReader(r, limit+1))
	if err != nil {
		return buf.Bytes(), err
	}
	if n > limit {
		io.Copy(io.Discard, r)
		return nil, errTooBig
	}
	return buf.Bytes(), nil
}

// bareNewline reports "LF" or "CR" for the first line ending that is not
// CRLF. Such endings are how SMTP smuggling hides a second message from one
// server that another will see; go-smtp itself only ends DATA at CRLF.CRLF.
func bareNewline(b []byte) string {
	for i := 0; i < len(b); {
		j := bytes.IndexAny(b[i:], "\r\n")
		if j < 0 {
			return ""
		}
		i += j
		if b[i] == '\n' {
			return "LF"
		}
		if i+1 >= len(b) || b[i+1] != '\n' {
			return "CR"
		}
		i += 2
	}
	return ""
}

// NormalizeNewlines turns bare LF and bare CR into CRLF, so every later
// stage (Maildir, relay, DKIM) sees the same lines. Pickup uses it too.
func NormalizeNewlines(b []byte) []byte {
	out := make([]byte, 0, len(b)+len(b)/32)
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '\r':
			out = append(out, '\r', '\n')
			if i+1 < len(b) && b[i+1] == '\n' {
				i++
			}
		case '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, b[i])
		}
	}
	return out
}

// received builds our trace header in Postfix's shape:
//
//	Received: from helo (name [ip])
//		by host (larkpost) with ESMTP id ID
//		for <rcpt>; date
func (sess *session) received(tx *rules.Tx, now time.Time) string {
	c := sess.cc.info
	proto := sess.proto()
	if tx.UTF8 {
		proto = "UTF8" + proto
	}
	if c.TLS {
		proto += "S"
	}
	if c.User != "" {
		proto += "A"
	}
	var b strings.Builder
	b.WriteString("Received: from " + printable(c.Helo) + " (" + c.RDNS + " [" + c.IP.String() + "])\r\n")
	b.WriteString("\tby " + sess.in.Policy.Settings.Hostname + " (larkpost) with " + proto + " id " + tx.ID)
	if len(tx.Rcpts) == 1 {
		b.WriteString("\r\n\tfor <" + printable(tx.Rcpts[0].String()) + ">")
	}
	b.WriteString("; " + now.Format("Mon, 02 Jan 2006 15:04:05 -0700 (MST)") + "\r\n")
	return b.String()
}

// printable keeps client-supplied text from breaking the header.
func printable(s string) string {
	if s == "" {
		return "unknown"
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || r == '(' || r == ')' {
			return '?'
		}
		return r
	}, s)
}
