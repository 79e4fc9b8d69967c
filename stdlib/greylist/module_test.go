package greylist

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

// call is one call of the decision constructor.
type call struct {
	code         int
	status, text string
}

// recorder is a decision constructor that keeps its calls.
type recorder struct {
	mu    sync.Mutex
	calls []call
}

func (r *recorder) Defer(code int, status, text string) starlark.Value {
	r.mu.Lock()
	r.calls = append(r.calls, call{code, status, text})
	r.mu.Unlock()
	return starlarkstruct.FromStringDict(starlark.String("decision"), starlark.StringDict{
		"code": starlark.MakeInt(code), "status": starlark.String(status), "text": starlark.String(text), "via": starlark.String("test"),
	})
}

// strValue is a value that is not a string but has one (an address).
type strValue string

func (v strValue) String() string        { return string(v) }
func (v strValue) Type() string          { return "strvalue" }
func (v strValue) Freeze()               {}
func (v strValue) Truth() starlark.Bool  { return true }
func (v strValue) Hash() (uint32, error) { return starlark.String(v).Hash() }

func TestStarlark(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			st, clk := b.open(t)
			rec := &recorder{}
			m := Module(Options{Store: func() state.Store { return st }, Defer: rec.Defer, Now: clk.Now})
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
				"greylist": m,
				"ipval":    strValue("192.0.2.10"),
				"advance": starlark.NewBuiltin("advance", func(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
					var secs int
					if err := starlark.UnpackPositionalArgs(b.Name(), args, kwargs, 1, &secs); err != nil {
						return nil, err
					}
					clk.Advance(time.Duration(secs) * time.Second)
					return starlark.None, nil
				}),
				"now": starlark.NewBuiltin("now", func(*starlark.Thread, *starlark.Builtin, starlark.Tuple, []starlark.Tuple) (starlark.Value, error) {
					return starlark.MakeInt64(clk.Now().Unix()), nil
				}),
			}
			// The rules' dialect: top-level loops, reassigned globals.
			opts := &syntax.FileOptions{Set: true, While: true, TopLevelControl: true, GlobalReassign: true}
			if _, err := starlark.ExecFileOptions(opts, thread, "testdata/greylist_test.star", nil, predeclared); err != nil {
				if evalErr, ok := errors.AsType[*starlark.EvalError](err); ok {
					t.Fatal(evalErr.Backtrace())
				}
				t.Fatal(err)
			}
			for _, c := range rec.calls {
				if c.code != 450 || c.status != "4.7.1" || !strings.HasPrefix(c.text, "Greylisted: try again in ") {
					t.Errorf("decision constructor called with %v", c)
				}
			}
		})
	}
}

func eval(m *starlarkstruct.Module, expr string) (starlark.Value, error) {
	return starlark.EvalOptions(&syntax.FileOptions{}, &starlark.Thread{Name: "test"}, "test", expr, starlark.StringDict{"greylist": m})
}

// TestArgErrors: the script's mistakes fail the call, naming the argument.
func TestArgErrors(t *testing.T) {
	t.Parallel()
	st, _ := backends[0].open(t)
	m := Module(Options{Store: func() state.Store { return st }})
	const args = `"192.0.2.1", "a@b.example", "c@d.example"`
	tests := []struct{ expr, want string }{
		{`greylist.check("bogus", "a@b.example", "c@d.example")`, `greylist.check: ip: not an ip address: "bogus"`},
		{`greylist.check(None, "a@b.example", "c@d.example")`, `ip: not an ip address`},
		{`greylist.check("192.0.2.1", "a@b.example", "")`, `rcpt: empty`},
		{`greylist.query(` + args + `, delay = "5x")`, `greylist.query: delay: bad duration "5x"`},
		{`greylist.check(` + args + `, delay = 1.5)`, `delay: want a duration string or seconds, got float`},
		{`greylist.check(` + args + `, delay = -1)`, `delay: -1 seconds out of range`},
		{`greylist.check(` + args + `, expire = "0s")`, `expire: want more than 0`},
		{`greylist.check(` + args + `, retry_window = "2m")`, `retry_window: 2m0s is not longer than delay 5m0s`},
		{`greylist.check(` + args + `, retry_window = "forever")`, `retry_window: bad duration`},
		{`greylist.check(` + args + `, auto_whitelist = -1)`, `auto_whitelist: -1 is negative`},
		{`greylist.check(` + args + `, prefix_v4 = 33)`, `prefix_v4: 33 is not 0 to 32`},
		{`greylist.check(` + args + `, prefix_v6 = -1)`, `prefix_v6: -1 is not 0 to 128`},
		{`greylist.check(` + args + `, exempt = "10.0.0.0/8")`, `exempt: want a list of networks and domains, got string`},
		{`greylist.check(` + args + `, exempt = 3)`, `exempt: want a list of networks and domains, got int`},
		{`greylist.check(` + args + `, exempt = ["10.0.0.0/33"])`, `exempt[0]: "10.0.0.0/33" is neither a network`},
		{`greylist.check(` + args + `, exempt = ["ok.example", "@bad"])`, `exempt[1]: "@bad" is neither`},
		{`greylist.check(` + args + `, nope = 1)`, `unexpected keyword argument "nope"`},
		{`greylist.check("192.0.2.1")`, `missing argument for sender`},
	}
	for _, tt := range tests {
		_, err := eval(m, tt.expr)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want it to contain %q", tt.expr, err, tt.want)
		}
	}
	for _, o := range []Options{{}, {Store: func() state.Store { return nil }}} {
		if _, err := eval(Module(o), `greylist.check(`+args+`)`); err == nil || err.Error() != "greylist: no state store" {
			t.Errorf("without a store: %v", err)
		}
	}
}

// TestStoreDown: a dead Redis costs at most the timeout, then the
// attempt passes (fail open) or is deferred with 451 4.3.0 (closed), and
// each failure is counted and logged once.
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
		rec := &recorder{}
		g := New(Options{Store: func() state.Store { return st }, FailOpen: open, Defer: rec.Defer, Log: func(s string) { logs = append(logs, s) }})
		before := Failures()
		start := time.Now()
		v, err := eval(g.Module(), `greylist.check("192.0.2.1", "a@b.example", "c@d.example")`)
		q, qerr := eval(g.Module(), `greylist.query("192.0.2.1", "a@b.example", "c@d.example")`)
		if elapsed := time.Since(start); elapsed >= 2*time.Second {
			t.Errorf("fail open %v: calls took %s", open, elapsed)
		}
		if err != nil || qerr != nil {
			t.Fatalf("fail open %v: %v, %v", open, err, qerr)
		}
		if open && (v != starlark.None || len(rec.calls) != 0) {
			t.Errorf("fail open: %v, constructor called %v", v, rec.calls)
		}
		if !open && (len(rec.calls) != 1 || rec.calls[0] != call{451, "4.3.0", "greylist: state store unavailable"}) {
			t.Errorf("fail closed: %v, constructor called %v", v, rec.calls)
		}
		if got := q.String(); !strings.Contains(got, fmt.Sprintf("passed = %s", starlark.Bool(open))) || !strings.Contains(got, `error = "greylist: state store unavailable"`) {
			t.Errorf("fail open %v: query = %s", open, got)
		}
		if g.Failures() != 2 || Failures()-before < 2 {
			t.Errorf("fail open %v: %d failures (%d in all), want 2", open, g.Failures(), Failures()-before)
		}
		if len(logs) != 2 || !strings.Contains(logs[0], "state store unavailable") || !strings.Contains(logs[0], "client=192.0.2.1") {
			t.Errorf("fail open %v: log %q", open, logs)
		}
	}
}
