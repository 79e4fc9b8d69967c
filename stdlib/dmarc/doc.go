// Package dmarc is the Starlark `dmarc` module: the DMARC check of a
// message (RFC 7489) from the results of SPF and DKIM.
//
//	dmarc.check(msg, spf=None, dkim=None)
//
// spf is what spf.check returned (or a dict): its `result` and `domain`
// (the domain SPF checked). dkim is what dkim.verify returned (or a list
// of dicts): each `result` and `domain` (d=). Only "pass" results count,
// and only when their domain is aligned with the domain of the From
// header field: the same organizational domain (relaxed, the default)
// or the same domain (strict).
//
// The result has the attributes
//
//	r.result         "pass" (aligned SPF or DKIM pass), "fail", "none"
//	                 (no DMARC record), "temperror" (the record could
//	                 not be fetched now) or "permerror" (not one From
//	                 address, an invalid record)
//	r.reason         why, in words
//	r.from_domain    the domain of the From address
//	r.org_domain     its organizational domain (public suffix + 1)
//	r.policy_domain  where the record was found
//	r.record         the record, "" without one
//	r.policy         what the domain asks for mail that fails: "none",
//	                 "quarantine" or "reject" (sp= for a subdomain)
//	r.disposition    what to do with this message: the policy when it
//	                 fails, one step milder when pct= sampling left it
//	                 out, "none" when it passes
//	r.pct            the record's pct=
//	r.spf_aligned, r.dkim_aligned
//	r.adkim, r.aspf  the alignment modes, "r" or "s"
//
// The result is recorded for the message's Authentication-Results
// header (package authres). Reports (rua=, ruf=) are not sent.
package dmarc
