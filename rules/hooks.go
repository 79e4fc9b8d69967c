package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.starlark.net/starlark"
	"go.starlark.net/syntax"

	"github.com/larkpost/larkpost/stdlib/addr"
	"github.com/larkpost/larkpost/stdlib/re"
)

// Hook identifies a hook point.
type Hook int

// The hook points, in the order a message meets them.
const (
	HookConnect Hook = iota
	HookHelo
	HookAuth
	HookMail
	HookRcpt
	HookData
	HookRewrite
	HookExpand
	HookRoute
	HookFile
	// The post-queue event hooks: after a delivery result is on disk.
	HookDelivered
	HookDeferred
	HookBounced
	numHooks
)

var hookSpecs = [numHooks]struct {
	name   string
	params []string
}{
	HookConnect: {"on_connect", []string{"conn"}},
	HookHelo:    {"on_helo", []string{"conn", "name"}},
	HookAuth:    {"on_auth", []string{"conn", "user", "mechanism"}},
	HookMail:    {"on_mail", []string{"tx", "sender"}},
	HookRcpt:    {"on_rcpt", []string{"tx", "rcpt"}},
	HookData:    {"on_data", []string{"tx", "msg"}},
	HookRewrite: {"rewrite", []string{"addr", "ctx"}},
	HookExpand:  {"expand", []string{"rcpt"}},
	HookRoute:   {"route", []string{"rcpt", "msg"}},
	HookFile:    {"file", []string{"msg", "user"}},

	HookDelivered: {"on_delivered", []string{"msg", "rcpt", "result"}},
	HookDeferred:  {"on_deferred", []string{"msg", "rcpt", "result"}},
	HookBounced:   {"on_bounced", []string{"msg", "rcpt", "result"}},
}

var hookByName = func() map[string]Hook {
	m := map[string]Hook{}
	for h, s := range hookSpecs {
		m[s.name] = Hook(h)
	}
	return m
}()

func (h Hook) String() string { return hookSpecs[h].name }

func hookNames() []string {
	out := make([]string, len(hookSpecs))
	for i, s := range hookSpecs {
		out[i] = s.name
	}
	return out
}

// Has reports whether the script defines hook h.
func (p *Policy) Has(h Hook) bool { return p.hooks[h] != nil }

// stepChunk is how many steps a hook runs between deadline checks: about
// half a millisecond of CPU, and no timer per call.
const stepChunk = 100_000

// hookCall is the per-call state builtins reach through the thread: the
// step and time budget, and the memory budget the guards charge (see
// guard.go). A zero deadline means none (loading a config).
type hookCall struct {
	ctx      context.Context
	deadline time.Time
	maxSteps uint64
	maxMem   int64 // bytes the guarded operations may allocate
	mem      int64 // bytes they have allocated so far
	memScope memScope
	ret      syntax.Position // the last return statement run (see guardReturn)
}

// source is the line that returned the call's value: the return
// statement that ran last, or the def when none was noted.
func (hc *hookCall) source(fn *starlark.Function) string {
	if hc.ret.IsValid() {
		return posString(hc.ret)
	}
	return posString(fn.Position())
}

// call runs one hook on a fresh Thread under the step limit and deadline.
// Any failure (error, overrun, bad return value) becomes a temporary
// decision: a bad script must never bounce or lose mail.
//
// The deadline is checked every stepChunk steps from OnMaxSteps rather than
// by a timer: Cancel cannot interrupt a Go builtin anyway (builtins doing
// I/O get the deadline through ContextOf), so a timer would only catch what
// the step hook catches, at the price of an allocation per call.
func (p *Policy) call(ctx context.Context, h Hook, args ...starlark.Value) Decision {
	fn := p.hooks[h]
	name := hookSpecs[h].name
	v, source, err := p.callValue(ctx, h, args...)
	if err != nil {
		src := posString(fn.Position())
		var ee *starlark.EvalError
		if errors.As(err, &ee) {
			if pos := scriptPos(ee.CallStack); pos.IsValid() {
				src = posString(pos)
			}
		}
		return hookFailure(name, src, err)
	}
	switch v := v.(type) {
	case starlark.NoneType:
		return Decision{Kind: Continue, Hook: name}
	case *decisionValue:
		d := v.d
		d.Hook = name
		if d.Source == "" {
			d.Source = source
		}
		return d
	}
	return hookFailure(name, source,
		fmt.Errorf("%s returned %s, want a decision (accept(), reject(), ...) or None", name, v.Type()))
}

