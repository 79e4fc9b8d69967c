package maps

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// ruleOp is what a line of a regexp or cidr table does.
type ruleOp uint8

const (
	opMatch ruleOp = iota
	opIf
	opEndif
)

// tmplPart is a piece of a result template: literal text, or the text of
// capture group n when n > 0.
type tmplPart struct {
	lit   string
	group int
}

// reRule is one line of a regexp or pcre table.
type reRule struct {
	op     ruleOp
	line   int
	re     *regexp.Regexp
	neg    bool
	re2    *regexp.Regexp // the /pattern2/ of regexp's "/pattern1/!/pattern2/"
	neg2   bool
	result string     // the result when it has no $n, "$$" already replaced
	parts  []tmplPart // the result when it has $n
	endif  int        // for opIf: index of the matching opEndif
}

// regexpTable is a Postfix regexp_table(5) or pcre_table(5).
type regexpTable struct {
	name  string
	file  string
	rules []reRule
}

// Get returns the result of the first rule that matches key, with $n
// replaced by the text of capture group n.
func (t *regexpTable) Get(key string) (string, bool) {
	v, _, ok := t.match(key)
	return v, ok
}

// Name returns the table's spec.
func (t *regexpTable) Name() string { return t.name }

// IsPattern is true: see PatternTable.
func (t *regexpTable) IsPattern() bool { return true }

// Explain is Get with the FILE:LINE of the rule that matched.
func (t *regexpTable) Explain(key string) (string, string, bool) {
	v, i, ok := t.match(key)
	if !ok {
		return "", "", false
	}
	return v, fmt.Sprintf("%s:%d", t.file, t.rules[i].line), true
}

func (t *regexpTable) match(key string) (string, int, bool) {
	for i := 0; i < len(t.rules); i++ {
		r := &t.rules[i]
		switch r.op {
		case opMatch:
			if r.parts == nil {
				if r.re.MatchString(key) == r.neg {
					continue
				}
				if r.re2 != nil && r.re2.MatchString(key) == r.neg2 {
					continue
				}
				return r.result, i, true
			}
			// Only positive rules have substitutions.
			m := r.re.FindStringSubmatchIndex(key)
			if m == nil {
				continue
			}
			if r.re2 != nil && r.re2.MatchString(key) == r.neg2 {
				continue
			}
			return expand(r.parts, key, m), i, true
		case opIf:
			if r.re.MatchString(key) == r.neg {
				i = r.endif
			}
		}
	}
	return "", -1, false
}

// expand fills in a result template. A group that did not take part in
// the match contributes nothing, as in Postfix.
func expand(parts []tmplPart, key string, m []int) string {
	var b strings.Builder
	for _, p := range parts {
		if p.group == 0 {
			b.WriteString(p.lit)
			continue
		}
		if lo, hi := m[2*p.group], m[2*p.group+1]; lo >= 0 {
			b.WriteString(key[lo:hi])
		}
	}
	return b.String()
}

// parseRegexp parses the text of a regexp: or pcre: table file.
func parseRegexp(name string, pcre bool, data string, d *diags) *regexpTable {
	return parseRegexpLines(name, pcre, func(fn func(string, int)) { readLogical(data, d, false, fn) }, d)
}

