package maps

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// logRec collects what a table passes to logf.
type logRec struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logRec) logf(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, s)
}

func (l *logRec) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.msgs
	l.msgs = nil
	return m
}

// openT opens a table from testdata and returns it with what it logged.
func openT(t *testing.T, spec string) (Table, []string) {
	t.Helper()
	var l logRec
	tab, err := Open(spec, "testdata", l.logf)
	if err != nil {
		t.Fatalf("Open(%q): %v", spec, err)
	}
	return tab, l.take()
}

type getCase struct {
	name string
	key  string
	want string
	ok   bool
}

func checkGets(t *testing.T, tab Table, tests []getCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tab.Get(tt.key)
			if got != tt.want || ok != tt.ok {
				t.Errorf("%s.Get(%q) = %q, %v; want %q, %v", tab.Name(), tt.key, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestHashFormat(t *testing.T) {
	t.Parallel()
	tab, logs := openT(t, "hash:virtual")
	checkGets(t, tab, []getCase{
		{"postmap(1) key whitespace value: the first word is the key", "postmaster@example.com", "peter", true},
		{"postmap(1) the value is the rest of the line, trimmed", "info@anotherexample.com", "gerda", true},
		{"postmap(1) keys are case-insensitive: upper-case query finds a lower-case key", "POSTMASTER@EXAMPLE.COM", "peter", true},
		{"postmap(1) keys are folded to lower case but values keep their case", "mixed.case@example.com", "KeepCase@Example.ORG", true},
		{"postmap(1) a line starting with whitespace continues the logical line, across comments and blank lines",
			"list@example.com", "alice@example.org, bob@example.org,\tcarol@example.org,\tdave@example.org", true},
		{"postmap(1) lines whose first non-blank character is # are comments, indented too", "#", "", false},
		{"postmap(1) duplicate entry: larkpost keeps the later entry", "dup@example.com", "second", true},
		{"postmap(1) a quoted local part is part of the key", `"a,b"@example.com`, "quoted", true},
		{"postmap(1) Get is exact: no parent or @domain forms", "example.com", "", false},
		{"postmap(1) Get is exact: no address extension stripping", "joe+x@example.com", "", false},
	})
	want := []string{`virtual:20: warning: duplicate entry "DUP@example.com" (also on line 19); the later entry wins`}
	if !slices.Equal(logs, want) {
		t.Errorf("logf got %q, want %q", logs, want)
	}
	if e, ok := tab.(Explainer); !ok {
		t.Error("file table is not an Explainer")
	} else if v, where, ok := e.Explain("Postmaster@Example.com"); v != "peter" || where != "virtual:3" || !ok {
		t.Errorf("Explain = %q, %q, %v; want peter, virtual:3, true", v, where, ok)
	}
}

func TestHashSeedPitfalls(t *testing.T) {
	t.Parallel()
	t.Run("postmap(1) relocated seed: an indented entry continues the previous entry, with a warning", func(t *testing.T) {
		tab, logs := openT(t, "relocated")
		checkGets(t, tab, []getCase{
			{"joined value", "john@example.com", "john@other.example @nowhere.com               This company doesn't exist anymore", true},
			{"the indented key is no key", "@nowhere.com", "", false},
			{"the entry after it is unaffected", "jane@example.com", "Doesn't work here anymore", true},
		})
		if len(logs) != 1 || !strings.HasPrefix(logs[0], "relocated:4: warning: line starts with whitespace, so it continues the entry on line 3") {
			t.Errorf("logf got %q, want one continuation warning for relocated:4", logs)
		}
	})
	t.Run("postmap(1) CRLF line ends are whitespace and are trimmed", func(t *testing.T) {
		tab, _ := openT(t, "hash:crlf")
		checkGets(t, tab, []getCase{
			{"crlf", "crlf@example.com", "windows", true},
			{"tab separator and trailing blanks", "other@example.com", "value with tab", true},
		})
	})
}

func TestHashErrors(t *testing.T) {
	t.Parallel()
	_, err := Open("hash:bad_hash", "testdata", nil)
	var pe ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("Open(bad_hash) error = %v, want a ParseError", err)
	}
	want := []string{
		`bad_hash:1: line starts with whitespace, but there is no line before it to continue: "indented first line with no line before it"`,
		`bad_hash:3: expected format: key whitespace value, got "lonely-key"`,
	}
	if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, want) {
		t.Errorf("error =\n%s\nwant\n%s", err, strings.Join(want, "\n"))
	}
	d, err := Check("bad_hash", "testdata")
	if err == nil || len(d) != 1 || d[0].String() != `bad_hash:4: warning: record is in "key: value" format; is this an alias file?` {
		t.Errorf("Check(bad_hash) = %v, %v; want the alias-format warning and the errors", d, err)
	}
}

func TestBinaryFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "access.db"), []byte("key value\n\x00\x01\x02"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Open("hash:access.db", dir, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "access.db:2: binary data") {
		t.Errorf("Open(access.db) error = %v, want access.db:2: binary data...", err)
	}
}

