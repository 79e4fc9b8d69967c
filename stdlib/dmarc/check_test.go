package dmarc

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-message/textproto"
	msgauth "github.com/emersion/go-msgauth/authres"
	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
	"go.starlark.net/syntax"

	"github.com/larkpost/larkpost/engine/resolver"
	"github.com/larkpost/larkpost/stdlib/authres"
	"github.com/larkpost/larkpost/stdlib/dns"
)

func table(t *testing.T) *resolver.Table {
	t.Helper()
	tab := resolver.NewTable()
	add := func(name string, values ...string) {
		if err := tab.Add(name, "TXT", values...); err != nil {
			t.Fatal(err)
		}
	}
	add("_dmarc.example.com", "v=DMARC1; p=reject; sp=quarantine; rua=mailto:dmarc@example.com")
	add("_dmarc.own.example.com", "v=DMARC1; p=none")
	add("_dmarc.strict.example", "v=DMARC1; p=reject; adkim=s; aspf=s")
	add("_dmarc.sampled.example", "v=DMARC1; p=reject; pct=0")
	add("_dmarc.half.example", "v=DMARC1; p=quarantine; pct=50")
	add("_dmarc.example.co.uk", "v=DMARC1; p=quarantine")
	add("_dmarc.two.example", "v=DMARC1; p=reject", "v=DMARC1; p=none")
	add("_dmarc.mixed.example", "google-site-verification=abc", "v=DMARC10; p=none", "v=DMARC1; p=reject")
	add("_dmarc.bad.example", "v=DMARC1; p=bogus")
	add("_dmarc.badrua.example", "v=DMARC1; p=bogus; rua=mailto:dmarc@badrua.example")
	add("_dmarc.upper.example", "v=DMARC1; P=Reject; ASPF=S")
	add("_dmarc.xn--bcher-kva.example", "v=DMARC1; p=reject")
	if err := tab.ServFail("_dmarc.broken.example"); err != nil {
		t.Fatal(err)
	}
	return tab
}

// testMsg is a message value as on_data's msg gives it; dmarc reads only
// its header.
type testMsg struct{ h textproto.Header }

func (m testMsg) RawMessage() (io.ReaderAt, int64, textproto.Header) { return nil, 0, m.h }
func (m testMsg) String() string                                     { return "<msg>" }
func (m testMsg) Type() string                                       { return "msg" }
func (m testMsg) Freeze()                                            {}
func (m testMsg) Truth() starlark.Bool                               { return true }
func (m testMsg) Hash() (uint32, error)                              { return 0, nil }

