package maps

import (
	"strings"
	"testing"
)

// expandQuery expands query for key as the sqlite client quotes it, with
// result_format as the other template of the table.
func expandQuery(t *testing.T, pg bool, query, resultFormat, key string) (string, bool) {
	t.Helper()
	var c dbCommon
	q, err := parseQuery(query, pg, &c, nil)
	if err != nil {
		t.Fatalf("parseQuery(%q): %v", query, err)
	}
	if _, err := parseResultFormat(resultFormat, &c); err != nil {
		t.Fatalf("parseResultFormat(%q): %v", resultFormat, err)
	}
	var b strings.Builder
	ok, err := c.expand(q, key, "", false, quoteWith(quoteSQLite), &b)
	if err != nil {
		t.Fatal(err)
	}
	return b.String(), ok
}

// TestQueryExpansion follows db_common_expand() in Postfix's
// src/global/db_common.c and the query parameter of pgsql_table(5) and
// sqlite_table(5). "" as want means the query is suppressed: the lookup
// finds nothing without asking the database.
func TestQueryExpansion(t *testing.T) {
	t.Parallel()
	const sel = "SELECT v FROM t WHERE k='"
	tests := []struct {
		name, query, result, key, want string
	}{
		{"%s: the whole key", sel + "%s'", "%s", "joe@example.com", sel + "joe@example.com'"},
		{"%s: a key without @", sel + "%s'", "%s", "joe", sel + "joe'"},
		{"%s: @domain", sel + "%s'", "%s", "@example.com", sel + "@example.com'"},
		{"%%: a literal percent", "SELECT v FROM t WHERE k LIKE '%%%s'", "%s", "joe", "SELECT v FROM t WHERE k LIKE '%joe'"},
		{"%u: the local part", sel + "%u'", "%s", "joe@example.com", sel + "joe'"},
		{"%u: the whole key when it has no @", sel + "%u'", "%s", "joe", sel + "joe'"},
		{"%u: an empty local part suppresses the query", sel + "%u'", "%s", "@example.com", ""},
		{"%u: the last @ splits", sel + "%u'", "%s", `"a@b"@example.com`, sel + `"a@b"'`},
		{"%d: the domain", sel + "%d'", "%s", "joe@example.com", sel + "example.com'"},
		{"%d: a key without @ suppresses the query", sel + "%d'", "%s", "joe", ""},
		{"%d: a key ending in @ suppresses the query", sel + "%d'", "%s", "joe@", ""},
		{"%d: @domain has one", sel + "%d'", "%s", "@example.com", sel + "example.com'"},
		{"%u and %d: both", "SELECT v FROM t WHERE u='%u' AND d='%d'", "%s", "joe@example.com", "SELECT v FROM t WHERE u='joe' AND d='example.com'"},
		{"%u and %d: %d suppresses a domainless key", "SELECT v FROM t WHERE u='%u' AND d='%d'", "%s", "joe", ""},
		{"%S: as %s in a query", sel + "%S'", "%s", "joe@example.com", sel + "joe@example.com'"},
		{"%U: as %u in a query", sel + "%U'", "%s", "joe@example.com", sel + "joe'"},
		{"%U: the whole key without @", sel + "%U'", "%s", "joe", sel + "joe'"},
		{"%D: as %d in a query", sel + "%D'", "%s", "joe@example.com", sel + "example.com'"},
		{"%D: suppresses a domainless key", sel + "%D'", "%s", "joe", ""},
		{"%1: the top-level label", sel + "%1'", "%s", "joe@mail.example.com", sel + "com'"},
		{"%2 %3: counted from the right", "SELECT '%3.%2'", "%s", "joe@mail.example.com", "SELECT 'mail.example'"},
		{"%4: too few labels suppresses the query", sel + "%4'", "%s", "joe@mail.example.com", ""},
		{"%2: a key without @ is suppressed", sel + "%2'", "%s", "example.com", ""},
		{"%2: empty labels do not count", sel + "%2'", "%s", "joe@example..com", sel + "example'"},
		{"%9 anywhere limits every query", sel + "%s' OR k='%9'", "%s", "joe@a.b.c", ""},
		{"result_format %D suppresses domainless keys", sel + "%s'", "%D", "joe", ""},
		{"result_format %D lets addresses through", sel + "%s'", "%D", "joe@example.com", sel + "joe@example.com'"},
		{"result_format %U suppresses @domain", sel + "%s'", "%U", "@example.com", ""},
		{"result_format %d is about results, not keys", sel + "%s'", "%d", "joe", sel + "joe'"},
		{"an empty key is never looked up", sel + "%s'", "%s", "", ""},
		{"a quote in the key is doubled", sel + "%s'", "%s", "x' OR '1'='1", sel + "x'' OR ''1''=''1'"},
		{"a quote in the local part is doubled", sel + "%u'", "%s", "o'brien@example.com", sel + "o''brien'"},
		{"a backslash is plain text in a standard string", sel + "%s'", "%s", `a\'b`, sel + `a\''b'`},
		{"a bare expansion is quoted as a literal", "SELECT v FROM t WHERE k = %s", "%s", "a'b", "SELECT v FROM t WHERE k =  'a''b' "},
		{"a bare expansion does not join a literal next to it", "SELECT 'a'%s", "%s", "b", "SELECT 'a' 'b' "},
		{"a doubled quote in the template does not end the string", "SELECT v FROM t WHERE k='it''s %s'", "%s", "x", "SELECT v FROM t WHERE k='it''s x'"},
		{"text after a comment line", "SELECT v -- the value\n FROM t WHERE k='%s'", "%s", "x", "SELECT v -- the value\n FROM t WHERE k='x'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := expandQuery(t, false, tt.query, tt.result, tt.key)
			if tt.want == "" && ok {
				t.Errorf("key %q: query %q, want it suppressed", tt.key, got)
			}
			if tt.want != "" && (!ok || got != tt.want) {
				t.Errorf("key %q: got %q (ok %v), want %q", tt.key, got, ok, tt.want)
			}
		})
	}
}

