package maps

import (
	"errors"
	"strings"
	"testing"
)

func TestRegexpTable(t *testing.T) {
	t.Parallel()
	tab, logs := openT(t, "regexp:header_checks")
	if len(logs) != 0 {
		t.Errorf("logf got %q", logs)
	}
	checkGets(t, tab, []getCase{
		{"regexp_table(5) first match wins", "Subject: buy viagra now", "REJECT no pills", true},
		{"regexp_table(5) matching is case-insensitive by default", "SUBJECT: BUY VIAGRA", "REJECT no pills", true},
		{"regexp_table(5) $1 is replaced by the first () group", "Subject: help urgent", "WARN urgent: help", true},
		{"regexp_table(5) flag i toggles to case-sensitive: exact case matches", "Subject: CaseSensitive", "WARN case matched", true},
		{"regexp_table(5) flag i toggles to case-sensitive: other case does not", "Subject: casesensitive", "", false},
		{"regexp_table(5) ${n} and $(n) substitution, $$ is a dollar",
			"Received: from mx.example.com (mx.example.com [192.0.2.1])", "PREPEND X-Relay: mx.example.com 192.0.2.1 costs $5", true},
		{"regexp_table(5) if /pattern/ ... endif: rules inside apply when it matches", "X-Spam: yes", "DISCARD", true},
		{"regexp_table(5) nested if !/pattern/: applies when it does not match", "X-Mailer: Foo 1.0", "PREPEND X-Was-Mailer: Foo 1.0", true},
		{"regexp_table(5) nested if !/pattern/: skipped to its endif when the pattern matches", "X-Spam-Score: 5", "IGNORE", true},
		{"regexp_table(5) if block: rules after a nested endif still apply", "X-Other: 1", "IGNORE", true},
		{"regexp_table(5) if block: skipped when the pattern does not match", "Y-Spam: yes", "", false},
		{"regexp_table(5) alternation and $1", "To: joe@example.org", "REDIRECT postmaster@example.org", true},
		{"regexp_table(5) /pattern1/!/pattern2/: pattern1 matches and pattern2 does not", "From: a@evil.test", "HOLD foreign from", true},
		{"regexp_table(5) /pattern1/!/pattern2/: no match when pattern2 matches", "From: a@example.com", "", false},
		{"regexp_table(5) any character can delimit the pattern", "Reply-To: a/b@x", "OK delim", true},
		{"regexp_table(5) $n of a group that did not match is empty", "Date: 2024", "DATE [][2024]", true},
		{"regexp_table(5) GNU \\< \\> word boundaries", "this is free stuff", "KEEP word start", true},
		{"regexp_table(5) !/pattern/: result when the pattern does not match", "freedom", "REJECT not a header", true},
		{"regexp_table(5) !/pattern/: nothing when it matches", "Subject: hello", "", false},
	})
	e := tab.(Explainer)
	if v, where, ok := e.Explain("X-Spam: yes"); v != "DISCARD" || where != "header_checks:7" || !ok {
		t.Errorf("Explain = %q, %q, %v; want DISCARD, header_checks:7, true", v, where, ok)
	}
	if !isPattern(tab) {
		t.Error("regexp table is not a pattern table")
	}
}

func TestPCRETable(t *testing.T) {
	t.Parallel()
	tab, _ := openT(t, "pcre:body_checks.pcre")
	checkGets(t, tab, []getCase{
		{"pcre_table(5) Perl syntax: (?:...) and \\d", "Subject: Re: RE: Order 1234", "OK order Order 1234", true},
		{"pcre_table(5) flag i toggles to case-sensitive", "X-Case: EXACT", "", false},
		{"pcre_table(5) flag i: exact case still matches", "X-Case: exact", "OK sensitive", true},
		{"pcre_table(5) flag s toggles PCRE_DOTALL off: . does not match a newline", "Line1\nLine2", "OK dotall default", true},
		{"pcre_table(5) flag s: . still matches other characters", "Line1-Line2", "OK dot stops at newline", true},
		{"pcre_table(5) flag x: whitespace and # comments are ignored", "X-Spaced   yes", "OK extended yes", true},
		{"pcre_table(5) flag A: anchored at the start", "Anchored here", "OK anchored", true},
		{"pcre_table(5) flag A: no match later in the input", "not Anchored", "", false},
		{"pcre_table(5) flag U: ungreedy swaps lazy and greedy", "aaa", "LAZY [aaa][]", true},
	})
}

