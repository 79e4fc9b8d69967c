package maps

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"
)

// Table is a lookup table. Implementations are safe for concurrent use.
type Table interface {
	// Get looks key up as this table type does (exact for key/value tables, lower-cased;
	// first matching pattern for regexp and cidr tables, with substitution).
	Get(key string) (value string, ok bool)
	Name() string // e.g. "hash:/etc/postfix/access"
}

// PatternTable is implemented by tables whose Get matches patterns rather
// than exact keys: regexp, pcre, cidr and static. Postfix queries such
// tables only once, with the whole search string, because trying partial
// keys like "@example.com" against a regular expression would match things
// the author never meant; the Lookup functions do the same.
type PatternTable interface {
	Table
	IsPattern() bool
}

// Explainer is implemented by the tables Open and FromMap return. Explain
// is Get that also says where the entry that matched is written, as
// "FILE:LINE" for file tables, so that `larkpost map query` and traces can
// point the administrator at the line to edit.
type Explainer interface {
	Explain(key string) (value, where string, ok bool)
}

// isPattern reports whether the Lookup functions must query t only once.
func isPattern(t Table) bool {
	p, ok := t.(PatternTable)
	return ok && p.IsPattern()
}

// Diagnostic is a problem in a table file: "FILE:LINE: message".
type Diagnostic struct {
	File string
	Line int
	Msg  string
}

// String formats d the way compilers do, so that editors can jump to it.
// Problems that concern the whole file have no line number.
func (d Diagnostic) String() string {
	switch {
	case d.Line > 0:
		return fmt.Sprintf("%s:%d: %s", d.File, d.Line, d.Msg)
	case d.File != "":
		return d.File + ": " + d.Msg
	}
	return d.Msg
}

// ParseError is returned by Open when the file has errors; it lists them all.
type ParseError []Diagnostic

// Error returns one diagnostic per line.
func (e ParseError) Error() string {
	var b strings.Builder
	for i, d := range e {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(d.String())
	}
	return b.String()
}

// maxErrors bounds the diagnostics one load reports: a binary file or the
// wrong file passed by mistake would otherwise log a line per byte.
const maxErrors = 100

// diags collects the errors and warnings of one load.
type diags struct {
	file     string
	errs     []Diagnostic
	warns    []Diagnostic
	dropped  int
	dropWarn int
}

func (d *diags) errorf(line int, format string, args ...any) {
	if len(d.errs) >= maxErrors {
		d.dropped++
		return
	}
	d.errs = append(d.errs, Diagnostic{d.file, line, fmt.Sprintf(format, args...)})
}

func (d *diags) warnf(line int, format string, args ...any) {
	if len(d.warns) >= maxErrors {
		d.dropWarn++
		return
	}
	d.warns = append(d.warns, Diagnostic{d.file, line, "warning: " + fmt.Sprintf(format, args...)})
}

// err returns the errors as a ParseError, or nil.
func (d *diags) err() error {
	if len(d.errs) == 0 {
		return nil
	}
	errs := d.errs
	if d.dropped > 0 {
		errs = append(errs, Diagnostic{File: d.file, Msg: fmt.Sprintf("%d more errors not shown", d.dropped)})
	}
	return ParseError(errs)
}

// warnings returns the warnings, with a note when some were dropped.
func (d *diags) warnings() []Diagnostic {
	if d.dropWarn > 0 {
		return append(d.warns, Diagnostic{File: d.file, Msg: fmt.Sprintf("warning: %d more warnings not shown", d.dropWarn)})
	}
	return d.warns
}

// tableKind is how the text of a table is parsed.
type tableKind int

const (
	kindHash tableKind = iota
	kindRegexp
	kindPCRE
	kindCIDR
	kindInline
	kindStatic
	kindPgsql  // pgsql_table(5): a configuration file naming a PostgreSQL database
	kindSQLite // sqlite_table(5): a configuration file naming a SQLite database
)