func TestQueryExpansionPostgreSQL(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, query, key, want string }{
		{"E'' strings double backslashes too", `SELECT v FROM t WHERE k=E'%s'`, `a\'b`, `SELECT v FROM t WHERE k=E'a\\''b'`},
		{"e'' in lower case", `SELECT v FROM t WHERE k=e'%s'`, `a\b`, `SELECT v FROM t WHERE k=e'a\\b'`},
		{"an identifier ending in E is no E'' string", `SELECT v FROM table WHERE k='%s'`, `a\b`, `SELECT v FROM table WHERE k='a\b'`},
		{"an escaped quote inside E''", `SELECT E'\'' || '%s'`, `x'`, `SELECT E'\'' || 'x'''`},
		{"dollar-quoted text without expansions", `SELECT $$it's$$ || '%s'`, `x`, `SELECT $$it's$$ || 'x'`},
		{"a tagged dollar quote", `SELECT $a$it's$a$ || '%s'`, `x`, `SELECT $a$it's$a$ || 'x'`},
		{"$1 is not a dollar quote", `SELECT '%s' WHERE $1 = 1`, `x`, `SELECT 'x' WHERE $1 = 1`},
		{"nested comments", `SELECT /* a /* b */ ' */ '%s'`, `x`, `SELECT /* a /* b */ ' */ 'x'`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := expandQuery(t, true, tt.query, "%s", tt.key)
			if !ok || got != tt.want {
				t.Errorf("got %q (ok %v), want %q", got, ok, tt.want)
			}
		})
	}
}

func TestQueryTemplateErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, query string
		pg          bool
		want        string
	}{
		{"an unknown expansion", "SELECT '%x'", false, "invalid %x"},
		{"a lone % at the end", "SELECT '%s' %", false, "lone %"},
		{"inside a quoted identifier", `SELECT v FROM "%s"`, false, `inside a "quoted" identifier`},
		{"inside a -- comment", "SELECT v FROM t -- %s", false, "inside a -- comment"},
		{"inside a /* comment */", "SELECT v /* %s */ FROM t", false, "inside a /* comment */"},
		{"inside a dollar quote", "SELECT $$%s$$", true, "dollar-quoted"},
		{"inside SQLite brackets", "SELECT [%s] FROM t", false, "[bracketed]"},
		{"inside SQLite backticks", "SELECT `%s` FROM t", false, "`quoted` identifier"},
		{"inside U&''", "SELECT U&'%s'", true, "U&'...'"},
		{"an unterminated string", "SELECT v FROM t WHERE k='%s", false, "not closed"},
		{"a backslash before % in E''", `SELECT E'\%s'`, true, "backslash"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseQuery(tt.query, tt.pg, &dbCommon{}, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("parseQuery(%q) = %v, want an error with %q", tt.query, err, tt.want)
			}
		})
	}
	for _, f := range []string{"%x", "a%", "%s %z"} {
		if _, err := parseResultFormat(f, &dbCommon{}); err == nil {
			t.Errorf("parseResultFormat(%q) succeeded", f)
		}
	}
}

// TestResultFormat follows the result half of db_common_expand(): what
// each value of the result rows becomes, "" meaning it is skipped.
func TestResultFormat(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, format, value, key, want string }{
		{"%s: the value", "%s", "joe@example.net", "a@example.com", "joe@example.net"},
		{"text around the value", "smtp:[%s]:25", "mx.example.net", "a@example.com", "smtp:[mx.example.net]:25"},
		{"%%: a percent", "100%% %s", "x", "k", "100% x"},
		{"%u: the value's local part", "%u", "joe@example.net", "k", "joe"},
		{"%u: the whole value without @", "%u", "joe", "k", "joe"},
		{"%u: a value with an empty local part is skipped", "%u", "@example.net", "k", ""},
		{"%d: the value's domain", "%d", "joe@example.net", "k", "example.net"},
		{"%d: a value without @ is skipped", "%d", "joe", "k", ""},
		{"%S: the key", "%S", "v", "a@example.com", "a@example.com"},
		{"%U: the key's local part", "%U/%s", "v", "a@example.com", "a/v"},
		{"%D: the key's domain", "%s@%D", "v", "a@example.com", "v@example.com"},
		{"%1: the key's top label", "%s.%1", "v", "a@mail.example.com", "v.com"},
		{"an empty value is skipped", "%s", "", "k", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c dbCommon
			r, err := parseResultFormat(tt.format, &c)
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			ok, _ := c.expand(r, tt.value, tt.key, true, nil, &b)
			if got := b.String(); ok != (tt.want != "") || got != tt.want {
				t.Errorf("got %q (ok %v), want %q", got, ok, tt.want)
			}
		})
	}
}

func TestDomainList(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeTestFile(t, dir, "domains", "# a file of domains\nfile.example, other.example\n")
	writeTestFile(t, dir, "hashed", "hash.example yes\n")
	d := &diags{file: "x.cf"}
	l := parseDomainList("Example.com !bad.example.com, "+dir+"/domains hash:hashed bad.example.com", 3, dir, nil, d)
	if err := d.err(); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]bool{
		"joe@example.com":       true,
		"joe@EXAMPLE.com":       false, // keys are folded before this check
		"joe@sub.example.com":   false, // a string list matches whole names
		"joe@bad.example.com":   false, // the first match decides: negated
		"joe@file.example":      true,
		"joe@other.example":     true,
		"joe@hash.example":      true,
		"joe@elsewhere.example": false,
		"joe":                   false, // no domain
		"@example.com":          false, // no local part
		"example.com":           false,
	} {
		if got, err := l.match(key); got != want || err != nil {
			t.Errorf("match(%q) = %v, %v; want %v", key, got, err, want)
		}
	}
}
