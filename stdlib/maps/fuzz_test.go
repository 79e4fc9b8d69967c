package maps

import (
	"os"
	"strings"
	"testing"
)

func addFiles(f *testing.F, names ...string) [][]byte {
	var out [][]byte
	for _, n := range names {
		data, err := os.ReadFile("testdata/" + n)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, data)
	}
	return out
}

func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// FuzzParseTable checks that every key the postmap parser stores is found
// by Get, in any ASCII case, and that what it stores is what postmap
// would: keys without whitespace, values trimmed and not empty. A table
// written back out parses to the same entries.
func FuzzParseTable(f *testing.F) {
	for _, data := range addFiles(f, "virtual", "access", "relocated", "transport", "crlf", "bad_hash") {
		f.Add(string(data))
	}
	f.Add("a b\n c\n# x\n\n d e\n")
	f.Add(" x y\nK\xffEY v\nk\xffey w\n")
	f.Fuzz(func(t *testing.T, data string) {
		d := &diags{file: "fuzz"}
		tab := parseHash("hash:fuzz", data, d)
		lines := strings.Count(data, "\n") + 1
		var out strings.Builder
		for i, k := range tab.idx.keys {
			e := struct {
				value string
				line  int32
			}{tab.idx.values[i], tab.idx.lines[i]}
			if k == "" || strings.IndexFunc(k, func(r rune) bool { return r < 0x80 && isSpace(byte(r)) }) >= 0 {
				t.Fatalf("stored key %q is empty or has whitespace", k)
			}
			if e.value == "" || trimSpace(e.value) != e.value || strings.Contains(e.value, "\n") {
				t.Fatalf("key %q: stored value %q is empty, untrimmed or multi-line", k, e.value)
			}
			if e.line < 1 || int(e.line) > lines {
				t.Fatalf("key %q: line %d outside the input's %d lines", k, e.line, lines)
			}
			for _, q := range []string{k, asciiUpper(k)} {
				if v, ok := tab.Get(q); !ok || v != e.value {
					t.Fatalf("Get(%q) = %q, %v; want %q (stored under %q)", q, v, ok, e.value, k)
				}
			}
			out.WriteString(k + " " + e.value + "\n")
		}
		if d.err() != nil {
			return
		}
		d2 := &diags{file: "fuzz2"}
		again := parseHash("hash:fuzz2", out.String(), d2)
		if err := d2.err(); err != nil {
			t.Fatalf("written-out table does not parse: %v\n%s", err, out.String())
		}
		if again.Len() != tab.Len() {
			t.Fatalf("written-out table has %d keys, want %d", again.Len(), tab.Len())
		}
		for i, k := range tab.idx.keys {
			if v, _ := again.Get(k); v != tab.idx.values[i] {
				t.Fatalf("key %q: %q after writing out, want %q", k, v, tab.idx.values[i])
			}
		}
	})
}

// refEval is a second implementation of regexp table semantics, finding
// each IF's ENDIF by counting instead of using the index the parser
// stored, to check that the parser nests IF blocks right.
func refEval(rules []reRule, key string) (string, bool) {
	for i := 0; i < len(rules); i++ {
		r := rules[i]
		switch r.op {
		case opMatch:
			m := r.re.FindStringSubmatchIndex(key)
			if (m != nil) == r.neg {
				continue
			}
			if r.re2 != nil && r.re2.MatchString(key) == r.neg2 {
				continue
			}
			if r.parts == nil {
				return r.result, true
			}
			return expand(r.parts, key, m), true
		case opIf:
			if r.re.MatchString(key) != r.neg {
				continue
			}
			depth := 0
			for i++; i < len(rules); i++ {
				if rules[i].op == opIf {
					depth++
				} else if rules[i].op == opEndif {
					if depth == 0 {
						break
					}
					depth--
				}
			}
		}
	}
	return "", false
}

// FuzzParseRegexp checks that the regexp and pcre parsers do not panic,
// that what they accept is found by Get as a separate evaluator finds it,
// and that a rule whose pattern is plain text finds that text.
func FuzzParseRegexp(f *testing.F) {
	for _, data := range addFiles(f, "header_checks", "bad_regexp") {
		f.Add(string(data), false)
	}
	for _, data := range addFiles(f, "body_checks.pcre") {
		f.Add(string(data), true)
	}
	f.Add("if !/a/\n/b(c)/i x$1\nendif\n/d/!/e/ y\n", false)
	f.Add("/a b/x ok\n", true)
	f.Fuzz(func(t *testing.T, data string, pcre bool) {
		d := &diags{file: "fuzz"}
		tab := parseRegexp("regexp:fuzz", pcre, data, d)
		if d.err() != nil {
			return
		}
		probes := []string{"", "a", "Subject: x", data}
		for l := range strings.SplitSeq(data, "\n") {
			probes = append(probes, l, strings.TrimSpace(l))
			if len(probes) > 40 {
				break
			}
		}
		for i, r := range tab.rules {
			if r.op == opIf && (r.endif <= i || tab.rules[r.endif].op != opEndif) {
				t.Fatalf("rule %d: IF's ENDIF index %d is wrong", i, r.endif)
			}
			if r.op == opMatch && i < 20 {
				if lit, complete := r.re.LiteralPrefix(); complete {
					probes = append(probes, lit)
				}
			}
		}
		for _, p := range probes {
			v, ok := tab.Get(p)
			rv, rok := refEval(tab.rules, p)
			if v != rv || ok != rok {
				t.Fatalf("Get(%q) = %q, %v; the reference finds %q, %v", p, v, ok, rv, rok)
			}
		}
		// The first rule, when unconditional and positive, must be what a
		// text it matches finds.
		if len(tab.rules) > 0 && tab.rules[0].op == opMatch && !tab.rules[0].neg && tab.rules[0].re2 == nil {
			r := tab.rules[0]
			if lit, complete := r.re.LiteralPrefix(); complete && r.parts == nil {
				if v, ok := tab.Get(lit); !ok || v != r.result {
					t.Fatalf("Get(%q) = %q, %v; want the first rule's %q", lit, v, ok, r.result)
				}
			}
		}
	})
}
