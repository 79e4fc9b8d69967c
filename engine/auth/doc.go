// Package auth is what SMTP AUTH needs on the server side, as a library
// for the SMTP server to wire in: SASL mechanisms, password backends, a
// brute-force limiter, and an Authenticator joining them for one session.
//
// # Shape
//
// go-smtp asks a session for a sasl.Server per AUTH command and sends
// whatever error it returns as the reply. So the pieces fit like this:
//
//	session.Auth(mech) -> Authenticator.Start(ctx, mech, clientIP) -> *Attempt (a sasl.Server)
//	Attempt.Next       -> PLAIN or LOGIN mechanism -> check(user, pass)
//	check              -> Limiter.Allow -> Backend.Authenticate -> Limiter.Fail/Succeed
//
// Both mechanisms end in the same CheckFunc, so LOGIN and PLAIN cannot
// drift apart in what they accept, and the password reaches exactly one
// place: the backend. Errors and log lines are built from our own words
// and the user name, never from what the client sent as a password, and a
// backend's error text is scrubbed of the password before it is logged.
//
// After the exchange the session asks the Attempt for the account name
// (User) and whether a failure was temporary (Temporary), instead of the
// Authenticator calling back into the session.
//
// # Outcomes
//
// A wrong password and "could not check" are different answers, because
// the client should act differently: 535 5.7.8 means give up and ask the
// user, 454 4.7.0 means try again later. A Backend says "wrong" with
// Result.OK false and "could not check" with an error. Only the former
// counts against the client in the Limiter, so an outage of Dovecot or an
// unreadable file never locks users out.
//
// # Backends
//
// PasswdFile reads Dovecot's passwd-file and keeps the last good content
// when an edit breaks it, because refusing every login over one typo is
// worse than serving the previous version for a while. Unknown users are
// checked against a dummy hash with the cost most entries have, so response
// time does not reveal which accounts exist.
//
// Dovecot speaks Dovecot's auth client protocol, as Postfix's
// smtpd_sasl_type = dovecot does, so one user database serves IMAP and
// submission alike. Unlike Postfix it asks Dovecot for no penalty delay by
// default: the Limiter already slows guessing, and Dovecot's delay (up to
// 15 s) would outlast the 10 s timeout and turn a 535 into a 454.
//
// # Limiter
//
// The Limiter counts failures per IPv4 address or IPv6 /64 and blocks a
// network for a doubling back-off. It is bounded in memory: when full it
// forgets the network whose last failure is oldest.
package auth
