// Package greylist is the Starlark `greylist` module: postgrey's
// greylisting, with its records in the shared state store (package
// engine/state), so that the MX nodes of one domain greylist as one.
//
//	greylist.check(ip, sender, rcpt, delay="5m", expire="35d", retry_window="2d",
//	               auto_whitelist=5, exempt=[], prefix_v4=24, prefix_v6=64)
//	    None when the attempt passes, else a deferral:
//	    450 4.7.1 "Greylisted: try again in N seconds"
//	greylist.query(...)   the same arguments, the same record, and a struct
//	    (passed, new, wait_seconds, whitelisted, exempt, first_seen, error)
//	    instead of a decision
//
// The triplet is the client's network (ip masked to prefix_v4 or
// prefix_v6 bits, as postgrey's --lookup-by-subnet), the lower-cased
// sender ("<>" for the null sender) and the lower-cased recipient. A
// first attempt is recorded and refused; a retry after delay, and no
// later than retry_window after the first attempt, passes; a triplet
// that passed passes at once until it has not been seen for expire; a
// network with auto_whitelist passes (0: off) passes everything, without
// triplet records (postgrey --auto-whitelist-clients). Networks and
// sender domains in exempt pass without any record.
//
// postgrey answers "450 4.2.0 Greylisted, see
// https://postgrey.schweikert.ch/help/DOMAIN.html"; larkpost answers
// with 4.7.1 (a delivery refused by policy, RFC 3463) and the number of
// seconds the client should wait, and points at no web page.
//
// A query is a read-modify-write, so there is no read-only status: query
// records exactly as check does and only returns the outcome as a struct
// for a script that wants to decide itself (a header with the delay, a
// score instead of a deferral).
//
// When the store fails (Redis down or slower than Options.Timeout), the
// module logs one line and either lets the attempt pass (FailOpen) or
// defers it with 451 4.3.0 "greylist: state store unavailable".
package greylist
