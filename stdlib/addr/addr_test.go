package addr

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseValid(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Address
	}{
		{"null", "", Address{}},
		{"plain", "joe@example.com", Address{"joe", "example.com"}},
		{"extension", "joe+lists@example.com", Address{"joe+lists", "example.com"}},
		{"upper domain lowered", "Joe@Example.COM", Address{"Joe", "example.com"}},
		{"utf8 local", "jöran@example.com", Address{"jöran", "example.com"}},
		{"utf8 domain", "user@bücher.example", Address{"user", "bücher.example"}},
		{"utf8 domain lowered", "user@BÜCHER.example", Address{"user", "bücher.example"}},
		{"utf8 combining marks", "user@हिन्दी.example", Address{"user", "हिन्दी.example"}},
		{"cjk", "用户@例子.广告", Address{"用户", "例子.广告"}},
		{"punycode", "a@xn--bcher-kva.example", Address{"a", "xn--bcher-kva.example"}},
		{"ipv4 literal", "a@[192.0.2.1]", Address{"a", "[192.0.2.1]"}},
		{"ipv6 literal", "a@[IPv6:2001:db8::1]", Address{"a", "[IPv6:2001:db8::1]"}},
		{"ipv6 literal canonicalised", "a@[ipv6:2001:DB8:0:0::1]", Address{"a", "[IPv6:2001:db8::1]"}},
		{"ipv4 mapped ipv6 literal", "a@[IPv6:::ffff:192.0.2.1]", Address{"a", "[IPv6:::ffff:192.0.2.1]"}},
		{"space from go-smtp", "a b@example.com", Address{"a b", "example.com"}},
		{"quote from go-smtp", `a"b@example.com`, Address{`a"b`, "example.com"}},
		{"at sign in local part", "a@b@example.com", Address{"a@b", "example.com"}},
		{"quoted", `"a b"@example.com`, Address{"a b", "example.com"}},
		{"quoted with escapes", `"a\"b\\c"@example.com`, Address{`a"b\c`, "example.com"}},
		{"quoted at sign", `"a@b"@example.com`, Address{"a@b", "example.com"}},
		{"not a quoted string", `"a"b"@example.com`, Address{`"a"b"`, "example.com"}},
		{"lone quote", `"@example.com`, Address{`"`, "example.com"}},
		{"dots anywhere", ".a..b.@example.com", Address{".a..b.", "example.com"}},
		{"single label", "root@localhost", Address{"root", "localhost"}},
		{"hyphen inside label", "a@my-host.example", Address{"a", "my-host.example"}},
		{"digits", "a@123.example", Address{"a", "123.example"}},
		{"label 63", "a@" + strings.Repeat("x", 63) + ".example", Address{"a", strings.Repeat("x", 63) + ".example"}},
		{"domain 253", "a@" + domainOfLen(253), Address{"a", domainOfLen(253)}},
		{"local over 64", strings.Repeat("l", 100) + "@example.com", Address{strings.Repeat("l", 100), "example.com"}},
		{"total 320", strings.Repeat("l", 320-1-len("example.com")) + "@example.com", Address{strings.Repeat("l", 320-1-len("example.com")), "example.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("Parse(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
		})
	}
}

// domainOfLen returns a valid domain of exactly n octets.
func domainOfLen(n int) string {
	var labels []string
	for n > 0 {
		l := min(n, 63)
		if n-l == 1 {
			// A lone remaining octet would have to be a dot.
			l--
		}
		labels = append(labels, strings.Repeat("d", l))
		n -= l + 1
	}
	return strings.Join(labels, ".")
}

