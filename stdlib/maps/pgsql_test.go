package maps

import (
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// openPgT writes cf as dir/NAME.cf and opens it as pgsql:NAME.cf.
func openPgT(t testing.TB, dir, name, cf string) (*sqlTable, *logRec) {
	t.Helper()
	writeTestFile(t, dir, name+".cf", cf)
	l := &logRec{}
	tab, err := Open("pgsql:"+name+".cf", dir, l.logf)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	st := tab.(*sqlTable)
	t.Cleanup(func() { st.Close() })
	return st, l
}

func TestPgConnString(t *testing.T) {
	t.Parallel()
	tests := []struct{ spec, conn, shown, err string }{
		{"localhost", "host='localhost' dbname='mail' user='postfix' password='s3cr\\'t'", "localhost", ""},
		{"db.example.com:5433", "host='db.example.com' dbname='mail' port=5433 user='postfix' password='s3cr\\'t'", "db.example.com:5433", ""},
		{"inet:db.example.com:5433", "host='db.example.com' dbname='mail' port=5433 user='postfix' password='s3cr\\'t'", "inet:db.example.com:5433", ""},
		{"unix:/run/postgresql", "host='/run/postgresql' dbname='mail' user='postfix' password='s3cr\\'t'", "unix:/run/postgresql", ""},
		{"/run/postgresql", "host='/run/postgresql' dbname='mail' user='postfix' password='s3cr\\'t'", "/run/postgresql", ""},
		{"[::1]:5432", "host='::1' dbname='mail' port=5432 user='postfix' password='s3cr\\'t'", "[::1]:5432", ""},
		{"postgresql://u:pw@db.example.com/mail?sslmode=require", "postgresql://u:pw@db.example.com/mail?sslmode=require", "postgresql://u:xxxxx@db.example.com/mail?sslmode=require", ""},
		{"mysql://db.example.com/mail", "", "", "want a postgresql:// URI"},
		{"db.example.com:http", "", "", "bad port"},
		{"db.example.com:70000", "", "", "bad port"},
		{":5432", "", "", "no host"},
		{"[::1", "", "", "missing ]"},
	}
	for _, tt := range tests {
		conn, shown, err := pgConnString(tt.spec, "postfix", "s3cr't", "mail")
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: err %v, want %q", tt.spec, err, tt.err)
			}
			continue
		}
		if err != nil || conn != tt.conn || shown != tt.shown {
			t.Errorf("%q: got %q, %q, %v; want %q, %q", tt.spec, conn, shown, err, tt.conn, tt.shown)
		}
	}
	if _, _, err := pgConnString("localhost", "", "", ""); err == nil || !strings.Contains(err.Error(), "dbname is required") {
		t.Errorf("no dbname: %v", err)
	}
	if _, _, err := pgConnString("postgres://localhost/mail", "", "", ""); err != nil {
		t.Errorf("a URI needs no dbname: %v", err)
	}
}

func TestPgConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := &diags{file: "x.cf"}
	c := parseSQLConfig(kindPgsql, `# pgsql_table(5) example
hosts = inet:db1.example.com:5433,
    unix:/run/postgresql db3.example.com
user = postfix
password = secret
dbname = mail
query = SELECT goto FROM alias WHERE address = '%s' AND active = '1'
result_format = %s
domain = example.com, example.net
expansion_limit = 10
encoding = UTF8
retry_interval = 30
idle_interval = 2m
timeout = 750ms
cache_ttl = 10
cache_size = 50
max_connections = 8
`, d)
	if err := d.err(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.hosts, "|"); got != "inet:db1.example.com:5433|unix:/run/postgresql|db3.example.com" {
		t.Errorf("hosts %q", got)
	}
	if c.retry != 30*time.Second || c.idle != 2*time.Minute || c.timeout != 750*time.Millisecond || c.cacheTTL != 10*time.Second ||
		c.cacheSize != 50 || c.maxConns != 8 || c.expansionLimit != 10 || c.user != "postfix" || c.dbname != "mail" {
		t.Errorf("config %+v", c)
	}
	b := newPgBackend(c, d)
	if err := d.err(); err != nil || len(b.hosts) != 3 {
		t.Fatalf("backend: %v", err)
	}

	// Defaults: localhost, and the select_function and legacy queries.
	d = &diags{file: "y.cf"}
	c = parseSQLConfig(kindPgsql, "dbname = mail\nselect_function = lookup_alias\n", d)
	if d.err() != nil || c.hosts[0] != "localhost" || c.query != "SELECT lookup_alias('%s')" || c.timeout != defaultSQLTimeout || c.cacheTTL != defaultSQLCacheTTL {
		t.Errorf("defaults: %+v, %v", c, d.err())
	}
	c = parseSQLConfig(kindPgsql, "dbname = mail\ntable = alias\nselect_field = goto\nwhere_field = address\n", d)
	if c.query != "SELECT goto FROM alias WHERE address='%s' " {
		t.Errorf("legacy query %q", c.query)
	}
	c = parseSQLConfig(kindPgsql, "dbname = mail\nquery = SELECT 1\nselect_function = f\ntable = t\n", d)
	if c.query != "SELECT 1" {
		t.Errorf("query has precedence: %q", c.query)
	}

	for cf, want := range map[string]string{
		"hostname = db\n":                                    `bad.cf:1: unknown pgsql parameter "hostname"`,
		"dbpath = x\n":                                       `bad.cf:1: unknown pgsql parameter "dbpath"`,
		"hosts = db\nquery = SELECT 1\n":                     "bad.cf:1: hosts: db: dbname is required",
		"hosts = db:x\ndbname = m\nquery = SELECT 1\n":       `bad.cf:1: hosts: db:x: bad port "x"`,
		"dbname = m\nencoding = LATIN1\nquery = SELECT 1\n":  `bad.cf:2: encoding "LATIN1"`,
		"dbname = m\nretry_interval = 0\nquery = SELECT 1\n": "bad.cf:2: retry_interval must be more than 0",
		"dbname = m\nquery = SELECT $$%s$$\n":                "bad.cf:2: query: %s inside a $$dollar-quoted$$ string",
	} {
		writeTestFile(t, dir, "bad.cf", cf)
		_, err := Open("pgsql:bad.cf", dir, nil)
		var pe ParseError
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", cf, err, want)
		}
	}
}

