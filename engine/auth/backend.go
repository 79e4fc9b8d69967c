package auth

import (
	"context"
	"net/netip"
)

// Backend checks a user name and password. The two outcomes a client may
// be told apart are kept apart here too:
//
//   - Result.OK false and a nil error: the credentials are wrong (or the
//     user is unknown, which must look the same). The server answers
//     535 5.7.8 and counts a failure against the client.
//   - a non-nil error: the credentials could not be checked (file
//     unreadable, Dovecot down or answering "temp"). The server answers
//     454 4.7.0 and counts nothing, so an outage never locks users out.
//
// An error's text goes to the log, never to the client, and must not
// contain the password.
type Backend interface {
	Authenticate(ctx context.Context, user, pass string, client netip.Addr) (Result, error)
}

// Result is the answer of a Backend that could check the credentials.
type Result struct {
	// OK reports that the credentials are valid.
	OK bool
	// User is the account name the backend knows the user by, when OK.
	// It may differ from what the client typed (Dovecot lowercases by
	// default); the session uses it for AUTH= and sender checks.
	User string
	// Reason says why the credentials were refused, for the log only.
	Reason string
}
