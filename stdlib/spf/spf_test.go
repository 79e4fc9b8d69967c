package spf_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	msgauth "github.com/emersion/go-msgauth/authres"
	"go.starlark.net/starlark"
	"go.starlark.net/syntax"

	"github.com/larkpost/larkpost/engine/resolver"
	"github.com/larkpost/larkpost/stdlib/addr"
	"github.com/larkpost/larkpost/stdlib/authres"
	"github.com/larkpost/larkpost/stdlib/dns"
	"github.com/larkpost/larkpost/stdlib/spf"
)

// zone is the fake DNS of the tests: name, type, values.
var zone = [][]string{
	{"ip4.example", "TXT", "v=spf1 ip4:192.0.2.0/24 -all"},
	{"a.example", "TXT", "v=spf1 a -all"},
	{"a.example", "A", "192.0.2.10"},
	{"mx.example", "TXT", "v=spf1 mx -all"},
	{"mx.example", "MX", "10 mail.mx.example", "20 backup.mx.example"},
	{"mail.mx.example", "A", "198.51.100.20"},
	{"backup.mx.example", "AAAA", "2001:db8:20::1"},
	{"include.example", "TXT", "v=spf1 include:ip4.example -all"},
	{"fail.example", "TXT", "v=spf1 ip4:198.51.100.1 -all exp=why.fail.example"},
	{"why.fail.example", "TXT", "%{i} is not one of %{d}'s designated mail servers, see https://%{d}/spf?s=%{S}"},
	{"noexp.example", "TXT", "v=spf1 -all"},
	{"redirect.example", "TXT", "v=spf1 ip4:203.0.113.9 redirect=fail.example"},
	{"incfail.example", "TXT", "v=spf1 include:fail.example -all"},
	{"badexp.example", "TXT", "v=spf1 -all exp=why.badexp.example"},
	{"why.badexp.example", "TXT", "bad %{z} macro"},
	{"softfail.example", "TXT", "v=spf1 ~all"},
	{"neutral.example", "TXT", "v=spf1 ?all"},
	{"empty.example", "TXT", "v=spf1"},
	{"nospf.example", "TXT", "google-site-verification=abc"},
	{"two.example", "TXT", "v=spf1 -all", "v=spf1 +all"},
	{"syntax.example", "TXT", "v=spf1 ip4:300.1.1.1 -all"},
	{"unknown.example", "TXT", "v=spf1 frobnicate -all"},
	{"loop-a.example", "TXT", "v=spf1 include:loop-b.example -all"},
	{"loop-b.example", "TXT", "v=spf1 include:loop-a.example -all"},
	{"void.example", "TXT", "v=spf1 a:nx1.example a:nx2.example a:nx3.example -all"},
	{"incnone.example", "TXT", "v=spf1 include:nospf.example -all"},
	{"v6.example", "TXT", "v=spf1 ip6:2001:db8::/32 a:host.v6.example mx -all"},
	{"host.v6.example", "AAAA", "2001:db9::5"},
	{"v6.example", "MX", "10 backup.mx.example"},
	{"helo.example", "TXT", "v=spf1 a -all"},
	{"helo.example", "A", "192.0.2.30"},
	{"exists.example", "TXT", "v=spf1 exists:%{ir}.allow.exists.example -all"},
	{"10.2.0.192.allow.exists.example", "A", "127.0.0.2"},
	{"ptr.example", "TXT", "v=spf1 ptr -all"},
	{"40.2.0.192.in-addr.arpa", "PTR", "host.ptr.example."},
	{"host.ptr.example", "A", "192.0.2.40"},
	{"tempinc.example", "TXT", "v=spf1 include:broken.example -all"},
}

func newTable(t testing.TB) *resolver.Table {
	t.Helper()
	tab := resolver.NewTable()
	for _, rr := range zone {
		if err := tab.Add(rr[0], rr[1], rr[2:]...); err != nil {
			t.Fatal(err)
		}
	}
	// The 10-lookup limit: 11 includes, each of a record that fails, so
	// the evaluation goes on to the next.
	var many []string
	for i := range 11 {
		name := fmt.Sprintf("i%d.many.example", i)
		many = append(many, "include:"+name)
		if err := tab.Add(name, "TXT", "v=spf1 ip4:203.0.113.1 -all"); err != nil {
			t.Fatal(err)
		}
	}
	if err := tab.Add("many.example", "TXT", "v=spf1 "+strings.Join(many, " ")+" -all"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"servfail.example", "broken.example"} {
		if err := tab.ServFail(n); err != nil {
			t.Fatal(err)
		}
	}
	return tab
}

