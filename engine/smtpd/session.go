package smtpd

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/larkpost/larkpost/engine/auth"
	"github.com/larkpost/larkpost/engine/milter"
	"github.com/larkpost/larkpost/rules"
)

// session is one go-smtp session: from EHLO to QUIT, or to STARTTLS, after
// which go-smtp starts a new one on the same clientConn. The policy state
// lives in the connection's rules.Intake; the session only speaks SMTP.
type session struct {
	s  *Server
	cc *clientConn
	c  *smtp.Conn
	in *rules.Intake

	// DSN parameters of the current transaction, which the policy does
	// not see but the queue keeps for bounces.
	from    string // MAIL FROM as given, for reject logs
	envID   string
	retFull bool
	notify  [][]string
	orcpt   []string
}

var _ smtp.Session = (*session)(nil)

func newSession(s *Server, cc *clientConn, c *smtp.Conn) (*session, error) {
	sess := &session{s: s, cc: cc, c: c, in: cc.intake}
	if err := sess.checkHelo(); err != nil {
		return nil, err
	}
	return sess, nil
}

// checkHelo runs on_helo when the HELO/EHLO name is new. go-smtp calls
// NewSession only for the first EHLO, so a changed name is judged at the
// next MAIL FROM.
func (sess *session) checkHelo() error {
	return sess.refusal(sess.in.Helo(sess.cc.ctx, sess.c.Hostname()), "HELO", "")
}

// sync follows a STARTTLS under the session: go-smtp keeps its session
// across it, but RFC 3207 wants none of its state kept (see tls.go).
func (sess *session) sync() {
	if sess.in == sess.cc.intake {
		return
	}
	sess.in = sess.cc.intake
	sess.from, sess.envID, sess.retFull, sess.notify, sess.orcpt = "", "", false, nil, nil
}

func (sess *session) Mail(from string, opts *smtp.MailOptions) error {
	sess.cc.setVerb("MAIL")
	sess.sync()
	if err := sess.ended(); err != nil {
		return err
	}
	if sess.cc.needHelo.Load() {
		return reply(503, "5.5.1", "Error: send HELO/EHLO first")
	}
	if err := sess.checkHelo(); err != nil {
		return err
	}
	if sess.cc.listener.TLSLevel == "encrypt" && !sess.cc.info.TLS {
		sess.from = from
		sess.logReject("MAIL", 530, "5.7.0", "Must issue a STARTTLS command first", "", "smtpd")
		return reply(530, "5.7.0", "Must issue a STARTTLS command first")
	}
	if sess.cc.listener.RequireAuth && sess.cc.info.User == "" {
		sess.from = from
		sess.logReject("MAIL", 530, "5.7.0", "Authentication required", "", "smtpd")
		return reply(530, "5.7.0", "Authentication required")
	}
	if sess.in.Tx != nil {
		return reply(503, "5.5.1", "Error: nested MAIL command")
	}
	if err := sess.resources(opts.Size); err != nil {
		sess.from = from
		sess.logReject("MAIL", err.Code, fmt.Sprintf("%d.%d.%d", err.EnhancedCode[0], err.EnhancedCode[1], err.EnhancedCode[2]), err.Message, "", "smtpd")
		return err
	}
	sess.from = from
	d := sess.in.Mail(sess.cc.ctx, from, opts.Size, opts.UTF8)
	if err := sess.refusal(d, "MAIL", ""); err != nil {
		return err
	}
	if err := sess.refusal(sess.milterHelo(sess.cc.ctx), "HELO", ""); err != nil {
		sess.in.Reset()
		return err
	}
	if sess.cc.milters != nil {
		if u := sess.cc.info.User; u != "" {
			for _, m := range sess.cc.milters.sessions {
				m.SetMacro("{auth_authen}", u)
				m.SetMacro("{auth_type}", sess.cc.authMech)
			}
		}
		var args []string
		if opts.Size > 0 {
			args = append(args, "SIZE="+strconv.FormatInt(opts.Size, 10))
		}
		md := sess.milterStage(rules.StageMail, from, func(m *milter.Session) (milter.Verdict, error) { return m.Mail(sess.cc.ctx, from, args) })
		if err := sess.refusal(md, "MAIL", ""); err != nil {
			sess.in.Reset()
			return err
		}
	}
	sess.cc.inTx.Store(true)
	sess.envID, sess.retFull = opts.EnvelopeID, opts.Return == smtp.DSNReturnFull
	return nil
}

