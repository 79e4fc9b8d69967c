package ratelimit

import (
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/larkpost/larkpost/engine/state"
	"github.com/larkpost/larkpost/stdlib/statecall"
)

// MaxKey is the longest key, in bytes.
const MaxKey = 512

// Options are what the embedder gives the module.
type Options struct {
	// Store returns the state store, asked at every call so that it can
	// be opened (or replaced) after the module is made; nil, or a nil
	// store, makes every call a script error.
	Store func() state.Store
	// FailOpen makes take allowed and count 0 when the store fails;
	// otherwise take is refused and count fails the hook.
	FailOpen bool
	// Log gets one line per store failure (nil: none).
	Log func(string)
	// Timeout bounds one call's use of the store: 1s. The hook's own
	// deadline bounds it too.
	Timeout time.Duration
	// Now is the clock the Badger store judges buckets by: time.Now. The
	// Redis store uses its server's clock instead.
	Now func() time.Time
}

// failures counts store failures of every ratelimit module of the
// process, so that the figure survives a reload, which makes a new one.
var failures atomic.Uint64

// Failures returns how many calls of every ratelimit module in the
// process found the store failing.
func Failures() uint64 { return failures.Load() }

// Ratelimit is one `ratelimit` module with its options.
type Ratelimit struct {
	o    Options
	call *statecall.Caller
}

// New returns a ratelimit module's implementation; Module gives the
// Starlark module.
func New(o Options) *Ratelimit {
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Ratelimit{o: o, call: statecall.New("ratelimit", o.Store, o.Timeout, o.Log, &failures)}
}

// Module returns the `ratelimit` module.
func Module(o Options) *starlarkstruct.Module { return New(o).Module() }

// Module returns r as the `ratelimit` Starlark module.
func (r *Ratelimit) Module() *starlarkstruct.Module {
	return &starlarkstruct.Module{Name: "ratelimit", Members: starlark.StringDict{
		"take":  starlark.NewBuiltin("ratelimit.take", r.take),
		"count": starlark.NewBuiltin("ratelimit.count", r.count),
	}}
}

// Failures returns how many of r's calls found the store failing.
func (r *Ratelimit) Failures() uint64 { return r.call.Failures() }

func (r *Ratelimit) take(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var key string
	var rateV starlark.Value = starlark.String("100/h")
	var burstV starlark.Value = starlark.None
	cost := 1
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "key", &key, "rate?", &rateV, "burst?", &burstV, "cost?", &cost); err != nil {
		return nil, err
	}
	if err := checkKey(key); err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	rs, ok := rateV.(starlark.String)
	if !ok {
		return nil, fmt.Errorf("%s: rate: want a string such as \"100/h\", got %s", b.Name(), rateV.Type())
	}
	rate, err := state.ParseRate(string(rs))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	burst := rate.N
	if burstV != starlark.None {
		if err := starlark.AsInt(burstV, &burst); err != nil || burst < 1 {
			return nil, fmt.Errorf("%s: burst: want a number of tokens, 1 or more, or None, got %s", b.Name(), burstV)
		}
	}
	if cost < 0 || cost > burst {
		return nil, fmt.Errorf("%s: cost: %d is not 0 to burst (%d)", b.Name(), cost, burst)
	}
	st, err := r.call.Store()
	if err != nil {
		return nil, err
	}
	ctx, cancel := r.call.Context(th)
	defer cancel()
	res, err := st.Take(ctx, key, rate, burst, cost, r.o.Now())
	if err != nil {
		r.call.Fail("", err)
		return Result{R: state.TakeResult{Allowed: r.o.FailOpen}, Err: "ratelimit: state store unavailable"}, nil
	}
	return Result{R: res}, nil
}

func (r *Ratelimit) count(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var key string
	var windowV starlark.Value = starlark.String("1h")
	add := 1
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "key", &key, "window?", &windowV, "add?", &add); err != nil {
		return nil, err
	}
	if err := checkKey(key); err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	window, err := statecall.Duration(windowV)
	if err != nil || window < time.Second {
		if err == nil {
			err = errors.New("want 1s or more")
		}
		return nil, fmt.Errorf("%s: window: %w", b.Name(), err)
	}
	if add < 0 {
		return nil, fmt.Errorf("%s: add: %d is negative", b.Name(), add)
	}
	st, err := r.call.Store()
	if err != nil {
		return nil, err
	}
	ctx, cancel := r.call.Context(th)
	defer cancel()
	n, err := st.Count(ctx, key, window, add, r.o.Now())
	if err != nil {
		r.call.Fail("", err)
		if r.o.FailOpen {
			return starlark.MakeInt(0), nil
		}
		return nil, fmt.Errorf("%s: %w", b.Name(), state.ErrUnavailable)
	}
	return starlark.MakeInt64(n), nil
}

func checkKey(key string) error {
	switch {
	case key == "":
		return errors.New("key: empty")
	case len(key) > MaxKey:
		return fmt.Errorf("key: %d bytes, longer than %d", len(key), MaxKey)
	}
	return nil
}

// Result is take's answer: true when the tokens were taken.
type Result struct {
	R state.TakeResult
	// Err says why the store could not be asked ("" when it was).
	Err string
}

var _ starlark.HasAttrs = Result{}

func (v Result) String() string {
	switch {
	case v.Err != "":
		return fmt.Sprintf("<ratelimit allowed=%v: %s>", v.R.Allowed, v.Err)
	case v.R.Allowed:
		return fmt.Sprintf("<ratelimit allowed, %d remaining>", v.R.Remaining)
	}
	return fmt.Sprintf("<ratelimit refused, retry after %ds>", v.retryAfter())
}
func (v Result) Type() string          { return "ratelimit_result" }
func (v Result) Freeze()               {}
func (v Result) Truth() starlark.Bool  { return starlark.Bool(v.R.Allowed) }
func (v Result) Hash() (uint32, error) { return starlark.String(v.String()).Hash() }

// retryAfter is whole seconds, rounded up: a client told 0 would retry
// too soon.
func (v Result) retryAfter() int64 { return int64(math.Ceil(v.R.RetryAfter.Seconds())) }

func (v Result) AttrNames() []string { return []string{"allowed", "error", "remaining", "retry_after"} }

func (v Result) Attr(name string) (starlark.Value, error) {
	switch name {
	case "allowed":
		return starlark.Bool(v.R.Allowed), nil
	case "remaining":
		return starlark.MakeInt(v.R.Remaining), nil
	case "retry_after":
		return starlark.MakeInt64(v.retryAfter()), nil
	case "error":
		return starlark.String(v.Err), nil
	}
	return nil, nil
}