// call runs expr on a hook-like thread of env, with ip, helo and sender
// predeclared, and returns its value.
func call(t *testing.T, ctx context.Context, env *dns.Env, expr string, vars starlark.StringDict) starlark.Value {
	t.Helper()
	th := env.Thread(ctx, "test")
	pre := starlark.StringDict{"spf": spf.Module()}
	for k, v := range vars {
		pre[k] = v
	}
	v, err := starlark.EvalOptions(&syntax.FileOptions{}, th, "test", expr, pre)
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

func TestCheck(t *testing.T) {
	t.Parallel()
	env := &dns.Env{Resolver: &resolver.Resolver{Table: newTable(t)}}
	tests := []struct {
		name, ip, helo, sender string
		want, identity, domain string
		reason                 string // a substring of the reason
	}{
		{"ip4", "192.0.2.7", "h.example", "alice@ip4.example", "pass", "mailfrom", "ip4.example", "matched ip"},
		{"a", "192.0.2.10", "h.example", "alice@a.example", "pass", "mailfrom", "a.example", "matched a"},
		{"a fails", "192.0.2.11", "h.example", "alice@a.example", "fail", "mailfrom", "a.example", "matched all"},
		{"mx", "198.51.100.20", "h.example", "alice@mx.example", "pass", "mailfrom", "mx.example", "matched mx"},
		{"include", "192.0.2.99", "h.example", "alice@include.example", "pass", "mailfrom", "include.example", "matched ip"},
		{"include no match", "198.51.100.99", "h.example", "alice@include.example", "fail", "mailfrom", "include.example", "matched all"},
		{"exp", "192.0.2.1", "h.example", "alice@fail.example", "fail", "mailfrom", "fail.example",
			"192.0.2.1 is not one of fail.example's designated mail servers, see https://fail.example/spf?s=alice%40fail.example"},
		{"no exp", "192.0.2.1", "h.example", "alice@noexp.example", "fail", "mailfrom", "noexp.example", "matched all"},
		{"exp after redirect", "192.0.2.1", "h.example", "bob@redirect.example", "fail", "mailfrom", "redirect.example",
			"192.0.2.1 is not one of fail.example's designated"},
		{"no exp of an include", "192.0.2.1", "h.example", "bob@incfail.example", "fail", "mailfrom", "incfail.example", "matched all"},
		{"bad exp ignored", "192.0.2.1", "h.example", "bob@badexp.example", "fail", "mailfrom", "badexp.example", "matched all"},
		{"softfail", "192.0.2.1", "h.example", "alice@softfail.example", "softfail", "mailfrom", "softfail.example", "matched all"},
		{"neutral", "192.0.2.1", "h.example", "alice@neutral.example", "neutral", "mailfrom", "neutral.example", "matched all"},
		{"empty record", "192.0.2.1", "h.example", "alice@empty.example", "neutral", "mailfrom", "empty.example", "no mechanism matched"},
		{"no domain", "192.0.2.1", "h.example", "alice@nothing.example", "none", "mailfrom", "nothing.example", "no SPF record for nothing.example"},
		{"no spf record", "192.0.2.1", "h.example", "alice@nospf.example", "none", "mailfrom", "nospf.example", "no SPF record"},
		{"two records", "192.0.2.1", "h.example", "alice@two.example", "permerror", "mailfrom", "two.example", "more than one SPF record"},
		{"bad ip4", "192.0.2.1", "h.example", "alice@syntax.example", "permerror", "mailfrom", "syntax.example", "syntax error"},
		{"unknown mechanism", "192.0.2.1", "h.example", "alice@unknown.example", "permerror", "mailfrom", "unknown.example", "syntax error"},
		{"include of no record", "192.0.2.1", "h.example", "alice@incnone.example", "permerror", "mailfrom", "incnone.example", "without SPF record"},
		{"servfail", "192.0.2.1", "h.example", "alice@servfail.example", "temperror", "mailfrom", "servfail.example", "SERVFAIL"},
		{"servfail in include", "192.0.2.1", "h.example", "alice@tempinc.example", "temperror", "mailfrom", "tempinc.example", "SERVFAIL"},
		{"include loop", "192.0.2.1", "h.example", "alice@loop-a.example", "permerror", "mailfrom", "loop-a.example", "more than 10"},
		{"lookup limit", "192.0.2.1", "h.example", "alice@many.example", "permerror", "mailfrom", "many.example", "more than 10"},
		{"void lookups", "192.0.2.1", "h.example", "alice@void.example", "permerror", "mailfrom", "void.example", "found nothing"},
		{"exists", "192.0.2.10", "h.example", "alice@exists.example", "pass", "mailfrom", "exists.example", "matched exists"},
		{"ptr", "192.0.2.40", "h.example", "alice@ptr.example", "pass", "mailfrom", "ptr.example", "matched ptr"},
		{"uppercase domain", "192.0.2.7", "h.example", "Alice@IP4.Example", "pass", "mailfrom", "ip4.example", "matched ip"},
		{"ipv6 ip6", "2001:db8::1", "h.example", "alice@v6.example", "pass", "mailfrom", "v6.example", "matched ip"},
		{"ipv6 a", "2001:db9::5", "h.example", "alice@v6.example", "pass", "mailfrom", "v6.example", "matched a"},
		{"ipv6 mx", "[IPv6:2001:db8:20::1]", "h.example", "alice@v6.example", "pass", "mailfrom", "v6.example", "matched ip"},
		{"ipv6 mx of mx.example", "2001:db8:20::1", "h.example", "alice@mx.example", "pass", "mailfrom", "mx.example", "matched mx"},
		{"ipv6 fail", "2001:dba::1", "h.example", "alice@v6.example", "fail", "mailfrom", "v6.example", "matched all"},
		{"null sender", "192.0.2.30", "helo.example", "", "pass", "helo", "helo.example", "matched a"},
		{"sender without domain", "192.0.2.31", "helo.example", "postmaster", "fail", "helo", "helo.example", "matched all"},
		{"helo literal", "192.0.2.1", "[192.0.2.1]", "", "none", "helo", "[192.0.2.1]", "not a domain name"},
		{"sender literal", "192.0.2.1", "h.example", "a@[192.0.2.1]", "none", "mailfrom", "[192.0.2.1]", "not a domain name"},
		{"single label", "192.0.2.1", "h.example", "a@localhost", "none", "mailfrom", "localhost", "not a domain name"},
		{"utf-8 domain", "192.0.2.1", "h.example", "a@bücher.example", "none", "mailfrom", "bücher.example", "not a domain name"},
		{"quoted @ in local part", "192.0.2.7", "h.example", `"a@b"@ip4.example`, "pass", "mailfrom", "ip4.example", "matched ip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v := call(t, t.Context(), env, "spf.check(ip, helo, sender)", starlark.StringDict{
				"ip": starlark.String(tt.ip), "helo": starlark.String(tt.helo), "sender": starlark.String(tt.sender),
			})
			r := v.(spf.Value).R
			if r.Value != tt.want || r.Identity != tt.identity || r.Domain != tt.domain || !strings.Contains(r.Reason, tt.reason) {
				t.Errorf("check(%s, %s, %q) = %+v, want %s %s %s (%q)", tt.ip, tt.helo, tt.sender, r, tt.want, tt.identity, tt.domain, tt.reason)
			}
			wantSender := tt.sender
			if tt.identity == "helo" {
				wantSender = "postmaster@" + tt.helo
			}
			if r.Sender != wantSender {
				t.Errorf("sender = %q, want %q", r.Sender, wantSender)
			}
			if bool(v.Truth()) != (tt.want == "pass") {
				t.Errorf("truth = %v for %s", v.Truth(), tt.want)
			}
		})
	}
}

