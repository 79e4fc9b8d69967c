package dmarc

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/emersion/go-message/textproto"
	msgauth "github.com/emersion/go-msgauth/authres"
	msgdmarc "github.com/emersion/go-msgauth/dmarc"

	"github.com/larkpost/larkpost/engine/resolver"
	"github.com/larkpost/larkpost/stdlib/authres"
	"github.com/larkpost/larkpost/stdlib/dns"
)

// Results of a check, as RFC 8601 names them.
const (
	Pass      = "pass"
	Fail      = "fail"
	None      = "none"
	TempError = "temperror"
	PermError = "permerror"
)

// Auth is the result of an SPF check or of one DKIM signature: only
// Result "pass" counts, when Domain is aligned with the From domain.
type Auth struct {
	Result string
	Domain string // the domain SPF checked (MAIL FROM's, or HELO's), or DKIM's d=
}

// Result is a DMARC check.
type Result struct {
	Result       string // Pass, Fail, None, TempError or PermError
	Reason       string
	FromDomain   string // the domain of the RFC5322.From address
	OrgDomain    string // its organizational domain
	PolicyDomain string // where the record was found, "" without one
	Record       string // the record, "" without one
	Policy       string // p=, or sp= for a subdomain: "none", "quarantine", "reject"
	Disposition  string // what to do: Policy when the message fails, after pct= sampling
	Pct          int
	SPFAligned   bool
	DKIMAligned  bool
	ADKIM, ASPF  string // "r" or "s"
}

// sampled reports whether a failing message falls in the pct percent
// that the policy applies to (RFC 7489 section 6.6.4); tests replace it.
var sampled = func(pct int) bool { return pct >= 100 || rand.IntN(100) < pct }

// Check checks the message whose header is h against the DMARC record
// of its From domain, looked up through s, given the results of SPF and
// DKIM. The result is recorded in the Authentication-Results of the
// hook's context.
func Check(s *dns.Session, h textproto.Header, spf Auth, dkim []Auth) Result {
	res := check(s, h, spf, dkim)
	ctx, cancel := s.Context()
	defer cancel()
	authres.Add(ctx, &msgauth.DMARCResult{
		Value:  msgauth.ResultValue(res.Result),
		Reason: res.Reason,
		From:   res.FromDomain,
	})
	return res
}

func check(s *dns.Session, h textproto.Header, spf Auth, dkim []Auth) Result {
	res := Result{Policy: "none", Disposition: "none", Pct: 100, ADKIM: "r", ASPF: "r"}
	from, err := fromDomain(h)
	if err != nil {
		res.Result, res.Reason = PermError, err.Error()
		return res
	}
	res.FromDomain, res.OrgDomain = from, orgDomain(from)

	// RFC 7489 section 6.6.3: the From domain's record, or else the
	// organizational domain's.
	domains := []string{from}
	if res.OrgDomain != from {
		domains = append(domains, res.OrgDomain)
	}
	var rec *msgdmarc.Record
	for _, d := range domains {
		txt, found, err := lookup(s, d)
		switch {
		case errors.Is(err, errSeveral):
			// Policy discovery ends there: DMARC does not apply.
			res.Result, res.Reason = None, fmt.Sprintf("several DMARC records at _dmarc.%s", d)
			return res
		case resolver.IsTemporary(err):
			res.Result, res.Reason = TempError, err.Error()
			return res
		case err != nil:
			res.Result, res.Reason = PermError, err.Error()
			return res
		case !found:
			continue
		}
		res.PolicyDomain, res.Record = d, txt
		rec, err = parseRecord(txt)
		if err != nil {
			res.Result = PermError
			res.Reason = fmt.Sprintf("invalid DMARC record at _dmarc.%s: %s", d, strings.TrimPrefix(err.Error(), "dmarc: "))
			return res
		}
		break
	}

	if rec != nil {
		res.ADKIM, res.ASPF = string(rec.DKIMAlignment), string(rec.SPFAlignment)
		res.Policy = string(rec.Policy)
		if res.PolicyDomain != from && rec.SubdomainPolicy != "" {
			res.Policy = string(rec.SubdomainPolicy) // from is a subdomain
		}
		if rec.Percent != nil {
			res.Pct = *rec.Percent
		}
	}
	res.SPFAligned = spf.Result == "pass" && aligned(res.ASPF, spf.Domain, from)
	for _, d := range dkim {
		if d.Result == "pass" && aligned(res.ADKIM, d.Domain, from) {
			res.DKIMAligned = true
			break
		}
	}

	switch {
	case rec == nil:
		res.Result, res.Reason = None, "no DMARC record for "+from
	case res.SPFAligned || res.DKIMAligned:
		res.Result = Pass
		switch {
		case res.SPFAligned && res.DKIMAligned:
			res.Reason = "SPF and DKIM pass, aligned with " + from
		case res.SPFAligned:
			res.Reason = "SPF pass, aligned with " + from
		default:
			res.Reason = "DKIM pass, aligned with " + from
		}
	default:
		res.Result, res.Reason = Fail, "no SPF or DKIM pass aligned with "+from
		res.Disposition = res.Policy
		if !sampled(res.Pct) {
			res.Disposition = milder(res.Policy)
			res.Reason += fmt.Sprintf(", not sampled at pct=%d", res.Pct)
		}
	}
	return res
}

