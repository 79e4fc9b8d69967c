package rules

import (
	"context"
	"strings"

	"github.com/larkpost/larkpost/stdlib/addr"
	"github.com/larkpost/larkpost/stdlib/authres"
)

// Stage names an intake stage. Stages lists them in the order the server
// meets them; the SMTP server, `larkpost test` and `larkpost trace` all go
// through Intake, so they cannot disagree about order or semantics.
type Stage string

// The intake stages.
const (
	StageConnect Stage = "connect"
	StageHelo    Stage = "helo"
	StageMail    Stage = "mail"
	StageRcpt    Stage = "rcpt"
	StageData    Stage = "data"
)

// Stages is the intake stage list, in order.
var Stages = []Stage{StageConnect, StageHelo, StageMail, StageRcpt, StageData}

// Step is one entry of a decision log: what was decided at a stage, about
// what (the HELO name, sender or recipient), by whom.
type Step struct {
	Stage Stage
	Arg   string
	Decision
}

// Intake is the policy side of one client connection. It runs the hooks
// stage by stage, applies the default policy and Postfix's whole-message
// semantics (discard and hold at any stage apply to the message), and keeps
// the decision log that travels with the message.
type Intake struct {
	Policy *Policy
	Conn   *Conn
	Tx     *Tx
	NewID  func() string // queue ids; the dry run uses a fixed one

	Hold       bool
	HoldReason string
	Discard    bool

	connLog []Step // connect and helo, kept across transactions
	txLog   []Step

	// hold or discard decided at connect or HELO applies to every
	// message of the connection.
	connHold       bool
	connHoldReason string
	connDiscard    bool
	connEffects    []Decision
	txEffects      []Decision
	helo           string // the name on_helo last accepted

	// results are what the hooks' checks found (spf, dkim, dmarc, ...),
	// for the Authentication-Results header.
	results authres.Recorder
}

// NewIntake starts the intake of a connection.
func NewIntake(p *Policy, c *Conn, newID func() string) *Intake {
	return &Intake{Policy: p, Conn: c, NewID: newID}
}

// Log returns the decisions so far: the connection's, then the current
// transaction's.
func (in *Intake) Log() []Step {
	out := make([]Step, 0, len(in.connLog)+len(in.txLog))
	return append(append(out, in.connLog...), in.txLog...)
}

// record adds a step, applying soft_bounce, and the whole-message effects
// of discard and hold.
func (in *Intake) record(stage Stage, arg string, d Decision, conn bool) Decision {
	d = in.soften(d)
	if e := d.Effect; e != nil {
		d.Effect = nil
		in.record(stage, arg, *e, conn)
	}
	switch d.Kind {
	case Warn:
		in.Policy.log.Warn(in.logID() + ": warn: " + strings.ToUpper(string(stage)) + " from " + in.Conn.RDNS + "[" + in.Conn.IP.String() + "]: " + d.Text + "; arg=<" + arg + "> source=" + d.Source)
	case Prepend, Redirect, Bcc, Sign:
		if conn {
			in.connEffects = append(in.connEffects, d)
		} else {
			in.txEffects = append(in.txEffects, d)
		}
	case Discard:
		in.Discard = true
		in.connDiscard = in.connDiscard || conn
	case Hold:
		in.Hold = true
		if in.HoldReason == "" {
			in.HoldReason = d.Text
		}
		if conn && !in.connHold {
			in.connHold, in.connHoldReason = true, d.Text
		}
	}
	s := Step{Stage: stage, Arg: arg, Decision: d}
	if conn {
		in.connLog = append(in.connLog, s)
	} else {
		in.txLog = append(in.txLog, s)
	}
	return d
}

func (in *Intake) logID() string {
	if in.Tx != nil && in.Tx.ID != "" {
		return in.Tx.ID
	}
	return "NOQUEUE"
}

// Effects returns the prepend, redirect and bcc decisions that apply to
// the current message, in the order they were made.
func (in *Intake) Effects() []Decision {
	out := make([]Decision, 0, len(in.connEffects)+len(in.txEffects))
	return append(append(out, in.connEffects...), in.txEffects...)
}

// soften applies soft_bounce, Postfix's safety net: every 5xx becomes 4xx,
// so mistakes in a new policy cost delay, not mail.
func (in *Intake) soften(d Decision) Decision {
	// Syntax errors and size limits are protocol replies, not policy:
	// Postfix's soft_bounce leaves them alone, and "401" would be no reply.
	if d.Kind == Reject && in.Policy.Settings.SoftBounce && d.Source != syntaxSource && d.Code != 552 {
		d.Kind, d.Code, d.Status = Defer, d.Code-100, "4"+d.Status[1:]
	}
	return d
}

// Connect runs on_connect. A refusal at this stage is answered 554
// (reject) or 421 (defer) and ends the session, as RFC 5321 4.3.2 says.
func (in *Intake) Connect(ctx context.Context) Decision {
	d := in.soften(in.Policy.Connect(in.hookContext(ctx), in.Conn))
	in.results.BeginTx()
	switch d.Kind {
	case Reject:
		d.Code = 554
	case Defer:
		d.Code = 421
	}
	return in.record(StageConnect, in.Conn.IP.String(), d, true)
}

// Auth runs on_auth for a login the backend accepted.
func (in *Intake) Auth(ctx context.Context, user, mechanism string) Decision {
	d := in.soften(in.Policy.Auth(in.hookContext(ctx), in.Conn, user, mechanism))
	in.results.BeginTx()
	return d
}

// hookContext is ctx carrying the session's results recorder, where the
// checking modules (spf, dkim, ...) note what they found.
func (in *Intake) hookContext(ctx context.Context) context.Context {
	return authres.With(ctx, &in.results)
}

