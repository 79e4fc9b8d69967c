package spf

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestExpand: the examples of RFC 7208 section 7.4, and what is refused.
func TestExpand(t *testing.T) {
	t.Parallel()
	env := &macroEnv{
		sender: "strong-bad@email.example.com", local: "strong-bad", origin: "email.example.com",
		domain: "email.example.com", helo: "mx.example.org", ip: netip.MustParseAddr("192.0.2.3"),
		now: time.Unix(1700000000, 0),
	}
	v6 := *env
	v6.ip = netip.MustParseAddr("2001:db8::cb01")
	tests := []struct {
		env     *macroEnv
		in, out string
		exp     bool
	}{
		{env, "%{s}", "strong-bad@email.example.com", false},
		{env, "%{o}", "email.example.com", false},
		{env, "%{d}", "email.example.com", false},
		{env, "%{d4}", "email.example.com", false},
		{env, "%{d3}", "email.example.com", false},
		{env, "%{d2}", "example.com", false},
		{env, "%{d1}", "com", false},
		{env, "%{dr}", "com.example.email", false},
		{env, "%{d2r}", "example.email", false},
		{env, "%{l}", "strong-bad", false},
		{env, "%{l-}", "strong.bad", false},
		{env, "%{lr}", "strong-bad", false},
		{env, "%{lr-}", "bad.strong", false},
		{env, "%{l1r-}", "strong", false},
		{env, "%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com", false},
		{env, "%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com", false},
		{env, "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com", false},
		{env, "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com", false},
		{env, "%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net", false},
		{&v6, "%{ir}.%{v}._spf.%{d2}", "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com", false},
		{env, "%{S}", "strong-bad%40email.example.com", false},
		{env, "%{h}%%%_%-", "mx.example.org% %20", false},
		{env, "%{c} at %{t} by %{r}", "192.0.2.3 at 1700000000 by unknown", true},
		{&v6, "%{c}", "2001:db8::cb01", true},
		{env, "%{p}", "unknown", false},
	}
	for _, tt := range tests {
		got, err := tt.env.expand(tt.in, tt.exp)
		if err != nil || got != tt.out {
			t.Errorf("expand(%q) = %q, %v, want %q", tt.in, got, err, tt.out)
		}
	}
	for _, bad := range []string{
		"%", "%x", "%{", "%{}", "%{z}", "%{d0}", "%{d99999999999999999999}", "%{d2x}",
		"%{c}", "%{t}", "a b", "a\tb", "\xff", strings.Repeat("%{s}", 100),
	} {
		if got, err := env.expand(bad, false); err == nil {
			t.Errorf("expand(%q) = %q, want an error", bad, got)
		}
	}
}

func TestTruncateName(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("abcdefghi.", 30) + "example.com"
	got := truncateName(long)
	if len(got) > 253 || !strings.HasSuffix(long, "."+got) {
		t.Errorf("truncateName = %q (%d)", got, len(got))
	}
	if truncateName("example.com") != "example.com" {
		t.Error("a short name changed")
	}
}

// FuzzExpand: any input terminates, bounded, without panicking.
func FuzzExpand(f *testing.F) {
	for _, s := range []string{"%{ir}.%{v}._spf.%{d2}", "%{l1r-}", "%{S}", "%%%_%-", "%{d0}", "%{", "%{c} %{t}"} {
		f.Add(s, true)
	}
	env := &macroEnv{sender: "a@b.example", local: "a", origin: "b.example", domain: "b.example", helo: "h", ip: netip.MustParseAddr("2001:db8::1")}
	f.Fuzz(func(t *testing.T, s string, exp bool) {
		out, err := env.expand(s, exp)
		if err == nil && len(out) > maxExpansion+1000 {
			t.Errorf("expanded to %d bytes", len(out))
		}
	})
}
