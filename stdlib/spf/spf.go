// Package spf is the Starlark `spf` module: SPF checks (RFC 7208) of the
// MAIL FROM and HELO identities, made with blitiri.com.ar/go/spf over the
// hook's DNS session (its resolver, cache, deadline and query budget).
//
//	spf.check(ip, helo, sender)  the MAIL FROM identity; the HELO one
//	                             ("postmaster@" + helo) for the null sender
//	spf.check_helo(ip, helo)     the HELO identity
//
// Both return a result whose attributes are result (pass, fail,
// softfail, neutral, none, temperror, permerror), reason, identity
// ("mailfrom" or "helo"), domain and sender, true when result is "pass",
// and record it for the Authentication-Results header (package authres).
package spf

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	"blitiri.com.ar/go/spf"
	msgauth "github.com/emersion/go-msgauth/authres"
	mdns "github.com/miekg/dns"

	"github.com/larkpost/larkpost/stdlib/authres"
	"github.com/larkpost/larkpost/stdlib/dns"
)

// Results, the lowercase words of RFC 7208 section 2.6.
const (
	Pass      = "pass"
	Fail      = "fail"
	SoftFail  = "softfail"
	Neutral   = "neutral"
	None      = "none"
	TempError = "temperror"
	PermError = "permerror"
)

// Identities checked.
const (
	MailFrom = "mailfrom"
	Helo     = "helo"
)

// Result is the outcome of one check.
type Result struct {
	Value    string // Pass, Fail, ...
	Reason   string // which mechanism matched, why it failed, or the domain's explanation of a fail
	Identity string // MailFrom or Helo
	Domain   string // the domain checked
	Sender   string // the address checked ("postmaster@" + helo for Helo)
}

// Check checks whether ip may send mail from sender (the MAIL FROM
// address) that introduced itself as helo. A sender without a domain
// (the null sender "") is checked as the HELO identity, as RFC 7208
// section 2.4 says. It records the result in the Authentication-Results
// recorder of the session's context.
func Check(s *dns.Session, ip netip.Addr, helo, sender string) Result {
	i := strings.LastIndexByte(sender, '@')
	if i < 0 || i == len(sender)-1 {
		return CheckHelo(s, ip, helo)
	}
	return check(s, ip, helo, Result{Identity: MailFrom, Sender: sender}, sender[:i], sender[i+1:])
}

// CheckHelo checks the HELO identity alone: whether ip may use the name
// helo (RFC 7208 section 2.3).
func CheckHelo(s *dns.Session, ip netip.Addr, helo string) Result {
	return check(s, ip, helo, Result{Identity: Helo, Sender: "postmaster@" + helo}, "postmaster", helo)
}

func check(s *dns.Session, ip netip.Addr, helo string, res Result, local, domain string) Result {
	ip = ip.Unmap().WithZone("")
	domain, ok := domainName(domain)
	res.Domain = domain
	switch {
	case !ip.IsValid():
		res.Value, res.Reason = PermError, "invalid ip address"
	case !ok:
		// RFC 7208 section 4.3: no lookup for what cannot be a domain
		// (an address literal, a single label, a malformed name).
		res.Value, res.Reason = None, fmt.Sprintf("%q is not a domain name", domain)
	default:
		res.Value, res.Reason = evaluate(s, ip, helo, local, domain)
	}
	res.Reason = clean(res.Reason, maxReason)

	// The SMTP server vets HELO names and addresses, but a script may
	// pass anything: nothing may break the header line.
	ar := &msgauth.SPFResult{Value: msgauth.ResultValue(res.Value), Reason: res.Reason, Helo: cleanIdentity(helo)}
	if res.Identity == MailFrom {
		ar.From = cleanIdentity(res.Sender)
	}
	ctx, cancel := s.Context()
	defer cancel()
	authres.Add(ctx, ar)
	return res
}

// evaluate runs the library's check_host() and turns its answer into
// a result and a reason.
func evaluate(s *dns.Session, ip netip.Addr, helo, local, domain string) (string, string) {
	// The library splits the sender at its first "@": a quoted local
	// part holding one would make it check the wrong domain, so such a
	// sender is checked as postmaster of its domain (section 4.3).
	if strings.Contains(local, "@") || local == "" {
		local = "postmaster"
	}
	sender := local + "@" + domain
	a := newAdapter(s, ip)
	ctx, cancel := s.Context()
	defer cancel()
	r, err := spf.CheckHostWithSender(net.IP(ip.AsSlice()), helo, sender, spf.WithContext(ctx), spf.WithResolver(a))
	value := word(r)
	if a.budget != nil && value != Pass {
		// A lookup refused for the budget reads to the library as a
		// failed one, which some mechanisms (ptr) take as no match: the
		// result is not a conclusion about the domain.
		return TempError, a.budget.Error()
	}
	reason := because(r, err, domain)
	if value == Fail {
		env := &macroEnv{sender: sender, local: local, origin: domain, helo: helo, ip: ip, now: time.Now()}
		if exp := explanation(s, a, env, domain); exp != "" {
			reason = exp
		}
	}
	return value, reason
}