// TestStarlark: the attributes, the argument forms scripts pass
// (conn.helo may be None, sender an address value) and check_helo.
func TestStarlark(t *testing.T) {
	t.Parallel()
	env := &dns.Env{Resolver: &resolver.Resolver{Table: newTable(t)}}
	vars := starlark.StringDict{
		"sender": addr.NewValue(addr.Address{Local: "alice", Domain: "ip4.example"}, "+"),
		"null":   addr.NewValue(addr.Address{}, "+"),
	}
	tests := []struct{ expr, want string }{
		{`spf.check("192.0.2.7", None, sender).result`, `"pass"`},
		{`spf.check("192.0.2.7", None, sender).sender`, `"alice@ip4.example"`},
		{`spf.check(ip="192.0.2.7", helo="h.example", sender="a@ip4.example").reason`, `"matched ip"`},
		{`bool(spf.check("198.51.100.1", "h.example", sender))`, `False`},
		{`spf.check("192.0.2.30", "helo.example", null).identity`, `"helo"`},
		{`spf.check("192.0.2.30", "helo.example", None).sender`, `"postmaster@helo.example"`},
		{`spf.check_helo("192.0.2.30", "helo.example").result`, `"pass"`},
		{`spf.check_helo("192.0.2.31", "HELO.example.").domain`, `"helo.example"`},
		{`spf.check_helo("192.0.2.1", None).result`, `"none"`},
		{`str(spf.check_helo("192.0.2.30", "helo.example"))`, `"<spf helo helo.example: pass>"`},
		{`dir(spf.check_helo("192.0.2.30", "helo.example"))`, `["domain", "identity", "reason", "result", "sender"]`},
		{`type(spf.check_helo("192.0.2.30", "helo.example"))`, `"spf_result"`},
	}
	for _, tt := range tests {
		if got := call(t, t.Context(), env, tt.expr, vars).String(); got != tt.want {
			t.Errorf("%s = %s, want %s", tt.expr, got, tt.want)
		}
	}
}

