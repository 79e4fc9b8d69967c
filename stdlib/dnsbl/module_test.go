package dnsbl_test

import (
	"context"
	"strings"
	"testing"

	"go.starlark.net/starlark"
	"go.starlark.net/syntax"

	"github.com/larkpost/larkpost/engine/resolver"
	"github.com/larkpost/larkpost/stdlib/authres"
	"github.com/larkpost/larkpost/stdlib/dns"
	"github.com/larkpost/larkpost/stdlib/dnsbl"
)

// nibbles2 is 2001:db8::2 in Spamhaus's IPv6 form.
const nibbles2 = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"

func table(t *testing.T) *resolver.Table {
	t.Helper()
	tab := resolver.NewTable()
	add := func(name, typ string, v ...string) {
		t.Helper()
		if err := tab.Add(name, typ, v...); err != nil {
			t.Fatal(err)
		}
	}
	servfail := func(name string) {
		t.Helper()
		if err := tab.ServFail(name); err != nil {
			t.Fatal(err)
		}
	}
	// query: 192.0.2.2 listed, .3 SERVFAIL, .4 refused with an error
	// code, .5 answered outside 127/8, .6 listed without TXT.
	add("2.2.0.192.zen.spamhaus.org", "A", "127.0.0.2", "127.0.0.4")
	add("2.2.0.192.zen.spamhaus.org", "TXT", "Listed; see https://lists.example/q?192.0.2.2\r\nInjected: yes")
	servfail("3.2.0.192.zen.spamhaus.org")
	add("4.2.0.192.zen.spamhaus.org", "A", "127.255.255.254")
	add("5.2.0.192.zen.spamhaus.org", "A", "192.0.2.99")
	add("6.2.0.192.zen.spamhaus.org", "A", "127.0.0.10")
	add(nibbles2+".zen.spamhaus.org", "A", "127.0.0.3")
	// query_domain
	add("spammy.example.dbl.spamhaus.org", "A", "127.0.1.2")
	add("spammy.example.dbl.spamhaus.org", "TXT", "https://lists.example/d?spammy.example")
	servfail("flaky.example.dbl.spamhaus.org")
	// score: 192.0.2.10
	add("10.2.0.192.zen.spamhaus.org", "A", "127.0.0.2")
	add("10.2.0.192.bl.spamcop.net", "A", "127.0.0.2")
	add("10.2.0.192.list.dnswl.org", "A", "127.0.10.2")
	add("10.2.0.192.b.barracudacentral.org", "A", "127.0.0.3")
	servfail("10.2.0.192.psbl.surriel.com")
	// and every list has TXT, which score must not ask
	for _, z := range []string{"zen.spamhaus.org", "bl.spamcop.net", "list.dnswl.org", "b.barracudacentral.org"} {
		add("10.2.0.192."+z, "TXT", "listed")
	}
	return tab
}

func newEnv(t *testing.T, max int) *dns.Env {
	return &dns.Env{Resolver: &resolver.Resolver{Table: table(t)}, MaxQueries: max}
}

func eval(th *starlark.Thread, expr string) (starlark.Value, error) {
	return starlark.EvalOptions(&syntax.FileOptions{}, th, "test", expr, starlark.StringDict{"dnsbl": dnsbl.Module()})
}