// word maps the library's results to ours; anything else is a bug in it,
// reported as permerror.
func word(r spf.Result) string {
	switch r {
	case spf.Pass, spf.Fail, spf.SoftFail, spf.Neutral, spf.None, spf.TempError, spf.PermError:
		return string(r)
	}
	return PermError
}

// because explains the library's answer. Its err says which mechanism
// matched, or why the check failed; it is nil when nothing matched.
func because(r spf.Result, err error, domain string) string {
	var derr *net.DNSError
	switch {
	case err == nil:
		return "no mechanism matched"
	case errors.Is(err, spf.ErrNoResult) && r == spf.None:
		return "no SPF record for " + domain
	case errors.Is(err, spf.ErrNoResult):
		return "an include or redirect names a domain without SPF record"
	case errors.Is(err, spf.ErrMultipleRecords):
		return "more than one SPF record"
	case errors.Is(err, spf.ErrLookupLimitReached):
		return "more than 10 mechanisms or modifiers that query DNS"
	case errors.Is(err, spf.ErrVoidLookupLimitReached):
		return "more than 2 lookups found nothing"
	case errors.Is(err, spf.ErrTooManyMXRecords):
		return "more than 10 MX records"
	case errors.Is(err, spf.ErrUnknownField), errors.Is(err, spf.ErrInvalidIP),
		errors.Is(err, spf.ErrInvalidMask), errors.Is(err, spf.ErrInvalidMacro),
		errors.Is(err, spf.ErrInvalidDomain):
		return "syntax error in SPF record: " + err.Error()
	case errors.As(err, &derr):
		return derr.Err
	}
	return err.Error()
}

// explanation returns the exp= text of a fail (RFC 7208 section 6.2),
// "" when there is none. It comes from the record whose mechanism
// failed: the checked domain's, or that of the domain its redirect=
// leads to, never an included one's. As the library does not say which
// record failed, a redirect is taken to have been followed when its
// target's record was fetched: redirect= is evaluated after every
// mechanism, so the target is fetched only when none matched (unless an
// include fetched the same name).
func explanation(s *dns.Session, a *adapter, env *macroEnv, domain string) string {
	for range 11 { // the library follows at most 10 redirects
		rec := a.records[domain]
		if rec == "" {
			return ""
		}
		env.domain = domain
		var exp, redirect string
		all := false
		for _, f := range strings.Fields(rec) {
			l := strings.ToLower(f)
			switch {
			case strings.HasPrefix(l, "exp=") && exp == "":
				exp = f[len("exp="):]
			case strings.HasPrefix(l, "redirect="):
				redirect = f[len("redirect="):]
			case l == "all" || len(l) == 4 && strings.IndexByte("+-~?", l[0]) >= 0 && l[1:] == "all":
				all = true // "all" always matches: redirect= is ignored
			}
		}
		if redirect != "" && !all {
			if target, err := env.expand(redirect, false); err == nil {
				if _, fetched := a.records[normName(target)]; fetched {
					domain = normName(target)
					continue
				}
			}
		}
		if exp == "" {
			return ""
		}
		name, err := env.expand(exp, false)
		if err != nil {
			return ""
		}
		// Any failure, or not exactly one record, means no explanation.
		r := s.Lookup(truncateName(name), mdns.TypeTXT)
		if r.Status != dns.OK || len(r.Values) != 1 {
			return ""
		}
		text, err := env.expand(r.Values[0], true)
		if err != nil {
			return ""
		}
		return strings.TrimSpace(text)
	}
	return ""
}

// domainName returns domain in the form queried (lower case, no final
// dot) and whether it is a multi-label domain name of ASCII labels.
// Internationalized names would need their A-label form (RFC 8616), which
// this module does not compute: they get "none".
func domainName(domain string) (string, bool) {
	d := strings.ToLower(strings.TrimSuffix(domain, "."))
	if d == "" || len(d) > 253 || !strings.Contains(d, ".") {
		return d, false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return d, false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return d, false
			}
		}
	}
	return d, true
}

// Bounds of what goes into SMTP replies and headers: a reason, which may
// carry a domain's explanation and names from DNS, and the identities
// (an address is at most 320 octets).
const (
	maxReason   = 256
	maxIdentity = 320
)

// clean makes s safe for an SMTP reply and a header field: printable
// US-ASCII, no backslash (which would escape the closing quote of a
// quoted value), at most max bytes.
func clean(s string, max int) string {
	b := []byte(s)
	for i, c := range b {
		if c < ' ' || c > '~' || c == '\\' {
			b[i] = '?'
		}
	}
	if len(b) > max {
		b = append(b[:max-3], "..."...)
	}
	return string(b)
}

// cleanIdentity is clean for a HELO name or an address, which may be
// UTF-8 (SMTPUTF8): control characters, backslashes and invalid UTF-8
// become "?".
func cleanIdentity(s string) string {
	if len(s) > maxIdentity {
		s = s[:maxIdentity]
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\\' || r == utf8.RuneError {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
}
