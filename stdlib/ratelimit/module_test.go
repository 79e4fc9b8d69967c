package ratelimit

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
	"go.starlark.net/starlarktest"
	"go.starlark.net/syntax"

	"github.com/larkpost/larkpost/engine/state"
	"github.com/larkpost/larkpost/queue"
)

// clock is the tests' clock: the Badger store reads it through
// Options.Now, miniredis through SetTime.
type clock struct {
	mu     sync.Mutex
	t      time.Time
	onMove func(time.Time)
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	if c.onMove != nil {
		c.onMove(c.t)
	}
}

type backend struct {
	name string
	open func(t *testing.T) (state.Store, *clock)
}

var backends = []backend{
	{"badger", func(t *testing.T) (state.Store, *clock) {
		q, err := queue.Open(t.TempDir(), slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { q.Close() })
		return state.NewBadger(q), &clock{t: time.Unix(1_800_000_000, 0)}
	}},
	{"miniredis", func(t *testing.T) (state.Store, *clock) {
		m := miniredis.RunT(t)
		m.ClockTTL(true)
		c := &clock{t: time.Unix(1_800_000_000, 0), onMove: m.SetTime}
		m.SetTime(c.t)
		s, err := state.NewRedis("redis://"+m.Addr()+"/0", state.RedisOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s, c
	}},
}

func TestStarlark(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			st, clk := b.open(t)
			thread := &starlark.Thread{
				Name: t.Name(),
				Load: func(_ *starlark.Thread, module string) (starlark.StringDict, error) {
					if module == "assert.star" {
						return starlarktest.LoadAssertModule()
					}
					return nil, fmt.Errorf("no module %q", module)
				},
			}
			starlarktest.SetReporter(thread, t)
			predeclared := starlark.StringDict{
				"ratelimit": Module(Options{Store: func() state.Store { return st }, Now: clk.Now}),
				"advance": starlark.NewBuiltin("advance", func(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
					var secs int
					if err := starlark.UnpackPositionalArgs(b.Name(), args, kwargs, 1, &secs); err != nil {
						return nil, err
					}
					clk.Advance(time.Duration(secs) * time.Second)
					return starlark.None, nil
				}),
			}
			// The rules' dialect: top-level loops, reassigned globals.
			opts := &syntax.FileOptions{Set: true, While: true, TopLevelControl: true, GlobalReassign: true}
			if _, err := starlark.ExecFileOptions(opts, thread, "testdata/ratelimit_test.star", nil, predeclared); err != nil {
				if evalErr, ok := errors.AsType[*starlark.EvalError](err); ok {
					t.Fatal(evalErr.Backtrace())
				}
				t.Fatal(err)
			}
		})
	}
}

func eval(m *starlarkstruct.Module, expr string) (starlark.Value, error) {
	return starlark.EvalOptions(&syntax.FileOptions{}, &starlark.Thread{Name: "test"}, "test", expr, starlark.StringDict{"ratelimit": m})
}

// TestArgErrors: the script's mistakes fail the call, naming the argument.
func TestArgErrors(t *testing.T) {
	t.Parallel()
	st, _ := backends[0].open(t)
	m := Module(Options{Store: func() state.Store { return st }})
	tests := []struct{ expr, want string }{
		{`ratelimit.take("")`, `ratelimit.take: key: empty`},
		{`ratelimit.take("k" * 513)`, `ratelimit.take: key: 513 bytes, longer than 512`},
		{`ratelimit.take(3)`, `ratelimit.take: for parameter key: got int, want string`},
		{`ratelimit.take("k", "abc")`, `ratelimit.take: rate "abc": want N/period`},
		{`ratelimit.take("k", "10/fortnight")`, `rate "10/fortnight"`},
		{`ratelimit.take("k", 10)`, `rate: want a string such as "100/h", got int`},
		{`ratelimit.take("k", "10/h", burst = 0)`, `burst: want a number of tokens, 1 or more, or None, got 0`},
		{`ratelimit.take("k", "10/h", burst = "5")`, `burst: want a number of tokens`},
		{`ratelimit.take("k", "10/h", cost = 11)`, `cost: 11 is not 0 to burst (10)`},
		{`ratelimit.take("k", "10/h", burst = 20, cost = -1)`, `cost: -1 is not 0 to burst (20)`},
		{`ratelimit.count("")`, `ratelimit.count: key: empty`},
		{`ratelimit.count("k" * 600)`, `key: 600 bytes`},
		{`ratelimit.count("k", "1x")`, `ratelimit.count: window: bad duration "1x"`},
		{`ratelimit.count("k", "0s")`, `window: want 1s or more`},
		{`ratelimit.count("k", 1.5)`, `window: want a duration string or seconds, got float`},
		{`ratelimit.count("k", add = -1)`, `add: -1 is negative`},
		{`ratelimit.count("k", nope = 1)`, `unexpected keyword argument "nope"`},
	}
	for _, tt := range tests {
		_, err := eval(m, tt.expr)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want it to contain %q", tt.expr, err, tt.want)
		}
	}
	for _, o := range []Options{{}, {Store: func() state.Store { return nil }}} {
		for _, expr := range []string{`ratelimit.take("k")`, `ratelimit.count("k")`} {
			if _, err := eval(Module(o), expr); err == nil || err.Error() != "ratelimit: no state store" {
				t.Errorf("%s without a store: %v", expr, err)
			}
		}
	}
}

// TestStoreDown: a dead Redis costs at most the timeout; take is allowed
// (fail open) or refused, count is 0 or an error, and each failure is
// counted and logged once.
func TestStoreDown(t *testing.T) {
	t.Parallel()
	m := miniredis.RunT(t)
	url := "redis://" + m.Addr() + "/0"
	m.Close()
	st, err := state.NewRedis(url, state.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, open := range []bool{true, false} {
		var logs []string
		r := New(Options{Store: func() state.Store { return st }, FailOpen: open, Log: func(s string) { logs = append(logs, s) }})
		before := Failures()
		start := time.Now()
		take, err := eval(r.Module(), `ratelimit.take("ip:192.0.2.1", "30/min")`)
		count, cerr := eval(r.Module(), `ratelimit.count("ip:192.0.2.1")`)
		if elapsed := time.Since(start); elapsed >= 2*time.Second {
			t.Errorf("fail open %v: calls took %s", open, elapsed)
		}
		if err != nil {
			t.Fatalf("fail open %v: take: %v", open, err)
		}
		res := take.(Result)
		if bool(res.Truth()) != open || res.Err != "ratelimit: state store unavailable" {
			t.Errorf("fail open %v: take = %s", open, take)
		}
		switch {
		case open && (cerr != nil || count.String() != "0"):
			t.Errorf("fail open: count = %v, %v; want 0", count, cerr)
		case !open && (cerr == nil || !strings.Contains(cerr.Error(), "ratelimit.count: state store unavailable")):
			t.Errorf("fail closed: count = %v, %v; want an error", count, cerr)
		}
		if r.Failures() != 2 || Failures()-before < 2 {
			t.Errorf("fail open %v: %d failures (%d in all), want 2", open, r.Failures(), Failures()-before)
		}
		if len(logs) != 2 || !strings.Contains(logs[0], "state store unavailable") || !strings.HasPrefix(logs[0], "ratelimit: take \"ip:192.0.2.1\"") {
			t.Errorf("fail open %v: log %q", open, logs)
		}
	}
}