func run(t *testing.T, env *dns.Env, expr string) starlark.Value {
	t.Helper()
	v, err := eval(env.Thread(t.Context(), "test"), expr)
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

func TestQuery(t *testing.T) {
	t.Parallel()
	env := newEnv(t, 0)
	tests := []struct{ expr, want string }{
		{`dnsbl.query("192.0.2.2", "zen.spamhaus.org").listed`, `True`},
		{`bool(dnsbl.query("192.0.2.2", "zen.spamhaus.org"))`, `True`},
		{`dnsbl.query("192.0.2.2", "zen.spamhaus.org").codes`, `["127.0.0.2", "127.0.0.4"]`},
		{`dnsbl.query("192.0.2.2", "zen.spamhaus.org").status`, `"ok"`},
		{`dnsbl.query("192.0.2.2", "ZEN.Spamhaus.org.").query`, `"2.2.0.192.zen.spamhaus.org"`},
		{`dnsbl.query("192.0.2.2", "ZEN.Spamhaus.org.").zone`, `"zen.spamhaus.org"`},
		// the TXT text, made safe for a reply: no CR LF
		{`dnsbl.query("192.0.2.2", "zen.spamhaus.org").txt`, `"Listed; see https://lists.example/q?192.0.2.2  Injected: yes"`},
		{`str(dnsbl.query("192.0.2.2", "zen.spamhaus.org"))`, `"<dnsbl 2.2.0.192.zen.spamhaus.org: listed 127.0.0.2, 127.0.0.4>"`},
		{`dnsbl.query("192.0.2.6", "zen.spamhaus.org").txt`, `""`},
		{`dnsbl.query("::ffff:192.0.2.2", "zen.spamhaus.org").listed`, `True`},
		// not listed: NXDOMAIN
		{`dnsbl.query("192.0.2.1", "zen.spamhaus.org").listed`, `False`},
		{`dnsbl.query("192.0.2.1", "zen.spamhaus.org").status`, `"ok"`},
		{`dnsbl.query("192.0.2.1", "zen.spamhaus.org").codes`, `[]`},
		{`dnsbl.query("192.0.2.1", "zen.spamhaus.org").error`, `""`},
		// IPv6: 32 nibbles
		{`dnsbl.query("2001:db8::2", "zen.spamhaus.org").query`, `"` + nibbles2 + `.zen.spamhaus.org"`},
		{`dnsbl.query("[IPv6:2001:db8::2]", "zen.spamhaus.org").codes`, `["127.0.0.3"]`},
		// a failed lookup is never "not listed"
		{`dnsbl.query("192.0.2.3", "zen.spamhaus.org").status`, `"temperror"`},
		{`dnsbl.query("192.0.2.3", "zen.spamhaus.org").listed`, `False`},
		{`"SERVFAIL" in dnsbl.query("192.0.2.3", "zen.spamhaus.org").error`, `True`},
		{`str(dnsbl.query("192.0.2.3", "zen.spamhaus.org"))`, `"<dnsbl 3.2.0.192.zen.spamhaus.org: temperror>"`},
		// an error code is a refusal, not a listing
		{`dnsbl.query("192.0.2.4", "zen.spamhaus.org").status`, `"temperror"`},
		{`dnsbl.query("192.0.2.4", "zen.spamhaus.org").listed`, `False`},
		{`dnsbl.query("192.0.2.4", "zen.spamhaus.org").codes`, `[]`},
		{`"127.255.255.254" in dnsbl.query("192.0.2.4", "zen.spamhaus.org").error`, `True`},
		{`"open resolver" in dnsbl.query("192.0.2.4", "zen.spamhaus.org").error`, `True`},
		// answers outside 127/8 are not listings
		{`dnsbl.query("192.0.2.5", "zen.spamhaus.org").listed`, `False`},
		{`dnsbl.query("192.0.2.5", "zen.spamhaus.org").status`, `"ok"`},
		{`dnsbl.query(ip = "192.0.2.2", zone = "zen.spamhaus.org").listed`, `True`},
	}
	for _, tt := range tests {
		if got := run(t, env, tt.expr).String(); got != tt.want {
			t.Errorf("%s = %s, want %s", tt.expr, got, tt.want)
		}
	}
}

func TestQueryDomain(t *testing.T) {
	t.Parallel()
	env := newEnv(t, 0)
	tests := []struct{ expr, want string }{
		{`dnsbl.query_domain("spammy.example", "dbl.spamhaus.org").listed`, `True`},
		{`dnsbl.query_domain("Spammy.Example.", "dbl.spamhaus.org").query`, `"spammy.example.dbl.spamhaus.org"`},
		{`dnsbl.query_domain("spammy.example", "dbl.spamhaus.org").codes`, `["127.0.1.2"]`},
		{`dnsbl.query_domain("spammy.example", "dbl.spamhaus.org").txt`, `"https://lists.example/d?spammy.example"`},
		{`dnsbl.query_domain("clean.example", "dbl.spamhaus.org").listed`, `False`},
		{`dnsbl.query_domain("clean.example", "dbl.spamhaus.org").status`, `"ok"`},
		{`dnsbl.query_domain("flaky.example", "dbl.spamhaus.org").status`, `"temperror"`},
		// the client's junk: nothing asked, permerror
		{`dnsbl.query_domain("[192.0.2.1]", "dbl.spamhaus.org").status`, `"permerror"`},
		{`dnsbl.query_domain("", "dbl.spamhaus.org").status`, `"permerror"`},
		{`dnsbl.query_domain("a..b", "dbl.spamhaus.org").listed`, `False`},
		{`dnsbl.query_domain("bücher.example", "dbl.spamhaus.org").status`, `"permerror"`},
		{`dnsbl.query_domain("x y", "dbl.spamhaus.org").status`, `"permerror"`},
		{`dnsbl.query_domain("` + strings.Repeat("a.", 120) + `example", "dbl.spamhaus.org").status`, `"permerror"`},
	}
	for _, tt := range tests {
		if got := run(t, env, tt.expr).String(); got != tt.want {
			t.Errorf("%s = %s, want %s", tt.expr, got, tt.want)
		}
	}
}

// TestArgErrors: the script's own mistakes fail the call.
func TestArgErrors(t *testing.T) {
	t.Parallel()
	env := newEnv(t, 0)
	tests := []struct{ expr, want string }{
		{`dnsbl.query("not-an-ip", "zen.spamhaus.org")`, `not an ip address`},
		{`dnsbl.query("192.0.2.1", "zen..org")`, `invalid zone`},
		{`dnsbl.query("192.0.2.1", "")`, `invalid zone`},
		{`dnsbl.query("192.0.2.1", "` + strings.Repeat("a.", 100) + `org")`, `longer than`},
		{`dnsbl.query_domain("example.com", "bad zone")`, `invalid zone`},
		{`dnsbl.score("192.0.2.1", "zen.spamhaus.org")`, `want a list of strings or a dict`},
		{`dnsbl.score("192.0.2.1", [3])`, `sites[0]: got int`},
		{`dnsbl.score("192.0.2.1", {3: 1})`, `key 3 is a int`},
		{`dnsbl.score("192.0.2.1", {"zen.spamhaus.org": "3"})`, `weight "3"`},
		{`dnsbl.score("192.0.2.1", {"zen.spamhaus.org": 1.5})`, `weight 1.5`},
		{`dnsbl.score("192.0.2.1", {"zen.spamhaus.org*3": 3})`, `the weight is the value`},
		{`dnsbl.score("bad", ["zen.spamhaus.org"])`, `not an ip address`},
	}
	for _, tt := range tests {
		_, err := eval(env.Thread(t.Context(), "test"), tt.expr)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want it to contain %q", tt.expr, err, tt.want)
		}
	}
}

