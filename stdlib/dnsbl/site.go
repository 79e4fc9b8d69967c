package dnsbl

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Site is one entry of postscreen_dnsbl_sites: a list, an optional filter
// of the answers that count and the weight they add to the score.
type Site struct {
	Zone   string  // normalized: lowercase, no trailing dot
	Filter *Filter // nil: any listing answer counts
	Weight int
}

// String returns the site as "zone" or "zone=filter", without the
// weight: what a script sees in a hit's `site`, the same for the list
// and the dict form.
func (s Site) String() string {
	if s.Filter == nil {
		return s.Zone
	}
	return s.Zone + "=" + s.Filter.String()
}

// SiteError is a malformed site: Site is the text as given, Part the
// piece of it that is wrong.
type SiteError struct {
	Site, Part string
	Err        error
}

func (e *SiteError) Error() string {
	if e.Part == "" || e.Part == e.Site {
		return fmt.Sprintf("bad DNSBL site %q: %v", e.Site, e.Err)
	}
	return fmt.Sprintf("bad DNSBL site %q: %q: %v", e.Site, e.Part, e.Err)
}

func (e *SiteError) Unwrap() error { return e.Err }

// maxSite bounds the text of one site; a zone, a filter of four
// bracketed lists and a weight fit in far less.
const maxSite = 1024

// ParseSite parses one entry of postscreen_dnsbl_sites syntax:
// zone[=filter][*weight], as "zen.spamhaus.org*3",
// "list.dnswl.org=127.0.[0..255].[1..3]*-2" or "bl.spamcop.net". The
// weight is 1 when absent and may be negative (an allowlist).
func ParseSite(text string) (Site, error) {
	if len(text) > maxSite {
		return Site{}, &SiteError{Site: text[:64] + "...", Err: fmt.Errorf("longer than %d characters", maxSite)}
	}
	site := Site{Weight: 1}
	rest := text
	if i := strings.IndexByte(rest, '*'); i >= 0 {
		w := rest[i+1:]
		if w == "" {
			return Site{}, &SiteError{Site: text, Err: errors.New("no weight after *")}
		}
		n, err := strconv.ParseInt(w, 10, 32)
		if err != nil {
			return Site{}, &SiteError{Site: text, Part: w, Err: errors.New("the weight is not an integer")}
		}
		site.Weight, rest = int(n), rest[:i]
	}
	if i := strings.IndexByte(rest, '='); i >= 0 {
		f, err := ParseFilter(rest[i+1:])
		if err != nil {
			return Site{}, &SiteError{Site: text, Part: rest[i+1:], Err: err}
		}
		site.Filter, rest = &f, rest[:i]
	}
	zone, err := normalizeZone(rest)
	if err != nil {
		return Site{}, &SiteError{Site: text, Part: rest, Err: err}
	}
	site.Zone = zone
	return site, nil
}

// ParseSites parses a list of sites, as a config checker would: the
// error names the first bad one.
func ParseSites(texts []string) ([]Site, error) {
	sites := make([]Site, 0, len(texts))
	for _, t := range texts {
		s, err := ParseSite(t)
		if err != nil {
			return nil, err
		}
		sites = append(sites, s)
	}
	return sites, nil
}

// Filter is postscreen's filter of DNSBL answers: four octets, each a
// number, or in brackets a ";"-separated list of numbers and "a..b"
// ranges: 127.0.0.2, 127.0.[0..255].[1..3], 127.0.0.[2;4..7].
type Filter struct {
	octets [4][]octetRange
	text   string
}

type octetRange struct{ lo, hi uint8 }

// String returns the filter as written.
func (f *Filter) String() string { return f.text }

// Match reports whether an answer matches the filter.
func (f *Filter) Match(a netip.Addr) bool {
	a = a.Unmap()
	if !a.Is4() {
		return false
	}
	b := a.As4()
	for i, ranges := range f.octets {
		ok := false
		for _, r := range ranges {
			if r.lo <= b[i] && b[i] <= r.hi {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// ParseFilter parses the part of a site after "=".
func ParseFilter(text string) (Filter, error) {
	f := Filter{text: text}
	if text == "" {
		return f, errors.New("empty filter")
	}
	rest := text
	for i := range 4 {
		var octet string
		if strings.HasPrefix(rest, "[") {
			end := strings.IndexByte(rest, ']')
			if end < 0 {
				return f, fmt.Errorf("octet %d: %q has no closing ]", i+1, rest)
			}
			octet, rest = rest[:end+1], rest[end+1:]
		} else {
			end := strings.IndexByte(rest, '.')
			if end < 0 {
				end = len(rest)
			}
			octet, rest = rest[:end], rest[end:]
		}
		ranges, err := parseOctet(octet)
		if err != nil {
			return f, fmt.Errorf("octet %d: %w", i+1, err)
		}
		f.octets[i] = ranges
		if i < 3 {
			if !strings.HasPrefix(rest, ".") {
				return f, errors.New("want four octets separated by dots")
			}
			rest = rest[1:]
		}
	}
	if rest != "" {
		return f, fmt.Errorf("%q after the fourth octet", rest)
	}
	return f, nil
}

// parseOctet parses "2", "[0..255]" or "[2;4..7]".
func parseOctet(s string) ([]octetRange, error) {
	if !strings.HasPrefix(s, "[") {
		n, err := parseByte(s)
		if err != nil {
			return nil, err
		}
		return []octetRange{{n, n}}, nil
	}
	inner := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	var out []octetRange
	for item := range strings.SplitSeq(inner, ";") {
		lo, hi, isRange := strings.Cut(item, "..")
		if !isRange {
			hi = lo
		}
		a, err := parseByte(lo)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s, err)
		}
		b, err := parseByte(hi)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s, err)
		}
		if a > b {
			return nil, fmt.Errorf("%s: range %q runs backwards", s, item)
		}
		out = append(out, octetRange{a, b})
	}
	return out, nil
}

func parseByte(s string) (uint8, error) {
	if s == "" {
		return 0, errors.New("missing number")
	}
	if len(s) > 3 {
		return 0, fmt.Errorf("%q is not a number from 0 to 255", s)
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not a number from 0 to 255", s)
		}
		n = n*10 + int(s[i]-'0')
	}
	if n > 255 {
		return 0, fmt.Errorf("%q is not a number from 0 to 255", s)
	}
	return uint8(n), nil
}