func TestOpenSpecs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		spec     string
		wantName string
		key      string
		want     string
		ok       bool
	}{
		{"postconf(5) a bare path is a hash table", "access", "hash:access", "mydomain.co", "OK", true},
		{"postconf(5) texthash reads the postmap source", "texthash:access", "texthash:access", "1.2.3", "REJECT", true},
		{"postconf(5) lmdb is indexed from its source text", "lmdb:access", "lmdb:access", "1.2.3.4", "OK", true},
		{"postconf(5) cdb is indexed from its source text", "cdb:access", "cdb:access", "1.2.3.4", "OK", true},
		{"proxymap(8) proxy: opens the proxied table", "proxy:hash:access", "hash:access", "mydomain.co", "OK", true},
		{"DATABASE_README inline: key=value", "inline:{ key1=value1, { key2 = value with spaces } }", "", "key1", "value1", true},
		{"DATABASE_README inline: { key = value with spaces }", "inline:{ key1=value1, { key2 = value with spaces } }", "", "key2", "value with spaces", true},
		{"DATABASE_README inline: keys are case-insensitive", "inline:{Key=Value}", "", "KEY", "Value", true},
		{"DATABASE_README inline: a value may contain = and braces inside braces", "inline:{ {a = b=c {d}} }", "", "a", "b=c {d}", true},
		{"DATABASE_README inline: missing key", "inline:{a=b}", "", "c", "", false},
		{"DATABASE_README static: every key gives the value", "static:REJECT", "static:REJECT", "anything", "REJECT", true},
		{"DATABASE_README static:{ text with spaces }", "static:{ 550 go away }", "", "x", "550 go away", true},
		{"regexp_table(5) inline rules regexp:{ {rule}, ... }", `regexp:{ {/^a(.)/ got $1}, {/b/ bee} }`, "", "abc", "got b", true},
		{"cidr_table(5) inline rules cidr:{ {rule}, ... }", "cidr:{ {192.0.2.0/24 net}, {0.0.0.0/0 any} }", "", "192.0.2.9", "net", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab, _ := openT(t, tt.spec)
			if tt.wantName == "" {
				tt.wantName = tt.spec
			}
			if tab.Name() != tt.wantName {
				t.Errorf("Name() = %q, want %q", tab.Name(), tt.wantName)
			}
			if got, ok := tab.Get(tt.key); got != tt.want || ok != tt.ok {
				t.Errorf("Get(%q) = %q, %v; want %q, %v", tt.key, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		spec string
		want string // the error text, or its start if it ends in "..."
	}{
		{"larkpost: empty spec", " ", "empty table name"},
		{"postconf(5) unknown table types are refused", "mysql:/etc/postfix/mysql.cf", `mysql:/etc/postfix/mysql.cf: unsupported table type "mysql" (supported: ...`},
		{"postconf(5) missing file name", "hash:", "hash:: missing file name"},
		{"postconf(5) hash tables are files, not inline", "hash:{a=b}", "hash:{a=b}: a hash table is a file; use inline:{...} for a table in the setting"},
		{"DATABASE_README inline: needs braces", "inline:a=b", "inline:a=b: bad syntax: need inline:{...}"},
		{"DATABASE_README inline: empty table", "inline:{ }", "inline:{ }: bad syntax: need inline:{...}"},
		{"DATABASE_README inline: unbalanced braces", "inline:{ {a=b }", "inline:{ {a=b }: bad syntax: need inline:{...}"},
		{"DATABASE_README inline: text after the closing brace", "inline:{a=b} x", "inline:{a=b} x: bad syntax: need inline:{...}"},
		{"DATABASE_README inline: element without =", "inline:{ a=b, c }", `inline:{...}:2: missing '=' after key in "c"`},
		{"DATABASE_README inline: garbage after an element's }", "inline:{ {a=b}c }", `inline:{ {a=b}c }: syntax error after '}' in "{a=b}c"`},
		{"regexp_table(5) inline rules report the rule number", "regexp:{ {/a/ b}, {/a/q b} }", `regexp:{...}:2: unknown regexp option "q"`},
		{"cidr_table(5) inline rules report the rule number", "cidr:{ {192.0.2.1/24 x} }", `cidr:{...}:1: non-null host address bits in "192.0.2.1/24", perhaps you should use "192.0.2.0/24" instead`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(tt.spec, "testdata", nil)
			if err == nil {
				t.Fatalf("Open(%q) succeeded, want error %q", tt.spec, tt.want)
			}
			if prefix, ok := strings.CutSuffix(tt.want, "..."); ok {
				if !strings.HasPrefix(err.Error(), prefix) {
					t.Errorf("Open(%q) error = %q, want prefix %q", tt.spec, err, prefix)
				}
			} else if err.Error() != tt.want {
				t.Errorf("Open(%q) error = %q, want %q", tt.spec, err, tt.want)
			}
		})
	}
	t.Run("larkpost: a missing file wraps fs.ErrNotExist", func(t *testing.T) {
		_, err := Open("hash:nonexistent", "testdata", nil)
		if !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "hash:nonexistent: open testdata/nonexistent") {
			t.Errorf("error = %v, want hash:nonexistent: open testdata/nonexistent: ... wrapping fs.ErrNotExist", err)
		}
	})
	t.Run("larkpost: a directory is not a table", func(t *testing.T) {
		if _, err := Open("hash:fuzz", "testdata", nil); err == nil {
			t.Error("Open of a directory succeeded")
		}
	})
}

