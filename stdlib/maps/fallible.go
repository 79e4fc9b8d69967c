package maps

import (
	"strconv"
)

// FallibleTable is implemented by tables whose lookups can fail: the SQL
// tables, which ask a database that may be down, slow or refuse the
// query. Get cannot tell such a failure from a missing key, and treating
// a database outage as "user unknown" would bounce mail, so every lookup
// in this package and in the router goes through Lookup when a table
// has it.
type FallibleTable interface {
	Table
	// Lookup is Get that reports a failure as err, a *LookupError; ok is
	// then false.
	Lookup(key string) (value string, ok bool, err error)
}

// LookupError is a lookup that could not be answered. It is always
// temporary: the same lookup may work later, so mail waits (451 4.3.0
// before the queue, a deferral after it), as Postfix does with its
// DICT_ERR_RETRY.
type LookupError struct {
	Table string // the table's name, e.g. "pgsql:/etc/postfix/virtual.cf"
	Key   string
	Err   error
}

// Error names the table, the key and the cause.
func (e *LookupError) Error() string {
	return e.Table + ": lookup " + strconv.Quote(e.Key) + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *LookupError) Unwrap() error { return e.Err }

// Temporary is true: a lookup failure never means "not found".
func (e *LookupError) Temporary() bool { return true }

// Lookup looks key up in t with FallibleTable.Lookup when t has it, and
// with Get otherwise. It is what the Lookup functions use for each key
// they try.
func Lookup(t Table, key string) (value string, ok bool, err error) {
	if f, isF := t.(FallibleTable); isF {
		return f.Lookup(key)
	}
	value, ok = t.Get(key)
	return value, ok, nil
}
