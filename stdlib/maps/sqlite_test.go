package maps

import (
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.starlark.net/starlark"
	"modernc.org/sqlite"
)

// writeTestFile writes name in dir and returns its path.
func writeTestFile(t testing.TB, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// openRW opens a SQLite file for writing, as an administrator's tool
// would.
func openRW(t testing.TB, path string) *sql.DB {
	t.Helper()
	c, err := sqlite.NewConnector("file:" + path)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(c)
	t.Cleanup(func() { db.Close() })
	return db
}

// mailDB makes dir/mail.db with a virtual alias table and a transport
// table, in the rollback-journal mode in which a writer's lock keeps
// readers out.
func mailDB(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "mail.db")
	db := openRW(t, path)
	for _, s := range []string{
		`CREATE TABLE virtual (alias TEXT NOT NULL, target TEXT, active INTEGER NOT NULL DEFAULT 1)`,
		`INSERT INTO virtual (alias, target) VALUES
			('postmaster@example.com', 'peter@example.net'),
			('joe@example.com', 'joe@example.net'),
			('joe+lists@example.com', 'lists@example.net'),
			('staff@example.com', 'ann@example.net'),
			('staff@example.com', 'bob@example.net'),
			('@example.org', 'catchall@example.net'),
			('nobody@example.com', NULL),
			('blank@example.com', '')`,
		`INSERT INTO virtual (alias, target, active) VALUES ('gone@example.com', 'old@example.net', 0)`,
		`CREATE TABLE transport (domain TEXT PRIMARY KEY, mailhost TEXT)`,
		`INSERT INTO transport VALUES ('example.com', 'mx1.example.com'), ('.example.com', 'mx2.example.com'), ('*', 'relay.example.net')`,
	} {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	db.Close()
	return path
}

// openSQLiteT writes cf as dir/NAME.cf and opens it as sqlite:NAME.cf.
func openSQLiteT(t testing.TB, dir, name, cf string) (*sqlTable, *logRec) {
	t.Helper()
	writeTestFile(t, dir, name+".cf", cf)
	l := &logRec{}
	tab, err := Open("sqlite:"+name+".cf", dir, l.logf)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	st := tab.(*sqlTable)
	t.Cleanup(func() { st.Close() })
	return st, l
}

const virtualCF = `# virtual_alias_maps = sqlite:virtual.cf
dbpath = mail.db
query = SELECT target FROM virtual WHERE alias = '%s' AND active = 1
`

func TestSQLiteVirtualAlias(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	mailDB(t, dir)
	tab, logs := openSQLiteT(t, dir, "virtual", virtualCF)
	if l := logs.take(); len(l) != 0 {
		t.Errorf("opening logged %q", l)
	}
	o := AddrOptions{Delims: "+"}
	tests := []struct{ in, want, matched string }{
		{"postmaster@example.com", "peter@example.net", "postmaster@example.com"},
		{"PostMaster@Example.COM", "peter@example.net", "postmaster@example.com"},
		{"joe+lists@example.com", "lists@example.net", "joe+lists@example.com"},
		{"joe+other@example.com", "joe@example.net", "joe@example.com"},
		{"staff@example.com", "ann@example.net,bob@example.net", "staff@example.com"},
		{"anyone@example.org", "catchall@example.net", "@example.org"},
		{"unknown@example.com", "", ""},
		{"gone@example.com", "", ""},   // the query's condition
		{"nobody@example.com", "", ""}, // NULL
		{"blank@example.com", "", ""},  // an empty value is skipped
		{"x' OR '1'='1", "", ""},       // no injection
		{"x' OR '1'='1@example.com", "", ""},
	}
	for _, tt := range tests {
		v, m, ok, err := LookupAddress(tab, tt.in, o)
		if err != nil || v != tt.want || m != tt.matched || ok != (tt.want != "") {
			t.Errorf("LookupAddress(%q) = %q, %q, %v, %v; want %q, %q", tt.in, v, m, ok, err, tt.want, tt.matched)
		}
	}
	if v, where, ok := tab.Explain("joe@example.com"); v != "joe@example.net" || where != "sqlite:virtual.cf" || !ok {
		t.Errorf("Explain = %q, %q, %v", v, where, ok)
	}
}

func TestSQLiteInjection(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	mailDB(t, dir)
	// Without quoting, each of these keys would match every row.
	bare, _ := openSQLiteT(t, dir, "bare", "dbpath = mail.db\nquery = SELECT target FROM virtual WHERE alias = %s\ncache_ttl = 0\n")
	quoted, _ := openSQLiteT(t, dir, "quoted", virtualCF+"cache_ttl = 0\n")
	local, _ := openSQLiteT(t, dir, "local", "dbpath = mail.db\nquery = SELECT target FROM virtual WHERE alias = '%u@example.com'\ncache_ttl = 0\n")
	for _, tab := range []*sqlTable{bare, quoted, local} {
		for _, key := range []string{"x' OR '1'='1", "x' OR 1=1 --", "x'; DROP TABLE virtual; --", `x\' OR 1=1 --`, "1 OR 1=1", "x' OR '1'='1@example.com"} {
			before := tab.queries.Load()
			v, ok, err := tab.Lookup(key)
			if ok || err != nil {
				t.Errorf("%s: Lookup(%q) = %q, %v, %v; want not found", tab.file, key, v, ok, err)
			}
			if tab.queries.Load() == before {
				t.Errorf("%s: Lookup(%q) sent no query; the test proves nothing", tab.file, key)
			}
		}
	}
	if v, ok, err := bare.Lookup("joe@example.com"); v != "joe@example.net" || !ok || err != nil {
		t.Errorf("a bare %%s is quoted as a literal: got %q, %v, %v", v, ok, err)
	}
	if v, ok, _ := local.Lookup("o'neil@example.net"); ok {
		t.Errorf("got %q", v)
	}
}

func TestSQLiteTransport(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	mailDB(t, dir)
	tab, _ := openSQLiteT(t, dir, "transport", "dbpath = mail.db\nquery = SELECT mailhost FROM transport WHERE domain = '%s'\nresult_format = smtp:[%s]\n")
	for in, want := range map[string]string{
		"joe@example.com":      "smtp:[mx1.example.com]",
		"joe@mail.example.com": "smtp:[mx2.example.com]",
		"joe@example.net":      "smtp:[relay.example.net]",
	} {
		v, _, ok, err := LookupTransport(tab, in, AddrOptions{})
		if v != want || !ok || err != nil {
			t.Errorf("LookupTransport(%q) = %q, %v, %v; want %q", in, v, ok, err, want)
		}
	}
}

func TestSQLiteResultFormatAndLimit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	mailDB(t, dir)
	tab, _ := openSQLiteT(t, dir, "fmt", "dbpath = mail.db\nquery = SELECT target FROM virtual WHERE alias = '%s'\nresult_format = %u at %d for %U\n")
	if v, ok, err := tab.Lookup("staff@example.com"); v != "ann at example.net for staff,bob at example.net for staff" || !ok || err != nil {
		t.Errorf("got %q, %v, %v", v, ok, err)
	}
	one, _ := openSQLiteT(t, dir, "one", virtualCF+"expansion_limit = 1\n")
	if v, ok, err := one.Lookup("joe@example.com"); v != "joe@example.net" || !ok || err != nil {
		t.Errorf("one row under the limit: got %q, %v, %v", v, ok, err)
	}
	_, ok, err := one.Lookup("staff@example.com")
	var le *LookupError
	if ok || !errors.As(err, &le) || !le.Temporary() || !strings.Contains(err.Error(), "expansion_limit") {
		t.Errorf("two rows over expansion_limit = 1: got %v, %v; want a temporary failure", ok, err)
	}
}