// tableTypes maps the Postfix type names larkpost understands to parsers.
// Every indexed type reads the postmap source text: larkpost indexes it in
// memory, so whether Postfix would have built a .db, .lmdb or .cdb file
// from it makes no difference.
var tableTypes = map[string]tableKind{
	"hash":     kindHash,
	"btree":    kindHash,
	"lmdb":     kindHash,
	"cdb":      kindHash,
	"dbm":      kindHash,
	"sdbm":     kindHash,
	"texthash": kindHash,
	"regexp":   kindRegexp,
	"pcre":     kindPCRE,
	"cidr":     kindCIDR,
	"inline":   kindInline,
	"static":   kindStatic,
	"pgsql":    kindPgsql,
	"sqlite":   kindSQLite,
}

// splitSpec separates "type:rest". A bare path has no type; so has a path
// whose first colon is not preceded by a plain word, like "./a:b".
func splitSpec(spec string) (typ, rest string) {
	i := strings.IndexByte(spec, ':')
	if i <= 0 {
		return "", spec
	}
	for _, c := range spec[:i] {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return "", spec
		}
	}
	return strings.ToLower(spec[:i]), spec[i+1:]
}

// Open opens a table by Postfix-style spec ("hash:/etc/postfix/access", "regexp:/etc/postfix/header_checks",
// "cidr:...", "inline:{...}", "static:x", "pgsql:/etc/postfix/virtual.cf", "sqlite:...", or a bare path = hash). Relative paths are resolved against baseDir.
// File tables reload automatically when the file changes (checked at most once per second, by mtime+size,
// inside Get); a reload that fails keeps the last good version and calls logf once per failed version with
// each diagnostic ("FILE:LINE: message"). logf may be nil.
//
// A changed file is loaded once it has not changed for a second, so that a
// file caught half-written is not used; see the package documentation.
//
// Warnings, such as a duplicate key, do not stop a table from loading; they
// go to logf as "FILE:LINE: warning: message" each time a version of the
// file is loaded, the first one included. A file with errors makes Open
// fail with a ParseError listing them.
func Open(spec, baseDir string, logf func(string)) (Table, error) {
	return openTable(spec, baseDir, logf, reloadOptions{interval: ReloadInterval, coolDown: defaultCoolDown})
}

// openTable is Open with the reload timings of file tables given.
func openTable(spec, baseDir string, logf func(string), o reloadOptions) (Table, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, errors.New("empty table name")
	}
	typ, rest := splitSpec(spec)
	// proxymap only moves the lookup into another process; the table is
	// the same, so admins can paste proxy:... settings unchanged.
	if typ == "proxy" {
		return openTable(rest, baseDir, logf, o)
	}
	name := spec
	if typ == "" {
		typ, name = "hash", "hash:"+spec
	}
	kind, ok := tableTypes[typ]
	if !ok {
		return nil, fmt.Errorf("%s: unsupported table type %q (supported: %s)", spec, typ, supportedTypes())
	}
	switch kind {
	case kindStatic:
		return &staticTable{name: name, value: unbrace(rest)}, nil
	case kindInline:
		return parseInline(name, rest)
	}
	if strings.HasPrefix(strings.TrimSpace(rest), "{") {
		if kind == kindHash || kind == kindPgsql || kind == kindSQLite {
			return nil, fmt.Errorf("%s: a %s table is a file; use inline:{...} for a table in the setting", spec, typ)
		}
		return parseInlineRules(name, kind, rest)
	}
	if rest == "" {
		return nil, fmt.Errorf("%s: missing file name", spec)
	}
	path := rest
	if !filepath.IsAbs(path) {
		path = filepath.Join(baseDir, path)
	}
	if kind == kindPgsql || kind == kindSQLite {
		return openSQL(kind, name, rest, path, logf)
	}
	return openFile(name, rest, path, kind, logf, o)
}

