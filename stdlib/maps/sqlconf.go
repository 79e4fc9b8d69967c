package maps

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The defaults of the parameters larkpost adds to pgsql_table(5) and
// sqlite_table(5). Postfix ignores parameters it does not know, so a
// file that sets them still works with Postfix.
const (
	defaultSQLTimeout   = 5 * time.Second  // timeout: one attempt on one host
	defaultSQLCacheTTL  = 60 * time.Second // cache_ttl
	defaultSQLCacheSize = 10000            // cache_size, in keys
	defaultSQLMaxConns  = 4                // max_connections, per host
	defaultSQLInterval  = 60 * time.Second // idle_interval, retry_interval
)

// sqlParams are the parameters each SQL table type accepts, with what
// they are for in the "unknown parameter" diagnostic.
var sqlParams = map[tableKind][]string{
	kindPgsql: {"hosts", "user", "password", "dbname", "encoding", "retry_interval", "idle_interval",
		"query", "select_function", "result_format", "domain", "expansion_limit",
		"table", "select_field", "where_field", "additional_conditions",
		"timeout", "cache_ttl", "cache_size", "max_connections"},
	kindSQLite: {"dbpath", "query", "result_format", "domain", "expansion_limit",
		"table", "select_field", "where_field", "additional_conditions",
		"timeout", "cache_ttl", "cache_size", "max_connections", "idle_interval"},
}

// sqlParam is one "name = value" line of a table's configuration file.
type sqlParam struct {
	value string
	line  int
}

// sqlConfig is a pgsql_table(5) or sqlite_table(5) file, read.
type sqlConfig struct {
	kind   tableKind
	params map[string]sqlParam

	query          string // the query template, built from the legacy parameters if need be
	queryLine      int    // where it (or what it was built from) is written
	resultFormat   string
	resultLine     int
	domain         string
	domainLine     int
	expansionLimit int

	timeout   time.Duration
	cacheTTL  time.Duration
	cacheSize int
	maxConns  int
	idle      time.Duration
	retry     time.Duration

	hosts     []string // pgsql
	hostsLine int
	user      string
	password  string
	dbname    string
	dbLine    int
	dbpath    string // sqlite
	dbpathLn  int
}

// parseSQLConfig reads the text of a configuration file the way
// Postfix's cfg_parser does: main.cf syntax, "name = value" per logical
// line, with comments and continuation lines as in table files, and no
// $name expansion. Unlike Postfix, which ignores names it does not use,
// an unknown name is an error: it is most often a typo (hostname for
// hosts) that would otherwise silently query the wrong thing.
func parseSQLConfig(kind tableKind, data string, d *diags) *sqlConfig {
	c := &sqlConfig{kind: kind, params: map[string]sqlParam{}}
	known := sqlParams[kind]
	typ := "pgsql"
	if kind == kindSQLite {
		typ = "sqlite"
	}
	if i := strings.IndexByte(data, 0); i >= 0 {
		d.errorf(1+strings.Count(data[:i], "\n"), "binary data (NUL byte): a %s table is a text file of name = value lines", typ)
		return c
	}
	readLogical(data, d, false, func(text string, line int) {
		name, value, err := splitNameValue(text)
		if err != "" {
			d.errorf(line, "%s: %q", err, clip(text))
			return
		}
		if !slices.Contains(known, name) {
			d.errorf(line, "unknown %s parameter %q (known: %s)", typ, name, strings.Join(known, ", "))
			return
		}
		if prev, dup := c.params[name]; dup {
			d.warnf(line, "%s is also set on line %d; the later setting wins", name, prev.line)
		}
		c.params[name] = sqlParam{value, line}
	})

	c.resultFormat, c.resultLine = c.str("result_format", "%s")
	if c.resultFormat == "" {
		d.errorf(c.resultLine, "result_format is empty")
	}
	c.domain, c.domainLine = c.str("domain", "")
	c.expansionLimit = c.integer(d, "expansion_limit", 0, 0)
	c.timeout = c.duration(d, "timeout", defaultSQLTimeout)
	c.cacheTTL = c.duration(d, "cache_ttl", defaultSQLCacheTTL)
	c.cacheSize = c.integer(d, "cache_size", defaultSQLCacheSize, 1)
	c.maxConns = c.integer(d, "max_connections", defaultSQLMaxConns, 1)
	c.idle = c.duration(d, "idle_interval", defaultSQLInterval)
	c.retry = c.duration(d, "retry_interval", defaultSQLInterval)
	if p, ok := c.params["timeout"]; ok && c.timeout <= 0 {
		d.errorf(p.line, "timeout must be more than 0")
	}
	if p, ok := c.params["idle_interval"]; ok && c.idle <= 0 {
		d.errorf(p.line, "idle_interval must be more than 0")
	}
	if p, ok := c.params["retry_interval"]; ok && c.retry <= 0 {
		d.errorf(p.line, "retry_interval must be more than 0")
	}

	c.query, c.queryLine = c.str("query", "")
	if _, ok := c.params["query"]; !ok {
		c.legacyQuery(d)
	}

	switch kind {
	case kindPgsql:
		var hosts string
		hosts, c.hostsLine = c.str("hosts", "")
		c.hosts = strings.FieldsFunc(hosts, func(r rune) bool { return strings.ContainsRune(", \t\r\n", r) })
		if len(c.hosts) == 0 {
			c.hosts = []string{"localhost"}
		}
		c.user, _ = c.str("user", "")
		c.password, _ = c.str("password", "")
		c.dbname, c.dbLine = c.str("dbname", "")
		if enc, line := c.str("encoding", "UTF8"); !strings.EqualFold(enc, "UTF8") && !strings.EqualFold(enc, "UTF-8") {
			d.errorf(line, "encoding %q: larkpost talks to PostgreSQL in UTF8 only", enc)
		}
	case kindSQLite:
		c.dbpath, c.dbpathLn = c.str("dbpath", "")
		if c.dbpath == "" {
			d.errorf(c.dbpathLn, "dbpath is required: the SQLite database file")
		}
	}
	return c
}

