package greylist

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/larkpost/larkpost/engine/state"
	"github.com/larkpost/larkpost/stdlib/dns"
	"github.com/larkpost/larkpost/stdlib/statecall"
)

// Options are what the embedder gives the module.
type Options struct {
	// Store returns the state store, asked at every call so that it can
	// be opened (or replaced) after the module is made; nil, or a nil
	// store, makes every call a script error.
	Store func() state.Store
	// FailOpen lets an attempt pass when the store fails; otherwise it
	// is deferred with 451 4.3.0.
	FailOpen bool
	// Log gets one line per store failure (nil: none).
	Log func(string)
	// Defer makes the deferral decision (the embedder's defer()); nil
	// makes a struct with code, status and text.
	Defer func(code int, status, text string) starlark.Value
	// Timeout bounds one call's use of the store: 1s. The hook's own
	// deadline bounds it too.
	Timeout time.Duration
	// Now is the clock the Badger store judges delays by: time.Now. The
	// Redis store uses its server's clock instead.
	Now func() time.Time
}

// failures counts store failures of every greylist module of the
// process, so that the figure survives a reload, which makes a new one.
var failures atomic.Uint64

// Failures returns how many calls of every greylist module in the process
// found the store failing.
func Failures() uint64 { return failures.Load() }

// Greylist is one `greylist` module with its options.
type Greylist struct {
	o    Options
	call *statecall.Caller
}

// New returns a greylist module's implementation; Module gives the
// Starlark module.
func New(o Options) *Greylist {
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Defer == nil {
		o.Defer = decisionStruct
	}
	return &Greylist{o: o, call: statecall.New("greylist", o.Store, o.Timeout, o.Log, &failures)}
}

// Module returns the `greylist` module.
func Module(o Options) *starlarkstruct.Module { return New(o).Module() }

// Module returns g as the `greylist` Starlark module.
func (g *Greylist) Module() *starlarkstruct.Module {
	return &starlarkstruct.Module{Name: "greylist", Members: starlark.StringDict{
		"check": starlark.NewBuiltin("greylist.check", g.check),
		"query": starlark.NewBuiltin("greylist.query", g.query),
	}}
}

// Failures returns how many of g's calls found the store failing.
func (g *Greylist) Failures() uint64 { return g.call.Failures() }

func decisionStruct(code int, status, text string) starlark.Value {
	return starlarkstruct.FromStringDict(starlark.String("decision"), starlark.StringDict{
		"code": starlark.MakeInt(code), "status": starlark.String(status), "text": starlark.String(text),
	})
}

// attempt is one parsed call.
type attempt struct {
	ip            netip.Addr
	network       netip.Prefix
	sender, rcpt  string
	params        state.GreyParams
	exemptNets    []netip.Prefix
	exemptDomains []string
}

// outcome is what a call found.
type outcome struct {
	res    state.GreyResult
	exempt bool
	err    error
}

func (g *Greylist) check(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	out, err := g.run(th, b, args, kwargs)
	switch {
	case err != nil:
		return nil, err
	case out.err != nil && g.o.FailOpen, out.exempt, out.res.Pass:
		return starlark.None, nil
	case out.err != nil:
		return g.o.Defer(451, "4.3.0", "greylist: state store unavailable"), nil
	}
	secs := int64(math.Ceil(out.res.Wait.Seconds()))
	return g.o.Defer(450, "4.7.1", "Greylisted: try again in "+strconv.FormatInt(secs, 10)+" seconds"), nil
}

func (g *Greylist) query(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	out, err := g.run(th, b, args, kwargs)
	if err != nil {
		return nil, err
	}
	msg, first := "", int64(0)
	passed := out.res.Pass || out.exempt
	if out.err != nil {
		msg, passed = "greylist: state store unavailable", g.o.FailOpen
	}
	if !out.res.FirstSeen.IsZero() {
		first = out.res.FirstSeen.Unix()
	}
	return starlarkstruct.FromStringDict(starlark.String("greylist_result"), starlark.StringDict{
		"passed":       starlark.Bool(passed),
		"new":          starlark.Bool(out.res.New),
		"wait_seconds": starlark.MakeInt64(int64(math.Ceil(out.res.Wait.Seconds()))),
		"whitelisted":  starlark.Bool(out.res.Whitelisted),
		"exempt":       starlark.Bool(out.exempt),
		"first_seen":   starlark.MakeInt64(first),
		"error":        starlark.String(msg),
	}), nil
}

// run parses the arguments (their mistakes are the script's: errors) and
// asks the store (its failures are the outcome's).
func (g *Greylist) run(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (outcome, error) {
	var ipV, sender, rcpt starlark.Value
	var delay, expire, retry starlark.Value = starlark.String("5m"), starlark.String("35d"), starlark.String("2d")
	var exempt starlark.Value = starlark.NewList(nil)
	awl, p4, p6 := 5, 24, 64
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "ip", &ipV, "sender", &sender, "rcpt", &rcpt,
		"delay?", &delay, "expire?", &expire, "retry_window?", &retry, "auto_whitelist?", &awl,
		"exempt?", &exempt, "prefix_v4?", &p4, "prefix_v6?", &p6); err != nil {
		return outcome{}, err
	}
	a, err := parse(ipV, sender, rcpt, delay, expire, retry, awl, exempt, p4, p6)
	if err != nil {
		return outcome{}, fmt.Errorf("%s: %w", b.Name(), err)
	}
	if a.exempted() {
		return outcome{exempt: true}, nil
	}
	st, err := g.call.Store()
	if err != nil {
		return outcome{}, err
	}
	ctx, cancel := g.call.Context(th)
	defer cancel()
	net := a.network.String()
	res, err := st.Greylist(ctx, net+"\x00"+a.sender+"\x00"+a.rcpt, net, a.params, g.o.Now())
	if err != nil {
		g.call.Fail(fmt.Sprintf("client=%s, from=%s, to=%s: ", a.ip, a.sender, a.rcpt), err)
		return outcome{err: err}, nil
	}
	return outcome{res: res}, nil
}

