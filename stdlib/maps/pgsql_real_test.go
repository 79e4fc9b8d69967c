//go:build pgsql

package maps

// These tests need a PostgreSQL server: run them with
//
//	LARKPOST_PGSQL=postgresql://USER[:PASSWORD]@127.0.0.1:PORT/DBNAME go test -tags pgsql ./stdlib/maps/ -run Real
//
// The URI is used as the hosts parameter of the tables; the user must be
// allowed to create tables in DBNAME. Each test makes its own tables,
// named after a random suffix, and drops them when it ends.
// .ci/interop-sql.sh starts a throwaway server and runs them.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// realPg returns the server's URI and a connection to it, and makes the
// tables of the statements, where "T" stands for a unique prefix, which
// it returns.
func realPg(t *testing.T, stmts ...string) (uri, prefix string) {
	t.Helper()
	uri = os.Getenv("LARKPOST_PGSQL")
	if uri == "" {
		t.Fatal("LARKPOST_PGSQL is not set: want postgresql://USER@127.0.0.1:PORT/DBNAME of a server these tests may create tables in")
	}
	b := make([]byte, 4)
	rand.Read(b)
	prefix = "lp" + hex.EncodeToString(b) + "_"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		t.Fatalf("connect %s: %v", uri, err)
	}
	defer conn.Close(ctx)
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, strings.ReplaceAll(s, "T_", prefix)); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, uri)
		if err != nil {
			return
		}
		defer conn.Close(ctx)
		rows, _ := conn.Query(ctx, `SELECT tablename FROM pg_tables WHERE tablename LIKE $1`, prefix+"%")
		names, _ := pgx.CollectRows(rows, pgx.RowTo[string])
		for _, n := range names {
			conn.Exec(ctx, "DROP TABLE "+pgx.Identifier{n}.Sanitize())
		}
	})
	return uri, prefix
}

var realSchema = []string{
	`CREATE TABLE T_virtual (alias text NOT NULL, target text, active boolean NOT NULL DEFAULT true)`,
	`INSERT INTO T_virtual (alias, target) VALUES
		('postmaster@example.com', 'peter@example.net'),
		('joe@example.com', 'joe@example.net'),
		('staff@example.com', 'ann@example.net'),
		('staff@example.com', 'bob@example.net'),
		('@example.org', 'catchall@example.net'),
		('back\slash@example.com', 'bs@example.net'),
		('nobody@example.com', NULL)`,
	`CREATE TABLE T_transport (domain text PRIMARY KEY, mailhost text, port integer)`,
	`INSERT INTO T_transport VALUES ('example.com', 'mx1.example.com', 25), ('.example.com', 'mx2.example.com', 2525)`,
}

