package dnsbl

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseSite(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, site string
		weight   int
	}{
		{"zen.spamhaus.org", "zen.spamhaus.org", 1},
		{"zen.spamhaus.org*3", "zen.spamhaus.org", 3},
		{"ZEN.Spamhaus.ORG.*+3", "zen.spamhaus.org", 3},
		{"list.dnswl.org=127.0.[0..255].[1..3]*-2", "list.dnswl.org=127.0.[0..255].[1..3]", -2},
		{"b.barracudacentral.org=127.0.0.2*7", "b.barracudacentral.org=127.0.0.2", 7},
		{"wl.mailspike.net=127.0.0.[17;18]*-1", "wl.mailspike.net=127.0.0.[17;18]", -1},
		{"example.com=127.0.0.[2;4..7;9]", "example.com=127.0.0.[2;4..7;9]", 1},
		{"example.com*0", "example.com", 0},
		{"my_list.example", "my_list.example", 1},
	}
	for _, tt := range tests {
		s, err := ParseSite(tt.in)
		if err != nil {
			t.Errorf("ParseSite(%q): %v", tt.in, err)
			continue
		}
		if s.String() != tt.site || s.Weight != tt.weight {
			t.Errorf("ParseSite(%q) = %s*%d, want %s*%d", tt.in, s, s.Weight, tt.site, tt.weight)
		}
	}
}

// TestParseSiteErrors: every malformed site is refused with a message
// that names the bad part.
func TestParseSiteErrors(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"", "empty name"},
		{"*3", "empty name"},
		{"zen.spamhaus.org*", `no weight after *`},
		{"zen.spamhaus.org*x", `"x": the weight is not an integer`},
		{"zen.spamhaus.org*3*4", `"3*4": the weight is not an integer`},
		{"zen.spamhaus.org* 3", `" 3": the weight`},
		{"zen.spamhaus.org*1.5", `"1.5"`},
		{"zen.spamhaus.org*99999999999", `"99999999999"`},
		{"zen.spamhaus.org=", `empty filter`},
		{"zen.spamhaus.org=127.0.0", "four octets"},
		{"zen.spamhaus.org=127.0.0.2.5", `".5" after the fourth octet`},
		{"zen.spamhaus.org=127.0.0.256", `octet 4: "256" is not a number`},
		{"zen.spamhaus.org=127.0.0.-1", `octet 4: "-1"`},
		{"zen.spamhaus.org=127.0.0.[1..", "no closing ]"},
		{"zen.spamhaus.org=127.0.0.[]", "octet 4: []: missing number"},
		{"zen.spamhaus.org=127.0.0.[5..2]", `range "5..2" runs backwards`},
		{"zen.spamhaus.org=127.0.0.[1;;2]", "missing number"},
		{"zen.spamhaus.org=127.0.0.[1...3]", `".3"`},
		{"zen.spamhaus.org=127.0.0.[1..2..3]", `"2..3"`},
		{"zen.spamhaus.org=127.0.0.[1]x", `"x" after the fourth octet`},
		{"zen.spamhaus.org=127.0.[0..255]0.1", "four octets"},
		{"zen.spamhaus.org=127.0.0.0001", `"0001"`},
		{"zen.spamhaus.org=::1", "octet 1"},
		{"zen.spamhaus.org=127.0.0.2=127.0.0.3", `octet 4: "2=127"`},
		{"zen..spamhaus.org", `"zen..spamhaus.org": empty label`},
		{"zen spamhaus.org", `character ' ' not allowed`},
		{"zen.spamhaus.org,bl.spamcop.net", `character ',' not allowed`},
		{"." + strings.Repeat("a", 64) + ".org", "empty label"},
		{strings.Repeat("a", 64) + ".org", "label longer than 63"},
		{strings.Repeat("a.", 100) + "org", "longer than 189"},
		{strings.Repeat("x", 2000), "longer than 1024"},
	}
	for _, tt := range tests {
		_, err := ParseSite(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseSite(%q): error %v, want it to contain %q", tt.in, err, tt.want)
		}
	}
	if _, err := ParseSites([]string{"zen.spamhaus.org*3", "bl.spamcop.net*x"}); err == nil || !strings.Contains(err.Error(), "bl.spamcop.net*x") {
		t.Errorf("ParseSites: error %v, want it to name the bad site", err)
	}
}

func TestFilterMatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		filter string
		yes    []string
		no     []string
	}{
		{"127.0.0.2", []string{"127.0.0.2"}, []string{"127.0.0.3", "127.0.1.2", "::1"}},
		{"127.0.[0..255].[1..3]", []string{"127.0.0.1", "127.0.255.3", "127.0.10.2"}, []string{"127.0.10.0", "127.0.10.4", "127.1.0.1"}},
		{"127.0.0.[2;4..7;9]", []string{"127.0.0.2", "127.0.0.4", "127.0.0.7", "127.0.0.9"}, []string{"127.0.0.3", "127.0.0.8", "127.0.0.10"}},
		{"[126;127].0.0.[0..255]", []string{"126.0.0.0", "127.0.0.255"}, []string{"128.0.0.0"}},
		{"127.0.0.2", []string{"::ffff:127.0.0.2"}, nil},
	}
	for _, tt := range tests {
		f, err := ParseFilter(tt.filter)
		if err != nil {
			t.Fatalf("ParseFilter(%q): %v", tt.filter, err)
		}
		for _, a := range tt.yes {
			if !f.Match(netip.MustParseAddr(a)) {
				t.Errorf("%s does not match %s", tt.filter, a)
			}
		}
		for _, a := range tt.no {
			if f.Match(netip.MustParseAddr(a)) {
				t.Errorf("%s matches %s", tt.filter, a)
			}
		}
	}
}

func TestQueryName(t *testing.T) {
	t.Parallel()
	tests := []struct{ ip, want string }{
		{"192.0.2.1", "1.2.0.192.zen.spamhaus.org"},
		{"::ffff:192.0.2.1", "1.2.0.192.zen.spamhaus.org"},
		{"2001:db8:1:2:3:4:567:89ab", "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.zen.spamhaus.org"},
	}
	for _, tt := range tests {
		if got := QueryName(netip.MustParseAddr(tt.ip), "zen.spamhaus.org"); got != tt.want {
			t.Errorf("QueryName(%s) = %s, want %s", tt.ip, got, tt.want)
		}
	}
}

func TestCleanText(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 400) // 800 bytes
	tests := []struct{ in, want string }{
		{"see https://x.example/\r\n250 OK", "see https://x.example/  250 OK"},
		{"bad \xff byte", "bad ? byte"},
		{long, strings.Repeat("é", 256)},
		{strings.Repeat("a", 511) + "é", strings.Repeat("a", 511)},
	}
	for _, tt := range tests {
		if got := cleanText(tt.in); got != tt.want {
			t.Errorf("cleanText(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzParseSite: no input panics, and whatever parses prints back to
// something that parses to the same site.
func FuzzParseSite(f *testing.F) {
	for _, s := range []string{
		"zen.spamhaus.org*3", "bl.spamcop.net", "list.dnswl.org=127.0.[0..255].[1..3]*-2",
		"b.barracudacentral.org=127.0.0.2*7", "x=127.0.0.[1;2..3]", "x=[", "x=1.2.3.[;]", "x*-",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		site, err := ParseSite(s)
		if err != nil {
			return
		}
		again, err := ParseSite(site.String())
		if err != nil {
			t.Fatalf("%q parses, its form %q does not: %v", s, site.String(), err)
		}
		if again.String() != site.String() {
			t.Fatalf("%q: %q then %q", s, site.String(), again.String())
		}
		if site.Filter != nil {
			site.Filter.Match(netip.MustParseAddr("127.0.0.2"))
		}
	})
}