func TestParseInvalid(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"no at", "postmaster", errNoAt},
		{"empty local", "@example.com", errEmptyLocal},
		{"empty quoted local", `""@example.com`, errEmptyLocal},
		{"empty domain", "joe@", errEmptyDomain},
		{"bad character in label", "a@exa_mple.com", errDomainChar},
		{"space in domain", "a@exa mple.com", errDomainChar},
		{"ideographic full stop", "a@example\u3002com", errDomainChar},
		{"label 64", "a@" + strings.Repeat("x", 64) + ".example", errLabelTooLong},
		{"domain 254", "a@" + domainOfLen(254), errDomainTooLong},
		{"leading hyphen", "a@-host.example", errLabelHyphen},
		{"trailing hyphen", "a@host-.example", errLabelHyphen},
		{"double dot", "a@example..com", errEmptyLabel},
		{"leading dot", "a@.example.com", errEmptyLabel},
		{"trailing dot", "a@example.com.", errTrailingDot},
		{"lone dot", "a@.", errEmptyLabel},
		{"nul", "a\x00b@example.com", errControl},
		{"cr lf", "a@example.com\r\nRCPT TO:<b@x>", errControl},
		{"tab", "a\tb@example.com", errControl},
		{"del", "a\x7f@example.com", errControl},
		{"c1 control", "a\u0085@example.com", errControl},
		{"control in domain", "a@exam\x01ple.com", errControl},
		{"angle bracket", "<a@example.com", errAngle},
		{"quoted angle bracket", `"a>"@example.com`, errAngle},
		{"bad ipv4 literal", "a@[192.0.2.256]", errLiteral},
		{"ipv4 literal leading zero", "a@[192.0.2.01]", errLiteral},
		{"unclosed literal", "a@[192.0.2.1", errLiteral},
		{"empty literal", "a@[]", errLiteral},
		{"untagged ipv6 literal", "a@[2001:db8::1]", errLiteral},
		{"ipv4 in ipv6 tag", "a@[IPv6:192.0.2.1]", errLiteral},
		{"ipv6 zone", "a@[IPv6:fe80::1%eth0]", errLiteral},
		{"general literal", "a@[x400:foo]", errLiteral},
		{"bracket inside domain", "a@ex[1.2.3.4]", errDomainChar},
		{"invalid utf-8 local", "a\xffb@example.com", errUTF8},
		{"invalid utf-8 domain", "a@ex\xc3ample.com", errUTF8},
		{"too long", strings.Repeat("l", 321-1-len("example.com")) + "@example.com", errTooLong},
		{"far too long", strings.Repeat("l", 10000) + "@example.com", errTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("Parse(%q) = %#v, %v; want an ErrSyntax", tt.in, got, err)
			}
			if err != tt.want {
				t.Errorf("Parse(%q) error = %q, want %q", tt.in, err, tt.want)
			}
			if got != (Address{}) {
				t.Errorf("Parse(%q) returned %#v along with an error", tt.in, got)
			}
		})
	}
}

func TestErrorMessage(t *testing.T) {
	_, err := Parse("a@" + strings.Repeat("x", 64))
	if got, want := err.Error(), "bad address syntax: domain label too long"; got != want {
		t.Errorf("error = %q, want %q", got, want)
	}
}