// parseRegexpLines parses the rules src yields. Every problem Postfix
// would skip a rule for is an error here: a table that silently lost a
// rule is worse than a reload that keeps the previous version.
func parseRegexpLines(name string, pcre bool, src func(func(string, int)), d *diags) *regexpTable {
	t := &regexpTable{name: name, file: d.file}
	var open []int // indexes of the IF rules not yet closed
	src(func(text string, line int) {
		p := trimSpace(text)
		switch {
		case p == "":
		case !isAlnum(p[0]):
			if r, ok := parseMatchRule(p, pcre, line, d); ok {
				t.rules = append(t.rules, r)
			}
		case hasKeyword(p, "if"):
			// A broken IF is still pushed, so that its ENDIF does not
			// cause a second, confusing error; the table is not used
			// when there are errors.
			r := reRule{op: opIf, line: line}
			pat, rest, err := cutPattern(p[2:], pcre)
			switch {
			case err != nil:
				d.errorf(line, "%v", err)
			case trimSpace(rest) != "":
				d.errorf(line, "extra text after IF: %q (a line that starts with whitespace continues the line before it: do not indent the rules between IF and ENDIF)", clip(trimSpace(rest)))
			default:
				if r.re, err = pat.compile(pcre); err != nil {
					d.errorf(line, "%v", err)
				}
				r.neg = pat.neg
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
			t.rules = append(t.rules, reRule{op: opEndif, line: line})
		default:
			d.errorf(line, "unrecognized line %q: expected /pattern/ result, IF /pattern/ or ENDIF", clip(p))
		}
	})
	for _, i := range open {
		d.errorf(t.rules[i].line, "IF has no matching ENDIF")
	}
	return t
}

func parseMatchRule(p string, pcre bool, line int, d *diags) (reRule, bool) {
	pat, rest, err := cutPattern(p, pcre)
	if err != nil {
		d.errorf(line, "%v", err)
		return reRule{}, false
	}
	var pat2 *pattern
	if !pcre && strings.HasPrefix(rest, "!") {
		p2, rest2, err := cutPattern(rest, false)
		if err != nil {
			d.errorf(line, "%v", err)
			return reRule{}, false
		}
		pat2, rest = &p2, rest2
	}
	result := trimSpace(rest)
	if result == "" {
		d.warnf(line, "no replacement text: using empty string")
	}
	parts, maxSub, err := parseTemplate(result)
	if err != nil {
		d.errorf(line, "bad replacement text %q: %v", clip(result), err)
		return reRule{}, false
	}
	if maxSub > 0 && pat.neg {
		d.errorf(line, "$number found in negative match replacement text")
		return reRule{}, false
	}
	re, err := pat.compile(pcre)
	if err != nil {
		d.errorf(line, "%v", err)
		return reRule{}, false
	}
	if maxSub > re.NumSubexp() {
		d.errorf(line, "out of range replacement index \"%d\": the pattern has %d () groups", maxSub, re.NumSubexp())
		return reRule{}, false
	}
	r := reRule{op: opMatch, line: line, re: re, neg: pat.neg}
	if pat2 != nil {
		if r.re2, err = pat2.compile(false); err != nil {
			d.errorf(line, "%v", err)
			return reRule{}, false
		}
		r.neg2 = pat2.neg
	}
	if maxSub > 0 {
		r.parts = parts
	} else if len(parts) == 1 {
		r.result = parts[0].lit
	}
	return r, true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// hasKeyword reports whether p starts with kw, in any case, as a word.
func hasKeyword(p, kw string) bool {
	return len(p) >= len(kw) && strings.EqualFold(p[:len(kw)], kw) && (len(p) == len(kw) || !isAlnum(p[len(kw)]))
}

// pattern is a delimited regular expression with its flags, as written.
type pattern struct {
	expr  string
	delim byte
	neg   bool
	flags string
}

// cutPattern reads "[!]/expr/flags" from the start of p (after optional
// whitespace) and returns the rest. Like Postfix, any character can serve
// as the delimiter, a backslash escapes it, and "!" negates. In regexp
// tables the flags end at "!", which starts a second pattern.
func cutPattern(p string, pcre bool) (pattern, string, error) {
	var pat pattern
	i := 0
	for ; i < len(p); i++ {
		if p[i] == '!' {
			pat.neg = !pat.neg
		} else if !isSpace(p[i]) {
			break
		}
	}
	if i == len(p) {
		return pat, "", errors.New("no regexp")
	}
	pat.delim = p[i]
	i++
	start := i
	for ; i < len(p); i++ {
		if p[i] == '\\' {
			if i+1 == len(p) {
				i = len(p)
				break
			}
			i++
		} else if p[i] == pat.delim {
			break
		}
	}
	if i >= len(p) {
		return pat, "", fmt.Errorf("no closing regexp delimiter %q", string(pat.delim))
	}
	pat.expr = p[start:i]
	i++
	start = i
	for i < len(p) && !isSpace(p[i]) && (pcre || p[i] != '!') {
		i++
	}
	pat.flags = p[start:i]
	return pat, p[i:], nil
}

// compile turns a Postfix pattern into a Go regexp. Go's RE2 syntax is
// close to both POSIX extended and Perl syntax for what mail filters use;
// the constructs it lacks are reported by name rather than with RE2's
// terser messages.
func (pat pattern) compile(pcre bool) (*regexp.Regexp, error) {
	// Both Postfix table types ignore case by default, and "." matches a
	// newline: POSIX regcomp without REG_NEWLINE, and PCRE_DOTALL, which
	// pcre_table(5) turns on.
	icase, dotall, multiline, extended, anchored, ungreedy := true, true, false, false, false, false
	for _, f := range []byte(pat.flags) {
		switch {
		case f == 'i':
			icase = !icase
		case f == 'm' && !pcre:
			// REG_NEWLINE: "." stops matching newlines, ^ and $
			// match at them.
			multiline, dotall = !multiline, !dotall
		case f == 'x' && !pcre:
			return nil, fmt.Errorf("regexp option \"x\" (POSIX basic regular expression syntax) is not supported: write the pattern in extended syntax")
		case f == 'm':
			multiline = !multiline
		case f == 's':
			dotall = !dotall
		case f == 'x':
			extended = !extended
		case f == 'A':
			anchored = !anchored
		case f == 'U':
			ungreedy = !ungreedy
		case f == 'E', f == 'X':
			// E: Go's $ already matches only at the very end.
			// X: obsolete, PCRE2 ignores it as well.
		default:
			return nil, fmt.Errorf("unknown regexp option %q", string(f))
		}
	}
	expr, err := toRE2(pat.expr, pat.delim, extended)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pat.display(), err)
	}
	var b strings.Builder
	if icase || dotall || multiline || ungreedy {
		b.WriteString("(?")
		for _, f := range []struct {
			on bool
			c  byte
		}{{icase, 'i'}, {multiline, 'm'}, {dotall, 's'}, {ungreedy, 'U'}} {
			if f.on {
				b.WriteByte(f.c)
			}
		}
		b.WriteByte(')')
	}
	if anchored {
		b.WriteString(`\A(?:` + expr + `)`)
	} else {
		b.WriteString(expr)
	}
	re, err := regexp.Compile(b.String())
	if err != nil {
		// Quote the pattern as written, not with the flags added.
		if _, err2 := regexp.Compile(expr); err2 != nil {
			err = err2
		}
		msg := strings.TrimPrefix(err.Error(), "error parsing regexp: ")
		return nil, fmt.Errorf("%s: bad regular expression: %s", pat.display(), msg)
	}
	if !pcre {
		// POSIX regexec picks the leftmost-longest match, which
		// decides what $1 captures.
		re.Longest()
	}
	return re, nil
}

