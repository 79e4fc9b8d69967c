package dnsbl

import (
	"fmt"
	"net/netip"
	"strings"
	"unicode"

	mdns "github.com/miekg/dns"

	"github.com/larkpost/larkpost/stdlib/dns"
)

// Statuses of a Result. A lookup that could not be made or that the list
// refused is TempError, never "not listed".
const (
	OK        = "ok"        // the list answered: listed or not
	TempError = "temperror" // the lookup failed or the list answered an error code
	PermError = "permerror" // nothing could be asked: the domain is not a host name
)

// Result is one DNSBL or RHSBL query.
type Result struct {
	Zone   string
	Query  string   // the name asked
	Listed bool     // Status is OK and Codes is not empty
	Codes  []string // the listing answers, 127.0.0.0/8 minus the error codes
	TXT    string   // the list's TXT text, asked only when listed
	Status string
	Err    string
}

var (
	loopback   = netip.MustParsePrefix("127.0.0.0/8")
	errorCodes = netip.MustParsePrefix("127.255.255.0/24")
)

// spamhausErrors are the meanings Spamhaus's return code tables give its
// error codes, named in the reason so that an operator sees at once
// that the server's resolver, not the client, is the problem.
var spamhausErrors = map[string]string{
	"127.255.255.252": "typing error in the DNSBL name",
	"127.255.255.254": "query through a public or open resolver",
	"127.255.255.255": "excessive number of queries",
}

// classify turns an A lookup under zone into a Result without TXT.
func classify(r dns.Result, zone, name string) Result {
	res := Result{Zone: zone, Query: name, Status: OK}
	switch r.Status {
	case dns.NoData, dns.NXDomain:
		return res
	case dns.TempError, dns.PermError:
		res.Status, res.Err = TempError, r.Err
		return res
	}
	for _, v := range r.Values {
		a, err := netip.ParseAddr(v)
		if err != nil || !loopback.Contains(a.Unmap()) {
			continue // not a listing: a broken list or a rewriting resolver
		}
		if errorCodes.Contains(a.Unmap()) {
			res.Status, res.Codes = TempError, nil
			res.Err = fmt.Sprintf("%s answered the error code %s, not a listing", zone, v)
			if m, ok := spamhausErrors[v]; ok {
				res.Err += " (Spamhaus: " + m + ")"
			}
			return res
		}
		res.Codes = append(res.Codes, v)
	}
	res.Listed = len(res.Codes) > 0
	return res
}

// Query asks zone whether ip is listed, and for the list's TXT text when
// it is.
func Query(s *dns.Session, ip netip.Addr, zone string) Result {
	z, err := NormalizeZone(zone)
	if err != nil {
		return Result{Zone: zone, Status: PermError, Err: err.Error()}
	}
	return ask(s, QueryName(ip, z), z)
}

// QueryDomain asks the RHSBL zone whether domain is listed. A domain that
// is not a host name is PermError, with nothing asked.
func QueryDomain(s *dns.Session, domain, zone string) Result {
	z, err := NormalizeZone(zone)
	if err != nil {
		return Result{Zone: zone, Status: PermError, Err: err.Error()}
	}
	name, err := DomainName(domain, z)
	if err != nil {
		return Result{Zone: z, Status: PermError, Err: err.Error()}
	}
	return ask(s, name, z)
}

func ask(s *dns.Session, name, zone string) Result {
	res := classify(s.Lookup(name, mdns.TypeA), zone, name)
	if res.Listed {
		// The text is a courtesy (a URL to look the listing up); a
		// failure to get it changes nothing.
		if t := s.Lookup(name, mdns.TypeTXT); t.Status == dns.OK {
			res.TXT = cleanText(strings.Join(t.Values, " "))
		}
	}
	return res
}

// maxTXT bounds the TXT text a script gets; a list's text is a sentence
// and a URL.
const maxTXT = 512

// cleanText makes a list's TXT text safe to put in an SMTP reply or a
// log line: valid UTF-8, control characters as spaces, at most maxTXT
// bytes.
func cleanText(s string) string {
	s = strings.ToValidUTF8(s, "?")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxTXT {
		s = strings.ToValidUTF8(s[:maxTXT], "") // drop a rune cut in two
	}
	return strings.TrimSpace(s)
}