func (sess *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	sess.cc.setVerb("RCPT")
	sess.sync()
	if err := sess.ended(); err != nil {
		return err
	}
	tx := sess.in.Tx
	if tx == nil {
		return reply(503, "5.5.1", "Error: need MAIL command")
	}
	hadID := tx.ID != ""
	if err := sess.refusal(sess.in.Rcpt(sess.cc.ctx, to), "RCPT", to); err != nil {
		return err
	}
	if sess.cc.milters != nil {
		if tx.ID != "" {
			for _, m := range sess.cc.milters.sessions {
				m.SetMacro("i", tx.ID)
			}
		}
		md := sess.milterStage(rules.StageRcpt, to, func(m *milter.Session) (milter.Verdict, error) { return m.Rcpt(sess.cc.ctx, to, nil) })
		if md.Refused() {
			tx.Rcpts = tx.Rcpts[:len(tx.Rcpts)-1] // the hook's accept does not stand
			return sess.refusal(md, "RCPT", to)
		}
	}
	if !hadID {
		line := tx.ID + ": client=" + sess.cc.client()
		if u := sess.cc.info.User; u != "" {
			line += ", sasl_method=" + sess.cc.authMech + ", sasl_username=" + u
		}
		sess.s.Log.Info(line)
	}
	var notify []string
	for _, n := range opts.Notify {
		notify = append(notify, string(n))
	}
	sess.notify = append(sess.notify, notify)
	sess.orcpt = append(sess.orcpt, opts.OriginalRecipient)
	return nil
}

// refusal turns a refused decision into the SMTP reply and logs it.
func (sess *session) refusal(d rules.Decision, stage, rcpt string) error {
	if !d.Refused() {
		return nil
	}
	d.LogFailure(sess.s.Log, "client", sess.cc.client())
	e := reply(d.Code, d.Status, d.Text)
	line := sess.logReject(stage, e.Code, d.Status, e.Message, rcpt, Decider(d))
	switch {
	case d.Failed():
		sess.s.notify("software", "hook "+d.Hook+" failed at "+d.Source+": "+d.Err.Error()+"\n\n"+line)
	case d.Source != rules.DefaultSource:
		sess.s.notify("policy", line+"\n\ndecided by "+d.Hook+" at "+d.Source)
	}
	return e
}

// logReject writes Postfix's reject line:
// "NOQUEUE: reject: RCPT from host[ip]: 554 5.7.1 text; from=<a> to=<b> proto=ESMTP helo=<h>".
func (sess *session) logReject(stage string, code int, status, text, rcpt, decider string) string {
	id := "NOQUEUE"
	var b strings.Builder
	tx := sess.in.Tx
	if tx != nil && tx.ID != "" {
		id = tx.ID
	}
	b.WriteString(id + ": reject: " + stage + " from " + sess.cc.client() + ": " + itoa(code) + " " + status + " " + firstLine(text) + ";")
	ev := Reject{Listener: sess.cc.info.Listener, Stage: stage, Code: code, Status: status, Text: firstLine(text), Decider: decider,
		ID: id, To: rcpt, Client: sess.cc.client()}
	if tx != nil {
		ev.From = tx.Sender.String()
		b.WriteString(" from=<" + ev.From + ">")
	} else if stage == "MAIL" {
		ev.From = sess.from
		b.WriteString(" from=<" + sess.from + ">")
	}
	sess.s.observer().Rejected(ev)
	if rcpt != "" {
		b.WriteString(" to=<" + rcpt + ">")
	}
	b.WriteString(" proto=" + sess.proto() + " helo=<" + sess.cc.info.Helo + ">")
	sess.s.Log.Info(b.String())
	return b.String()
}

func (sess *session) proto() string {
	if sess.cc.esmtp.Load() {
		return "ESMTP"
	}
	return "SMTP"
}

func (sess *session) Reset() {
	if sess.cc.bdatOpen {
		// RSET or EHLO between BDAT chunks. go-smtp v0.26 then lets the
		// aborted transfer's goroutine report into the next transaction's
		// result channel (a wrong 554 there, or a goroutine blocked for
		// good): the connection ends here instead.
		sess.s.Log.Info("reset during a BDAT transfer from " + sess.cc.client() + ": disconnecting")
		sess.cc.kill()
	}
	sess.in.Reset()
	if sess.cc.milters != nil {
		for _, m := range sess.cc.milters.sessions {
			m.Abort(sess.cc.ctx)
		}
	}
	sess.envID, sess.retFull, sess.notify, sess.orcpt = "", false, nil, nil
	sess.cc.inTx.Store(false)
}

func (sess *session) Logout() error { return nil }

// ended refuses commands once the connection was killed: go-smtp may
// still have pipelined commands in its buffer, and none of them may
// start a transaction.
func (sess *session) ended() error {
	if sess.cc.dead.Load() {
		return reply(421, "4.4.2", sess.cc.host+" Error: connection ended")
	}
	return nil
}