func TestFromMap(t *testing.T) {
	t.Parallel()
	tab := FromMap("users", map[string]string{"Joe@Example.com": "joe", "abuse": "Root"})
	checkGets(t, tab, []getCase{
		{"FromMap: keys are lower-cased", "joe@example.com", "joe", true},
		{"FromMap: lookups fold case", "JOE@EXAMPLE.COM", "joe", true},
		{"FromMap: values keep case", "abuse", "Root", true},
		{"FromMap: absent key", "root", "", false},
	})
	if tab.Name() != "users" {
		t.Errorf("Name() = %q", tab.Name())
	}
	if FromMap("", nil).Name() != "inline" {
		t.Errorf("FromMap with no name is not called inline")
	}
	if isPattern(tab) {
		t.Error("FromMap table is a pattern table")
	}
}

func TestDiagnosticString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		d    Diagnostic
		want string
	}{
		{Diagnostic{"access", 3, "bad"}, "access:3: bad"},
		{Diagnostic{"access", 0, "gone"}, "access: gone"},
		{Diagnostic{"", 0, "alone"}, "alone"},
	}
	for _, tt := range tests {
		if got := tt.d.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.d, got, tt.want)
		}
	}
	if got := (ParseError{{"a", 1, "x"}, {"a", 2, "y"}}).Error(); got != "a:1: x\na:2: y" {
		t.Errorf("ParseError.Error() = %q", got)
	}
}

func TestTooManyErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "t"), []byte(strings.Repeat("novalue\n", 150)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Open("t", dir, nil)
	var pe ParseError
	if !errors.As(err, &pe) || len(pe) != maxErrors+1 || pe[maxErrors].String() != "t: 50 more errors not shown" {
		t.Errorf("got %d diagnostics, last %v; want %d and a count of the rest", len(pe), pe[len(pe)-1], maxErrors+1)
	}
}

func writeTable(t *testing.T, dir, name, text string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestKeyIndex(t *testing.T) {
	t.Parallel()
	x := newKeyIndex(0)
	for i := range 1000 {
		if _, dup := x.put(strings.Repeat("k", i%37)+string(rune('a'+i%26))+strings.Repeat("x", i/26), "v", int32(i)); dup {
			t.Fatalf("put %d reported a duplicate", i)
		}
	}
	if x.len() != 1000 || 2*x.len() >= len(x.slots) {
		t.Errorf("len %d, %d slots: the index did not grow", x.len(), len(x.slots))
	}
	if prev, dup := x.put("a", "w", 2000); !dup || prev != 0 || x.values[x.find("a")] != "w" {
		t.Errorf("put of an existing key: prev %d, dup %v", prev, dup)
	}
	if x.find("missing") >= 0 {
		t.Error("find of a missing key succeeded")
	}
	y := newKeyIndex(100)
	y.put("only", "1", 1)
	y.compact()
	if cap(y.keys) != 1 || len(y.slots) != 4 || y.find("only") != 0 {
		t.Errorf("compact left cap %d, %d slots", cap(y.keys), len(y.slots))
	}
}
