// Package importer converts a Postfix configuration (main.cf, master.cf and
// the lookup tables they name) into a larkpost config folder: larkpost.star,
// a test file that encodes the old behaviour, and a report of everything
// that needs hand work. It is `larkpost import postfix`.
package importer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Param is one main.cf parameter as written.
type Param struct {
	Name  string
	Value string // raw, continuation lines joined with a space
	File  string // as shown in messages: "main.cf" relative to the config dir
	Line  int
}

// MainCF is a parsed main.cf: the last assignment of each name wins, as in
// Postfix.
type MainCF struct {
	Path   string
	Params map[string]*Param
	Order  []string // names in the order of their (last) assignment lines
	Dups   []*Param // earlier assignments that a later one overrides
}

// ParseMainCF reads main.cf syntax: "name = value" logical lines; a line
// starting with whitespace continues the previous one; empty lines and
// lines whose first non-blank character is '#' are ignored everywhere.
func ParseMainCF(path, shown string, data []byte) (*MainCF, error) {
	lines, err := logicalLines(shown, data)
	if err != nil {
		return nil, err
	}
	m := &MainCF{Path: path, Params: map[string]*Param{}}
	for _, l := range lines {
		name, value, ok := strings.Cut(l.Text, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("%s:%d: missing '=' after parameter name: %q", shown, l.Line, l.Text)
		}
		cur := &Param{Name: name, Value: strings.TrimSpace(value), File: shown, Line: l.Line}
		if old := m.Params[name]; old != nil {
			m.Dups = append(m.Dups, old)
			for i, n := range m.Order {
				if n == name {
					m.Order = append(m.Order[:i], m.Order[i+1:]...)
					break
				}
			}
		}
		m.Params[name] = cur
		m.Order = append(m.Order, name)
	}
	return m, nil
}

// logicalLine is one entry of main.cf or master.cf: its first line's
// number and its text, continuation lines joined with a space.
type logicalLine struct {
	Line int
	Text string
}

// logicalLines splits Postfix's configuration syntax: a line starting
// with whitespace continues the previous one; empty lines and lines whose
// first non-blank character is '#' are ignored everywhere.
func logicalLines(shown string, data []byte) ([]logicalLine, error) {
	var out []logicalLine
	var parts []string
	first := 0
	flush := func() {
		if parts != nil {
			out = append(out, logicalLine{Line: first, Text: strings.Join(parts, " ")})
		}
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimRight(sc.Text(), "\r")
		t := strings.TrimSpace(line)
		if t == "" || t[0] == '#' {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if parts == nil {
				return nil, fmt.Errorf("%s:%d: logical line must not start with whitespace", shown, n)
			}
			parts = append(parts, t)
			continue
		}
		flush()
		first, parts = n, []string{t}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %v", shown, err)
	}
	flush()
	return out, nil
}

// Service is one master.cf entry.
type Service struct {
	Name, Type              string // "smtp", "inet"
	Private, Unpriv, Chroot string
	Wakeup, MaxProc         string
	Command                 string   // "smtpd"
	Args                    []string // the command's arguments, -o pairs removed
	Overrides               []Override
	File                    string
	Line                    int
	Raw                     string // the logical line as written, whitespace collapsed
}

// Override is one "-o name=value" of a service.
type Override struct {
	Name, Value string
}

// Get returns the value of the service's -o override name.
func (s *Service) Get(name string) (string, bool) {
	v, ok := "", false
	for _, o := range s.Overrides {
		if o.Name == name {
			v, ok = o.Value, true
		}
	}
	return v, ok
}