// legacyQuery builds the query from select_function (pgsql) or table,
// select_field, where_field and additional_conditions, as Postfix's
// dict_pgsql.c and db_common_sql_build_query do.
func (c *sqlConfig) legacyQuery(d *diags) {
	if f, line := c.str("select_function", ""); c.kind == kindPgsql && f != "" {
		c.query, c.queryLine = "SELECT "+f+"('%s')", line
		return
	}
	var missing []string
	get := func(name string) string {
		v, line := c.str(name, "")
		if v == "" {
			missing = append(missing, name)
		}
		c.queryLine = max(c.queryLine, line)
		return v
	}
	table, sel, where := get("table"), get("select_field"), get("where_field")
	if len(missing) > 0 {
		d.errorf(0, "no query: set query, or table, select_field and where_field (missing %s)", strings.Join(missing, ", "))
		return
	}
	cond, _ := c.str("additional_conditions", "")
	c.query = fmt.Sprintf("SELECT %s FROM %s WHERE %s='%%s' %s", sel, table, where, cond)
}

// str returns a parameter and its line (0 when it is not set).
func (c *sqlConfig) str(name, def string) (string, int) {
	if p, ok := c.params[name]; ok {
		return p.value, p.line
	}
	return def, 0
}

// integer reads a whole number of at least min, as cfg_get_int does.
func (c *sqlConfig) integer(d *diags, name string, def, min int) int {
	p, ok := c.params[name]
	if !ok {
		return def
	}
	n, err := strconv.Atoi(p.value)
	if err != nil {
		d.errorf(p.line, "%s = %q: not a whole number", name, p.value)
		return def
	}
	if n < min {
		d.errorf(p.line, "%s = %d: must be at least %d", name, n, min)
		return def
	}
	return n
}

// duration reads a time: a number of seconds, as Postfix writes its
// intervals, or a Go duration such as "500ms" or "2m".
func (c *sqlConfig) duration(d *diags, name string, def time.Duration) time.Duration {
	p, ok := c.params[name]
	if !ok {
		return def
	}
	if n, err := strconv.Atoi(p.value); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	v, err := time.ParseDuration(p.value)
	if err != nil || v < 0 {
		d.errorf(p.line, "%s = %q: want seconds or a duration such as 500ms or 2m", name, p.value)
		return def
	}
	return v
}

// splitNameValue splits "name = value" as Postfix's split_nameval: the
// name is one word, the value has its surrounding blanks removed and may
// be empty.
func splitNameValue(s string) (name, value, err string) {
	s = trimSpace(s)
	if s == "" || s[0] == '=' {
		return "", "", "missing parameter name"
	}
	i := 0
	for i < len(s) && !isSpace(s[i]) && s[i] != '=' {
		i++
	}
	name = s[:i]
	rest := trimSpace(s[i:])
	if rest == "" || rest[0] != '=' {
		return "", "", "missing '=' after parameter name"
	}
	return name, trimSpace(rest[1:]), ""
}
