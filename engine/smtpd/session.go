package smtpd

import (
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
	"github.com/larkpost/larkpost/stdlib/addr"
)

// session is one go-smtp session: from EHLO to QUIT, or to STARTTLS, after
// which go-smtp starts a new one on the same clientConn.
type session struct {
	s      *Server
	cc     *clientConn
	c      *smtp.Conn
	policy *rules.Policy
	helo   string // the name on_helo last judged

	tx         *rules.Tx
	decisions  []rules.Decision
	hold       bool
	holdReason string
	discard    bool
}

var _ smtp.Session = (*session)(nil)

func newSession(s *Server, cc *clientConn, c *smtp.Conn) (*session, error) {
	sess := &session{s: s, cc: cc, c: c, policy: cc.policy}
	_, cc.info.TLS = c.TLSConnectionState()
	if err := sess.checkHelo(); err != nil {
		return nil, err
	}
	return sess, nil
}

// checkHelo runs on_helo for the current HELO/EHLO name. go-smtp calls
// NewSession only for the first EHLO, so a changed name is judged again at
// the next MAIL FROM.
func (sess *session) checkHelo() error {
	name := sess.c.Hostname()
	if name == sess.helo && name != "" {
		return nil
	}
	sess.cc.info.Helo = name
	d := sess.policy.Helo(sess.cc.ctx, &sess.cc.info, name)
	if err := sess.verdict(d, "HELO", ""); err != nil {
		sess.helo = ""
		return err
	}
	sess.helo = name
	return nil
}

func (sess *session) Mail(from string, opts *smtp.MailOptions) error {
	if sess.tx != nil {
		return reply(503, "5.5.1", "Error: nested MAIL command")
	}
	if err := sess.checkHelo(); err != nil {
		return err
	}
	var sender addr.Address
	if from != "" {
		a, err := addr.Parse(from)
		if err != nil {
			sess.s.Log.Info("NOQUEUE: reject: MAIL from " + sess.cc.client() + ": 501 5.1.7 Bad sender address syntax; from=<" + from + ">")
			return reply(501, "5.1.7", "Bad sender address syntax")
		}
		if !a.IsASCII() && !opts.UTF8 {
			return reply(553, "5.6.7", "Must declare SMTPUTF8 to send unicode address")
		}
		sender = a
	}
	tx := &rules.Tx{Conn: &sess.cc.info, Sender: sender, HasSender: true, Size: opts.Size, UTF8: opts.UTF8}
	sess.tx = tx
	sess.cc.inTx.Store(true)
	d := sess.policy.Mail(sess.cc.ctx, tx, sender)
	if err := sess.verdict(d, "MAIL", ""); err != nil {
		sess.resetTx()
		return err
	}
	return nil
}

func (sess *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	tx := sess.tx
	if tx == nil {
		return reply(503, "5.5.1", "Error: need MAIL command")
	}
	rcpt, err := addr.Parse(to)
	if err != nil {
		sess.logReject("RCPT", 501, "5.1.3", "Bad recipient address syntax", to)
		return reply(501, "5.1.3", "Bad recipient address syntax")
	}
	if !rcpt.IsASCII() && !tx.UTF8 {
		return reply(553, "5.6.7", "Must declare SMTPUTF8 to send unicode address")
	}
	d := sess.policy.Rcpt(sess.cc.ctx, tx, rcpt)
	if err := sess.verdict(d, "RCPT", rcpt.String()); err != nil {
		return err
	}
	if tx.ID == "" {
		tx.ID = queue.NewID()
		sess.s.Log.Info(tx.ID + ": client=" + sess.cc.client())
	}
	tx.Rcpts = append(tx.Rcpts, rcpt)
	return nil
}

// verdict records a stage's decision and turns a refusal into the reply.
// Discard and hold apply to the whole message, as in Postfix's access maps.
func (sess *session) verdict(d rules.Decision, stage, rcpt string) error {
	if d.Source != rules.DefaultSource {
		sess.decisions = append(sess.decisions, d)
	}
	switch d.Kind {
	case rules.Reject, rules.Defer:
		d.LogFailure(sess.s.Log, "client", sess.cc.client())
		e := decisionError(d, sess.policy.Settings.SoftBounce)
		sess.logReject(stage, e.Code, statusString(e.EnhancedCode), e.Message, rcpt)
		return e
	case rules.Discard:
		sess.discard = true
	case rules.Hold:
		sess.hold = true
		if sess.holdReason == "" {
			sess.holdReason = d.Text
		}
	}
	return nil
}

// logReject writes Postfix's reject line:
// "NOQUEUE: reject: RCPT from host[ip]: 554 5.7.1 text; from=<a> to=<b> proto=ESMTP helo=<h>".
func (sess *session) logReject(stage string, code int, status, text, rcpt string) {
	id := "NOQUEUE"
	var b strings.Builder
	if sess.tx != nil && sess.tx.ID != "" {
		id = sess.tx.ID
	}
	b.WriteString(id + ": reject: " + stage + " from " + sess.cc.client() + ": " + itoa(code) + " " + status + " " + firstLine(text) + ";")
	if sess.tx != nil {
		b.WriteString(" from=<" + sess.tx.Sender.String() + ">")
	}
	if rcpt != "" {
		b.WriteString(" to=<" + rcpt + ">")
	}
	b.WriteString(" proto=" + sess.proto() + " helo=<" + sess.cc.info.Helo + ">")
	sess.s.Log.Info(b.String())
}

func (sess *session) proto() string {
	if sess.cc.esmtp {
		return "ESMTP"
	}
	return "SMTP"
}

func (sess *session) resetTx() {
	sess.tx = nil
	sess.cc.inTx.Store(false)
	sess.decisions = nil
	sess.hold, sess.holdReason, sess.discard = false, "", false
}

func (sess *session) Reset() { sess.resetTx() }

func (sess *session) Logout() error { return nil }

// decisionError converts a refusal into a concrete *smtp.SMTPError, never a
// wrapped one: go-smtp type-asserts, and a wrapped 550 would go out as 451.
func decisionError(d rules.Decision, soft bool) *smtp.SMTPError {
	code, status := d.Code, d.Status
	if soft && code/100 == 5 {
		code -= 100
		status = "4" + status[1:]
	}
	return reply(code, status, d.Text)
}

func reply(code int, status, text string) *smtp.SMTPError {
	var ec smtp.EnhancedCode
	parts := strings.SplitN(status, ".", 3)
	for i := range ec {
		if i < len(parts) {
			ec[i] = atoiSafe(parts[i])
		}
	}
	return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: text}
}

func statusString(ec smtp.EnhancedCode) string {
	return itoa(ec[0]) + "." + itoa(ec[1]) + "." + itoa(ec[2])
}

func atoiSafe(s string) int {
	n := 0
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0
		}
		n = n*10 + int(r-'0')
	}
	return n
}
