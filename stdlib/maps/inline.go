package maps

import (
	"fmt"
	"strings"
)

// The inline syntax is Postfix 3.0's: "inline:{ key=value, { key = text
// with spaces or commas } }". Elements are separated by commas or
// whitespace; braces protect an element's separators and are stripped
// together with the whitespace just inside them. Postfix 3.7 uses the
// same syntax for rules of pattern tables: "regexp:{ {/a/ b}, {/c/ d} }".

// balpar returns the length of the brace group at the start of s, or 0
// if s does not start with '{' or the group is not closed.
func balpar(s string) int {
	if s == "" || s[0] != '{' {
		return 0
	}
	level := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '{':
			level++
		case '}':
			level--
			if level == 0 {
				return i + 1
			}
		}
	}
	return 0
}

// inlineTokens splits the text between the outer braces into elements the
// way Postfix's mystrtokq does, stripping the braces of braced elements.
func inlineTokens(s string) ([]string, error) {
	var out []string
	for {
		i := 0
		for i < len(s) && (s[i] == ',' || isSpace(s[i])) {
			i++
		}
		s = s[i:]
		if s == "" {
			return out, nil
		}
		level, j := 0, 0
		for ; j < len(s); j++ {
			c := s[j]
			if level == 0 && (c == ',' || isSpace(c)) {
				break
			}
			switch c {
			case '{':
				level++
			case '}':
				level--
			}
		}
		tok := s[:j]
		s = s[j:]
		if tok[0] == '{' {
			n := balpar(tok)
			switch {
			case n == 0:
				return nil, fmt.Errorf("missing '}' in %q", clip(tok))
			case n != len(tok):
				return nil, fmt.Errorf("syntax error after '}' in %q", clip(tok))
			}
			tok = trimSpace(tok[1 : n-1])
		}
		out = append(out, tok)
	}
}

// braced returns what is inside the outer braces of "{...}".
func braced(spec, rest string) (string, error) {
	rest = strings.TrimSpace(rest)
	n := balpar(rest)
	if n == 0 || n != len(rest) || trimSpace(rest[1:n-1]) == "" {
		typ, _ := splitSpec(spec)
		return "", fmt.Errorf("%s: bad syntax: need %s:{...}", spec, typ)
	}
	return rest[1 : n-1], nil
}

// parseInline parses an inline:{...} table.
func parseInline(name, rest string) (Table, error) {
	inner, err := braced(name, rest)
	if err != nil {
		return nil, err
	}
	toks, err := inlineTokens(inner)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	t := &hashTable{name: name, idx: newKeyIndex(len(toks))}
	d := &diags{file: "inline:{...}"}
	for i, tok := range toks {
		k, v, err := splitNameval(tok)
		if err != nil {
			d.errorf(i+1, "%v in %q", err, clip(tok))
			continue
		}
		// Postfix lets a repeated key silently replace the earlier one.
		t.idx.put(lowerKey(k), v, line32(i+1))
	}
	if err := d.err(); err != nil {
		return nil, err
	}
	return t, nil
}

// splitNameval splits "name = value" like Postfix's split_nameval: the
// name has no whitespace, the value may be empty.
func splitNameval(s string) (name, value string, err error) {
	s = trimSpace(s)
	i := 0
	for i < len(s) && !isSpace(s[i]) && s[i] != '=' {
		i++
	}
	name = s[:i]
	if name == "" {
		return "", "", fmt.Errorf("missing key")
	}
	rest := trimSpace(s[i:])
	if rest == "" || rest[0] != '=' {
		return "", "", fmt.Errorf("missing '=' after key")
	}
	return name, trimSpace(rest[1:]), nil
}

// parseInlineRules parses the Postfix 3.7 inline form of a pattern table,
// each rule a braced element. Diagnostics number the rules from 1.
func parseInlineRules(name string, kind tableKind, rest string) (Table, error) {
	inner, err := braced(name, rest)
	if err != nil {
		return nil, err
	}
	toks, err := inlineTokens(inner)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	typ, _ := splitSpec(name)
	d := &diags{file: typ + ":{...}"}
	src := func(fn func(string, int)) {
		for i, tok := range toks {
			fn(tok, i+1)
		}
	}
	var t Table
	if kind == kindCIDR {
		t = parseCIDRLines(name, src, d)
	} else {
		t = parseRegexpLines(name, kind == kindPCRE, src, d)
	}
	if err := d.err(); err != nil {
		return nil, err
	}
	return t, nil
}
