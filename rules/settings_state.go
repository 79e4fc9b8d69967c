package rules

import (
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"go.starlark.net/starlark"

	"github.com/larkpost/larkpost/engine/state"
	"github.com/larkpost/larkpost/stdlib/greylist"
	"github.com/larkpost/larkpost/stdlib/ratelimit"
)

// StateSettings say where greylist triplets, rate-limit buckets and
// vacation records live, and what the greylist and ratelimit modules do
// when that store cannot be asked.
type StateSettings struct {
	Store             string        // state_store: "" (the queue's database) or a redis:// URL
	Timeout           time.Duration // state_store_timeout
	GreylistFailOpen  bool          // greylist_fail_mode = "open"
	RatelimitFailOpen bool          // ratelimit_fail_mode = "open"
}

func init() {
	failMode := func(dst *bool) func(*Settings, starlark.Value) error {
		return func(s *Settings, v starlark.Value) error {
			var m string
			if err := setString(&m, v); err != nil {
				return err
			}
			switch m {
			case "open":
				*dst = true
			case "closed":
				*dst = false
			default:
				return fmt.Errorf("want \"open\" or \"closed\", got %q", m)
			}
			return nil
		}
	}
	stateSettings := map[string]setting{
		"state_store": {"\"\" or a redis:// URL", func(s *Settings, v starlark.Value) error {
			var u string
			if err := setString(&u, v); err != nil {
				return err
			}
			if u != "" {
				pu, err := url.Parse(u)
				if err != nil || (pu.Scheme != "redis" && pu.Scheme != "rediss") || pu.Host == "" {
					return fmt.Errorf("want \"\" (the queue's own database) or redis://HOST:PORT/DB (rediss:// for TLS), got %q", u)
				}
			}
			s.State.Store = u
			return nil
		}, "where greylist triplets, rate-limit buckets and vacation \"already replied\" records live: \"\" is the queue's own database (one node), a redis:// URL a Redis that several MX nodes share; default \"\""},
		"state_store_timeout": {"duration", func(s *Settings, v starlark.Value) error { return setDuration(&s.State.Timeout, v) },
			"time one greylist, ratelimit or vacation lookup in the state store may take before its module's failure mode applies; default 1s"},
		"greylist_fail_mode": {"\"open\" or \"closed\"", func(s *Settings, v starlark.Value) error { return failMode(&s.State.GreylistFailOpen)(s, v) },
			"what greylist.check says when the state store cannot be asked: open lets the attempt pass, closed defers it with 451 4.3.0; each failure is logged and counted; default open"},
		"ratelimit_fail_mode": {"\"open\" or \"closed\"", func(s *Settings, v starlark.Value) error { return failMode(&s.State.RatelimitFailOpen)(s, v) },
			"what ratelimit.take says when the state store cannot be asked: open allows, closed refuses; each failure is logged and counted; default open"},
	}
	for name, st := range stateSettings {
		settingTable[name] = st
		bindings[name] = BindRestart
	}
	settingExamples["state_store"] = `"redis://10.0.0.5:6379/0"`
	settingExamples["state_store_timeout"] = `"500ms"`
	settingExamples["greylist_fail_mode"] = `"closed"`
	settingExamples["ratelimit_fail_mode"] = `"closed"`
}

// stateHolder is the state store a policy's greylist and ratelimit
// modules use: the server's (UseState), or, for rule tests and dry runs,
// one in memory made on first use. Copies of a policy share it.
type stateHolder struct {
	st   atomic.Pointer[state.Store]
	once sync.Once
	mem  state.Store
}

// UseState makes the greylist and ratelimit modules of p use st: the
// server's store, opened with its queue.
func (p *Policy) UseState(st state.Store) { p.state.st.Store(&st) }

func (p *Policy) stateStore() state.Store {
	if st := p.state.st.Load(); st != nil {
		return *st
	}
	p.state.once.Do(func() { p.state.mem = state.NewMemory() })
	return p.state.mem
}

// stateModules makes the greylist and ratelimit modules with the
// settings as they are now; config() remakes them when a setting they
// read changes.
func (l *loader) stateModules(p *Policy) {
	s := l.settings.State
	logf := func(msg string) { p.log.Warn("warning: " + msg) }
	l.predecl["greylist"] = greylist.Module(greylist.Options{Store: p.stateStore, FailOpen: s.GreylistFailOpen,
		Timeout: s.Timeout, Log: logf, Defer: func(code int, status, text string) starlark.Value {
			return &decisionValue{Decision{Kind: Defer, Code: code, Status: status, Text: text, Source: "greylist", Hook: "greylist"}}
		}})
	l.predecl["ratelimit"] = ratelimit.Module(ratelimit.Options{Store: p.stateStore, FailOpen: s.RatelimitFailOpen,
		Timeout: s.Timeout, Log: logf})
}

// stateModuleSettings are the settings the modules are made with.
var stateModuleSettings = map[string]bool{"greylist_fail_mode": true, "ratelimit_fail_mode": true, "state_store_timeout": true}
