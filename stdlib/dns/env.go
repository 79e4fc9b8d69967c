// Package dns is the Starlark `dns` module, and the DNS access of every
// module that checks mail against DNS (dnsbl, spf, dkim, dmarc): one
// resolver and cache for all of them, a deadline per lookup and a budget
// of queries per hook call.
//
//	dns.lookup_a(name)      A records:     a result whose values are addresses
//	dns.lookup_aaaa(name)   AAAA records
//	dns.lookup_mx(name)     MX host names, most preferred first
//	dns.lookup_txt(name)    TXT records, the strings of each joined
//	dns.lookup_ptr(ip)      PTR names of an address
//	dns.lookup(name, type)  any type, records in presentation form ("10 mx.example.com")
//	dns.fcrdns(ip)          forward-confirmed reverse DNS: the PTR names whose
//	                        A/AAAA records include ip
//
// A result is a sequence of its values (so `for ip in dns.lookup_a(n)`
// and `if dns.lookup_a(n):` work) with attributes that tell apart what
// a script must not confuse:
//
//	r.status  "ok" (records), "nodata" (the name exists, no records of
//	          that type), "nxdomain" (no such name), "temperror" (could
//	          not ask: timeout, SERVFAIL, query budget spent) or
//	          "permerror" (not a valid name)
//	r.values  the values, a list
//	r.exists  the name exists ("ok" or "nodata")
//	r.error   why it failed, "" otherwise
//	r.ttl     the smallest TTL of the records (0 without records)
//	r.name, r.type
package dns

import (
	"context"
	"errors"
	"fmt"
	"time"

	mdns "github.com/miekg/dns"
	"go.starlark.net/starlark"

	"github.com/larkpost/larkpost/engine/resolver"
)

// Env is what the DNS modules need from the server. A policy makes one at
// load and puts it on every hook thread (Bind); its fields must not change
// once it is in use.
type Env struct {
	Resolver *resolver.Resolver
	// Timeout bounds one lookup (0: 5 s); the hook's own deadline bounds
	// it too.
	Timeout time.Duration
	// MaxQueries is the number of DNS queries one hook call may make,
	// cached answers included, so a script's cost does not depend on the
	// cache (0: 100). An SPF check alone may need 22.
	MaxQueries int
}

// Call is what a hook call offers: its context, bounded by the hook's
// deadline and carrying the transaction's authentication results (see
// package authres). The embedder stores it under CallKey.
type Call interface {
	Context() (context.Context, context.CancelFunc)
}

// CallKey is the thread-local key of the Call, shared with stdlib/re's
// Budget: the embedder's per-call value implements both.
const CallKey = "larkpost.call"

const (
	envKey     = "larkpost.dns.env"
	sessionKey = "larkpost.dns.session"
)

// Bind makes the DNS modules usable on th.
func (e *Env) Bind(th *starlark.Thread) { th.SetLocal(envKey, e) }

// Session is the DNS access of one hook call: its budget of queries and
// its context. Modules get it with SessionOf.
type Session struct {
	env  *Env
	call Call
	used int
}

// ErrNoDNS is returned where a script runs without DNS: at load time, in
// users' filter scripts, and in a server without resolvers.
var ErrNoDNS = errors.New("dns is only available in hooks")

// SessionOf returns th's session, creating it on first use.
func SessionOf(th *starlark.Thread) (*Session, error) {
	if s, ok := th.Local(sessionKey).(*Session); ok {
		return s, nil
	}
	env, _ := th.Local(envKey).(*Env)
	call, _ := th.Local(CallKey).(Call)
	if env == nil || env.Resolver == nil || call == nil {
		return nil, ErrNoDNS
	}
	s := &Session{env: env, call: call}
	th.SetLocal(sessionKey, s)
	return s, nil
}

// ErrBudget is wrapped by the error of a lookup refused because the hook
// call has spent its queries (dns_max_queries); errors.Is finds it.
var ErrBudget = errors.New("dns query budget of this hook call spent (dns_max_queries)")

// Take counts one query against the budget.
func (s *Session) Take() error {
	max := s.env.MaxQueries
	if max <= 0 {
		max = 100
	}
	if s.used >= max {
		return &resolver.Error{Type: "budget", Temporary: true, Err: fmt.Errorf("%w: %d", ErrBudget, max)}
	}
	s.used++
	return nil
}

// Used returns how many queries the call has made.
func (s *Session) Used() int { return s.used }

// Context returns the hook's context, bounded by the hook's deadline.
func (s *Session) Context() (context.Context, context.CancelFunc) { return s.call.Context() }

func (s *Session) timeout() time.Duration {
	if s.env.Timeout > 0 {
		return s.env.Timeout
	}
	return 5 * time.Second
}

// Query makes one budgeted query with the per-lookup deadline.
func (s *Session) Query(name string, qtype uint16) (*mdns.Msg, error) {
	if err := s.Take(); err != nil {
		return nil, err
	}
	return s.exchange(name, qtype)
}

// exchange is Query without the budget; it is safe for concurrent use.
func (s *Session) exchange(name string, qtype uint16) (*mdns.Msg, error) {
	ctx, cancel := s.Context()
	defer cancel()
	ctx, cancel2 := context.WithTimeout(ctx, s.timeout())
	defer cancel2()
	return s.env.Resolver.Query(ctx, name, qtype)
}

// Thread returns a thread on which the DNS modules work outside a hook:
// for Go tests of the modules and for programs that embed them. Lookups
// are bounded by ctx and by the Env's budget, counted for the thread.
func (e *Env) Thread(ctx context.Context, name string) *starlark.Thread {
	th := &starlark.Thread{Name: name}
	th.SetLocal(CallKey, ctxCall{ctx})
	e.Bind(th)
	return th
}

type ctxCall struct{ ctx context.Context }

func (c ctxCall) Context() (context.Context, context.CancelFunc) { return context.WithCancel(c.ctx) }

// CallContext is the hook call's context, which ends at the hook's
// deadline or with the session; outside a hook (a rule test, a dry run)
// there is none. Modules that ask other servers bound their calls by it.
func CallContext(th *starlark.Thread) (context.Context, context.CancelFunc) {
	if c, ok := th.Local(CallKey).(Call); ok {
		return c.Context()
	}
	return context.WithCancel(context.Background())
}
