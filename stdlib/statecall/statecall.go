// Package statecall is what the modules that keep their records in the
// server's state store (greylist, ratelimit) share: finding the store,
// bounding each call by the hook's deadline and the store's timeout, and
// counting and logging the store's failures.
package statecall

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"go.starlark.net/starlark"

	"github.com/larkpost/larkpost/engine/state"
	"github.com/larkpost/larkpost/stdlib/dns"
)

// Caller is one module's way to the store.
type Caller struct {
	name    string
	store   func() state.Store
	timeout time.Duration
	log     func(string)

	failures atomic.Uint64
	total    *atomic.Uint64 // the module's count over the process, across reloads
}

// New returns the Caller of module name. store is asked at every call,
// so that it can be opened (or replaced) after the module is made; a
// timeout of 0 is 1s; log gets one line per failure (nil: none); total
// counts failures of every module of this name in the process.
func New(name string, store func() state.Store, timeout time.Duration, log func(string), total *atomic.Uint64) *Caller {
	if timeout <= 0 {
		timeout = time.Second
	}
	return &Caller{name: name, store: store, timeout: timeout, log: log, total: total}
}

// Store is the store, or an error (a script error) when there is none.
func (c *Caller) Store() (state.Store, error) {
	var st state.Store
	if c.store != nil {
		st = c.store()
	}
	if st == nil {
		return nil, errors.New(c.name + ": no state store")
	}
	return st, nil
}

// Context bounds one call: the hook's deadline (dns.CallContext) and the
// store's timeout, whichever ends first.
func (c *Caller) Context(th *starlark.Thread) (context.Context, context.CancelFunc) {
	ctx, cancel := dns.CallContext(th)
	ctx, cancel2 := context.WithTimeout(ctx, c.timeout)
	return ctx, func() { cancel2(); cancel() }
}

// Fail counts and logs a failed call; what is the call's own detail.
func (c *Caller) Fail(what string, err error) {
	c.failures.Add(1)
	if c.total != nil {
		c.total.Add(1)
	}
	if c.log != nil {
		c.log(c.name + ": " + what + err.Error())
	}
}

// Failures is how many of this Caller's calls found the store failing.
func (c *Caller) Failures() uint64 { return c.failures.Load() }

// Duration reads "5m", "35d", "1h30m" or a number of seconds.
func Duration(v starlark.Value) (time.Duration, error) {
	switch v := v.(type) {
	case starlark.Int:
		n, ok := v.Int64()
		if !ok || n < 0 || n > math.MaxInt64/int64(time.Second) {
			return 0, fmt.Errorf("%s seconds out of range", v)
		}
		return time.Duration(n) * time.Second, nil
	case starlark.String:
		return state.ParseDuration(string(v))
	}
	return 0, fmt.Errorf("want a duration string or seconds, got %s", v.Type())
}
