package maps

import (
	"errors"
	"testing"
)

func TestCIDRTable(t *testing.T) {
	t.Parallel()
	tab, _ := openT(t, "cidr:clients.cidr")
	checkGets(t, tab, []getCase{
		{"cidr_table(5) first match in file order: host before its network", "192.0.2.1", "host", true},
		{"cidr_table(5) network/prefix", "192.0.2.77", "net", true},
		{"cidr_table(5) [address] in brackets", "198.51.100.7", "bracketed", true},
		{"cidr_table(5) /8 network", "10.1.2.3", "ten", true},
		{"cidr_table(5) IPv6 host", "2001:db8::1", "host6", true},
		{"cidr_table(5) IPv6 [network]/prefix", "2001:db8:ffff::5", "net6", true},
		{"cidr_table(5) IPv6 in another form is the same address", "2001:DB8:0:0:0:0:0:1", "host6", true},
		{"cidr_table(5) IPv4 patterns do not match IPv6 addresses", "2001:db9::1", "", false},
		{"cidr_table(5) if network: rules inside apply within it", "203.0.113.200", "upper half", true},
		{"cidr_table(5) !network matches its family outside the network", "203.0.113.70", "in the block outside the first quarter", true},
		{"cidr_table(5) !network does not match inside the network, endif goes on", "203.0.113.5", "any4", true},
		{"cidr_table(5) 0.0.0.0/0 matches every IPv4 address", "8.8.8.8", "any4", true},
		{"cidr_table(5) an IPv4-mapped IPv6 address is IPv6 to Get", "::ffff:8.8.8.8", "", false},
		{"cidr_table(5) a key that is not an address matches nothing", "example.com", "", false},
		{"cidr_table(5) Get takes bare addresses, like inet_pton", "[192.0.2.1]", "", false},
	})
	if v, where, ok := tab.(Explainer).Explain("192.0.2.77"); v != "net" || where != "clients.cidr:3" || !ok {
		t.Errorf("Explain = %q, %q, %v", v, where, ok)
	}
}

func TestCIDRErrors(t *testing.T) {
	t.Parallel()
	_, err := Open("cidr:bad_cidr", "testdata", nil)
	var pe ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("error = %v, want a ParseError", err)
	}
	want := []string{
		`bad_cidr:1: non-null host address bits in "192.0.2.1/24", perhaps you should use "192.0.2.0/24" instead`,
		`bad_cidr:2: bad net/mask pattern "192.0.2.0/33"`,
		`bad_cidr:3: no lookup result after "192.0.2.0"`,
		`bad_cidr:4: bad address pattern "example.com"`,
		`bad_cidr:5: missing ']' in "[2001:db8::/32"`,
		`bad_cidr:6: extra text after IF: "extra" (a line that starts with whitespace continues the line before it: do not indent the rules between IF and ENDIF)`,
	}
	if len(pe) != len(want) {
		t.Errorf("got %d diagnostics, want %d:\n%v", len(pe), len(want), err)
	}
	for i := range min(len(pe), len(want)) {
		if pe[i].String() != want[i] {
			t.Errorf("diagnostic %d = %q, want %q", i, pe[i], want[i])
		}
	}
}

func TestCIDRPattern(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want string
		neg  bool
		err  bool
	}{
		{"cidr_table(5) address is a /32", "192.0.2.1", "192.0.2.1/32", false, false},
		{"cidr_table(5) IPv6 address is a /128", "2001:db8::1", "2001:db8::1/128", false, false},
		{"cidr_table(5) [address]/prefix", "[2001:db8::]/32", "2001:db8::/32", false, false},
		{"cidr_table(5) [address/prefix]", "[2001:db8::/32]", "2001:db8::/32", false, false},
		{"cidr_table(5) ! negates", "!10.0.0.0/8", "10.0.0.0/8", true, false},
		{"cidr_table(5) /0", "0.0.0.0/0", "0.0.0.0/0", false, false},
		{"cidr_table(5) mask must be digits", "10.0.0.0/+8", "", false, true},
		{"cidr_table(5) empty mask", "10.0.0.0/", "", false, true},
		{"cidr_table(5) no zones", "fe80::1%eth0", "", false, true},
		{"cidr_table(5) garbage after ]", "[10.0.0.1]x", "", false, true},
		{"cidr_table(5) no pattern after !", "!", "", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, neg, err := parseCIDRPattern(tt.in)
			if tt.err {
				if err == nil {
					t.Errorf("parseCIDRPattern(%q) = %v, want error", tt.in, p)
				}
				return
			}
			if err != nil || p.String() != tt.want || neg != tt.neg {
				t.Errorf("parseCIDRPattern(%q) = %v, %v, %v; want %s, %v", tt.in, p, neg, err, tt.want, tt.neg)
			}
		})
	}
}