func parse(ipV, sender, rcpt, delay, expire, retry starlark.Value, awl int, exempt starlark.Value, p4, p6 int) (attempt, error) {
	var a attempt
	ip, err := dns.ParseIP(text(ipV))
	if err != nil {
		return a, fmt.Errorf("ip: %w", err)
	}
	a.ip = ip
	if p4 < 0 || p4 > 32 {
		return a, fmt.Errorf("prefix_v4: %d is not 0 to 32", p4)
	}
	if p6 < 0 || p6 > 128 {
		return a, fmt.Errorf("prefix_v6: %d is not 0 to 128", p6)
	}
	bitsLen := p6
	if ip.Is4() {
		bitsLen = p4
	}
	a.network, _ = ip.Prefix(bitsLen)
	a.sender, a.rcpt = address(sender), address(rcpt)
	if a.sender == "" {
		a.sender = "<>"
	}
	if a.rcpt == "" {
		return a, errors.New("rcpt: empty")
	}
	for _, d := range []struct {
		name string
		v    starlark.Value
		to   *time.Duration
	}{{"delay", delay, &a.params.Delay}, {"expire", expire, &a.params.Expire}, {"retry_window", retry, &a.params.RetryWindow}} {
		if *d.to, err = statecall.Duration(d.v); err != nil {
			return a, fmt.Errorf("%s: %w", d.name, err)
		}
	}
	switch {
	case a.params.Expire <= 0:
		return a, errors.New("expire: want more than 0")
	case a.params.RetryWindow <= a.params.Delay:
		return a, fmt.Errorf("retry_window: %s is not longer than delay %s", a.params.RetryWindow, a.params.Delay)
	case awl < 0:
		return a, fmt.Errorf("auto_whitelist: %d is negative (0 turns it off)", awl)
	}
	a.params.AutoWhitelist = awl
	if a.params.Delay == 0 {
		// The store reads 0 as its default; a script's "0s" means none.
		a.params.Delay = time.Nanosecond
	}
	if err := a.parseExempt(exempt); err != nil {
		return a, err
	}
	return a, nil
}

// text is a string argument's value, or str() of any other value (an
// address, an ip attribute).
func text(v starlark.Value) string {
	switch v := v.(type) {
	case starlark.String:
		return string(v)
	case starlark.NoneType:
		return ""
	}
	return v.String()
}

// maxPart is the longest sender or recipient kept as it is (RFC 5321's
// path limit); a longer one, which no SMTP server accepts, is kept as its
// hash so that it cannot blow up a key.
const maxPart = 256

func address(v starlark.Value) string {
	s := strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(text(v), "<"), ">"))
	if len(s) > maxPart {
		sum := sha256.Sum256([]byte(s))
		return "sha256:" + hex.EncodeToString(sum[:])
	}
	return s
}

func (a *attempt) parseExempt(v starlark.Value) error {
	it, ok := v.(starlark.Iterable)
	if !ok {
		return fmt.Errorf("exempt: want a list of networks and domains, got %s", v.Type())
	}
	iter := it.Iterate()
	defer iter.Done()
	var x starlark.Value
	for i := 0; iter.Next(&x); i++ {
		s, ok := x.(starlark.String)
		if !ok {
			return fmt.Errorf("exempt[%d]: got %s, want a network or a domain", i, x.Type())
		}
		e := strings.ToLower(strings.TrimSuffix(string(s), "."))
		if p, err := netip.ParsePrefix(e); err == nil {
			a.exemptNets = append(a.exemptNets, p.Masked())
		} else if ip, err := netip.ParseAddr(e); err == nil {
			a.exemptNets = append(a.exemptNets, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
		} else if isDomain(e) {
			a.exemptDomains = append(a.exemptDomains, e)
		} else {
			return fmt.Errorf("exempt[%d]: %q is neither a network (192.0.2.0/24) nor a domain (example.org)", i, string(s))
		}
	}
	return nil
}

func isDomain(s string) bool {
	if s == "" || len(s) > 253 || strings.HasPrefix(s, ".") || strings.Contains(s, "..") {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// exempted reports an attempt from an exempt network or sender domain
// (or one of its subdomains).
func (a *attempt) exempted() bool {
	for _, p := range a.exemptNets {
		if p.Contains(a.ip) {
			return true
		}
	}
	at := strings.LastIndexByte(a.sender, '@')
	if at < 0 {
		return false
	}
	domain := a.sender[at+1:]
	for _, d := range a.exemptDomains {
		if domain == d || strings.HasSuffix(domain, "."+d) {
			return true
		}
	}
	return false
}