const sites = `[
	"zen.spamhaus.org*3",
	"bl.spamcop.net",
	"list.dnswl.org=127.0.[0..255].[1..3]*-2",
	"list.dnswl.org=127.0.[2..15].[2;3]*-1",
	"list.dnswl.org=127.0.[0..255].0*-4",
	"b.barracudacentral.org=127.0.0.2*7",
	"psbl.surriel.com*5",
]`

func TestScore(t *testing.T) {
	t.Parallel()
	env := newEnv(t, 0)
	call := `dnsbl.score("192.0.2.10", ` + sites + `)`
	tests := []struct{ expr, want string }{
		// 3 (zen) + 1 (spamcop) - 2 - 1 (dnswl, both filters match)
		// barracuda answers 127.0.0.3, outside its filter; psbl failed.
		{call + `.score`, `1`},
		{`[h.site for h in ` + call + `.hits]`, `["zen.spamhaus.org", "bl.spamcop.net", "list.dnswl.org=127.0.[0..255].[1..3]", "list.dnswl.org=127.0.[2..15].[2;3]"]`},
		{`[h.weight for h in ` + call + `.hits]`, `[3, 1, -2, -1]`},
		{`[h.zone for h in ` + call + `.hits][2]`, `"list.dnswl.org"`},
		{call + `.hits[2].codes`, `["127.0.10.2"]`},
		{call + `.errors`, `["psbl.surriel.com"]`},
		{call + `.complete`, `False`},
		// not listed anywhere, all answered
		{`dnsbl.score("192.0.2.1", ` + sites + `).score`, `0`},
		{`dnsbl.score("192.0.2.1", ` + sites + `).complete`, `True`},
		{`dnsbl.score("192.0.2.1", []).complete`, `True`},
		// dict and list forms are the same thing
		{call + ` == dnsbl.score("192.0.2.10", {
			"zen.spamhaus.org": 3,
			"bl.spamcop.net": 1,
			"list.dnswl.org=127.0.[0..255].[1..3]": -2,
			"list.dnswl.org=127.0.[2..15].[2;3]": -1,
			"list.dnswl.org=127.0.[0..255].0": -4,
			"b.barracudacentral.org=127.0.0.2": 7,
			"psbl.surriel.com": 5,
		})`, `True`},
		// an error code: reported, not counted
		{`dnsbl.score("192.0.2.4", ["zen.spamhaus.org*3"]).errors`, `["zen.spamhaus.org"]`},
		{`dnsbl.score("192.0.2.4", ["zen.spamhaus.org*3"]).score`, `0`},
		{`dnsbl.score("192.0.2.2", ("zen.spamhaus.org=127.0.0.[3;4]",)).hits[0].codes`, `["127.0.0.4"]`},
		{`dnsbl.score("2001:db8::2", ["zen.spamhaus.org*2"]).score`, `2`},
		{`dnsbl.score("192.0.2.5", ["zen.spamhaus.org=192.0.2.99"]).score`, `0`},
	}
	for _, tt := range tests {
		if got := run(t, env, tt.expr).String(); got != tt.want {
			t.Errorf("%s = %s, want %s", tt.expr, got, tt.want)
		}
	}
}

