// Package arc is the Starlark `arc` module: it verifies the
// Authenticated Received Chain of a message (ARC, RFC 8617), the seals
// that forwarders such as mailing lists add so that a later receiver can
// see what the message's authentication looked like before they changed
// it. Seal, in Go only, adds a set.
//
//	arc.verify(msg)   the chain's verification
//
// The result has the attributes
//
//	r.result        "none" (no ARC sets), "pass" (a valid chain) or
//	                "fail" (a broken one): the words of RFC 8617
//	r.reason        why, in words; "" for "pass"
//	r.temporary     True when a "fail" may not recur: a key could not be
//	                fetched now (SERVFAIL, timeout, the hook's DNS budget
//	                spent) or the message could not be read in time; a
//	                script may defer then. RFC 8617 has no "temperror".
//	r.instances     the highest instance number (i=) found
//	r.oldest_pass   for "pass": the lowest instance whose message
//	                signature still verifies, 0 when all of them do
//	r.sets          one struct per ARC set, by instance: instance,
//	                domain and selector (of the ARC-Seal), seal_result
//	                (its cv=), ams_domain, ams_selector, ams_result
//	                ("pass", "fail", "temperror", or "none": not checked)
//	                and authentication_results (the text of the set's
//	                ARC-Authentication-Results after "i=N;")
//	r.last_results  for "pass", the authentication_results of the last
//	                set: what the last forwarder found, vouched for by the
//	                chain; "" otherwise
//
// Verification follows RFC 8617 section 5.2: the structure first (sets
// 1 to N, N at most MaxInstances, each with exactly one of the three
// fields, cv=none for set 1 and cv=pass above), then the message
// signature of set N, then every seal from N down to 1, then, for a
// passing chain, the older message signatures down to the first that no
// longer verifies (oldest_pass). Nothing is fetched or read for a chain
// whose structure is wrong. Keys are DKIM keys (RSA of 1024 bits or
// more, or Ed25519) fetched through the hook's DNS session; the message
// is read as a stream, its body once, never copied into memory. The
// result is recorded for the message's Authentication-Results header
// (package authres) as arc=RESULT, with header.oldest-pass when above 0.
package arc