func supportedTypes() string {
	names := make([]string, 0, len(tableTypes))
	for n := range tableTypes {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// parseText parses the text of a table file of the given kind. file names
// the file in diagnostics.
func parseText(kind tableKind, name, file, data string) (Table, []Diagnostic, error) {
	d := &diags{file: file}
	if i := strings.IndexByte(data, 0); i >= 0 {
		// A NUL never occurs in a text table; this is most likely the
		// .db/.lmdb/.cdb file postmap built instead of its source.
		d.errorf(1+strings.Count(data[:i], "\n"), "binary data (NUL byte): give the text file that postmap reads, not the indexed file it writes")
		return nil, nil, d.err()
	}
	var t Table
	switch kind {
	case kindHash:
		t = parseHash(name, data, d)
	case kindRegexp, kindPCRE:
		t = parseRegexp(name, kind == kindPCRE, data, d)
	case kindCIDR:
		t = parseCIDR(name, data, d)
	default:
		panic("maps: parseText: bad kind")
	}
	if err := d.err(); err != nil {
		return nil, d.warnings(), err
	}
	return t, d.warnings(), nil
}

// lowerKey folds a key the way the tables store it. Invalid UTF-8 is
// folded in ASCII only, because strings.ToLower would turn each bad byte
// into U+FFFD and make different keys collide.
func lowerKey(s string) string {
	if utf8.ValidString(s) {
		return strings.ToLower(s)
	}
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// hashTable is a key/value table: postmap source files, inline: tables and
// FromMap.
type hashTable struct {
	name string
	file string // "" for tables not read from a file
	idx  *keyIndex
}

// Get looks up the lower-cased key.
func (t *hashTable) Get(key string) (string, bool) {
	if i := t.idx.find(lowerKey(key)); i >= 0 {
		return t.idx.values[i], true
	}
	return "", false
}

// Name returns the table's spec.
func (t *hashTable) Name() string { return t.name }

// IsPattern is false: partial keys like "@example.com" make sense here.
func (t *hashTable) IsPattern() bool { return false }

// Explain is Get with the FILE:LINE of the entry.
func (t *hashTable) Explain(key string) (string, string, bool) {
	i := t.idx.find(lowerKey(key))
	if i < 0 {
		return "", "", false
	}
	v, line := t.idx.values[i], t.idx.lines[i]
	if t.file == "" || line == 0 {
		return v, t.name, true
	}
	return v, fmt.Sprintf("%s:%d", t.file, line), true
}

// Len returns the number of keys, for tests and `larkpost map` summaries.
func (t *hashTable) Len() int { return t.idx.len() }

// FromMap makes an inline table from a Go map (keys are lower-cased).
// Keys that differ only in case collapse into one; the value of the key
// that sorts last wins, so that the result does not depend on map order.
func FromMap(name string, m map[string]string) Table {
	if name == "" {
		name = "inline"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	t := &hashTable{name: name, idx: newKeyIndex(len(m))}
	for _, k := range keys {
		t.idx.put(lowerKey(k), m[k], 0)
	}
	return t
}

// staticTable answers every query with the same value, like Postfix's
// static: type.
type staticTable struct {
	name, value string
}

// Get returns the value for any key.
func (t *staticTable) Get(string) (string, bool) { return t.value, true }

// Name returns the table's spec.
func (t *staticTable) Name() string { return t.name }

// IsPattern is true: trying more keys would only return the same value.
func (t *staticTable) IsPattern() bool { return true }

// Explain is Get; the spec is the only place the value is written.
func (t *staticTable) Explain(string) (string, string, bool) { return t.value, t.name, true }

// unbrace strips the braces of Postfix 3.x "static:{ text with spaces }".
func unbrace(s string) string {
	t := strings.TrimSpace(s)
	if len(t) >= 2 && t[0] == '{' && t[len(t)-1] == '}' {
		return strings.TrimSpace(t[1 : len(t)-1])
	}
	return s
}
