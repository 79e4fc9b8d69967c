package maps

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"modernc.org/sqlite"
)

// sqliteBackend is the database file of a sqlite: table, opened read-only.
type sqliteBackend struct {
	path string
	db   idleHandle[*sql.DB]
}

// newSQLiteBackend opens nothing yet: the file is opened at the first
// lookup, so a database that is missing when the server starts only
// fails lookups (temporarily) until it is there.
func newSQLiteBackend(path string, c *sqlConfig) *sqliteBackend {
	b := &sqliteBackend{path: path}
	// mode=ro as Postfix's SQLITE_OPEN_READONLY: the file is never
	// created or written; query_only refuses writes a query might try.
	// busy_timeout waits for a writer's lock up to the timeout instead
	// of failing at once.
	dsn := "file:" + sqliteURIPath(path) + fmt.Sprintf("?mode=ro&_pragma=busy_timeout(%d)&_pragma=query_only(1)", c.timeout.Milliseconds())
	b.db = idleHandle[*sql.DB]{idle: c.idle, close: func(db *sql.DB) { db.Close() }, open: func() (*sql.DB, error) {
		conn, err := sqlite.NewConnector(dsn)
		if err != nil {
			return nil, err
		}
		db := sql.OpenDB(conn)
		db.SetMaxOpenConns(c.maxConns)
		db.SetMaxIdleConns(c.maxConns)
		db.SetConnMaxIdleTime(c.idle)
		return db, nil
	}}
	return b
}

// sqliteURIPath escapes what a SQLite URI would read as its query or
// fragment.
func sqliteURIPath(p string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(p)
}

// quoteSQLite escapes text for '...' as Postfix's sqlite3_mprintf("%q").
func quoteSQLite(s string) (string, error) { return strings.ReplaceAll(s, "'", "''"), nil }

// run runs the query and returns the first column of each row, as
// Postfix's dict_sqlite does.
func (b *sqliteBackend) run(ctx context.Context, build func(quoter) (string, error)) ([]*string, error) {
	db, release, err := b.db.get()
	if err != nil {
		return nil, err
	}
	defer release()
	q, err := build(quoteWith(quoteSQLite))
	if err != nil {
		return nil, err
	}
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return nil, b.explain(err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, b.explain(err)
	}
	dest := make([]any, max(len(cols), 1))
	for i := range dest {
		dest[i] = new(any)
	}
	var first sql.NullString
	dest[0] = &first
	var out []*string
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, b.explain(err)
		}
		if first.Valid {
			// sqlite3_column_text is a C string: it ends at a NUL.
			s, _, _ := strings.Cut(first.String, "\x00")
			out = append(out, &s)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, b.explain(err)
	}
	return out, nil
}

// explain names the database file in an error, which the driver's
// messages ("unable to open database file") do not.
func (b *sqliteBackend) explain(err error) error {
	return fmt.Errorf("%s: %w", b.path, err)
}

// probe reads the database's schema, which fails for a missing file, one
// that is not a database, and one that is locked.
func (b *sqliteBackend) probe(ctx context.Context) error {
	db, release, err := b.db.get()
	if err != nil {
		return err
	}
	defer release()
	var n int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master").Scan(&n); err != nil {
		return b.explain(err)
	}
	return nil
}

func (b *sqliteBackend) close() { b.db.shut() }