func msgFrom(t *testing.T, header string) testMsg {
	t.Helper()
	h, err := textproto.ReadHeader(bufio.NewReader(strings.NewReader(header + "Subject: hi\r\n\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	return testMsg{h}
}

// runCheck runs `dmarc.check(msg, spf=SPF, dkim=DKIM)` with the Starlark
// expressions spf and dkim, and returns the result and what was recorded.
func runCheck(t *testing.T, env *dns.Env, msg testMsg, spf, dkim string) (Result, []msgauth.Result) {
	t.Helper()
	rec := &authres.Recorder{}
	th := env.Thread(authres.With(t.Context(), rec), "test")
	expr := fmt.Sprintf("dmarc.check(msg, spf=%s, dkim=%s)", spf, dkim)
	v, err := starlark.EvalOptions(&syntax.FileOptions{}, th, "test", expr, starlark.StringDict{
		"dmarc": Module(), "msg": msg, "struct": starlark.NewBuiltin("struct", starlarkstruct.Make),
	})
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v.(ResultValue).R, rec.Results()
}

// summary is the result's decision in one line.
func summary(r Result) string {
	return fmt.Sprintf("%s policy=%s disposition=%s spf=%t dkim=%t at=%s org=%s",
		r.Result, r.Policy, r.Disposition, r.SPFAligned, r.DKIMAligned, r.PolicyDomain, r.OrgDomain)
}

func TestCheck(t *testing.T) {
	t.Parallel()
	env := &dns.Env{Resolver: &resolver.Resolver{Table: table(t)}}
	tests := []struct {
		name, from, spf, dkim string
		want                  string
		reason                string
	}{
		{"reject, SPF pass for another domain", "Alice <alice@example.com>",
			`{"result": "pass", "domain": "other.example"}`, `[]`,
			"fail policy=reject disposition=reject spf=false dkim=false at=example.com org=example.com", "no SPF or DKIM pass aligned"},
		{"aligned SPF, relaxed: a subdomain", "alice@example.com",
			`{"result": "pass", "domain": "bounces.example.com"}`, `None`,
			"pass policy=reject disposition=none spf=true dkim=false at=example.com org=example.com", "SPF pass"},
		{"aligned SPF that did not pass", "alice@example.com",
			`{"result": "softfail", "domain": "example.com"}`, `None`,
			"fail policy=reject disposition=reject spf=false dkim=false at=example.com org=example.com", ""},
		{"DKIM only", "alice@example.com",
			`{"result": "fail", "domain": "example.com"}`,
			`[struct(result = "fail", domain = "example.com"), struct(result = "pass", domain = "EXAMPLE.com")]`,
			"pass policy=reject disposition=none spf=false dkim=true at=example.com org=example.com", "DKIM pass"},
		{"strict alignment, subdomains", "a@strict.example",
			`{"result": "pass", "domain": "mail.strict.example"}`, `[{"result": "pass", "domain": "mail.strict.example"}]`,
			"fail policy=reject disposition=reject spf=false dkim=false at=strict.example org=strict.example", ""},
		{"strict alignment, same domain", "a@strict.example",
			`{"result": "pass", "domain": "strict.example"}`, `None`,
			"pass policy=reject disposition=none spf=true dkim=false at=strict.example org=strict.example", ""},
		{"subdomain policy", "bob@a.example.com", `None`, `None`,
			"fail policy=quarantine disposition=quarantine spf=false dkim=false at=example.com org=example.com", ""},
		{"a subdomain's own record", "bob@own.example.com", `None`, `None`,
			"fail policy=none disposition=none spf=false dkim=false at=own.example.com org=example.com", ""},
		{"no record", "bob@norecord.example", `{"result": "pass", "domain": "norecord.example"}`, `None`,
			"none policy=none disposition=none spf=true dkim=false at= org=norecord.example", "no DMARC record"},
		{"pct=0", "bob@sampled.example", `None`, `None`,
			"fail policy=reject disposition=quarantine spf=false dkim=false at=sampled.example org=sampled.example", "pct=0"},
		{"multi-label public suffix", "bob@mail.example.co.uk", `{"result": "pass", "domain": "example.co.uk"}`, `None`,
			"pass policy=quarantine disposition=none spf=true dkim=false at=example.co.uk org=example.co.uk", ""},
		{"another domain under the same public suffix", "bob@example.co.uk", `{"result": "pass", "domain": "other.co.uk"}`, `None`,
			"fail policy=quarantine disposition=quarantine spf=false dkim=false at=example.co.uk org=example.co.uk", ""},
		{"two addresses", "a@example.com, b@example.org", `None`, `None`,
			"permerror policy=none disposition=none spf=false dkim=false at= org=", "2 addresses"},
		{"two From fields", "a@example.com\r\nFrom: b@example.org", `None`, `None`,
			"permerror policy=none disposition=none spf=false dkim=false at= org=", "several From"},
		{"no address", "undisclosed-recipients:;", `None`, `None`,
			"permerror policy=none disposition=none spf=false dkim=false at= org=", "no address"},
		{"a display name net/mail refuses", "Example, Inc. <a@example.com>", `None`, `None`,
			"fail policy=reject disposition=reject spf=false dkim=false at=example.com org=example.com", ""},
		{"servfail", "a@broken.example", `None`, `None`,
			"temperror policy=none disposition=none spf=false dkim=false at= org=broken.example", "SERVFAIL"},
		{"two records", "a@two.example", `None`, `None`,
			"none policy=none disposition=none spf=false dkim=false at= org=two.example", "several DMARC records"},
		{"one DMARC record among others", "a@mixed.example", `None`, `None`,
			"fail policy=reject disposition=reject spf=false dkim=false at=mixed.example org=mixed.example", ""},
		{"invalid record", "a@bad.example", `None`, `None`,
			"permerror policy=none disposition=none spf=false dkim=false at=bad.example org=bad.example", "invalid DMARC record"},
		{"invalid policy, with rua", "a@badrua.example", `None`, `None`,
			"fail policy=none disposition=none spf=false dkim=false at=badrua.example org=badrua.example", ""},
		{"tags in upper case", "a@upper.example", `{"result": "pass", "domain": "mail.upper.example"}`, `None`,
			"fail policy=reject disposition=reject spf=false dkim=false at=upper.example org=upper.example", ""},
		{"internationalized domain", "a@Bücher.example", `None`, `None`,
			"fail policy=reject disposition=reject spf=false dkim=false at=xn--bcher-kva.example org=xn--bcher-kva.example", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, recorded := runCheck(t, env, msgFrom(t, "From: "+tt.from+"\r\n"), tt.spf, tt.dkim)
			if got := summary(res); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
			if !strings.Contains(res.Reason, tt.reason) {
				t.Errorf("reason %q, want it to contain %q", res.Reason, tt.reason)
			}
			want := &msgauth.DMARCResult{Value: msgauth.ResultValue(res.Result), Reason: res.Reason, From: res.FromDomain}
			if len(recorded) != 1 || fmt.Sprint(recorded[0]) != fmt.Sprint(want) {
				t.Errorf("recorded %v, want %v", recorded, want)
			}
		})
	}
}

// TestAttributes: what scripts see of a result.
func TestAttributes(t *testing.T) {
	t.Parallel()
	env := &dns.Env{Resolver: &resolver.Resolver{Table: table(t)}}
	th := env.Thread(t.Context(), "test")
	predeclared := starlark.StringDict{"dmarc": Module(), "msg": msgFrom(t, "From: bob@a.example.com\r\n")}
	v, err := starlark.EvalOptions(&syntax.FileOptions{}, th, "test",
		`[(a, getattr(dmarc.check(msg, dkim=[{"result": "pass", "domain": "example.com"}]), a)) for a in dir(dmarc.check(msg))]`, predeclared)
	if err != nil {
		t.Fatal(err)
	}
	want := `[("adkim", "r"), ("aspf", "r"), ("disposition", "none"), ("dkim_aligned", True), ` +
		`("from_domain", "a.example.com"), ("org_domain", "example.com"), ("pct", 100), ("policy", "quarantine"), ` +
		`("policy_domain", "example.com"), ("reason", "DKIM pass, aligned with a.example.com"), ` +
		`("record", "v=DMARC1; p=reject; sp=quarantine; rua=mailto:dmarc@example.com"), ("result", "pass"), ("spf_aligned", False)]`
	if v.String() != want {
		t.Errorf("got  %s\nwant %s", v, want)
	}
}

// TestPct: a failing message outside the pct= sample gets the milder
// disposition; inside, the policy.
func TestPct(t *testing.T) {
	// Not parallel: it replaces the package's random source.
	old := sampled
	t.Cleanup(func() { sampled = old })
	env := &dns.Env{Resolver: &resolver.Resolver{Table: table(t)}}
	msg := msgFrom(t, "From: a@half.example\r\n")
	for _, tt := range []struct {
		in   bool
		want string
	}{{true, "quarantine"}, {false, "none"}} {
		var asked int
		sampled = func(pct int) bool { asked = pct; return tt.in }
		res, _ := runCheck(t, env, msg, "None", "None")
		if res.Disposition != tt.want || asked != 50 || res.Pct != 50 {
			t.Errorf("sampled %t: disposition %s (pct %d asked %d), want %s", tt.in, res.Disposition, res.Pct, asked, tt.want)
		}
	}
}

// TestArguments: what a script may pass, and what it may not.
func TestArguments(t *testing.T) {
	t.Parallel()
	env := &dns.Env{Resolver: &resolver.Resolver{Table: table(t)}}
	msg := msgFrom(t, "From: a@example.com\r\n")
	predeclared := starlark.StringDict{"dmarc": Module(), "msg": msg, "struct": starlark.NewBuiltin("struct", starlarkstruct.Make)}
	tests := []struct {
		th   *starlark.Thread
		expr string
		want string // error
	}{
		{env.Thread(t.Context(), "test"), `dmarc.check("From: a@example.com")`, "want the message"},
		{env.Thread(t.Context(), "test"), `dmarc.check(msg, spf="pass")`, "spf: got string"},
		{env.Thread(t.Context(), "test"), `dmarc.check(msg, spf={"result": "pass"})`, "has no domain"},
		{env.Thread(t.Context(), "test"), `dmarc.check(msg, spf=struct(domain="example.com"))`, "has no result"},
		{env.Thread(t.Context(), "test"), `dmarc.check(msg, spf={"result": 1, "domain": "example.com"})`, "result is int"},
		{env.Thread(t.Context(), "test"), `dmarc.check(msg, dkim={"result": "pass"})`, "dkim[0]: got string"},
		{env.Thread(t.Context(), "test"), `dmarc.check(msg, dkim=3)`, "dkim: got int"},
		{env.Thread(t.Context(), "test"), `dmarc.check(msg, dkim=[{"result": "pass", "domain": "x"}] * 101)`, "more than 100"},
		{&starlark.Thread{}, `dmarc.check(msg)`, "only available in hooks"},
	}
	for _, tt := range tests {
		_, err := starlark.EvalOptions(&syntax.FileOptions{}, tt.th, "test", tt.expr, predeclared)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want %q", tt.expr, err, tt.want)
		}
	}
}

func TestPunycode(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"bücher.example", "xn--bcher-kva.example"},
		{"münchen.de", "xn--mnchen-3ya.de"},
		{"例え.テスト", "xn--r8jz45g.xn--zckzah"},
		{"example.com", "example.com"},
	}
	for _, tt := range tests {
		got, err := toASCII(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("toASCII(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	if _, err := toASCII(strings.Repeat("ü", 64) + ".example"); err == nil {
		t.Error("a label of 64 characters was accepted")
	}
}
