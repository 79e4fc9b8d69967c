package maps

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pgBackend is the PostgreSQL side of a pgsql: table: the hosts of the
// hosts parameter, each with its own pool of connections.
type pgBackend struct {
	hosts   []*pgHost
	timeout time.Duration // one attempt on one host
	retry   time.Duration // retry_interval: how long a failed host is skipped
}

// pgHost is one element of hosts.
type pgHost struct {
	shown string // as written, with a URI's password hidden
	conn  string // what pgx parses: a URI or keyword=value pairs
	pool  idleHandle[*pgxpool.Pool]

	mu        sync.Mutex
	downUntil time.Time
}

// uriScheme is Postfix's valid_uri_scheme: a scheme followed by "://".
var uriScheme = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*://`)

// newPgBackend makes the hosts of c; problems go to d.
func newPgBackend(c *sqlConfig, d *diags) *pgBackend {
	b := &pgBackend{timeout: c.timeout, retry: c.retry}
	for _, spec := range c.hosts {
		conn, shown, err := pgConnString(spec, c.user, c.password, c.dbname)
		if err != nil {
			line := c.hostsLine
			if strings.Contains(err.Error(), "dbname") && c.dbLine > 0 {
				line = c.dbLine
			}
			d.errorf(line, "hosts: %v", err)
			continue
		}
		if _, err := pgxpool.ParseConfig(conn); err != nil {
			d.errorf(c.hostsLine, "hosts: %s: %v", shown, err)
			continue
		}
		h := &pgHost{shown: shown, conn: conn}
		h.pool = idleHandle[*pgxpool.Pool]{idle: c.idle, close: (*pgxpool.Pool).Close, open: func() (*pgxpool.Pool, error) {
			// A pool made from a parsed config cannot be reused once
			// closed, so each opening parses the string again.
			cfg, err := pgxpool.ParseConfig(conn)
			if err != nil {
				return nil, err
			}
			cfg.MinConns = 0
			cfg.MaxConns = int32(c.maxConns)
			cfg.MaxConnIdleTime = c.idle
			cfg.HealthCheckPeriod = c.idle
			cfg.ConnConfig.ConnectTimeout = c.timeout
			if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
				cfg.ConnConfig.RuntimeParams["application_name"] = "larkpost"
			}
			return pgxpool.NewWithConfig(context.Background(), cfg)
		}}
		b.hosts = append(b.hosts, h)
	}
	if len(b.hosts) == 0 {
		return nil
	}
	return b
}

// pgConnString turns an element of hosts into a pgx connection string,
// as Postfix's dict_pgsql host_init: a URI is used as it is, and user,
// password and dbname do not apply to it; "unix:/dir" or "/dir" is the
// directory of a server's socket; "inet:host:port", "host:port" and
// "host" are TCP, and "[::1]:5432" too. shown is spec with a URI's
// password hidden, for messages.
func pgConnString(spec, user, password, dbname string) (conn, shown string, err error) {
	if uriScheme.MatchString(spec) {
		u, err := url.Parse(spec)
		if err != nil {
			return "", "", fmt.Errorf("bad URI: %v", err)
		}
		if u.Scheme != "postgres" && u.Scheme != "postgresql" {
			return "", "", fmt.Errorf("%s: want a postgresql:// URI", u.Redacted())
		}
		return spec, u.Redacted(), nil
	}
	if dbname == "" {
		return "", "", fmt.Errorf("%s: dbname is required with a host that is not a URI", spec)
	}
	name := strings.TrimPrefix(strings.TrimPrefix(spec, "unix:"), "inet:")
	host, port := name, ""
	switch {
	case strings.HasPrefix(name, "/"):
	case strings.HasPrefix(name, "["):
		end := strings.IndexByte(name, ']')
		if end < 0 {
			return "", "", fmt.Errorf("%s: missing ]", spec)
		}
		host, port = name[1:end], strings.TrimPrefix(name[end+1:], ":")
	default:
		if i := strings.LastIndexByte(name, ':'); i >= 0 {
			host, port = name[:i], name[i+1:]
		}
	}
	if host == "" {
		return "", "", fmt.Errorf("%s: no host", spec)
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", "", fmt.Errorf("%s: bad port %q", spec, port)
		}
	}
	kv := []string{"host=" + pgQuote(host), "dbname=" + pgQuote(dbname)}
	if port != "" {
		kv = append(kv, "port="+port)
	}
	if user != "" {
		kv = append(kv, "user="+pgQuote(user))
	}
	if password != "" {
		kv = append(kv, "password="+pgQuote(password))
	}
	return strings.Join(kv, " "), spec, nil
}

