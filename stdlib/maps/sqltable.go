package maps

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// sqlBackend is one database driver under a sqlTable.
type sqlBackend interface {
	// run builds the query with the quoting of the connection it will
	// run on and returns the values to expand with result_format, in
	// order (nil for NULL). ctx bounds the whole call.
	run(ctx context.Context, build func(quoter) (string, error)) ([]*string, error)
	// probe checks that the database answers.
	probe(ctx context.Context) error
	// close releases the connections.
	close()
}

// sqlTable is a pgsql: or sqlite: table: a Postfix pgsql_table(5) or
// sqlite_table(5) file and the database it names.
type sqlTable struct {
	name string // the spec, e.g. "pgsql:/etc/postfix/virtual.cf"
	file string // the configuration file as written, for diagnostics

	dbc    dbCommon
	query  *sqlTemplate
	result *sqlTemplate
	domain *domainList
	limit  int // expansion_limit, 0 for none

	be      sqlBackend
	cache   *resultCache
	timeout time.Duration
	hosts   int // attempts a lookup may make, each bounded by timeout
	logf    func(string)

	queries atomic.Int64 // queries sent to the database, for tests
}

var (
	_ FallibleTable = (*sqlTable)(nil)
	_ PatternTable  = (*sqlTable)(nil)
	_ Explainer     = (*sqlTable)(nil)
)

// openSQL opens a pgsql: or sqlite: table whose configuration file is at
// path (file as written). Errors in the file fail with FILE:LINE
// diagnostics; a database that does not answer only draws a warning,
// because the server must start while it is down, and lookups then fail
// temporarily until it is back.
func openSQL(kind tableKind, name, file, path string, logf func(string)) (Table, error) {
	t, warns, err := loadSQL(kind, name, file, path, logf)
	if err != nil {
		return nil, err
	}
	if logf != nil {
		for _, w := range warns {
			logf(w.String())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), t.timeout*time.Duration(t.hosts))
	defer cancel()
	if err := t.be.probe(ctx); err != nil && logf != nil {
		logf(fmt.Sprintf("%s: warning: database not available: %v; lookups fail temporarily until it answers", file, err))
	}
	return t, nil
}

// loadSQL reads and checks the configuration file and makes the table,
// without connecting to anything.
func loadSQL(kind tableKind, name, file, path string, logf func(string)) (*sqlTable, []Diagnostic, error) {
	data, _, err := readFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	d := &diags{file: file}
	c := parseSQLConfig(kind, data, d)
	if err := d.err(); err != nil {
		return nil, d.warnings(), err
	}
	t := &sqlTable{name: name, file: file, limit: c.expansionLimit, timeout: c.timeout, hosts: 1, logf: logf,
		cache: newResultCache(c.cacheTTL, c.cacheSize)}
	if t.query, err = parseQuery(c.query, kind == kindPgsql, &t.dbc, func(f string, a ...any) { d.warnf(c.queryLine, f, a...) }); err != nil {
		d.errorf(c.queryLine, "%v", err)
	}
	if t.result, err = parseResultFormat(c.resultFormat, &t.dbc); err != nil {
		d.errorf(c.resultLine, "%v", err)
	}
	dir := filepath.Dir(path)
	if c.domain != "" {
		t.domain = parseDomainList(c.domain, c.domainLine, dir, logf, d)
	}
	switch kind {
	case kindPgsql:
		if be := newPgBackend(c, d); be != nil {
			t.be, t.hosts = be, len(be.hosts)
		}
	case kindSQLite:
		p := c.dbpath
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		t.be = newSQLiteBackend(p, c)
	}
	if err := d.err(); err != nil {
		return nil, d.warnings(), err
	}
	return t, d.warnings(), nil
}

// parseDomainList reads the domain parameter: names, /file/name
// elements (their words), and type:table elements, each optionally
// negated with "!". Relative table paths are resolved against dir, the
// configuration file's directory.
func parseDomainList(s string, line int, dir string, logf func(string), d *diags) *domainList {
	l := &domainList{}
	var add func(item string, depth int)
	add = func(item string, depth int) {
		neg := false
		for strings.HasPrefix(item, "!") {
			neg, item = !neg, item[1:]
		}
		switch typ, _ := splitSpec(item); {
		case item == "":
			d.errorf(line, "domain: empty element after \"!\"")
		case strings.HasPrefix(item, "/"):
			if depth > 0 {
				d.errorf(line, "domain: %s: a file in a file is not supported", item)
				return
			}
			data, _, err := readFile(item)
			if err != nil {
				d.errorf(line, "domain: %v", err)
				return
			}
			for _, ln := range strings.Split(data, "\n") {
				if ln = trimSpace(ln); ln == "" || ln[0] == '#' {
					continue
				}
				for _, w := range strings.FieldsFunc(ln, func(r rune) bool { return strings.ContainsRune(", \t\r", r) }) {
					add(w, depth+1)
				}
			}
		case typ != "":
			tab, err := Open(item, dir, logf)
			if err != nil {
				d.errorf(line, "domain: %v", err)
				return
			}
			l.items = append(l.items, domainItem{neg: neg, table: tab})
		default:
			l.items = append(l.items, domainItem{neg: neg, name: lowerKey(item)})
		}
	}
	for _, item := range strings.FieldsFunc(s, func(r rune) bool { return strings.ContainsRune(", \t\r\n", r) }) {
		add(item, 0)
	}
	return l
}