// ParseMasterCF reads master.cf: logical lines as main.cf's, eight
// whitespace-separated fields, then the command's arguments with its
// "-o name=value" and "-o { name = value }" overrides.
func ParseMasterCF(shown string, data []byte) ([]*Service, error) {
	lines, err := logicalLines(shown, data)
	if err != nil {
		return nil, err
	}
	var out []*Service
	for _, l := range lines {
		curLine, raw := l.Line, l.Text
		f := splitMasterFields(raw)
		if len(f) < 8 {
			return nil, fmt.Errorf("%s:%d: expected at least 8 fields (service type private unpriv chroot wakeup maxproc command), got %d", shown, curLine, len(f))
		}
		s := &Service{Name: f[0], Type: f[1], Private: f[2], Unpriv: f[3], Chroot: f[4], Wakeup: f[5], MaxProc: f[6], Command: f[7],
			File: shown, Line: curLine, Raw: strings.Join(strings.Fields(raw), " ")}
		args := f[8:]
		for i := 0; i < len(args); i++ {
			a := args[i]
			switch {
			case a == "-o" && i+1 < len(args):
				i++
				kv := args[i]
				if strings.HasPrefix(kv, "{") {
					kv = strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(kv, "{"), "}"))
				}
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return nil, fmt.Errorf("%s:%d: -o %s: want name=value", shown, curLine, kv)
				}
				s.Overrides = append(s.Overrides, Override{Name: strings.TrimSpace(k), Value: strings.TrimSpace(v)})
			case strings.HasPrefix(a, "-o") && len(a) > 2 && strings.Contains(a, "="):
				k, v, _ := strings.Cut(a[2:], "=")
				s.Overrides = append(s.Overrides, Override{Name: strings.TrimSpace(k), Value: strings.TrimSpace(v)})
			default:
				s.Args = append(s.Args, a)
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// splitMasterFields splits on whitespace, keeping "{ ... }" groups whole.
func splitMasterFields(s string) []string {
	var out []string
	var b strings.Builder
	depth := 0
	for _, r := range s {
		switch {
		case r == '{':
			depth++
			b.WriteRune(r)
		case r == '}' && depth > 0:
			depth--
			b.WriteRune(r)
		case (r == ' ' || r == '\t') && depth == 0:
			if b.Len() > 0 {
				out = append(out, b.String())
				b.Reset()
			}
		default:
			b.WriteRune(r)
		}
	}
	if b.Len() > 0 {
		out = append(out, b.String())
	}
	return out
}

// Env resolves parameter names: main.cf, then the computed and built-in
// defaults, then a service's -o overrides on top.
type Env struct {
	Main      *MainCF
	Defaults  map[string]string
	Overrides map[string]string // a master.cf service's -o values (raw)
	// Undefined collects names that were referenced but have no value.
	Undefined map[string]bool
}

// Raw returns a parameter's unexpanded value and whether it is known.
func (e *Env) Raw(name string) (string, bool) {
	if v, ok := e.Overrides[name]; ok {
		return v, true
	}
	if p := e.Main.Params[name]; p != nil {
		return p.Value, true
	}
	v, ok := e.Defaults[name]
	return v, ok
}

// IsSet reports whether main.cf (or an override) sets name.
func (e *Env) IsSet(name string) bool {
	if _, ok := e.Overrides[name]; ok {
		return true
	}
	return e.Main.Params[name] != nil
}

// Get returns a parameter's expanded value.
func (e *Env) Get(name string) string {
	v, err := e.Value(name)
	if err != nil {
		return ""
	}
	return v
}

// Value returns a parameter's expanded value, or an expansion error.
func (e *Env) Value(name string) (string, error) {
	raw, _ := e.Raw(name)
	return e.Expand(raw)
}

// Expand replaces $name, ${name}, $(name), ${name?value}, ${name:value},
// ${name?{value}:{value}} and ${{a} op {b} ? {x} : {y}} as Postfix's
// mac_expand does; $$ is a literal $. Undefined names expand to "".
func (e *Env) Expand(s string) (string, error) {
	return e.expand(s, 0)
}

const maxDepth = 100

func (e *Env) expand(s string, depth int) (string, error) {
	if depth > maxDepth {
		return "", fmt.Errorf("parameter expansion loop or nesting deeper than %d levels", maxDepth)
	}
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		n := s[i+1]
		switch {
		case n == '$':
			b.WriteByte('$')
			i++
		case n == '{' || n == '(':
			closeCh := byte('}')
			if n == '(' {
				closeCh = ')'
			}
			end := matchClose(s, i+1, n, closeCh)
			if end < 0 {
				return "", fmt.Errorf("unbalanced %c in %q", n, s)
			}
			v, err := e.expandBraced(s[i+2:end], depth)
			if err != nil {
				return "", err
			}
			b.WriteString(v)
			i = end
		case isNameChar(n):
			j := i + 1
			for j < len(s) && isNameChar(s[j]) {
				j++
			}
			v, err := e.lookup(s[i+1:j], depth)
			if err != nil {
				return "", err
			}
			b.WriteString(v)
			i = j - 1
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

func (e *Env) lookup(name string, depth int) (string, error) {
	raw, ok := e.Raw(name)
	if !ok {
		if e.Undefined != nil {
			e.Undefined[name] = true
		}
		return "", nil
	}
	v, err := e.expand(raw, depth+1)
	if err != nil {
		return "", fmt.Errorf("$%s: %w", name, err)
	}
	return v, nil
}

// expandBraced handles the inside of ${...}.
func (e *Env) expandBraced(in string, depth int) (string, error) {
	in = strings.TrimSpace(in)
	if strings.HasPrefix(in, "{") {
		return e.expandRelational(in, depth)
	}
	j := 0
	for j < len(in) && isNameChar(in[j]) {
		j++
	}
	name, rest := in[:j], in[j:]
	if name == "" {
		return "", fmt.Errorf("bad ${%s}", in)
	}
	val, err := e.lookup(name, depth)
	if err != nil {
		return "", err
	}
	if rest == "" {
		return val, nil
	}
	op, arg := rest[0], rest[1:]
	var ifTrue, ifFalse string
	hasFalse := false
	if strings.HasPrefix(strings.TrimSpace(arg), "{") {
		// ${name?{a}:{b}}, ${name?{a}}, ${name:{b}}
		a := strings.TrimSpace(arg)
		end := matchClose(a, 0, '{', '}')
		if end < 0 {
			return "", fmt.Errorf("unbalanced { in ${%s}", in)
		}
		ifTrue = a[1:end]
		tail := strings.TrimSpace(a[end+1:])
		if strings.HasPrefix(tail, ":") {
			t2 := strings.TrimSpace(tail[1:])
			if strings.HasPrefix(t2, "{") && strings.HasSuffix(t2, "}") {
				ifFalse, hasFalse = t2[1:len(t2)-1], true
			} else {
				ifFalse, hasFalse = t2, true
			}
		}
	} else {
		ifTrue = arg
	}
	switch op {
	case '?':
		if val != "" {
			return e.expand(ifTrue, depth+1)
		}
		if hasFalse {
			return e.expand(ifFalse, depth+1)
		}
		return "", nil
	case ':':
		if val == "" {
			return e.expand(ifTrue, depth+1)
		}
		return "", nil
	}
	return "", fmt.Errorf("bad ${%s}", in)
}

// expandRelational is ${{a} op {b} ? {x} : {y}} (Postfix 3.5).
func (e *Env) expandRelational(in string, depth int) (string, error) {
	next := func(s string) (group, rest string, err error) {
		s = strings.TrimSpace(s)
		end := matchClose(s, 0, '{', '}')
		if !strings.HasPrefix(s, "{") || end < 0 {
			return "", "", fmt.Errorf("bad relational expression ${%s}", in)
		}
		return s[1:end], s[end+1:], nil
	}
	left, rest, err := next(in)
	if err != nil {
		return "", err
	}
	rest = strings.TrimSpace(rest)
	var op string
	for _, o := range []string{"==", "!=", "<=level", ">=level", "<level", ">level"} {
		if strings.HasPrefix(rest, o) {
			op, rest = o, rest[len(o):]
			break
		}
	}
	if op == "" {
		return "", fmt.Errorf("bad relational operator in ${%s}", in)
	}
	right, rest, err := next(rest)
	if err != nil {
		return "", err
	}
	if left, err = e.expand(left, depth+1); err != nil {
		return "", err
	}
	if right, err = e.expand(right, depth+1); err != nil {
		return "", err
	}
	var truth bool
	switch op {
	case "==":
		truth = left == right
	case "!=":
		truth = left != right
	default:
		c := compareLevel(left, right)
		switch op {
		case "<level":
			truth = c < 0
		case "<=level":
			truth = c <= 0
		case ">level":
			truth = c > 0
		case ">=level":
			truth = c >= 0
		}
	}
	rest = strings.TrimSpace(rest)
	var x, y string
	if strings.HasPrefix(rest, "?") {
		if x, rest, err = next(rest[1:]); err != nil {
			return "", err
		}
		rest = strings.TrimSpace(rest)
	}
	if strings.HasPrefix(rest, ":") {
		if y, _, err = next(rest[1:]); err != nil {
			return "", err
		}
	}
	if truth {
		return e.expand(x, depth+1)
	}
	return e.expand(y, depth+1)
}

// compareLevel compares compatibility levels "3.6", "2", "3.10.1".
func compareLevel(a, b string) int {
	pa, pb := strings.Split(strings.TrimSpace(a), "."), strings.Split(strings.TrimSpace(b), ".")
	for i := 0; i < len(pa) || i < len(pb); i++ {
		var x, y int
		if i < len(pa) {
			x, _ = strconv.Atoi(pa[i])
		}
		if i < len(pb) {
			y, _ = strconv.Atoi(pb[i])
		}
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

func matchClose(s string, open int, o, c byte) int {
	depth := 0
	for i := open; i < len(s); i++ {
		switch s[i] {
		case o:
			depth++
		case c:
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}

func isNameChar(c byte) bool {
	return c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// splitList splits a Postfix list value: commas and whitespace separate
// items, "{ ... }" groups stay whole (inline:{ a=b, c=d }).
func splitList(s string) []string {
	var out []string
	var b strings.Builder
	depth := 0
	for _, r := range s {
		switch {
		case r == '{':
			depth++
			b.WriteRune(r)
		case r == '}' && depth > 0:
			depth--
			b.WriteRune(r)
		case (r == ' ' || r == '\t' || r == ',' || r == '\n') && depth == 0:
			if b.Len() > 0 {
				out = append(out, b.String())
				b.Reset()
			}
		default:
			b.WriteRune(r)
		}
	}
	if b.Len() > 0 {
		out = append(out, b.String())
	}
	return out
}

// readMainCF reads and parses DIR/main.cf.
func readMainCF(dir string) (*MainCF, error) {
	path := filepath.Join(dir, "main.cf")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, errors.Unwrap(err))
	}
	return ParseMainCF(path, "main.cf", data)
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