// pgQuote quotes a value of a keyword=value connection string.
func pgQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// run tries the hosts in the order they are written, each for at most
// the timeout, until one answers. Like Postfix, a host that failed is
// skipped for retry_interval, unless it is the only one (it may be a
// load balancer, and skipping it would fail every lookup for that long).
func (b *pgBackend) run(ctx context.Context, build func(quoter) (string, error)) ([]*string, error) {
	var errs []string
	now := time.Now()
	for _, h := range b.hosts {
		if len(b.hosts) > 1 && h.isDown(now) {
			errs = append(errs, h.shown+": skipped after an error")
			continue
		}
		actx, cancel := context.WithTimeout(ctx, b.timeout)
		vals, err := h.run(actx, build)
		cancel()
		if err == nil {
			return vals, nil
		}
		if len(b.hosts) > 1 {
			h.setDown(time.Now().Add(b.retry))
		}
		errs = append(errs, h.shown+": "+oneLine(err))
	}
	return nil, fmt.Errorf("%s", strings.Join(errs, "; "))
}

// oneLine puts pgx's error on one line for the log: a failed connection
// lists each address it tried, with sslmode=prefer each twice, on lines
// of their own.
func oneLine(err error) string {
	var parts []string
	for _, p := range strings.Split(err.Error(), "\n") {
		if p = strings.TrimSpace(p); p != "" && (len(parts) == 0 || parts[len(parts)-1] != p) {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, " ")
}

func (h *pgHost) isDown(now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return now.Before(h.downUntil)
}

func (h *pgHost) setDown(until time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.downUntil = until
}

// run sends the query over a connection of h's pool. A connection that
// broke while idle (the server restarted) fails before anything was
// sent; the query is then tried once more on a new one.
func (h *pgHost) run(ctx context.Context, build func(quoter) (string, error)) ([]*string, error) {
	pool, release, err := h.pool.get()
	if err != nil {
		return nil, err
	}
	defer release()
	for try := 0; ; try++ {
		vals, err := h.once(ctx, pool, build)
		if err != nil && try == 0 && pgconn.SafeToRetry(err) && ctx.Err() == nil {
			continue
		}
		return vals, err
	}
}

func (h *pgHost) once(ctx context.Context, pool *pgxpool.Pool, build func(quoter) (string, error)) ([]*string, error) {
	c, err := pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	pc := c.Conn().PgConn()
	// The escaping is the connection's, as Postfix uses
	// PQescapeStringConn: it refuses to work unless the server reads
	// '...' the standard way, where a doubled quote is the only escape.
	sql, err := build(quoteWith(pc.EscapeString))
	if err != nil {
		return nil, err
	}
	// The simple protocol: one round trip, no prepared statement for
	// each distinct key, all values as text.
	results, err := pc.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	var out []*string
	for _, r := range results[max(len(results)-1, 0):] {
		for _, row := range r.Rows {
			for _, col := range row {
				if col == nil {
					// libpq's PQgetvalue gives "" for NULL, which
					// result_format then skips.
					continue
				}
				s := string(col)
				out = append(out, &s)
			}
		}
	}
	return out, nil
}

// probe connects to the hosts in order until one answers.
func (b *pgBackend) probe(ctx context.Context) error {
	var errs []string
	for _, h := range b.hosts {
		actx, cancel := context.WithTimeout(ctx, b.timeout)
		err := h.probe(actx)
		cancel()
		if err == nil {
			return nil
		}
		errs = append(errs, h.shown+": "+oneLine(err))
	}
	return fmt.Errorf("%s", strings.Join(errs, "; "))
}

func (h *pgHost) probe(ctx context.Context) error {
	pool, release, err := h.pool.get()
	if err != nil {
		return err
	}
	defer release()
	c, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	c.Release()
	return nil
}

func (b *pgBackend) close() {
	for _, h := range b.hosts {
		h.pool.shut()
	}
}
