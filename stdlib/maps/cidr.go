package maps

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// cidrRule is one line of a cidr table.
type cidrRule struct {
	op     ruleOp
	line   int
	prefix netip.Prefix
	neg    bool
	value  string
	endif  int // for opIf: index of the matching opEndif
}

// cidrTable is a Postfix cidr_table(5): network patterns tried in file
// order, so that a more specific network must come before a wider one.
type cidrTable struct {
	name  string
	file  string
	rules []cidrRule
}

// Get returns the result of the first network that contains the address
// key. A key that is not an IP address matches nothing, and IPv4 networks
// never match IPv6 addresses or the other way round, IPv4-mapped IPv6
// addresses included (LookupIP unmaps those first, as Postfix's SMTP
// server does).
func (t *cidrTable) Get(key string) (string, bool) {
	v, _, ok := t.match(key)
	return v, ok
}

// Name returns the table's spec.
func (t *cidrTable) Name() string { return t.name }

// IsPattern is true: see PatternTable.
func (t *cidrTable) IsPattern() bool { return true }

// Explain is Get with the FILE:LINE of the rule that matched.
func (t *cidrTable) Explain(key string) (string, string, bool) {
	v, i, ok := t.match(key)
	if !ok {
		return "", "", false
	}
	return v, fmt.Sprintf("%s:%d", t.file, t.rules[i].line), true
}

func (t *cidrTable) match(key string) (string, int, bool) {
	a, err := netip.ParseAddr(key)
	if err != nil || a.Zone() != "" {
		return "", -1, false
	}
	for i := 0; i < len(t.rules); i++ {
		r := &t.rules[i]
		switch r.op {
		case opMatch:
			if r.matches(a) {
				return r.value, i, true
			}
		case opIf:
			if !r.matches(a) {
				i = r.endif
			}
		}
	}
	return "", -1, false
}

// matches applies a pattern; a negated one matches the addresses of its
// own family outside the network, as in Postfix.
func (r *cidrRule) matches(a netip.Addr) bool {
	return r.prefix.Addr().Is4() == a.Is4() && r.prefix.Contains(a) != r.neg
}

// parseCIDR parses the text of a cidr: table file.
func parseCIDR(name, data string, d *diags) *cidrTable {
	return parseCIDRLines(name, func(fn func(string, int)) { readLogical(data, d, true, fn) }, d)
}

func parseCIDRLines(name string, src func(func(string, int)), d *diags) *cidrTable {
	t := &cidrTable{name: name, file: d.file}
	var open []int
	src(func(text string, line int) {
		p := trimSpace(text)
		switch {
		case p == "":
		case hasKeyword(p, "if"):
			// A broken IF is still pushed, so that its ENDIF does not
			// cause a second, confusing error; the table is not used
			// when there are errors.
			r := cidrRule{op: opIf, line: line}
			word, rest := cutSpace(trimSpace(p[2:]))
			if rest != "" {
				d.errorf(line, "extra text after IF: %q (a line that starts with whitespace continues the line before it: do not indent the rules between IF and ENDIF)", clip(rest))
			} else if prefix, neg, err := parseCIDRPattern(word); err != nil {
				d.errorf(line, "%v", err)
			} else {
				r.prefix, r.neg = prefix, neg
			}
			open = append(open, len(t.rules))
			t.rules = append(t.rules, r)
		case hasKeyword(p, "endif"):
			if len(open) == 0 {
				d.errorf(line, "ENDIF without matching IF")
				return
			}
			if rest := trimSpace(p[5:]); rest != "" {
				d.errorf(line, "extra text after ENDIF: %q", clip(rest))
			}
			t.rules[open[len(open)-1]].endif = len(t.rules)
			open = open[:len(open)-1]
			t.rules = append(t.rules, cidrRule{op: opEndif, line: line})
		default:
			word, value := cutSpace(p)
			if value == "" {
				d.errorf(line, "no lookup result after %q", clip(word))
				return
			}
			prefix, neg, err := parseCIDRPattern(word)
			if err != nil {
				d.errorf(line, "%v", err)
				return
			}
			t.rules = append(t.rules, cidrRule{op: opMatch, line: line, prefix: prefix, neg: neg, value: value})
		}
	})
	for _, i := range open {
		d.errorf(t.rules[i].line, "IF has no matching ENDIF")
	}
	return t
}

// parseCIDRPattern parses "[!]address[/length]", the address optionally
// in brackets, as Postfix's cidr_match_parse does.
func parseCIDRPattern(s string) (netip.Prefix, bool, error) {
	neg := false
	for strings.HasPrefix(s, "!") {
		neg, s = !neg, s[1:]
	}
	if s == "" {
		return netip.Prefix{}, false, errors.New("no address pattern")
	}
	orig := s
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return netip.Prefix{}, false, fmt.Errorf("missing ']' in %q", orig)
		}
		after := s[end+1:]
		if after != "" && after[0] != '/' {
			return netip.Prefix{}, false, fmt.Errorf("garbage after ']' in %q", orig)
		}
		s = s[1:end] + after
	}
	addrText, bits, hasMask := strings.Cut(s, "/")
	a, err := netip.ParseAddr(addrText)
	if err != nil || a.Zone() != "" {
		if hasMask {
			return netip.Prefix{}, false, fmt.Errorf("bad net/mask pattern %q", orig)
		}
		return netip.Prefix{}, false, fmt.Errorf("bad address pattern %q", orig)
	}
	if !hasMask {
		return netip.PrefixFrom(a, a.BitLen()), neg, nil
	}
	n, err := strconv.Atoi(bits)
	if err != nil || bits == "" || bits[0] < '0' || bits[0] > '9' || n < 0 || n > a.BitLen() {
		return netip.Prefix{}, false, fmt.Errorf("bad net/mask pattern %q", orig)
	}
	p := netip.PrefixFrom(a, n)
	if m := p.Masked(); m != p {
		return netip.Prefix{}, false, fmt.Errorf("non-null host address bits in %q, perhaps you should use %q instead", orig, m.String())
	}
	return p, neg, nil
}