// milder is the disposition one step below p, for failing mail that pct
// sampling left out (RFC 7489 section 6.6.4).
func milder(p string) string {
	switch p {
	case "reject":
		return "quarantine"
	}
	return "none"
}

// aligned reports whether an authenticated domain is aligned with the
// From domain (RFC 7489 section 3.1): the same domain in strict mode,
// the same organizational domain in relaxed mode.
func aligned(mode, domain, from string) bool {
	d, err := normalize(domain)
	if err != nil {
		return false
	}
	if mode == "s" {
		return d == from
	}
	return orgDomain(d) == orgDomain(from)
}

var errSeveral = errors.New("several DMARC records")

// lookup returns the DMARC record at _dmarc.d; found is false when there
// is none (NXDOMAIN, no TXT record starting with v=DMARC1). Several
// records give errSeveral.
func lookup(s *dns.Session, d string) (txt string, found bool, err error) {
	txts, err := s.TXT("_dmarc." + d)
	switch {
	case resolver.IsNotFound(err):
		return "", false, nil
	case err != nil:
		return "", false, err
	}
	var recs []string
	for _, t := range txts {
		if isDMARC(t) {
			recs = append(recs, t)
		}
	}
	switch len(recs) {
	case 0:
		return "", false, nil
	case 1:
		return recs[0], true, nil
	}
	return "", false, errSeveral
}

// isDMARC reports whether a TXT record is a DMARC record: its first tag
// is exactly v=DMARC1 (RFC 7489 section 6.3).
func isDMARC(txt string) bool {
	first, _, _ := strings.Cut(txt, ";")
	k, v, ok := strings.Cut(first, "=")
	return ok && strings.EqualFold(strings.TrimSpace(k), "v") && strings.TrimSpace(v) == "DMARC1"
}

// parseRecord parses a DMARC record with go-msgauth, after making the
// case of tag names and keyword values what it expects (RFC 7489's ABNF
// is case-insensitive there). A record whose p= or sp= is invalid but
// that has an rua= address is taken as p=none (section 6.6.3 step 6),
// so that its owner still gets reports of what it publishes.
func parseRecord(txt string) (*msgdmarc.Record, error) {
	var tags []string
	rua := false
	for _, kv := range strings.Split(txt, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			tags = append(tags, kv)
			continue
		}
		k, v = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
		switch k {
		case "p", "sp", "adkim", "aspf", "fo", "rf":
			v = strings.ToLower(v)
		case "rua":
			rua = strings.Contains(strings.ToLower(v), "mailto:")
		}
		tags = append(tags, k+"="+v)
	}
	rec, err := msgdmarc.Parse(strings.Join(tags, ";"))
	if err == nil || !rua {
		return rec, err
	}
	var rest []string
	for _, t := range tags {
		if !strings.HasPrefix(t, "p=") && !strings.HasPrefix(t, "sp=") {
			rest = append(rest, t)
		}
	}
	if rec, err2 := msgdmarc.Parse(strings.Join(append(rest, "p=none"), ";")); err2 == nil {
		return rec, nil
	}
	return nil, err
}