func TestRegexpErrors(t *testing.T) {
	t.Parallel()
	_, err := Open("regexp:bad_regexp", "testdata", nil)
	var pe ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("error = %v, want a ParseError", err)
	}
	want := []struct {
		line int
		msg  string
	}{
		{1, `/(a)\1/: backreference \1 is not supported (Go RE2 syntax has no backreferences)`},
		{2, `/foo(?=bar)/: lookahead (?= or (?! is not supported (Go RE2 syntax)`},
		{3, `/foo(?<!bar)/: lookbehind (?<= or (?<! is not supported (Go RE2 syntax)`},
		{4, `unknown regexp option "q"`},
		{5, `no closing regexp delimiter "/"`},
		{6, `out of range replacement index "2": the pattern has 1 () groups`},
		{7, `$number found in negative match replacement text`},
		{8, `regexp option "x" (POSIX basic regular expression syntax) is not supported: write the pattern in extended syntax`},
		{9, `bad replacement text "REJECT $name": non-numeric replacement index "name"`},
		{10, "/fo(o/: bad regular expression: missing closing ): `fo(o`"},
		{11, `ENDIF without matching IF`},
		{12, `extra text after IF: "/b/ REJECT indented inside if" (a line that starts with whitespace continues the line before it: do not indent the rules between IF and ENDIF)`},
		{15, `unrecognized line "bogus line": expected /pattern/ result, IF /pattern/ or ENDIF`},
		{16, `IF has no matching ENDIF`},
	}
	if len(pe) != len(want) {
		t.Errorf("got %d diagnostics, want %d:\n%v", len(pe), len(want), err)
	}
	for i, w := range want {
		if i >= len(pe) {
			break
		}
		if pe[i].File != "bad_regexp" || pe[i].Line != w.line || pe[i].Msg != w.msg {
			t.Errorf("diagnostic %d = %q, want bad_regexp:%d: %s", i, pe[i], w.line, w.msg)
		}
	}
}

func TestRegexpWarnings(t *testing.T) {
	t.Parallel()
	_, logs := openT(t, "regexp:{ {/a/} }")
	// Inline tables are not files and log nothing; Check reports it.
	if len(logs) != 0 {
		t.Errorf("logf got %q", logs)
	}
	var l logRec
	dir := t.TempDir()
	writeTable(t, dir, "checks", "/^a/\n")
	tab, err := Open("regexp:checks", dir, l.logf)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := tab.Get("abc"); v != "" || !ok {
		t.Errorf("Get = %q, %v; want the empty result", v, ok)
	}
	if logs := l.take(); len(logs) != 1 || logs[0] != "checks:1: warning: no replacement text: using empty string" {
		t.Errorf("regexp_table(5) missing result: logf got %q", logs)
	}
}

