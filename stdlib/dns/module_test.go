package dns_test

import (
	"strings"
	"testing"

	"go.starlark.net/starlark"
	"go.starlark.net/syntax"

	"github.com/larkpost/larkpost/engine/resolver"
	"github.com/larkpost/larkpost/stdlib/dns"
)

func table(t *testing.T) *resolver.Table {
	t.Helper()
	tab := resolver.NewTable()
	add := func(name, typ string, v ...string) {
		if err := tab.Add(name, typ, v...); err != nil {
			t.Fatal(err)
		}
	}
	add("example.com", "MX", "20 mx2.example.com", "10 mx1.example.com")
	add("example.com", "TXT", "v=spf1 -all")
	add("mx1.example.com", "A", "192.0.2.1", "192.0.2.11")
	add("mx1.example.com", "AAAA", "2001:db8::1")
	add("1.2.0.192.in-addr.arpa", "PTR", "mx1.example.com.", "liar.example.net.")
	add("liar.example.net", "A", "198.51.100.1")
	add("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", "PTR", "mx1.example.com.")
	add("2.2.0.192.in-addr.arpa", "PTR", "slow.example.org.")
	add("null.example", "MX", "0 .")
	add("example.com", "CAA", `0 issue "ca.example"`)
	if err := tab.ServFail("slow.example.org"); err != nil {
		t.Fatal(err)
	}
	if err := tab.ServFail("broken.example"); err != nil {
		t.Fatal(err)
	}
	return tab
}

func run(t *testing.T, env *dns.Env, expr string) starlark.Value {
	t.Helper()
	th := env.Thread(t.Context(), "test")
	v, err := starlark.EvalOptions(&syntax.FileOptions{}, th, "test", expr, starlark.StringDict{"dns": dns.Module()})
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

func TestModule(t *testing.T) {
	t.Parallel()
	env := &dns.Env{Resolver: &resolver.Resolver{Table: table(t)}}
	tests := []struct{ expr, want string }{
		{`dns.lookup_mx("example.com").values`, `["mx1.example.com", "mx2.example.com"]`},
		{`dns.lookup_mx("null.example").values`, `["."]`},
		{`list(dns.lookup_a("mx1.example.com"))`, `["192.0.2.1", "192.0.2.11"]`},
		{`dns.lookup_aaaa("mx1.example.com")[0]`, `"2001:db8::1"`},
		{`dns.lookup_txt("example.com").values`, `["v=spf1 -all"]`},
		{`dns.lookup("example.com", "caa").values`, `["0 issue \"ca.example\""]`},
		{`dns.lookup_a("example.com").status`, `"nodata"`},
		{`dns.lookup_a("example.com").exists`, `True`},
		{`bool(dns.lookup_a("example.com"))`, `False`},
		{`dns.lookup_a("nothing.example").status`, `"nxdomain"`},
		{`dns.lookup_a("nothing.example").exists`, `False`},
		{`dns.lookup_a("broken.example").status`, `"temperror"`},
		{`"SERVFAIL" in dns.lookup_a("broken.example").error`, `True`},
		{`dns.lookup_a("bad..name").status`, `"permerror"`},
		{`dns.lookup_ptr("192.0.2.1").values`, `["mx1.example.com", "liar.example.net"]`},
		{`dns.fcrdns("192.0.2.1").values`, `["mx1.example.com"]`},
		{`dns.fcrdns("2001:db8::1").values`, `["mx1.example.com"]`},
		{`dns.fcrdns("[IPv6:2001:db8::1]").status`, `"ok"`},
		{`dns.fcrdns("192.0.2.99").status`, `"nodata"`},
		{`dns.fcrdns("192.0.2.2").status`, `"temperror"`},
		{`dns.lookup_a("mx1.example.com").ttl`, `300`},
	}
	for _, tt := range tests {
		if got := run(t, env, tt.expr).String(); got != tt.want {
			t.Errorf("%s = %s, want %s", tt.expr, got, tt.want)
		}
	}
}

// TestBudget: the queries of one call are counted, cached or not; past
// the budget lookups fail as temperror, never as "does not exist".
func TestBudget(t *testing.T) {
	t.Parallel()
	env := &dns.Env{Resolver: &resolver.Resolver{Table: table(t), Cache: resolver.NewCache()}, MaxQueries: 3}
	th := env.Thread(t.Context(), "test")
	predeclared := starlark.StringDict{"dns": dns.Module()}
	v, err := starlark.EvalOptions(&syntax.FileOptions{}, th, "test", `[dns.lookup_txt("example.com").status for _ in range(5)]`, predeclared)
	if err != nil {
		t.Fatal(err)
	}
	if got := v.String(); got != `["ok", "ok", "ok", "temperror", "temperror"]` {
		t.Errorf("statuses = %s", got)
	}
	v, _ = starlark.EvalOptions(&syntax.FileOptions{}, th, "test", `dns.lookup_txt("example.com").error`, predeclared)
	if !strings.Contains(v.String(), "dns_max_queries") {
		t.Errorf("error = %s, want it to name dns_max_queries", v)
	}
}

// TestNoDNS: outside a hook (a thread without an Env) the module says so.
func TestNoDNS(t *testing.T) {
	t.Parallel()
	th := &starlark.Thread{}
	_, err := starlark.EvalOptions(&syntax.FileOptions{}, th, "test", `dns.lookup_a("example.com")`, starlark.StringDict{"dns": dns.Module()})
	if err == nil || !strings.Contains(err.Error(), "only available in hooks") {
		t.Errorf("error = %v", err)
	}
}