func TestRealPgsqlVirtual(t *testing.T) {
	uri, p := realPg(t, realSchema...)
	dir := t.TempDir()
	tab, logs := openPgT(t, dir, "virtual", "hosts = "+uri+"\nquery = SELECT target FROM "+p+"virtual WHERE alias = '%s' AND active\n")
	if l := logs.take(); len(l) != 0 {
		t.Errorf("opening logged %q", l)
	}
	o := AddrOptions{Delims: "+"}
	for in, want := range map[string]string{
		"postmaster@example.com": "peter@example.net",
		"Joe+tag@Example.com":    "joe@example.net",
		"staff@example.com":      "ann@example.net,bob@example.net",
		"someone@example.org":    "catchall@example.net",
		"unknown@example.com":    "",
		"nobody@example.com":     "",
		"x' OR '1'='1":           "",
		`x\' OR 1=1 --`:          "",
	} {
		v, _, ok, err := LookupAddress(tab, in, o)
		if v != want || ok != (want != "") || err != nil {
			t.Errorf("LookupAddress(%q) = %q, %v, %v; want %q", in, v, ok, err, want)
		}
	}
	// A backslash in a standard '...' string is a plain character.
	for in, want := range map[string]string{`back\slash@example.com`: "bs@example.net", `back\\slash@example.com`: ""} {
		if v, ok, err := tab.Lookup(in); v != want || ok != (want != "") || err != nil {
			t.Errorf("Lookup(%q) = %q, %v, %v; want %q", in, v, ok, err, want)
		}
	}
	n := tab.queries.Load()
	LookupAddress(tab, "postmaster@example.com", o)
	if tab.queries.Load() != n {
		t.Error("a cached answer was asked again")
	}

	// E'' strings: the backslash of the key stays a backslash.
	e, _ := openPgT(t, dir, "estring", "hosts = "+uri+"\nquery = SELECT target FROM "+p+"virtual WHERE alias = E'%s'\n")
	for in, want := range map[string]string{`back\slash@example.com`: "bs@example.net", `x\' OR 1=1 --`: "", "x' OR '1'='1": ""} {
		if v, ok, err := e.Lookup(in); v != want || ok != (want != "") || err != nil {
			t.Errorf("E'': Lookup(%q) = %q, %v, %v; want %q", in, v, ok, err, want)
		}
	}

	// result_format, domain and the legacy parameters.
	f, _ := openPgT(t, dir, "fmt", "hosts = "+uri+"\ntable = "+p+"virtual\nselect_field = target\nwhere_field = alias\nadditional_conditions = AND active\nresult_format = %u (%S)\ndomain = example.com\n")
	if v, ok, err := f.Lookup("staff@example.com"); v != "ann (staff@example.com),bob (staff@example.com)" || !ok || err != nil {
		t.Errorf("result_format: %q, %v, %v", v, ok, err)
	}
	if _, ok, _ := f.Lookup("someone@example.org"); ok || f.queries.Load() != 1 {
		t.Errorf("domain: a key outside the list was asked (%d queries)", f.queries.Load())
	}
	one, _ := openPgT(t, dir, "one", "hosts = "+uri+"\nquery = SELECT target FROM "+p+"virtual WHERE alias = '%s'\nexpansion_limit = 1\n")
	var le *LookupError
	if _, _, err := one.Lookup("staff@example.com"); !errors.As(err, &le) {
		t.Errorf("expansion_limit: %v", err)
	}
}

func TestRealPgsqlTransport(t *testing.T) {
	uri, p := realPg(t, realSchema...)
	tab, _ := openPgT(t, t.TempDir(), "transport", "hosts = "+uri+"\nquery = SELECT mailhost || ':' || port FROM "+p+"transport WHERE domain = '%s'\nresult_format = smtp:[%s]\n")
	for in, want := range map[string]string{"a@example.com": "smtp:[mx1.example.com:25]", "a@mail.example.com": "smtp:[mx2.example.com:2525]", "a@example.net": ""} {
		v, _, ok, err := LookupTransport(tab, in, AddrOptions{})
		if v != want || ok != (want != "") || err != nil {
			t.Errorf("LookupTransport(%q) = %q, %v, %v; want %q", in, v, ok, err, want)
		}
	}
}

func TestRealPgsqlFailures(t *testing.T) {
	uri, p := realPg(t, realSchema...)
	dir := t.TempDir()
	// The first host is down: the second answers.
	dead := deadPort(t)
	two, _ := openPgT(t, dir, "two", "hosts = postgresql://"+dead+"/x "+uri+"\nquery = SELECT target FROM "+p+"virtual WHERE alias = '%s'\ntimeout = 2s\n")
	if v, ok, err := two.Lookup("joe@example.com"); v != "joe@example.net" || !ok || err != nil {
		t.Errorf("failover: %q, %v, %v", v, ok, err)
	}
	// A query the server refuses is a temporary failure, not "not found".
	bad, _ := openPgT(t, dir, "bad", "hosts = "+uri+"\nquery = SELECT target FROM "+p+"nosuchtable WHERE alias = '%s'\n")
	var le *LookupError
	if _, ok, err := bad.Lookup("joe@example.com"); ok || !errors.As(err, &le) || !strings.Contains(err.Error(), "nosuchtable") {
		t.Errorf("a bad query: %v, %v", ok, err)
	}
	// A server that reads backslashes in '...' as escapes makes the
	// driver refuse to escape: the lookup fails rather than risk SQL.
	sep := "?"
	if strings.Contains(uri, "?") {
		sep = "&"
	}
	old, _ := openPgT(t, dir, "old", "hosts = "+uri+sep+"options=-c%20standard_conforming_strings%3Doff\nquery = SELECT target FROM "+p+"virtual WHERE alias = '%s'\n")
	if _, ok, err := old.Lookup(`x\' OR 1=1 --`); ok || !errors.As(err, &le) || !strings.Contains(err.Error(), "standard_conforming_strings") {
		t.Errorf("standard_conforming_strings=off: %v, %v", ok, err)
	}
}