// Lookup looks key up as Postfix's dict_pgsql and dict_sqlite do: the key
// folded to lower case; not looked up when it is outside the domain list
// or lacks what the templates need (%d of a key without "@"); the query
// run, each value of the rows expanded with result_format, and the
// expansions joined with commas. A key that is not valid UTF-8, or holds
// a NUL, is not looked up either: it cannot be in the database.
func (t *sqlTable) Lookup(key string) (string, bool, error) {
	key = lowerKey(key)
	if !utf8.ValidString(key) || strings.IndexByte(key, 0) >= 0 {
		return "", false, nil
	}
	if ok, err := t.domain.match(key); err != nil {
		return "", false, &LookupError{Table: t.name, Key: key, Err: fmt.Errorf("domain list: %w", err)}
	} else if !ok {
		return "", false, nil
	}
	if ok, _ := t.dbc.expand(t.query, key, "", false, nil, &strings.Builder{}); !ok {
		return "", false, nil
	}
	if v, ok, hit := t.cache.get(key); hit {
		return v, ok, nil
	}
	v, ok, err := t.ask(key)
	if err != nil {
		return "", false, &LookupError{Table: t.name, Key: key, Err: err}
	}
	t.cache.put(key, v, ok)
	return v, ok, nil
}

// ask queries the database for key.
func (t *sqlTable) ask(key string) (string, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), t.timeout*time.Duration(t.hosts))
	defer cancel()
	t.queries.Add(1)
	values, err := t.be.run(ctx, func(q quoter) (string, error) {
		var b strings.Builder
		_, err := t.dbc.expand(t.query, key, "", false, q, &b)
		return b.String(), err
	})
	if err != nil {
		return "", false, err
	}
	var b strings.Builder
	n := 0
	for _, v := range values {
		if v == nil {
			continue
		}
		ok, _ := t.dbc.expand(t.result, *v, key, true, nil, &b)
		if ok {
			n++
		}
		if ok && t.limit > 0 && n > t.limit {
			return "", false, fmt.Errorf("more than expansion_limit (%d) results", t.limit)
		}
	}
	return b.String(), b.Len() > 0, nil
}

// Get is Lookup with failures logged and taken for "not found"; the
// Lookup functions and the router use Lookup.
func (t *sqlTable) Get(key string) (string, bool) {
	v, ok, err := t.Lookup(key)
	if err != nil && t.logf != nil {
		t.logf("warning: " + err.Error())
	}
	return v, ok
}

// Name returns the table's spec.
func (t *sqlTable) Name() string { return t.name }

// IsPattern is false: like Postfix, the Lookup functions try the partial
// keys (user@domain, user, @domain) one by one.
func (t *sqlTable) IsPattern() bool { return false }

// Explain is Get, with the table's name as the place: the entry is a row
// of the database.
func (t *sqlTable) Explain(key string) (string, string, bool) {
	v, ok := t.Get(key)
	return v, t.name, ok
}

// Close releases the table's database connections. Connections are also
// closed after idle_interval without lookups, so a table that is simply
// dropped (a policy replaced by a reload) does not hold any for long.
func (t *sqlTable) Close() error {
	t.be.close()
	return nil
}

// idleHandle holds something that is opened on first use and closed
// once it has not been used for idle: a connection pool, which keeps
// goroutines and sockets, and must not outlive the table that made it.
type idleHandle[T any] struct {
	open  func() (T, error)
	close func(T)
	idle  time.Duration

	mu     sync.Mutex
	v      T
	have   bool
	users  int
	last   time.Time
	timer  *time.Timer
	closed bool
}

// errClosed is the error of a lookup in a table that was closed.
var errClosed = errors.New("table closed")

// get returns the value, opening it if need be; release must be called
// when the caller is done with it.
func (h *idleHandle[T]) get() (v T, release func(), err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return v, nil, errClosed
	}
	if !h.have {
		if h.v, err = h.open(); err != nil {
			return v, nil, err
		}
		h.have = true
	}
	h.users++
	return h.v, h.release, nil
}

func (h *idleHandle[T]) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.users--
	h.last = time.Now()
	if h.timer == nil && !h.closed {
		h.timer = time.AfterFunc(h.idle, h.reap)
	}
}

// reap closes the value when it has been idle long enough, and otherwise
// looks again when it will have been.
func (h *idleHandle[T]) reap() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.timer = nil
	if !h.have || h.closed {
		return
	}
	wait := h.idle - time.Since(h.last)
	if h.users > 0 {
		wait = h.idle
	}
	if wait > 0 {
		h.timer = time.AfterFunc(wait, h.reap)
		return
	}
	h.close(h.v)
	var zero T
	h.v, h.have = zero, false
}

// shut closes the value for good.
func (h *idleHandle[T]) shut() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	if h.timer != nil {
		h.timer.Stop()
		h.timer = nil
	}
	if h.have {
		h.close(h.v)
		var zero T
		h.v, h.have = zero, false
	}
}

// checkSQL parses a SQL table's configuration file for Check, without
// connecting to the database.
func checkSQL(kind tableKind, name, file, path string) ([]Diagnostic, error) {
	t, warns, err := loadSQL(kind, name, file, path, nil)
	if t != nil {
		t.Close()
	}
	return warns, err
}
