package resolver

import "errors"

// ErrNullMX is wrapped by LookupMX's error when the domain publishes a null
// MX (RFC 7505), that is, it states that it accepts no mail at all.
var ErrNullMX = errors.New("domain does not accept mail (null mx)")

// Error classifies a failed lookup. Temporary errors must be retried later
// (defer mail); permanent ones (NXDOMAIN, null MX) mean bounce.
type Error struct {
	Name      string // the name queried, lower-case, without trailing dot
	Type      string // the query type, e.g. "MX"
	Rcode     string // the rcode of the last reply, e.g. "SERVFAIL"; empty when there was none
	Temporary bool   // the lookup may succeed when retried later
	NotFound  bool   // the name does not exist (NXDOMAIN)
	Err       error  // the underlying cause, if any, e.g. a timeout or ErrNullMX
}

// Error returns a message such as "lookup example.com MX: no such domain".
func (e *Error) Error() string {
	return "lookup " + e.Name + " " + e.Type + ": " + e.detail()
}

func (e *Error) detail() string {
	if e.Err != nil {
		return e.Err.Error()
	}
	switch e.Rcode {
	case "NXDOMAIN":
		return "no such domain"
	case "SERVFAIL":
		return "server failure (SERVFAIL)"
	case "REFUSED":
		return "query refused (REFUSED)"
	case "":
		return "lookup failed"
	}
	return "error reply (" + e.Rcode + ")"
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// IsNotFound reports whether err says the name does not exist (NXDOMAIN).
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.NotFound
}

// IsTemporary reports whether err is a failure that may go away when the
// lookup is retried later: SERVFAIL, REFUSED, timeouts and transport errors.
func IsTemporary(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Temporary
}