// TestErrors: script mistakes are errors, and so is a call outside a hook.
func TestErrors(t *testing.T) {
	t.Parallel()
	env := &dns.Env{Resolver: &resolver.Resolver{Table: newTable(t)}}
	tests := []struct {
		th         *starlark.Thread
		expr, want string
	}{
		{env.Thread(t.Context(), "test"), `spf.check("not an ip", "h.example", "a@ip4.example")`, "not an ip address"},
		{env.Thread(t.Context(), "test"), `spf.check("192.0.2.1", 42, "a@ip4.example")`, "helo: got int"},
		{env.Thread(t.Context(), "test"), `spf.check("192.0.2.1", "h.example", 42)`, "sender: got int"},
		{env.Thread(t.Context(), "test"), `spf.check("192.0.2.1", "h.example")`, "missing argument"},
		{&starlark.Thread{}, `spf.check_helo("192.0.2.1", "h.example")`, "only available in hooks"},
	}
	for _, tt := range tests {
		_, err := starlark.EvalOptions(&syntax.FileOptions{}, tt.th, "test", tt.expr, starlark.StringDict{"spf": spf.Module()})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want %q", tt.expr, err, tt.want)
		}
	}
}

// TestBudget: when the hook's query budget runs out the result is
// temperror, never a conclusion such as "none" (the record was not read)
// or "fail" (ptr takes a failed lookup as no match).
func TestBudget(t *testing.T) {
	t.Parallel()
	tab := newTable(t)
	tests := []struct {
		max    int
		sender string
	}{
		{1, "alice@include.example"},  // the include's record is not read
		{3, "alice@many.example"},     // spent in the middle of the includes
		{1, "alice@ptr.example"},      // the PTR lookup is refused
		{2, "alice@ptr.example"},      // the forward lookup of its name is refused
		{1, "alice@mx.example"},       // the MX lookup is refused
		{2, "alice@mx.example"},       // the MX hosts' addresses are refused
		{-1, "alice@nothing.example"}, // not even the TXT lookup
	}
	for _, tt := range tests {
		env := &dns.Env{Resolver: &resolver.Resolver{Table: tab}, MaxQueries: max(tt.max, 1)}
		th := env.Thread(t.Context(), "test")
		s, err := dns.SessionOf(th)
		if err != nil {
			t.Fatal(err)
		}
		if tt.max < 0 {
			s.Take() // spend the whole budget of one
		}
		r := spf.Check(s, netip.MustParseAddr("192.0.2.40"), "h.example", tt.sender)
		if r.Value != spf.TempError || !strings.Contains(r.Reason, "dns_max_queries") {
			t.Errorf("budget %d, %s: %+v, want temperror naming dns_max_queries", tt.max, tt.sender, r)
		}
	}
}