func TestSQLiteDomainRestriction(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	mailDB(t, dir)
	tab, _ := openSQLiteT(t, dir, "restricted", virtualCF+"domain = example.com\n")
	for key, want := range map[string]string{
		"joe@example.com":      "joe@example.net",
		"anyone@example.org":   "", // a domain not listed: no query
		"@example.org":         "", // no local part: no query
		"joe":                  "",
		"joe@mail.example.com": "",
	} {
		before := tab.queries.Load()
		v, ok, err := tab.Lookup(key)
		if v != want || ok != (want != "") || err != nil {
			t.Errorf("Lookup(%q) = %q, %v, %v; want %q", key, v, ok, err, want)
		}
		if asked := tab.queries.Load() != before; asked != (want != "") {
			t.Errorf("Lookup(%q): query sent = %v", key, asked)
		}
	}
}

func TestSQLiteLegacyQuery(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	mailDB(t, dir)
	tab, _ := openSQLiteT(t, dir, "legacy", "dbpath = mail.db\ntable = virtual\nselect_field = target\nwhere_field = alias\nadditional_conditions = AND active = 1\n")
	if want := "SELECT target FROM virtual WHERE alias='%s' AND active = 1"; tab.query.text != want {
		t.Errorf("query %q, want %q", tab.query.text, want)
	}
	if v, ok, err := tab.Lookup("joe@example.com"); v != "joe@example.net" || !ok || err != nil {
		t.Errorf("got %q, %v, %v", v, ok, err)
	}
	if _, ok, _ := tab.Lookup("gone@example.com"); ok {
		t.Error("additional_conditions not applied")
	}
}

