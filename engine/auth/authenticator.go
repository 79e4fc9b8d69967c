package auth

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Replies an Attempt ends with. go-smtp sends an *smtp.SMTPError as it is
// (it checks the type without errors.As, so they are never wrapped); the
// texts are RFC 4954's and say nothing about which part was wrong.
var (
	// ReplyInvalid answers wrong, unknown or malformed credentials.
	ReplyInvalid = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
	// ReplyTemporary answers a backend that could not check.
	ReplyTemporary = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure"}
	// ReplyTooMany answers a client the Limiter has blocked.
	ReplyTooMany = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many failed authentication attempts, try again later"}
)

// Authenticator runs AUTH for SMTP sessions: it picks the mechanism,
// consults the Limiter, asks the Backend and logs the outcome.
type Authenticator struct {
	Backend Backend
	// Limiter blocks clients that fail too often; nil means no limit.
	Limiter *Limiter
	// Logger gets one line per outcome. Default: slog.Default().
	Logger *slog.Logger
	// Timeout bounds one Backend call. Default: 30 seconds.
	Timeout time.Duration
}

// Mechanisms returns the mechanism names to advertise, for go-smtp's
// AuthSession.AuthMechanisms.
func (a *Authenticator) Mechanisms() []string { return []string{Plain, Login} }

// Start begins an AUTH exchange for go-smtp's AuthSession.Auth. ctx is the
// session's; client is its address. A blocked client is refused here,
// before it sends a password at all. The error, if any, is an
// *smtp.SMTPError to return to go-smtp as it is.
func (a *Authenticator) Start(ctx context.Context, mech string, client netip.Addr) (*Attempt, error) {
	t := &Attempt{a: a, ctx: ctx, mech: strings.ToUpper(mech), client: client}
	switch t.mech {
	case Plain:
		t.srv = NewPlainServer(t.check)
	case Login:
		t.srv = NewLoginServer(t.check)
	default:
		return nil, smtp.ErrAuthUnknownMechanism
	}
	if ok, retry := t.allowed(); !ok {
		t.done, t.temporary = true, true
		t.log(slog.LevelWarn, "too many failures, blocked for another "+retry.Round(time.Second).String(), "")
		return nil, ReplyTooMany
	}
	return t, nil
}

// Attempt is one AUTH exchange. It is a sasl.Server for go-smtp and, once
// go-smtp is done with it, tells the session how it went.
type Attempt struct {
	a      *Authenticator
	ctx    context.Context
	mech   string
	client netip.Addr
	srv    sasl.Server

	user      string // authenticated account, after success
	done      bool
	temporary bool
	outcome   error // what check decided, to tell its errors from the mechanism's
}

var _ sasl.Server = (*Attempt)(nil)

// User returns the account name after a successful exchange, else "".
// It is the backend's name for the account, which may differ from what
// the client typed.
func (t *Attempt) User() string { return t.user }

// Done reports whether the exchange has ended, in success or failure.
func (t *Attempt) Done() bool { return t.done }

// Temporary reports whether the exchange failed for a reason that may go
// away (backend down, client blocked for now): 454, not 535.
func (t *Attempt) Temporary() bool { return t.temporary }

// Mechanism returns the mechanism name, upper case.
func (t *Attempt) Mechanism() string { return t.mech }

// Next implements sasl.Server. Every error it returns is one of the Reply
// values.
func (t *Attempt) Next(response []byte) (challenge []byte, done bool, err error) {
	if t.done {
		return nil, true, ReplyInvalid
	}
	challenge, done, err = t.srv.Next(response)
	if err == nil {
		t.done = done
		return challenge, done, nil
	}
	t.done = true
	switch {
	case t.outcome == nil:
		// The mechanism refused the exchange before any password
		// was checked: malformed, too long, a foreign authzid.
		t.fail()
		t.log(slog.LevelWarn, err.Error(), "")
		return nil, true, ReplyInvalid
	case errors.Is(t.outcome, ReplyTooMany):
		t.temporary = true
		return nil, true, ReplyTooMany
	case errors.Is(t.outcome, ReplyTemporary):
		t.temporary = true
		return nil, true, ReplyTemporary
	}
	return nil, true, ReplyInvalid
}

// check is the mechanisms' CheckFunc. The password goes to the backend
// and nowhere else.
func (t *Attempt) check(user, pass string) error {
	// The client may have been blocked by another session's failures
	// since Start.
	if ok, retry := t.allowed(); !ok {
		t.outcome = ReplyTooMany
		t.log(slog.LevelWarn, "too many failures, blocked for another "+retry.Round(time.Second).String(), user)
		return t.outcome
	}
	if t.a.Backend == nil {
		t.outcome = ReplyTemporary
		t.log(slog.LevelError, "no authentication backend configured", user)
		return t.outcome
	}
	timeout := t.a.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(t.ctx, timeout)
	defer cancel()
	res, err := t.a.Backend.Authenticate(ctx, user, pass, t.client)
	switch {
	case err != nil:
		t.outcome = ReplyTemporary
		t.log(slog.LevelWarn, redact(err.Error(), pass), user)
	case !res.OK:
		t.outcome = ReplyInvalid
		t.fail()
		reason := res.Reason
		if reason == "" {
			reason = "authentication failure"
		}
		t.log(slog.LevelWarn, redact(reason, pass), user)
	default:
		t.outcome = nil
		t.user = res.User
		if t.user == "" {
			t.user = user
		}
		if t.a.Limiter != nil {
			t.a.Limiter.Succeed(t.client)
		}
		t.logger().Info(t.clientName()+": SASL "+t.mech+" authentication succeeded",
			"sasl_method", t.mech, "sasl_username", t.user)
		return nil
	}
	return t.outcome
}

func (t *Attempt) allowed() (bool, time.Duration) {
	if t.a.Limiter == nil {
		return true, 0
	}
	return t.a.Limiter.Allow(t.client)
}

func (t *Attempt) fail() {
	if t.a.Limiter != nil {
		t.a.Limiter.Fail(t.client)
	}
}

// clientName is Postfix's name[address] with the name left out: the
// session logs the host name on its own connect line.
func (t *Attempt) clientName() string {
	if !t.client.IsValid() {
		return "unknown"
	}
	return "[" + t.client.String() + "]"
}

func (t *Attempt) logger() *slog.Logger {
	if t.a.Logger != nil {
		return t.a.Logger
	}
	return slog.Default()
}

// log writes Postfix's failure line:
//
//	warning: [192.0.2.1]: SASL LOGIN authentication failed: wrong password sasl_method=LOGIN sasl_username=ann
func (t *Attempt) log(level slog.Level, reason, user string) {
	args := []any{"sasl_method", t.mech}
	if user != "" {
		args = append(args, "sasl_username", user)
	}
	t.logger().Log(t.ctx, level, t.clientName()+": SASL "+t.mech+" authentication failed: "+reason, args...)
}

// redact removes the password from text that came from a backend, in case
// one quotes what it was given. Our own texts never contain it.
func redact(s, pass string) string {
	if pass == "" || !strings.Contains(s, pass) {
		return s
	}
	return strings.ReplaceAll(s, pass, "[password]")
}