// callKey is the thread-local key of the hookCall; it is also where
// stdlib/re finds the call's memory budget.
const callKey = re.BudgetKey

// scriptError names the script line where a hook failed.
func (p *Policy) scriptError(h Hook, err error) error {
	src := posString(p.hooks[h].Position())
	var ee *starlark.EvalError
	if errors.As(err, &ee) {
		if pos := scriptPos(ee.CallStack); pos.IsValid() {
			src = posString(pos)
		}
	}
	return fmt.Errorf("%s at %s: %w", hookSpecs[h].name, src, err)
}

// callValue runs hook h on a fresh Thread under the step limit and
// deadline and returns what it returned, and the line that returned it.
func (p *Policy) callValue(ctx context.Context, h Hook, args ...starlark.Value) (starlark.Value, string, error) {
	hc := &hookCall{ctx: ctx, deadline: time.Now().Add(p.Settings.HookTimeout), maxSteps: p.Settings.HookMaxSteps,
		maxMem: p.Settings.HookMaxMemory, memScope: scopeHook}
	th := &starlark.Thread{Name: hookSpecs[h].name, Print: p.print, OnMaxSteps: onMaxSteps}
	th.SetLocal(callKey, hc)
	p.dns.Bind(th)
	th.SetMaxExecutionSteps(min(stepChunk, hc.maxSteps))
	var start time.Time
	if p.obs != nil {
		start = time.Now()
	}
	v, err := starlark.Call(th, p.hooks[h], starlark.Tuple(args), nil)
	if p.obs != nil {
		p.obs(hookSpecs[h].name, time.Since(start), CallOutcome(err))
	}
	return v, hc.source(p.hooks[h]), err
}

// HookObserver is told each hook or filter call's duration and outcome
// (ok, failed or overrun), for the metrics. It must be quick.
type HookObserver func(hook string, d time.Duration, outcome string)

// ObserveHooks makes p report each hook call to f; the server sets it on
// every policy it loads.
func (p *Policy) ObserveHooks(f HookObserver) { p.obs = f }

// CallOutcome classifies a hook or filter call's error: "overrun" when a
// budget (steps, time, memory) stopped it, "failed" for any other error.
func CallOutcome(err error) string {
	if err == nil {
		return "ok"
	}
	s := err.Error()
	if strings.Contains(s, "too many steps") || strings.Contains(s, "deadline exceeded") || strings.Contains(s, "memory budget exceeded") {
		return "overrun"
	}
	return "failed"
}

func onMaxSteps(th *starlark.Thread) {
	hc, _ := th.Local(callKey).(*hookCall)
	switch {
	case hc == nil || th.Steps >= hc.maxSteps:
		th.Cancel("too many steps")
	case !hc.deadline.IsZero() && time.Now().After(hc.deadline):
		th.Cancel("hook deadline exceeded")
	case hc.ctx.Err() != nil:
		th.Cancel("session ended")
	default:
		th.SetMaxExecutionSteps(min(th.Steps+stepChunk, hc.maxSteps))
	}
}

// ContextOf returns a context for the hook call running on th, bounded by
// the hook's deadline, for builtins that do I/O. The caller must call cancel.
func ContextOf(th *starlark.Thread) (context.Context, context.CancelFunc) {
	if hc, ok := th.Local(callKey).(*hookCall); ok {
		return hc.Context()
	}
	return context.WithCancel(context.Background())
}

// Context is the call's context bounded by its deadline (stdlib/dns.Call).
func (hc *hookCall) Context() (context.Context, context.CancelFunc) {
	if hc.deadline.IsZero() {
		return context.WithCancel(hc.ctx)
	}
	return context.WithDeadline(hc.ctx, hc.deadline)
}

func (p *Policy) print(th *starlark.Thread, msg string) {
	p.log.Info("script: "+msg, "hook", th.Name, "source", callerSource(th))
}

// LogFailure writes the log line for a failed hook; callers add their ids.
func (d Decision) LogFailure(l *slog.Logger, args ...any) {
	if d.Err == nil {
		return
	}
	l.Error("hook failed: "+d.Hook+" at "+d.Source+": "+d.Err.Error(), args...)
}

