package maps

import (
	"strings"
	"testing"
	"time"
)

// skeleton is SQL text with the contents of its string literals removed,
// read by a scanner of its own: two queries with the same skeleton differ
// only inside literals.
func skeleton(sql string, pg bool) string {
	var b strings.Builder
	for i := 0; i < len(sql); i++ {
		c := sql[i]
		b.WriteByte(c)
		switch {
		case c == '\'':
			e := pg && i > 0 && (sql[i-1] == 'E' || sql[i-1] == 'e')
			for i++; i < len(sql); i++ {
				if e && sql[i] == '\\' {
					i++
					continue
				}
				if sql[i] == '\'' {
					if i+1 < len(sql) && sql[i+1] == '\'' {
						i++
						continue
					}
					b.WriteByte('\'')
					break
				}
			}
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			i = copyUntil(&b, sql, i+1, "\n")
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			b.WriteByte('*')
			i++
			for depth := 1; depth > 0 && i+1 < len(sql); {
				i++
				b.WriteByte(sql[i])
				switch {
				case strings.HasPrefix(sql[i:], "*/"):
					b.WriteByte('/')
					i++
					depth--
				case pg && strings.HasPrefix(sql[i:], "/*"):
					b.WriteByte('*')
					i++
					depth++
				}
			}
		case c == '"', !pg && c == '`':
			i = copyUntil(&b, sql, i+1, string(c))
		case !pg && c == '[':
			i = copyUntil(&b, sql, i+1, "]")
		case pg && c == '$' && (i == 0 || !isIdentChar(sql[i-1])):
			j := i + 1
			for j < len(sql) && (sql[j] == '_' || 'a' <= sql[j] && sql[j] <= 'z' || 'A' <= sql[j] && sql[j] <= 'Z' || j > i+1 && '0' <= sql[j] && sql[j] <= '9') {
				j++
			}
			if j < len(sql) && sql[j] == '$' {
				tag := sql[i : j+1]
				b.WriteString(sql[i+1 : j+1])
				i = copyUntil(&b, sql, j+1, tag)
			}
		}
	}
	return b.String()
}

// copyUntil copies sql from i through the next end (or to its end) and
// returns the index of the last byte copied.
func copyUntil(b *strings.Builder, sql string, i int, end string) int {
	n := strings.Index(sql[i:], end)
	if n < 0 {
		b.WriteString(sql[i:])
		return len(sql) - 1
	}
	b.WriteString(sql[i : i+n+len(end)])
	return i + n + len(end) - 1
}

// FuzzSQLQuery checks that a key never changes a query outside its
// string literals: whatever template parses, the query made for a
// hostile key has the skeleton of the one made for a plain key.
func FuzzSQLQuery(f *testing.F) {
	for _, q := range []string{
		"SELECT v FROM t WHERE k='%s'", "SELECT v FROM t WHERE k = %s", "SELECT v FROM t WHERE u='%u' AND d='%d'",
		"SELECT '%3.%2' -- x\n", "SELECT E'\\'' || E'%s'", "SELECT $$it's$$ || '%s'", "SELECT /* a /* b */ c */ '%s'",
		"SELECT v FROM t WHERE k LIKE '%%%s'", "SELECT [x] FROM `t` WHERE k='%U'",
	} {
		f.Add(q, "x' OR '1'='1", true)
		f.Add(q, "a\\'b@c.d --\n;", false)
	}
	f.Fuzz(func(t *testing.T, query, key string, pg bool) {
		var c dbCommon
		tmpl, err := parseQuery(query, pg, &c, nil)
		if err != nil {
			return
		}
		esc := quoteWith(quoteSQLite)
		expand := func(k string) (string, bool) {
			var b strings.Builder
			ok, err := c.expand(tmpl, k, "", false, esc, &b)
			if err != nil {
				t.Fatal(err)
			}
			return b.String(), ok
		}
		// The plain key has the shape of the hostile one (an @ where
		// it has one), so that the same expansions happen.
		plain := "u@example.com"
		if !strings.Contains(key, "@") {
			plain = "u"
		}
		evil, ok1 := expand(key)
		good, ok2 := expand(plain)
		if !ok1 || !ok2 {
			return
		}
		if s1, s2 := skeleton(evil, pg), skeleton(good, pg); s1 != s2 {
			t.Errorf("query %q, key %q:\n%s\nreads as\n%s\nwhere a plain key gives\n%s", query, key, evil, s1, s2)
		}
	})
}

func TestSQLIdleClose(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	mailDB(t, dir)
	tab, _ := openSQLiteT(t, dir, "idle", virtualCF+"idle_interval = 50ms\ncache_ttl = 0\n")
	be := tab.be.(*sqliteBackend)
	open := func() bool {
		be.db.mu.Lock()
		defer be.db.mu.Unlock()
		return be.db.have
	}
	if _, ok, err := tab.Lookup("joe@example.com"); !ok || err != nil || !open() {
		t.Fatalf("lookup: %v, %v, open %v", ok, err, open())
	}
	deadline := time.Now().Add(5 * time.Second)
	for open() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if open() {
		t.Fatal("the database is still open after idle_interval")
	}
	if v, ok, err := tab.Lookup("joe@example.com"); v != "joe@example.net" || !ok || err != nil {
		t.Errorf("after the idle close: %q, %v, %v", v, ok, err)
	}
	tab.Close()
	if _, _, err := tab.Lookup("postmaster@example.com"); err == nil || !strings.Contains(err.Error(), "table closed") {
		t.Errorf("after Close: %v", err)
	}
}
