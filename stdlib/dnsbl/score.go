package dnsbl

import (
	"net/netip"

	mdns "github.com/miekg/dns"

	"github.com/larkpost/larkpost/stdlib/dns"
)

// Hit is a site whose filter matched an answer.
type Hit struct {
	Site   string // zone or zone=filter
	Zone   string
	Codes  []string // the answers that matched the filter
	Weight int
}

// ScoreResult is what Score found.
type ScoreResult struct {
	Score    int
	Hits     []Hit
	Errors   []string // zones whose lookup failed or answered an error code
	Complete bool     // no lookup failed: Score is final
}

// Score asks every distinct zone of sites at once, one query each
// whatever the number of filters on it, and adds the weights of the
// sites with an answer that matches their filter, as postscreen computes
// a client's DNSBL score: each site counts at most once, a zone listed
// with two filters counts each that matches, and a zone whose lookup
// failed counts for nothing and is reported in Errors. No TXT is asked.
func Score(s *dns.Session, ip netip.Addr, sites []Site) ScoreResult {
	var zones, names []string
	seen := map[string]int{}
	for _, site := range sites {
		if _, ok := seen[site.Zone]; !ok {
			seen[site.Zone] = len(zones)
			zones = append(zones, site.Zone)
			names = append(names, QueryName(ip, site.Zone))
		}
	}
	answers := s.LookupAll(names, mdns.TypeA)
	results := make([]Result, len(zones))
	out := ScoreResult{Complete: true}
	for i, a := range answers {
		results[i] = classify(a, zones[i], names[i])
		if results[i].Status != OK {
			out.Errors = append(out.Errors, zones[i])
			out.Complete = false
		}
	}
	for _, site := range sites {
		r := results[seen[site.Zone]]
		if !r.Listed {
			continue
		}
		var codes []string
		for _, c := range r.Codes {
			if a, err := netip.ParseAddr(c); err == nil && (site.Filter == nil || site.Filter.Match(a)) {
				codes = append(codes, c)
			}
		}
		if len(codes) == 0 {
			continue
		}
		out.Score += site.Weight
		out.Hits = append(out.Hits, Hit{Site: site.String(), Zone: site.Zone, Codes: codes, Weight: site.Weight})
	}
	return out
}
