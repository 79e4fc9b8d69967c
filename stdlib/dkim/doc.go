// Package dkim is the Starlark `dkim` module: it verifies the DKIM
// signatures of a message (RFC 6376). It does not sign.
//
//	dkim.verify(msg)   a list with one result per DKIM-Signature field,
//	                   empty when the message is unsigned
//
// A result has the attributes
//
//	r.result      "pass", "fail" (the signature or the body hash does not
//	              match), "neutral" (a body length tag l=, which is not
//	              verified), "temperror" (the key could not be fetched
//	              now) or "permerror" (a malformed signature, no key, a
//	              revoked key, an unsupported algorithm): the words of
//	              RFC 8601
//	r.reason      why, in words; "" for "pass"
//	r.domain      the signing domain (d=)
//	r.selector    s=
//	r.algorithm   a=, as "rsa-sha256"
//	r.identifier  i= (the library's default "@" + d= when absent)
//	r.headers     the signed header field names (h=), lower-case
//
// The message is read as a stream from the server's copy, never copied
// into memory, and only when it carries a signature. At most
// MaxSignatures signatures are verified; more are reported as one extra
// "permerror" result. Every result is recorded for the message's
// Authentication-Results header (package authres).
package dkim