func TestString(t *testing.T) {
	tests := []struct {
		in   Address
		want string
	}{
		{Address{}, ""},
		{Address{"joe", "example.com"}, "joe@example.com"},
		{Address{"joe.q.public", "example.com"}, "joe.q.public@example.com"},
		{Address{"!#$%&'*+-/=?^_`{|}~", "x"}, "!#$%&'*+-/=?^_`{|}~@x"},
		{Address{"jöran", "bücher.example"}, "jöran@bücher.example"},
		{Address{"a b", "x"}, `"a b"@x`},
		{Address{`a"b`, "x"}, `"a\"b"@x`},
		{Address{`a\b`, "x"}, `"a\\b"@x`},
		{Address{"a@b", "x"}, `"a@b"@x`},
		{Address{".a", "x"}, `".a"@x`},
		{Address{"a.", "x"}, `"a."@x`},
		{Address{"a..b", "x"}, `"a..b"@x`},
		{Address{"a(b)", "x"}, `"a(b)"@x`},
		{Address{`"a"`, "x"}, `"\"a\""@x`},
		{Address{"a", "[IPv6:2001:db8::1]"}, "a@[IPv6:2001:db8::1]"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("%#v.String() = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestStringRoundTrip(t *testing.T) {
	for _, in := range []string{
		"",
		"joe@example.com",
		"joe+ext@example.com",
		"a b@x",
		`a"b@x`,
		`a\b@x`,
		"a@b@x",
		".a..b.@x",
		`"a"b"@x`,
		`"@x`,
		"jöran@bücher.example",
		"a@[192.0.2.1]",
		"a@[ipv6:2001:DB8::1]",
		"Mixed.Case@EXAMPLE.com",
	} {
		a, err := Parse(in)
		if err != nil {
			t.Fatalf("Parse(%q): %v", in, err)
		}
		s := a.String()
		b, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(%q) (from %q): %v", s, in, err)
		}
		if b != a {
			t.Errorf("Parse(%q) = %#v, want %#v (from %q)", s, b, a, in)
		}
	}
}

func TestIsNull(t *testing.T) {
	tests := []struct {
		in   Address
		want bool
	}{
		{Address{}, true},
		{Address{"a", "x"}, false},
		{Address{"", "x"}, false},
		{Address{"a", ""}, false},
	}
	for _, tt := range tests {
		if got := tt.in.IsNull(); got != tt.want {
			t.Errorf("%#v.IsNull() = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestIsASCII(t *testing.T) {
	tests := []struct {
		in   Address
		want bool
	}{
		{Address{}, true},
		{Address{"joe", "example.com"}, true},
		{Address{"jöran", "example.com"}, false},
		{Address{"joe", "bücher.example"}, false},
	}
	for _, tt := range tests {
		if got := tt.in.IsASCII(); got != tt.want {
			t.Errorf("%#v.IsASCII() = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestEqual(t *testing.T) {
	tests := []struct {
		a, b Address
		want bool
	}{
		{Address{}, Address{}, true},
		{Address{"joe", "example.com"}, Address{"joe", "example.com"}, true},
		{Address{"Joe", "example.com"}, Address{"jOE", "EXAMPLE.com"}, true},
		{Address{"JÖRAN", "x"}, Address{"jöran", "x"}, true},
		{Address{"joe", "example.com"}, Address{"joe", "example.org"}, false},
		{Address{"joe", "example.com"}, Address{"jim", "example.com"}, false},
		{Address{"joe", "example.com"}, Address{}, false},
		{Address{"a b", "x"}, Address{"ab", "x"}, false},
	}
	for _, tt := range tests {
		if got := tt.a.Equal(tt.b); got != tt.want {
			t.Errorf("%#v.Equal(%#v) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
		if got := tt.b.Equal(tt.a); got != tt.want {
			t.Errorf("%#v.Equal(%#v) = %v, want %v", tt.b, tt.a, got, tt.want)
		}
	}
}

func TestSplit(t *testing.T) {
	tests := []struct {
		local, delims string
		user, ext     string
		found         bool
	}{
		{"joe+lists", "+", "joe", "lists", true},
		{"joe+lists+go", "+", "joe", "lists+go", true},
		{"joe-lists", "+", "joe-lists", "", false},
		{"joe-lists", "+-", "joe", "lists", true},
		{"joe-lists+go", "+-", "joe", "lists+go", true},
		{"joe+lists-go", "+-", "joe", "lists-go", true},
		{"joe+lists", "", "joe+lists", "", false},
		{"joe", "+", "joe", "", false},
		{"joe+", "+", "joe", "", true},
		{"+joe", "+", "+joe", "", false},
		{"+joe+ext", "+", "+joe+ext", "", false},
		{"-joe", "+-", "-joe", "", false},
		{"", "+", "", "", false},
		{"jöran§ext", "§", "jöran", "ext", true},
	}
	for _, tt := range tests {
		user, ext, found := Split(tt.local, tt.delims)
		if user != tt.user || ext != tt.ext || found != tt.found {
			t.Errorf("Split(%q, %q) = %q, %q, %v; want %q, %q, %v",
				tt.local, tt.delims, user, ext, found, tt.user, tt.ext, tt.found)
		}
	}
}

var fuzzSeeds = []string{
	"",
	"joe@example.com",
	"joe+ext@example.com",
	"Joe@EXAMPLE.COM",
	"a b@x",
	`a"b@x`,
	`"a\"b"@x`,
	`"a@b"@x`,
	"a@b@x",
	"jöran@bücher.example",
	"a@[192.0.2.1]",
	"a@[IPv6:2001:db8::1]",
	"a@[ipv6:::ffff:1.2.3.4]",
	"postmaster",
	"a@example.com.",
	"a@-x.example",
	"a\x00@x",
	"a\xff@x",
	"a@İ.example",
	"a@K.example",
}

func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("Parse(%q) error %v does not wrap ErrSyntax", s, err)
			}
			return
		}
		isControl := func(r rune) bool { return r < 0x20 || r >= 0x7f && r <= 0x9f }
		if strings.ContainsFunc(s, isControl) {
			t.Fatalf("Parse(%q) accepted a control character: %#v", s, a)
		}
		for _, part := range []string{a.Local, a.Domain} {
			if strings.ContainsFunc(part, isControl) {
				t.Fatalf("Parse(%q) produced a control character: %#v", s, a)
			}
			if !utf8.ValidString(part) {
				t.Fatalf("Parse(%q) accepted invalid utf-8: %#v", s, a)
			}
		}
		if s != "" && (a.Local == "" || a.Domain == "") {
			t.Fatalf("Parse(%q) = %#v, which has an empty part", s, a)
		}
		str := a.String()
		b, err := Parse(str)
		if err != nil {
			t.Fatalf("Parse(%q) = %#v, but its String %q does not parse: %v", s, a, str, err)
		}
		if b != a || !b.Equal(a) {
			t.Fatalf("Parse(%q) = %#v, but its String %q parses to %#v", s, a, str, b)
		}
		if h1, h2 := mustHash(t, NewValue(a, "+")), mustHash(t, NewValue(b, "+")); h1 != h2 {
			t.Fatalf("equal addresses %#v and %#v hash differently", a, b)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	inputs := []string{
		"joe@example.com",
		"Joe.Public+lists@Mail.Example.COM",
		"jöran@bücher.example",
	}
	for _, in := range inputs {
		b.Run(in, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Parse(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
