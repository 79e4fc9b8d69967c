package spf

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"

	mdns "github.com/miekg/dns"

	"github.com/larkpost/larkpost/engine/resolver"
	"github.com/larkpost/larkpost/stdlib/dns"
)

// adapter is the SPF library's DNSResolver on top of a dns.Session, so
// that an SPF check shares the server's resolver and cache and is charged
// to the hook's query budget. The library tells "does not exist" from
// "could not ask" only by type-asserting *net.DNSError, so failures are
// turned into that type.
//
// It also keeps the SPF records it saw, for the exp= explanation, which
// the library does not evaluate.
type adapter struct {
	s *dns.Session
	// v6 is whether the address checked is IPv6: an IPv4 client needs
	// only A records (RFC 7208 sections 5.3 to 5.7), which halves the
	// queries of a check.
	v6 bool
	// records maps each name whose TXT records were fetched to its SPF
	// record ("" when it has none or several).
	records map[string]string
	// budget is the error of the first lookup refused because the hook's
	// query budget was spent: the check's result cannot be trusted then.
	budget error
}

func newAdapter(s *dns.Session, ip netip.Addr) *adapter {
	return &adapter{s: s, v6: ip.Is6(), records: map[string]string{}}
}

// lookup makes one budgeted lookup and returns its values, or the
// failure as a *net.DNSError. NODATA is no records and no error, as
// net.Resolver reports it.
func (a *adapter) lookup(name string, qtype uint16) ([]string, error) {
	r := a.s.Lookup(name, qtype)
	switch r.Status {
	case dns.OK, dns.NoData:
		return r.Values, nil
	case dns.TempError:
		if a.budget == nil {
			a.budget = budgetError(r.AsError())
		}
		return nil, &net.DNSError{Err: r.Err, Name: name, IsTemporary: true}
	}
	// NXDOMAIN, and a name that is not valid (a malformed record or
	// macro): neither can have records. RFC 7208 section 4.3 gives
	// "none" for a malformed domain, as for NXDOMAIN.
	return nil, &net.DNSError{Err: r.Err, Name: name, IsNotFound: true}
}

// budgetError returns the cause of err when it is the dns package's
// "budget spent" error, nil otherwise.
func budgetError(err error) error {
	var re *resolver.Error
	if !errors.Is(err, dns.ErrBudget) || !errors.As(err, &re) {
		return nil
	}
	return re.Err
}

func (a *adapter) LookupTXT(_ context.Context, name string) ([]string, error) {
	txts, err := a.lookup(name, mdns.TypeTXT)
	if err == nil {
		a.records[normName(name)] = spfRecord(txts)
	}
	return txts, err
}

// spfRecord returns the one SPF record among txts, as the library picks
// it, or "".
func spfRecord(txts []string) string {
	var found string
	n := 0
	for _, t := range txts {
		if l := strings.ToLower(t); l == "v=spf1" || strings.HasPrefix(l, "v=spf1 ") {
			found = t
			n++
		}
	}
	if n != 1 {
		return ""
	}
	return found
}

func (a *adapter) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	hosts, err := a.lookup(name, mdns.TypeMX)
	if err != nil {
		return nil, err
	}
	mxs := make([]*net.MX, 0, len(hosts))
	for _, h := range hosts {
		if h == "." {
			continue // a null MX (RFC 7505) names no host
		}
		mxs = append(mxs, &net.MX{Host: h})
	}
	return mxs, nil
}

func (a *adapter) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	v4, err4 := a.lookup(host, mdns.TypeA)
	if !a.v6 {
		return ipAddrs(v4), err4
	}
	// An IPv6 client needs AAAA for a, mx and ptr, and A for exists
	// (RFC 7208 section 5.7), which the library asks through this same
	// method.
	v6, err6 := a.lookup(host, mdns.TypeAAAA)
	// A failure of either type may hide the address that matches:
	// "temperror" rather than a wrong "fail".
	for _, err := range []error{err4, err6} {
		if derr, ok := err.(*net.DNSError); ok && derr.IsTemporary {
			return nil, err
		}
	}
	if err4 != nil && err6 != nil {
		return nil, err4 // both NXDOMAIN
	}
	return append(ipAddrs(v4), ipAddrs(v6)...), nil
}

func ipAddrs(values []string) []net.IPAddr {
	out := make([]net.IPAddr, 0, len(values))
	for _, v := range values {
		if ip := net.ParseIP(v); ip != nil {
			out = append(out, net.IPAddr{IP: ip})
		}
	}
	return out
}

func (a *adapter) LookupAddr(_ context.Context, addr string) ([]string, error) {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: "invalid ip address", Name: addr, IsNotFound: true}
	}
	arpa, err := mdns.ReverseAddr(ip.Unmap().String())
	if err != nil {
		return nil, &net.DNSError{Err: "invalid ip address", Name: addr, IsNotFound: true}
	}
	return a.lookup(arpa, mdns.TypePTR)
}

// normName is the form of a name in records: lower case, no final dot.
func normName(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}