func TestParseTemplate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		in     string
		parts  int
		maxSub int
		err    string
	}{
		{"regexp_table(5) plain text", "REJECT spam", 1, 0, ""},
		{"regexp_table(5) $$ is a literal $", "costs $$5", 1, 0, ""},
		{"regexp_table(5) $1", "to $1", 2, 1, ""},
		{"regexp_table(5) ${12} and $(3)", "${12}$(3)", 2, 12, ""},
		{"mac_parse: $ name chars run on, so $1a is not $1", "$1a", 0, 0, `non-numeric replacement index "1a"`},
		{"mac_parse: a bare $ is an error", "cost $ 5", 0, 0, `"$" without a group number (write "$$" for a literal "$")`},
		{"mac_parse: $ at the end is an error", "x$", 0, 0, `"$" without a group number (write "$$" for a literal "$")`},
		{"mac_parse: unclosed ${", "${1", 0, 0, "truncated $ reference"},
		{"regexp_table(5) $0 is out of range", "$0", 0, 0, `out of range replacement index "0"`},
		{"regexp_table(5) huge index is out of range", "$123456789012345678901234567890", 0, 0, `out of range replacement index "123456789012345678901234567890"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parts, maxSub, err := parseTemplate(tt.in)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Errorf("parseTemplate(%q) error = %v, want %q", tt.in, err, tt.err)
				}
				return
			}
			if err != nil || len(parts) != tt.parts || maxSub != tt.maxSub {
				t.Errorf("parseTemplate(%q) = %v, %d, %v; want %d parts, max %d", tt.in, parts, maxSub, err, tt.parts, tt.maxSub)
			}
		})
	}
}

func TestRegexpDelimiters(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		spec string
		key  string
		want string
		ok   bool
	}{
		{"regexp_table(5) backslash escapes the delimiter", `regexp:{ {/a\/b/ slash} }`, "a/b", "slash", true},
		{"regexp_table(5) letter delimiter escaped inside: not \\d", `regexp:{ {!dx\dd digit} }`, "xd", "", false},
		{"regexp_table(5) whitespace between ! and the pattern", `regexp:{ {! /a/ not-a} }`, "b", "not-a", true},
		{"regexp_table(5) !! cancels out", `regexp:{ {!!/a/ a} }`, "a", "a", true},
		{"regexp_table(5) IF and ENDIF ignore case", `regexp:{ {IF /a/}, {/b/ ab}, {EndIf} }`, "ab", "ab", true},
		{"regexp_table(5) POSIX [[:alpha:]] classes", `regexp:{ {/^[[:digit:]]+$/ num} }`, "123", "num", true},
		{"regexp_table(5) ] first in a class is literal", `regexp:{ {/[]x]/ bracket} }`, "]", "bracket", true},
		{"regexp_table(5) m flag: ^ matches after a newline", `regexp:{ {/^b/m line} }`, "a\nb", "line", true},
		{"regexp_table(5) without m: ^ only at the start", `regexp:{ {/^b/ line} }`, "a\nb", "", false},
		{"regexp_table(5) leftmost-longest match as POSIX regexec", `regexp:{ {/(a|ab)/ [$1]} }`, "abc", "[ab]", true},
		{"pcre_table(5) leftmost-first match as Perl", `pcre:{ {/(a|ab)/ [$1]} }`, "abc", "[a]", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab, _ := openT(t, tt.spec)
			if got, ok := tab.Get(tt.key); got != tt.want || ok != tt.ok {
				t.Errorf("Get(%q) = %q, %v; want %q, %v", tt.key, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestToRE2(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		in       string
		extended bool
		want     string
		err      string
	}{
		{"GNU \\< and \\> become \\b", `\<a\>`, false, `\ba\b`, ""},
		{"escapes inside classes are kept", `[\<]`, false, `[\<]`, ""},
		{"backreference in a class is not one", `[\1]`, false, `[\1]`, ""},
		{"pcre x: spaces dropped, escaped space kept", `a b\ c`, true, `ab\ c`, ""},
		{"pcre x: spaces in a class kept", `[a b]`, true, `[a b]`, ""},
		{"pcre x: # starts a comment", `a # b`, true, `a`, ""},
		{"atomic group", `(?>a)`, false, "", "atomic group (?> is not supported (Go RE2 syntax)"},
		{"named group is fine", `(?P<x>a)`, false, `(?P<x>a)`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := toRE2(tt.in, '/', tt.extended)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Errorf("toRE2(%q) error = %v, want %q", tt.in, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("toRE2(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestRegexpDiagnosticsAreFileLine(t *testing.T) {
	t.Parallel()
	_, err := Open("pcre:{ {/(?<=a)b/ x} }", "", nil)
	if err == nil || !strings.HasPrefix(err.Error(), "pcre:{...}:1: /(?<=a)b/: lookbehind") {
		t.Errorf("error = %v", err)
	}
}
