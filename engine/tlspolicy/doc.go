// Package tlspolicy decides, per MX host, how much TLS outbound SMTP needs:
// the configured default (Postfix's smtp_tls_security_level: none, may,
// encrypt, dane, verify), raised by DANE (RFC 7672) or MTA-STS (RFC 8461)
// when the recipient domain publishes them.
//
// # Shape
//
// Decider.Decide(ctx, domain, mxHost) returns a Decision: plain data saying
// whether TLS is required, how the certificate is authenticated (AuthNone,
// AuthPKIX, AuthDANE), whether a failure stops delivery (Enforce) or is only
// reported, whether the host must be skipped now (Defer), and a one-line
// Why for logs and traces. The delivery agent acts on it with
// Decision.TLSConfig (the handshake enforces) or with an
// InsecureSkipVerify handshake followed by Decision.CheckPeer (one
// connection serves opportunistic TLS too), then Decision.CheckTLS turns
// a TLS failure into "go on" or "defer". Nothing here dials SMTP, so the
// package can be tested, traced and reused without a mail server.
//
// Deferral is never a bounce: a missing policy host, a bad certificate or a
// DNS failure is usually fixed within the queue lifetime, and a bounce
// would lose mail the policy only meant to protect.
//
// # Order
//
// DANE comes first, and only at level dane, as in Postfix: usable,
// DNSSEC-validated TLSA records make TLS mandatory and replace the Web PKI
// (RFC 8461 section 2 forbids MTA-STS from overriding DANE). When DANE does
// not apply, MTA-STS can only make the level stricter: enforce requires TLS
// with a certificate valid for the MX host and an MX listed in the policy;
// testing checks the same but only reports. Level none is an
// administrator's override and skips all lookups.
//
// # DANE
//
// TLSA records count only with the AD bit of a validating resolver;
// records without it are ignored and reported, as Postfix does with
// smtp_dns_support_level = dnssec, because anyone on the path could have
// forged them. The package resolver neither asks for nor returns the AD
// bit, so DNSSECResolver does the TLSA query itself with miekg/dns; its
// servers must be trusted (loopback), since AD is only as good as that
// path. A failed TLSA lookup defers: it may be an attacker hiding records.
// DANE-EE(3) matches the leaf key and ignores names and dates (RFC 7672
// section 3.1.1); DANE-TA(2) anchors the chain and checks the name; the
// PKIX usages 0 and 1 are unusable for SMTP and only reported, and records
// that are all unusable still make TLS mandatory (section 2.2).
//
// # MTA-STS
//
// MTASTS.Lookup follows RFC 8461 section 5.1: the _mta-sts TXT id decides
// whether the cached policy is current; a new id or an expired policy is
// fetched from https://mta-sts.DOMAIN/.well-known/mta-sts.txt (verified
// certificate, no redirects, text/plain, at most 64 KiB, bounded time); and
// when the lookup or the fetch fails an unexpired cached policy stays in
// force, because the cache is what defeats an attacker who blocks them. The
// Cache is an interface so the queue's store can keep policies across
// restarts; MemoryCache is the in-memory one. The HTTP client is injected
// (NewHTTPClient takes roots and a dialer) so tests need no network.
package tlspolicy
