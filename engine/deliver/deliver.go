// Package deliver is the seam between the scheduler and the delivery
// agents: what a delivery asks for (a Request with its Route) and what it
// answers (a Result per recipient, with a typed Status). The agents live
// in the packages below it (local, smtp); the scheduler knows only this
// package.
package deliver

import (
	"context"
	"io"
	"strconv"
	"strings"

	"github.com/larkpost/larkpost/rules"
)

// Kind is a transport, parsed once when the recipient is routed.
type Kind uint8

// The transports. Hold, Error, Defer and Discard are pseudo-agents: they
// decide without delivering.
const (
	Local   Kind = iota + 1 // a mailbox: Maildir (path ends in "/") or mbox
	File                    // an alias to a file: appended in mbox format
	Pipe                    // a command
	SMTP                    // another SMTP server (MX lookup or a nexthop)
	LMTP                    // an LMTP server (TCP or unix socket)
	Hold                    // keep the whole message on hold
	Error                   // bounce with the route's status
	Defer                   // retry later with the route's status
	Discard                 // drop, reported as delivered
)

var kindNames = [...]string{"", "local", "file", "pipe", "smtp", "lmtp", "hold", "error", "defer", "discard"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && k != 0 {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// ParseKind reads a transport name as the policy writes it.
func ParseKind(s string) (Kind, bool) {
	for i, n := range kindNames {
		if i > 0 && n == s {
			return Kind(i), true
		}
	}
	return 0, false
}

// Remote reports the kinds that talk to another server: one transaction
// carries every recipient of a message for the same destination.
func (k Kind) Remote() bool { return k == SMTP || k == LMTP }

// Status is one recipient's outcome: an RFC 3463 enhanced status whose
// class says delivered (2), deferred (4) or bounced (5), the SMTP reply
// code when a server gave one, and the text for the log and the DSN.
type Status struct {
	Code     int    // the server's reply code; 0 when larkpost decided
	Enhanced string // "2.0.0", "4.4.1", "5.1.1"
	Text     string
}

// Sent is a successful delivery.
func Sent(text string) Status { return Status{Enhanced: "2.0.0", Text: text} }

// Temp is a failure worth retrying; enhanced must be of class 4.
func Temp(enhanced, text string) Status { return Status{Enhanced: enhanced, Text: text} }

// Perm is a failure for good; enhanced must be of class 5.
func Perm(enhanced, text string) Status { return Status{Enhanced: enhanced, Text: text} }

func (s Status) class() byte {
	if s.Enhanced == "" {
		return 0
	}
	return s.Enhanced[0]
}

// OK reports a delivery.
func (s Status) OK() bool { return s.class() == '2' }

// Permanent reports a failure that bounces.
func (s Status) Permanent() bool { return s.class() == '5' }

// Temporary reports a deferral: anything that is neither delivered nor
// failed for good, so an agent's malformed status retries rather than
// loses mail.
func (s Status) Temporary() bool { return !s.OK() && !s.Permanent() }

// Soften turns a permanent failure into a temporary one, as soft_bounce
// asks; the text says so.
func (s Status) Soften() Status {
	if !s.Permanent() {
		return s
	}
	s.Enhanced = "4" + s.Enhanced[1:]
	if s.Code >= 500 && s.Code < 600 {
		s.Code -= 100
	}
	s.Text += " (soft_bounce)"
	return s
}

// Harden turns a deferral into a failure for good: the message expired.
func (s Status) Harden(why string) Status {
	e := strings.TrimPrefix(s.Enhanced, "4")
	if e == s.Enhanced || e == "" {
		e = ".4.7"
	}
	return Status{Enhanced: "5" + e, Text: why}
}

// Result is one recipient's outcome and where it went, for the log.
type Result struct {
	Status
	// Relay names where it went: "local", "mx.example.net[192.0.2.1]:25",
	// or "none" when no server was reached; "" means the transport's name.
	Relay string
	TLS   string // "verified", "unverified" or "none" (remote agents)
	// Relayed: sent to a next hop without DSN while NOTIFY=SUCCESS was
	// asked, so a "relayed" DSN is owed (RFC 3461).
	Relayed bool
	// Site says the failure is the destination's (no connection, or the
	// server refused the session at the greeting, EHLO/HELO, STARTTLS or
	// AUTH), not one recipient's or one message's: Postfix's
	// smtp_site_fail. Enough of them in a row make the scheduler stop
	// trying the destination for a while.
	Site bool
}

// Body is a queued message, read by offset so that every agent streams
// it from the queue.
type Body interface {
	io.ReaderAt
	Size() int64
}

// Rcpt is one recipient of a request.
type Rcpt struct {
	Addr   string
	Orig   string   // the address as first given (ORCPT, or before expansion)
	Notify []string // DSN NOTIFY
}

// Request is one delivery: a message, a route, and the recipients that
// share it.
type Request struct {
	QueueID  string
	Sender   string
	Rcpts    []Rcpt
	Body     Body
	SMTPUTF8 bool
	EnvID    string // DSN ENVID
	RetFull  bool   // DSN RET=FULL
	Route    *Route
}

// Agent delivers a request and returns one Result per recipient, in
// order. It honours ctx: when the scheduler stops, a delivery in progress
// is abandoned with a temporary status.
type Agent interface {
	Deliver(ctx context.Context, req *Request) []Result
}

// AgentFunc lets a function be an Agent.
type AgentFunc func(ctx context.Context, req *Request) []Result

func (f AgentFunc) Deliver(ctx context.Context, req *Request) []Result { return f(ctx, req) }

// Route says how to deliver one recipient.
type Route struct {
	Kind    Kind
	Mailbox string            // Local: Maildir ("/" at the end) or mbox path; File: the path; Pipe: a shell command
	Argv    []string          // Pipe: the command words, run without a shell, macros not yet filled in
	Vars    map[string]string // Pipe: the macro values from the recipient (${sender} comes from the envelope)
	// AllowMinUser lets addresses starting with "-" reach a pipe command
	// (allow_min_user, read from the policy at each delivery).
	AllowMinUser bool
	// Owner is the account a File or Pipe target is delivered as when
	// larkpost runs as root (local(8): the owner of the .forward or
	// aliases file that named it, else default_privs; never root).
	Owner  string
	Remote *Destination  // SMTP, LMTP
	Filing *rules.Filing // Local: what the file step decided (nil: the inbox)
	Dest   string        // concurrency and grouping key: the mailbox, or transport:nexthop
	Status Status        // Error, Defer: the outcome
	Text   string        // Hold: why
	Source string        // what chose the transport: a script line, a table entry, "default policy"
}

// Destination says where a remote agent delivers.
type Destination struct {
	Host string // MX-resolved domain ("example.com"), or an explicit host when NoMX
	Port int    // default 25 (smtp) / 24 (lmtp tcp)
	// NoMX is the "[host]:port" form: no MX lookup, connect to the host's
	// A/AAAA records (or to the address, when Host is an IP literal).
	NoMX bool
	Unix string // lmtp over a unix socket path (then Host/Port unused)
	LMTP bool
	// RequireTLS defers unless STARTTLS with a verified certificate succeeds.
	RequireTLS bool
	NoTLS      bool // never STARTTLS
	// TLSLevel is the nexthop's smtp_tls_security_level ("may", "dane",
	// ...): at may and dane the agent's TLS policy (DANE, MTA-STS) may
	// require more for an MX host.
	TLSLevel string
	// Auth holds credentials for a smarthost (AUTH PLAIN, or LOGIN when only
	// LOGIN is offered). They are sent only over TLS unless AllowPlainAuth.
	Auth           *Auth
	AllowPlainAuth bool
}

// Auth holds SASL credentials.
type Auth struct{ User, Password string }

// Decide is the pseudo-agent for Error, Defer and Discard: the route
// already holds the outcome.
var Decide AgentFunc = func(_ context.Context, req *Request) []Result {
	st := req.Route.Status
	if req.Route.Kind == Discard {
		st = Sent("discarded")
	}
	out := make([]Result, len(req.Rcpts))
	for i := range out {
		out[i] = Result{Status: st}
	}
	return out
}