func (pat pattern) display() string {
	return string(pat.delim) + clip(pat.expr) + string(pat.delim)
}

// toRE2 rewrites what differs between the Postfix pattern languages and
// RE2, and rejects what RE2 cannot do.
func toRE2(s string, delim byte, extended bool) (string, error) {
	var b strings.Builder
	inClass := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			n := s[i+1]
			i++
			switch {
			case n == delim && isAlnum(n):
				// The backslash only protected the delimiter; in
				// RE2 it would make \d or \w of a letter.
				b.WriteByte(n)
				continue
			case inClass:
			case '1' <= n && n <= '9':
				return "", fmt.Errorf("backreference \\%c is not supported (Go RE2 syntax has no backreferences)", n)
			case n == '<' || n == '>':
				// GNU word-start and word-end; RE2 would read
				// them as a literal < and >.
				b.WriteString(`\b`)
				continue
			}
			b.WriteByte(c)
			b.WriteByte(n)
			continue
		case inClass:
			if c == '[' && i+1 < len(s) && (s[i+1] == ':' || s[i+1] == '.' || s[i+1] == '=') {
				// [:alpha:] and friends end at ":]", not at "]".
				if end := strings.Index(s[i+2:], string(s[i+1])+"]"); end >= 0 {
					b.WriteString(s[i : i+2+end+2])
					i += 2 + end + 1
					continue
				}
			}
			if c == ']' {
				inClass = false
			}
		case c == '[':
			inClass = true
			b.WriteByte(c)
			// A ']' right after '[' or '[^' is a literal.
			if i+1 < len(s) && s[i+1] == '^' {
				b.WriteByte('^')
				i++
			}
			if i+1 < len(s) && s[i+1] == ']' {
				b.WriteString(`\]`)
				i++
			}
			continue
		case c == '(' && strings.HasPrefix(s[i+1:], "?"):
			rest := s[i+2:]
			switch {
			case strings.HasPrefix(rest, "="), strings.HasPrefix(rest, "!"):
				return "", errors.New("lookahead (?= or (?! is not supported (Go RE2 syntax)")
			case strings.HasPrefix(rest, "<="), strings.HasPrefix(rest, "<!"):
				return "", errors.New("lookbehind (?<= or (?<! is not supported (Go RE2 syntax)")
			case strings.HasPrefix(rest, ">"):
				return "", errors.New("atomic group (?> is not supported (Go RE2 syntax)")
			}
		case extended && isSpace(c):
			continue
		case extended && c == '#':
			// A comment runs to the end of the line, and a pattern
			// is one line.
			return b.String(), nil
		}
		b.WriteByte(c)
	}
	return b.String(), nil
}