// TestAuthres: every check records its result for the
// Authentication-Results header, by identity.
func TestAuthres(t *testing.T) {
	t.Parallel()
	env := &dns.Env{Resolver: &resolver.Resolver{Table: newTable(t)}}
	rec := &authres.Recorder{}
	ctx := authres.With(t.Context(), rec)
	call(t, ctx, env, `spf.check("192.0.2.7", "h.example", "alice@ip4.example")`, nil)
	call(t, ctx, env, `spf.check_helo("192.0.2.1", "helo.example")`, nil)
	got := rec.Results()
	want := []msgauth.Result{
		&msgauth.SPFResult{Value: msgauth.ResultPass, Reason: "matched ip", From: "alice@ip4.example", Helo: "h.example"},
		&msgauth.SPFResult{Value: msgauth.ResultFail, Reason: "matched all", Helo: "helo.example"},
	}
	if len(got) != len(want) {
		t.Fatalf("recorded %d results, want %d: %v", len(got), len(want), got)
	}
	for i := range want {
		if *got[i].(*msgauth.SPFResult) != *want[i].(*msgauth.SPFResult) {
			t.Errorf("result %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	field := authres.Field("mx.example", got)
	if !strings.Contains(field, "spf=pass reason=\"matched ip\" smtp.helo=h.example smtp.mailfrom=alice@ip4.example") {
		t.Errorf("field = %q", field)
	}
}

// TestHostile: records built to cost or to inject stay bounded and
// cannot put control characters into the reason.
func TestHostile(t *testing.T) {
	t.Parallel()
	tab := newTable(t)
	add := func(name, typ string, v ...string) {
		if err := tab.Add(name, typ, v...); err != nil {
			t.Fatal(err)
		}
	}
	add("crlf.example", "TXT", "v=spf1 -all exp=why.crlf.example")
	add("why.crlf.example", "TXT", "line\r\nX-Injected: yes")
	add("huge.example", "TXT", "v=spf1 -all exp=why.huge.example")
	add("why.huge.example", "TXT", strings.Repeat("%{s}", 2000))
	add("long.example", "TXT", "v=spf1 -all exp=why.long.example")
	add("why.long.example", "TXT", strings.Repeat("x", 1000)+"\\")
	add("deep.example", "TXT", "v=spf1 "+strings.Repeat("a:%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d} ", 20)+"-all")
	env := &dns.Env{Resolver: &resolver.Resolver{Table: tab}, MaxQueries: 50}
	for _, sender := range []string{"a@crlf.example", "a@huge.example", "a@long.example", "a@deep.example", strings.Repeat("x", 5000) + "@ip4.example"} {
		th := env.Thread(t.Context(), "test")
		s, _ := dns.SessionOf(th)
		r := spf.Check(s, netip.MustParseAddr("198.51.100.1"), "h.example", sender)
		if len(r.Reason) > 256 || strings.ContainsAny(r.Reason, "\r\n\\") {
			t.Errorf("%.40s: reason %q", sender, r.Reason)
		}
		if s.Used() > 50 {
			t.Errorf("%.40s: %d queries", sender, s.Used())
		}
	}

	// A script may pass any HELO name or sender: none reaches the
	// header able to break its line.
	rec := &authres.Recorder{}
	s, _ := dns.SessionOf(env.Thread(authres.With(t.Context(), rec), "test"))
	spf.Check(s, netip.MustParseAddr("192.0.2.7"), "evil\r\nX-Injected: yes", "a\x00b\\\xff@ip4.example")
	for _, res := range rec.Results() {
		ar := res.(*msgauth.SPFResult)
		if ar.Value != msgauth.ResultPass || strings.ContainsAny(ar.Helo+ar.From, "\r\n\x00\\") || strings.IndexByte(ar.Helo+ar.From, 0xff) >= 0 {
			t.Errorf("recorded %+v", ar)
		}
	}
	if len(rec.Results()) != 1 {
		t.Errorf("recorded %d results", len(rec.Results()))
	}
}

// BenchmarkCheck: a pass through two levels of include, answered from
// the cache after the first round.
func BenchmarkCheck(b *testing.B) {
	tab := newTable(b)
	if err := tab.Add("bench.example", "TXT", "v=spf1 include:include.example -all"); err != nil {
		b.Fatal(err)
	}
	env := &dns.Env{Resolver: &resolver.Resolver{Table: tab, Cache: resolver.NewCache()}}
	ip := netip.MustParseAddr("192.0.2.7")
	b.ReportAllocs()
	for b.Loop() {
		s, err := dns.SessionOf(env.Thread(b.Context(), "bench"))
		if err != nil {
			b.Fatal(err)
		}
		if r := spf.Check(s, ip, "h.example", "alice@bench.example"); r.Value != spf.Pass {
			b.Fatalf("%+v", r)
		}
	}
}