// deadPort returns a 127.0.0.1 port nothing listens on.
func deadPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// blackHole is a server that accepts connections and never answers.
func blackHole(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

func checkTemporary(t *testing.T, tab Table, within time.Duration) error {
	t.Helper()
	start := time.Now()
	_, _, ok, err := LookupAddress(tab, "joe@example.com", AddrOptions{})
	d := time.Since(start)
	var le *LookupError
	if ok || !errors.As(err, &le) || !le.Temporary() {
		t.Errorf("ok %v, err %v; want a temporary *LookupError", ok, err)
	}
	if d > within {
		t.Errorf("the failure took %v, more than %v", d, within)
	}
	return err
}

func TestPgRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dead := deadPort(t)
	tab, logs := openPgT(t, dir, "refused", "hosts = "+dead+"\ndbname = mail\nuser = postfix\npassword = pw\ntimeout = 2s\nquery = SELECT goto FROM alias WHERE address = '%s'\n")
	if l := logs.take(); len(l) != 1 || !strings.Contains(l[0], "refused.cf: warning: database not available: "+dead) {
		t.Errorf("opening logged %q", l)
	}
	err := checkTemporary(t, tab, 2*time.Second)
	if err != nil && (!strings.Contains(err.Error(), "pgsql:refused.cf") || strings.Contains(err.Error(), "pw")) {
		t.Errorf("error %q: want the table named, and no password", err)
	}
	// One host is never skipped: it may be a load balancer.
	err = checkTemporary(t, tab, 2*time.Second)
	if err != nil && strings.Contains(err.Error(), "skipped") {
		t.Errorf("the only host was skipped: %v", err)
	}
	if n := tab.queries.Load(); n != 2 {
		t.Errorf("failures were cached: %d queries for 2 lookups", n)
	}
}

func TestPgTimeout(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	hole := blackHole(t)
	start := time.Now()
	tab, logs := openPgT(t, dir, "slow", "hosts = "+hole+"\ndbname = mail\ntimeout = 300ms\nquery = SELECT goto FROM alias WHERE address = '%s'\n")
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("opening took %v", d)
	}
	if l := logs.take(); len(l) != 1 || !strings.Contains(l[0], "warning: database not available") {
		t.Errorf("opening logged %q", l)
	}
	checkTemporary(t, tab, 2*time.Second)
}

// TestPgFailover: hosts are tried in order within one lookup, and a host
// that failed is then skipped for retry_interval.
func TestPgFailover(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, b := deadPort(t), blackHole(t)
	tab, _ := openPgT(t, dir, "two", "hosts = "+a+" "+b+"\ndbname = mail\ntimeout = 300ms\nretry_interval = 60\nquery = SELECT goto FROM alias WHERE address = '%s'\n")
	err := checkTemporary(t, tab, 3*time.Second)
	if err == nil || !strings.Contains(err.Error(), a+": ") || !strings.Contains(err.Error(), b+": ") || strings.Index(err.Error(), a) > strings.Index(err.Error(), b) {
		t.Errorf("first lookup: %v; want both hosts, in order", err)
	}
	err = checkTemporary(t, tab, 100*time.Millisecond)
	if err == nil || strings.Count(err.Error(), "skipped after an error") != 2 {
		t.Errorf("second lookup: %v; want both hosts skipped", err)
	}
}