// resources is Postfix's check at MAIL FROM: room on the queue file
// system for the largest message (queue_minfree, 1.5 times the size
// limit or the declared SIZE), and room in the sessions' memory budget.
// Neither allocates anything: SIZE= is only a number to compare.
func (sess *session) resources(declared int64) *smtp.SMTPError {
	set := sess.in.Policy.Settings
	if sess.s.Space != nil {
		need := max(set.MessageSizeLimit, declared)
		need += need / 2
		if !sess.s.Space.HasRoom(max(need, set.QueueMinfree), 0) {
			sess.s.notify("resource", "insufficient queue file system space: "+itoa64(sess.s.Space.Free())+" bytes free")
			return reply(452, "4.3.1", "Insufficient system storage")
		}
	}
	if sess.s.inflight.Load() >= set.InflightBytes {
		return reply(452, "4.3.1", "Insufficient system resources")
	}
	return nil
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

// authOffered says whether AUTH is offered now: on a listener with
// sasl_auth_enable, over TLS unless tls_auth_only is off, once per
// session, outside a transaction.
func (sess *session) authOffered() bool {
	cc := sess.cc
	switch {
	case sess.s.Auth == nil || !cc.listener.SASLAuth:
		return false
	case cc.listener.TLSAuthOnly && !cc.info.TLS:
		return false
	}
	return cc.info.User == ""
}

// AuthMechanisms is go-smtp's AuthSession: the EHLO reply's AUTH line.
func (sess *session) AuthMechanisms() []string {
	sess.sync()
	if !sess.authOffered() {
		return nil
	}
	return sess.s.Auth.Mechanisms()
}

// Auth starts an AUTH exchange (engine/auth does the mechanism, the
// backend and the failure limit); a login the backend accepts is then
// put to on_auth.
func (sess *session) Auth(mech string) (sasl.Server, error) {
	cc := sess.cc
	cc.setVerb("AUTH")
	sess.sync()
	if err := sess.ended(); err != nil {
		return nil, err
	}
	switch {
	case cc.needHelo.Load():
		return nil, reply(503, "5.5.1", "Error: send HELO/EHLO first")
	case cc.info.User != "":
		return nil, reply(503, "5.5.1", "Error: already authenticated")
	case sess.in.Tx != nil:
		return nil, reply(503, "5.5.1", "Error: MAIL transaction in progress")
	case !sess.authOffered():
		return nil, reply(503, "5.5.1", "Error: authentication not enabled")
	}
	// on_helo judges the name (again after STARTTLS) before on_auth
	// sees it.
	if err := sess.checkHelo(); err != nil {
		return nil, err
	}
	att, err := sess.s.Auth.Start(cc.ctx, mech, cc.info.IP)
	if err != nil {
		// A client blocked by earlier failures gets 454 and keeps its
		// session: only the failure that reaches the limit ends one, and
		// mail that needs no login may still come from this address.
		return nil, err
	}
	return &authStep{sess: sess, att: att}, nil
}

// authFailed turns a failed exchange into its reply; a client that has
// now failed too often loses its session, as Postfix's anvil would have
// it (the Limiter refuses its AUTH for a while, from any session).
func (sess *session) authFailed(err error) error {
	if l := sess.s.Auth.Limiter; l != nil {
		if ok, _ := l.Allow(sess.cc.info.IP); !ok {
			sess.cc.kill()
			return reply(421, "4.7.0", sess.cc.host+" Error: too many failed authentication attempts")
		}
	}
	return err
}

// authStep is one AUTH exchange as go-smtp runs it.
type authStep struct {
	sess *session
	att  *auth.Attempt
}

func (a *authStep) Next(response []byte) ([]byte, bool, error) {
	challenge, done, err := a.att.Next(response)
	if err != nil {
		return nil, true, a.sess.authFailed(err)
	}
	if !done {
		return challenge, false, nil
	}
	sess, user, mech := a.sess, a.att.User(), a.att.Mechanism()
	if d := sess.in.Auth(sess.cc.ctx, user, mech); d.Refused() {
		d.LogFailure(sess.s.Log, "client", sess.cc.client())
		sess.s.Log.Info("NOQUEUE: reject: AUTH from " + sess.cc.client() + ": " + itoa(d.Code) + " " + d.Status + " " + d.Text +
			"; sasl_method=" + mech + ", sasl_username=" + user + "; source=" + d.Source)
		return nil, true, reply(d.Code, d.Status, d.Text)
	}
	sess.cc.info.User = user
	sess.cc.authMech = mech
	return nil, true, nil
}