// parseTemplate splits a result into literal text and $n references, with
// the syntax of Postfix's mac_parse(): $n, ${n} or $(n), and $$ for "$".
// It returns the largest n.
func parseTemplate(s string) ([]tmplPart, int, error) {
	var (
		parts  []tmplPart
		lit    strings.Builder
		maxSub int
	)
	for i := 0; i < len(s); {
		c := s[i]
		if c != '$' {
			lit.WriteByte(c)
			i++
			continue
		}
		if i+1 < len(s) && s[i+1] == '$' {
			lit.WriteByte('$')
			i += 2
			continue
		}
		i++
		var name string
		if i < len(s) && (s[i] == '{' || s[i] == '(') {
			open, close := s[i], byte('}')
			if open == '(' {
				close = ')'
			}
			level, j := 1, i+1
			for ; j < len(s); j++ {
				if s[j] == open {
					level++
				} else if s[j] == close {
					if level--; level == 0 {
						break
					}
				}
			}
			if level > 0 {
				return nil, 0, errors.New("truncated $ reference")
			}
			name, i = s[i+1:j], j+1
		} else {
			j := i
			for j < len(s) && (isAlnum(s[j]) || s[j] == '_') {
				j++
			}
			name, i = s[i:j], j
		}
		if name == "" {
			return nil, 0, errors.New(`"$" without a group number (write "$$" for a literal "$")`)
		}
		for k := 0; k < len(name); k++ {
			if name[k] < '0' || name[k] > '9' {
				return nil, 0, fmt.Errorf("non-numeric replacement index %q", name)
			}
		}
		n, err := strconv.Atoi(name)
		if err != nil || n < 1 || n > 99 {
			return nil, 0, fmt.Errorf("out of range replacement index %q", name)
		}
		if lit.Len() > 0 {
			parts = append(parts, tmplPart{lit: lit.String()})
			lit.Reset()
		}
		parts = append(parts, tmplPart{group: n})
		maxSub = max(maxSub, n)
	}
	if lit.Len() > 0 || len(parts) == 0 {
		parts = append(parts, tmplPart{lit: lit.String()})
	}
	return parts, maxSub, nil
}