func TestSQLiteCache(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := mailDB(t, dir)
	tab, _ := openSQLiteT(t, dir, "cached", virtualCF)
	now := time.Now()
	tab.cache.now = func() time.Time { return now }
	for range 3 {
		if v, ok, err := tab.Lookup("Joe@Example.com"); v != "joe@example.net" || !ok || err != nil {
			t.Fatalf("got %q, %v, %v", v, ok, err)
		}
		if _, ok, err := tab.Lookup("unknown@example.com"); ok || err != nil {
			t.Fatalf("unknown: %v, %v", ok, err)
		}
	}
	if n := tab.queries.Load(); n != 2 {
		t.Errorf("6 lookups of 2 keys sent %d queries, want 2", n)
	}
	// A change in the database shows once the answers expire.
	db := openRW(t, path)
	if _, err := db.Exec(`UPDATE virtual SET target = 'joseph@example.net' WHERE alias = 'joe@example.com'`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if v, _, _ := tab.Lookup("joe@example.com"); v != "joe@example.net" {
		t.Errorf("before the TTL: got %q", v)
	}
	now = now.Add(defaultSQLCacheTTL)
	if v, _, _ := tab.Lookup("joe@example.com"); v != "joseph@example.net" {
		t.Errorf("after the TTL: got %q", v)
	}
	if n := tab.queries.Load(); n != 3 {
		t.Errorf("queries = %d, want 3", n)
	}

	off, _ := openSQLiteT(t, dir, "uncached", virtualCF+"cache_ttl = 0\n")
	off.Lookup("joe@example.com")
	off.Lookup("joe@example.com")
	if n := off.queries.Load(); n != 2 {
		t.Errorf("cache_ttl = 0: %d queries, want 2", n)
	}

	small, _ := openSQLiteT(t, dir, "small", virtualCF+"cache_size = 2\n")
	for _, k := range []string{"a@x", "b@x", "c@x", "d@x"} {
		small.Lookup(k)
	}
	if n := small.cache.len(); n != 2 {
		t.Errorf("cache_size = 2 holds %d keys", n)
	}
}

// TestSQLiteFailuresAreTemporary: a database that cannot be read fails
// the lookup with a *LookupError, never "not found", through every path:
// Lookup, the Lookup functions, QueryAs and the Starlark module.
func TestSQLiteFailuresAreTemporary(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tab, logs := openSQLiteT(t, dir, "missing", "dbpath = nothere.db\nquery = SELECT target FROM virtual WHERE alias = '%s'\ntimeout = 1s\n")
	if l := logs.take(); len(l) != 1 || !strings.Contains(l[0], "missing.cf: warning: database not available") {
		t.Errorf("opening a table whose database is missing logged %q, want one warning", l)
	}
	if _, err := os.Stat(filepath.Join(dir, "nothere.db")); err == nil {
		t.Error("opening the table created the database file")
	}
	checkFails := func(t *testing.T, tab Table) {
		t.Helper()
		o := AddrOptions{Delims: "+"}
		for name, f := range map[string]func() (string, string, bool, error){
			"LookupAddress":   func() (string, string, bool, error) { return LookupAddress(tab, "joe@example.com", o) },
			"LookupAccess":    func() (string, string, bool, error) { return LookupAccess(tab, "joe@example.com", o) },
			"LookupDomain":    func() (string, string, bool, error) { return LookupDomain(tab, "example.com") },
			"LookupTransport": func() (string, string, bool, error) { return LookupTransport(tab, "joe@example.com", o) },
			"LookupIP":        func() (string, string, bool, error) { return LookupIP(tab, "192.0.2.1") },
			"QueryAs":         func() (string, string, bool, error) { return QueryAs(tab, "auto", "joe@example.com", o) },
		} {
			_, _, ok, err := f()
			var le *LookupError
			if ok || !errors.As(err, &le) || !le.Temporary() || le.Table != tab.Name() {
				t.Errorf("%s: ok %v, err %v; want a temporary *LookupError", name, ok, err)
			}
		}
	}
	checkFails(t, tab)
	if v, ok := tab.Get("joe@example.com"); ok {
		t.Errorf("Get = %q", v)
	}
	if l := logs.take(); len(l) != 1 || !strings.Contains(l[0], "nothere.db") {
		t.Errorf("Get logged %q, want the failure", l)
	}

	// The file appears: lookups work without reopening the table.
	mailDB(t, dir)
	os.Rename(filepath.Join(dir, "mail.db"), filepath.Join(dir, "nothere.db"))
	if v, ok, err := tab.Lookup("joe@example.com"); v != "joe@example.net" || !ok || err != nil {
		t.Errorf("once the database is there: %q, %v, %v", v, ok, err)
	}

	// A writer holding the database locked makes lookups fail within
	// the timeout.
	dir2 := t.TempDir()
	path := mailDB(t, dir2)
	locked, _ := openSQLiteT(t, dir2, "locked", virtualCF+"timeout = 300ms\n")
	db := openRW(t, path)
	db.SetMaxOpenConns(1)
	if _, err := db.Exec("BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	checkFails(t, locked)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("failing lookups took %v", d)
	}
	db.Exec("ROLLBACK")
	if v, ok, err := locked.Lookup("joe@example.com"); v != "joe@example.net" || !ok || err != nil {
		t.Errorf("once unlocked: %q, %v, %v", v, ok, err)
	}

	// The Starlark module raises an error naming the table and the cause.
	gone, _ := openSQLiteT(t, dir, "gone", "dbpath = gone.db\nquery = SELECT target FROM virtual WHERE alias = '%s'\n")
	tv := NewTableValue(gone, AddrOptions{})
	for _, method := range []string{"get", "lookup", "access", "domain", "transport", "ip", "match"} {
		fn, _ := tv.Attr(method)
		_, err := starlark.Call(&starlark.Thread{}, fn, starlark.Tuple{starlark.String("joe@example.com")}, nil)
		if err == nil || !strings.Contains(err.Error(), "sqlite:gone.cf") || !strings.Contains(err.Error(), "gone.db") {
			t.Errorf("table.%s: err %v, want one naming the table and the file", method, err)
		}
	}
	if _, _, err := tv.Get(starlark.String("joe@example.com")); err == nil {
		t.Error("table[key] on a failing table did not fail")
	}
}

func TestSQLiteReadOnly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := mailDB(t, dir)
	tab, _ := openSQLiteT(t, dir, "writer", "dbpath = mail.db\nquery = DELETE FROM virtual WHERE alias = '%s' RETURNING target\n")
	if _, ok, err := tab.Lookup("joe@example.com"); ok || err == nil {
		t.Errorf("a query that writes: %v, %v; want an error", ok, err)
	}
	var n int
	if err := openRW(t, path).QueryRow(`SELECT count(*) FROM virtual WHERE alias = 'joe@example.com'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("the row is gone: %d, %v", n, err)
	}
}

func TestSQLiteConfigErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct{ cf, want string }{
		{"dbpath = x.db\nquery = SELECT 1\nhosts = localhost\n", `bad.cf:3: unknown sqlite parameter "hosts"`},
		{"dbpath = x.db\n\n# comment\ndbpth = y\n", `bad.cf:4: unknown sqlite parameter "dbpth"`},
		{"query = SELECT '%s'\n", "bad.cf: dbpath is required"},
		{"dbpath = x.db\nquery = SELECT '%x'\n", "bad.cf:2: query: invalid %x"},
		{"dbpath = x.db\nquery = SELECT '%s'\nresult_format = %q\n", "bad.cf:3: result_format"},
		{"dbpath = x.db\n", "bad.cf: no query: set query, or table, select_field and where_field (missing table, select_field, where_field)"},
		{"dbpath = x.db\ntable = t\nselect_field = v\n", "missing where_field"},
		{"dbpath = x.db\nquery = SELECT '%s'\nexpansion_limit = many\n", `bad.cf:3: expansion_limit = "many": not a whole number`},
		{"dbpath = x.db\nquery = SELECT '%s'\ntimeout = soon\n", `bad.cf:3: timeout = "soon"`},
		{"dbpath = x.db\nquery = SELECT '%s'\ntimeout = 0\n", `bad.cf:3: timeout must be more than 0`},
		{"dbpath = x.db\nquery = SELECT '%s'\ncache_size = 0\n", `bad.cf:3: cache_size = 0: must be at least 1`},
		{"dbpath x.db\n", `bad.cf:1: missing '=' after parameter name`},
		{"dbpath = x.db\nquery = SELECT v FROM \"%s\"\n", `bad.cf:2: query: %s inside a "quoted" identifier`},
		{"dbpath = x.db\nquery = SELECT '%s'\ndomain = hash:nothere\n", `bad.cf:3: domain: hash:nothere`},
	}
	for _, tt := range tests {
		writeTestFile(t, dir, "bad.cf", tt.cf)
		_, err := Open("sqlite:bad.cf", dir, nil)
		var pe ParseError
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: got %v, want a ParseError with %q", tt.cf, err, tt.want)
		}
		if _, err := Check("sqlite:bad.cf", dir); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Check %q: got %v", tt.cf, err)
		}
	}
	if _, err := Open("sqlite:nothere.cf", dir, nil); err == nil || !strings.Contains(err.Error(), "sqlite:nothere.cf") {
		t.Errorf("a missing file: %v", err)
	}
	if _, err := Open("sqlite:{dbpath = x}", dir, nil); err == nil {
		t.Error("sqlite:{...} opened")
	}
	// A good file checks without a database.
	writeTestFile(t, dir, "good.cf", "dbpath = nothere.db\nquery = SELECT v FROM t WHERE k = %s\ndbpath = nothere.db\n")
	warns, err := Check("sqlite:good.cf", dir)
	if err != nil || len(warns) != 2 || !strings.Contains(fmt.Sprint(warns), "good.cf:3: warning: dbpath is also set on line 1") ||
		!strings.Contains(fmt.Sprint(warns), "good.cf:2: warning: query") {
		t.Errorf("Check good.cf: %v, %v", warns, err)
	}
}

func BenchmarkSQLiteLookup(b *testing.B) {
	for _, bm := range []struct{ name, extra string }{{"cached", ""}, {"uncached", "cache_ttl = 0\n"}} {
		b.Run(bm.name, func(b *testing.B) {
			dir := b.TempDir()
			mailDB(b, dir)
			tab, _ := openSQLiteT(b, dir, "bench", virtualCF+bm.extra)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if v, _, err := tab.Lookup("joe@example.com"); v != "joe@example.net" || err != nil {
					b.Fatal(v, err)
				}
			}
		})
	}
}