// stage runs hook h, if the script has it, then the default policy when
// the hook has no verdict. A hook's side effect (warn, prepend, redirect,
// bcc) rides on the default verdict as its Effect.
func (p *Policy) stage(ctx context.Context, h Hook, def func() Decision, args ...starlark.Value) Decision {
	if p.hooks[h] == nil {
		return def()
	}
	d := p.call(ctx, h, args...)
	switch {
	case d.Kind.IsEffect():
		v := def()
		v.Effect = &d
		return v
	case d.Kind != Continue:
		return d
	}
	return def()
}

func accepted(hook string) func() Decision {
	return func() Decision { return Decision{Kind: Accept, Source: DefaultSource, Hook: hook} }
}

// Connect decides whether a client may talk to us at all.
func (p *Policy) Connect(ctx context.Context, c *Conn) Decision {
	return p.stage(ctx, HookConnect, accepted("on_connect"), connValue{c})
}

// Helo checks the HELO/EHLO name.
func (p *Policy) Helo(ctx context.Context, c *Conn, name string) Decision {
	return p.stage(ctx, HookHelo, accepted("on_helo"), connValue{c}, starlark.String(name))
}

// Auth judges a successful login before it counts: on_auth sees who
// logged in and how (never the password) and may refuse it.
func (p *Policy) Auth(ctx context.Context, c *Conn, user, mechanism string) Decision {
	return p.stage(ctx, HookAuth, accepted("on_auth"), connValue{c}, starlark.String(user), starlark.String(mechanism))
}

// Mail checks the envelope sender.
func (p *Policy) Mail(ctx context.Context, tx *Tx, sender addr.Address) Decision {
	return p.stage(ctx, HookMail, accepted("on_mail"), txValue{tx, p.Settings.RecipientDelimiter}, addr.NewValue(sender, p.Settings.RecipientDelimiter))
}

// Rcpt checks one recipient; without a verdict from the script the default
// policy applies: local and relay domains are accepted, anything else only
// from trusted networks or authenticated clients.
func (p *Policy) Rcpt(ctx context.Context, tx *Tx, rcpt addr.Address) Decision {
	return p.stage(ctx, HookRcpt, func() Decision { return p.defaultRcpt(tx, rcpt) },
		txValue{tx, p.Settings.RecipientDelimiter}, addr.NewValue(rcpt, p.Settings.RecipientDelimiter))
}

// defaultRcpt is package postfix's recipient check as a decision. A
// table that failed defers the recipient, logged as Postfix logs a
// lookup error.
func (p *Policy) defaultRcpt(tx *Tx, rcpt addr.Address) Decision {
	if r := p.tables.CheckRecipient(p.postfixConfig(), rcpt, tx.Conn.InNetworks || tx.Conn.User != ""); r != nil {
		if r.Err != nil {
			p.log.Warn("warning: " + r.Err.Error())
			return Decision{Kind: Defer, Code: r.Code, Status: r.Status, Source: DefaultSource, Hook: "on_rcpt", Text: r.Text}
		}
		return Decision{Kind: Reject, Code: r.Code, Status: r.Status, Source: DefaultSource, Hook: "on_rcpt", Text: r.Text}
	}
	return Decision{Kind: Accept, Source: DefaultSource, Hook: "on_rcpt"}
}

// Data checks the whole message before it is queued.
func (p *Policy) Data(ctx context.Context, tx *Tx, m *Message) Decision {
	return p.stage(ctx, HookData, accepted("on_data"), txValue{tx, p.Settings.RecipientDelimiter}, msgValue{m})
}

// IsLocalUser reports whether user is in local_recipients; without that
// list every local part is accepted (a development catch-all).
func (p *Policy) IsLocalUser(user string) bool { return p.postfixConfig().IsLocalUser(user) }

// MailboxPath expands mailbox_path for a local user.
func (p *Policy) MailboxPath(user, domain string) string {
	return p.postfixConfig().ExpandMailboxPath(user, domain)
}

// Mailbox returns the mailbox (directory) name for a local recipient: the
// local part, lower-cased, without its +extension. valid is false when the
// name cannot safely be a directory name.
func (p *Policy) Mailbox(rcpt addr.Address) (name string, valid bool) {
	return p.postfixConfig().Mailbox(rcpt)
}