// TestBudget: score asks each distinct zone once and no TXT; query asks
// TXT only when listed; past the budget lists are errors, not "clean".
func TestBudget(t *testing.T) {
	t.Parallel()
	tests := []struct {
		before, expr string // before: evaluated first on the same thread
		max          int
		want         string
		used         int
	}{
		{"", `dnsbl.score("192.0.2.10", ` + sites + `).score`, 0, `1`, 5},
		{"", `dnsbl.query("192.0.2.2", "zen.spamhaus.org").listed`, 0, `True`, 2},
		{"", `dnsbl.query("192.0.2.1", "zen.spamhaus.org").listed`, 0, `False`, 1},
		{"", `dnsbl.query_domain("spammy.example", "dbl.spamhaus.org").listed`, 0, `True`, 2},
		{"", `dnsbl.query_domain("[junk]", "dbl.spamhaus.org").listed`, 0, `False`, 0},
		{"", `dnsbl.score("192.0.2.10", ` + sites + `).errors`, 2, `["list.dnswl.org", "b.barracudacentral.org", "psbl.surriel.com"]`, 2},
		{`dnsbl.query("192.0.2.1", "zen.spamhaus.org")`, `dnsbl.query("192.0.2.1", "zen.spamhaus.org").status`, 1, `"temperror"`, 1},
		{`dnsbl.query("192.0.2.1", "zen.spamhaus.org")`, `dnsbl.query("192.0.2.1", "zen.spamhaus.org").listed`, 1, `False`, 1},
	}
	for _, tt := range tests {
		th := newEnv(t, tt.max).Thread(t.Context(), "test")
		if tt.before != "" {
			if _, err := eval(th, tt.before); err != nil {
				t.Fatalf("%s: %v", tt.before, err)
			}
		}
		v, err := eval(th, tt.expr)
		if err != nil {
			t.Fatalf("%s: %v", tt.expr, err)
		}
		if got := v.String(); got != tt.want {
			t.Errorf("%s = %s, want %s", tt.expr, got, tt.want)
		}
		s, err := dns.SessionOf(th)
		if err != nil {
			t.Fatal(err)
		}
		if s.Used() != tt.used {
			t.Errorf("%s: %d queries, want %d", tt.expr, s.Used(), tt.used)
		}
	}
}

// TestNoAuthResults: there is no RFC 8601 method for DNSBLs.
func TestNoAuthResults(t *testing.T) {
	t.Parallel()
	rec := &authres.Recorder{}
	ctx := authres.With(context.Background(), rec)
	th := newEnv(t, 0).Thread(ctx, "test")
	for _, expr := range []string{
		`dnsbl.query("192.0.2.2", "zen.spamhaus.org")`,
		`dnsbl.query_domain("spammy.example", "dbl.spamhaus.org")`,
		`dnsbl.score("192.0.2.10", ` + sites + `)`,
	} {
		if _, err := eval(th, expr); err != nil {
			t.Fatal(err)
		}
	}
	if got := rec.Results(); len(got) != 0 {
		t.Errorf("recorded %v", got)
	}
}

// TestNoDNS: outside a hook the module says so.
func TestNoDNS(t *testing.T) {
	t.Parallel()
	for _, expr := range []string{
		`dnsbl.query("192.0.2.2", "zen.spamhaus.org")`,
		`dnsbl.query_domain("example.com", "dbl.spamhaus.org")`,
		`dnsbl.score("192.0.2.2", ["zen.spamhaus.org"])`,
	} {
		_, err := eval(&starlark.Thread{}, expr)
		if err == nil || !strings.Contains(err.Error(), "only available in hooks") {
			t.Errorf("%s: error %v", expr, err)
		}
	}
}