// AuthResults returns the Authentication-Results header field for the
// current transaction (RFC 8601, with the hostname as authserv-id), or ""
// when the hooks checked nothing.
func (in *Intake) AuthResults() string {
	return authres.Field(in.Policy.Settings.Hostname, in.results.Results())
}

// Helo runs on_helo when name differs from the last accepted one (go-smtp
// starts a session only at the first EHLO, so the server asks again at
// MAIL FROM). An unchanged name is not judged twice.
func (in *Intake) Helo(ctx context.Context, name string) Decision {
	if name == in.helo && name != "" {
		return Decision{Kind: Accept, Source: DefaultSource, Hook: "on_helo"}
	}
	in.Conn.Helo = name
	d := in.record(StageHelo, name, in.Policy.Helo(in.hookContext(ctx), in.Conn, name), true)
	in.results.BeginTx()
	if d.Kind == Reject || d.Kind == Defer {
		in.helo = ""
	} else {
		in.helo = name
	}
	return d
}

// syntaxSource marks refusals of malformed addresses, made before any hook.
const syntaxSource = "address syntax"

// parseAddr checks an envelope address as the server receives it; ok is
// false with the reply to give when it is malformed or needs SMTPUTF8.
func parseAddr(s string, utf8 bool, rcpt bool) (addr.Address, Decision, bool) {
	if s == "" && !rcpt {
		return addr.Address{}, Decision{}, true
	}
	a, err := addr.Parse(s)
	if err != nil {
		if rcpt {
			return a, Decision{Kind: Reject, Code: 501, Status: "5.1.3", Text: "Bad recipient address syntax", Source: syntaxSource}, false
		}
		return a, Decision{Kind: Reject, Code: 501, Status: "5.1.7", Text: "Bad sender address syntax", Source: syntaxSource}, false
	}
	if !a.IsASCII() && !utf8 {
		return a, Decision{Kind: Reject, Code: 553, Status: "5.6.7", Text: "Must declare SMTPUTF8 to send unicode address", Source: syntaxSource}, false
	}
	return a, Decision{}, true
}

// Mail checks the sender's syntax, starts a transaction and runs on_mail.
// After a refusal there is no transaction.
func (in *Intake) Mail(ctx context.Context, from string, size int64, utf8 bool) Decision {
	in.Reset()
	sender, bad, ok := parseAddr(from, utf8, false)
	if !ok {
		bad.Hook = "on_mail"
		return in.record(StageMail, from, bad, false)
	}
	in.Tx = &Tx{Conn: in.Conn, Sender: sender, HasSender: true, Size: size, UTF8: utf8}
	if d, bad := in.Policy.senderLogin(in.Conn, sender); bad {
		in.Tx = nil
		return in.record(StageMail, sender.String(), in.soften(d), false)
	}
	d := in.record(StageMail, sender.String(), in.Policy.Mail(in.hookContext(ctx), in.Tx, sender), false)
	if d.Kind == Reject || d.Kind == Defer {
		in.Tx = nil
	}
	return d
}

// Rcpt checks a recipient's syntax and runs on_rcpt and the default
// policy; an accepted recipient joins the transaction, and the first one
// gets the queue id.
//
// RCPT TO:<postmaster> without a domain, which RFC 5321 requires every
// server to take, is the postmaster of the first of destinations (the
// hostname when that list is empty).
func (in *Intake) Rcpt(ctx context.Context, to string) Decision {
	if strings.EqualFold(to, "postmaster") {
		domain := in.Policy.Settings.Hostname
		if d := in.Policy.Settings.Destinations; len(d) > 0 {
			domain = d[0]
		}
		to = "postmaster@" + domain
	}
	rcpt, bad, ok := parseAddr(to, in.Tx.UTF8, true)
	if !ok {
		bad.Hook = "on_rcpt"
		return in.record(StageRcpt, to, bad, false)
	}
	d := in.record(StageRcpt, rcpt.String(), in.Policy.Rcpt(in.hookContext(ctx), in.Tx, rcpt), false)
	if d.Kind == Reject || d.Kind == Defer {
		return d
	}
	if in.Tx.ID == "" && in.NewID != nil {
		in.Tx.ID = in.NewID()
	}
	in.Tx.Rcpts = append(in.Tx.Rcpts, rcpt)
	return d
}

// Data judges the received message: the size limit, then on_data.
func (in *Intake) Data(ctx context.Context, m *Message) Decision {
	if limit := in.Policy.Settings.MessageSizeLimit; m.Size > limit {
		return in.record(StageData, "", Decision{Kind: Reject, Code: 552, Status: "5.3.4", Hook: "on_data",
			Source: DefaultSource, Text: "Error: message file too big"}, false)
	}
	return in.record(StageData, "", in.Policy.Data(in.hookContext(ctx), in.Tx, m), false)
}

// Record adds a decision made outside the hooks (a milter's) to the
// log, with the same effects as a hook's: discard and hold apply to the
// message, and at connect and HELO to every message of the connection.
func (in *Intake) Record(stage Stage, arg string, d Decision) Decision {
	return in.record(stage, arg, d, stage == StageConnect || stage == StageHelo)
}

// Reset ends the transaction (RSET, end of DATA, a new MAIL).
func (in *Intake) Reset() {
	in.Tx = nil
	in.txLog = nil
	in.txEffects = nil
	in.results.ResetTx()
	in.Hold, in.HoldReason, in.Discard = in.connHold, in.connHoldReason, in.connDiscard
}

// Refused reports whether d stops what it judged.
func (d Decision) Refused() bool { return d.Kind == Reject || d.Kind == Defer }
