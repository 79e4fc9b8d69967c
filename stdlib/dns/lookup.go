package dns

import (
	"cmp"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"

	mdns "github.com/miekg/dns"

	"github.com/larkpost/larkpost/engine/resolver"
)

// Statuses of a Result.
const (
	OK        = "ok"
	NoData    = "nodata"
	NXDomain  = "nxdomain"
	TempError = "temperror"
	PermError = "permerror"
)

// Result is one lookup as scripts see it.
type Result struct {
	Name, Type string
	Status     string
	Values     []string
	TTL        uint32
	Err        string
	cause      error
}

// Exists reports whether the name exists.
func (r Result) Exists() bool { return r.Status == OK || r.Status == NoData }

// Lookup asks for name's records of type qtype and returns them as
// values (see the package comment for their forms).
func (s *Session) Lookup(name string, qtype uint16) Result {
	if err := s.Take(); err != nil {
		return failed(Result{Name: strings.ToLower(strings.TrimSuffix(name, ".")), Type: mdns.TypeToString[qtype]}, err)
	}
	return s.lookup(name, qtype)
}

// lookup is Lookup once the budget is charged; it is safe for concurrent
// use.
func (s *Session) lookup(name string, qtype uint16) Result {
	res := Result{Name: strings.ToLower(strings.TrimSuffix(name, ".")), Type: mdns.TypeToString[qtype]}
	in, err := s.exchange(name, qtype)
	if err != nil {
		return failed(res, err)
	}
	type mx struct {
		pref uint16
		host string
	}
	var mxs []mx
	first := true
	for _, rr := range in.Answer {
		if rr.Header().Rrtype != qtype {
			continue // the CNAME chain that led to the records
		}
		if first || rr.Header().Ttl < res.TTL {
			res.TTL, first = rr.Header().Ttl, false
		}
		switch rr := rr.(type) {
		case *mdns.A:
			res.Values = append(res.Values, rr.A.String())
		case *mdns.AAAA:
			res.Values = append(res.Values, rr.AAAA.String())
		case *mdns.MX:
			mxs = append(mxs, mx{rr.Preference, strings.ToLower(strings.TrimSuffix(rr.Mx, "."))})
		case *mdns.TXT:
			res.Values = append(res.Values, strings.Join(rr.Txt, ""))
		case *mdns.PTR:
			res.Values = append(res.Values, strings.ToLower(strings.TrimSuffix(rr.Ptr, ".")))
		case *mdns.CNAME:
			res.Values = append(res.Values, strings.ToLower(strings.TrimSuffix(rr.Target, ".")))
		default:
			hdr := rr.Header().String()
			res.Values = append(res.Values, strings.TrimSpace(strings.TrimPrefix(rr.String(), hdr)))
		}
	}
	slices.SortStableFunc(mxs, func(a, b mx) int { return cmp.Compare(a.pref, b.pref) })
	for _, m := range mxs {
		if m.host == "" {
			m.host = "." // a null MX (RFC 7505): the domain takes no mail
		}
		res.Values = append(res.Values, m.host)
	}
	res.Status = OK
	if len(res.Values) == 0 {
		res.Status = NoData
	}
	return res
}

func failed(res Result, err error) Result {
	res.Err, res.cause = err.Error(), err
	switch {
	case resolver.IsNotFound(err):
		res.Status = NXDomain
	case resolver.IsTemporary(err):
		res.Status = TempError
	default:
		res.Status = PermError
	}
	return res
}

// LookupPTR is Lookup for the reverse name of ip.
func (s *Session) LookupPTR(ip netip.Addr) Result {
	arpa, err := mdns.ReverseAddr(ip.Unmap().WithZone("").String())
	if err != nil {
		return Result{Name: ip.String(), Type: "PTR", Status: PermError, Err: "invalid ip address"}
	}
	r := s.Lookup(arpa, mdns.TypePTR)
	r.Name = ip.String()
	return r
}

// FCrDNS returns the PTR names of ip whose forward lookup (A for IPv4,
// AAAA for IPv6) includes ip, as Postfix confirms a client name. Status
// is OK with names, NoData when none confirms, TempError when a lookup
// failed and none confirmed (so "unknown" is not concluded from a
// timeout).
func (s *Session) FCrDNS(ip netip.Addr) Result {
	ip = ip.Unmap().WithZone("")
	ptr := s.LookupPTR(ip)
	res := Result{Name: ip.String(), Type: "FCRDNS", Status: NoData}
	switch ptr.Status {
	case TempError, PermError:
		res.Status, res.Err, res.cause = ptr.Status, ptr.Err, ptr.cause
		return res
	case NXDomain:
		return res
	}
	qtype := mdns.TypeA
	if ip.Is6() {
		qtype = mdns.TypeAAAA
	}
	var temp Result
	for _, name := range ptr.Values {
		fwd := s.Lookup(name, qtype)
		if fwd.Status == TempError {
			temp = fwd
			continue
		}
		for _, v := range fwd.Values {
			if a, err := netip.ParseAddr(v); err == nil && a.Unmap() == ip {
				res.Values = append(res.Values, name)
				break
			}
		}
	}
	switch {
	case len(res.Values) > 0:
		res.Status, res.TTL = OK, ptr.TTL
	case temp.Status != "":
		res.Status, res.Err, res.cause = TempError, temp.Err, temp.cause
	}
	return res
}

// TXT returns the TXT records of name for libraries (SPF, DKIM, DMARC):
// NXDOMAIN and NODATA give no records and a *resolver.Error only for
// NXDOMAIN, as resolver.LookupTXT.
func (s *Session) TXT(name string) ([]string, error) {
	r := s.Lookup(name, mdns.TypeTXT)
	return r.Values, r.AsError()
}

// AsError returns the lookup's error for a failed Result; nil for OK and
// NoData.
func (r Result) AsError() error {
	switch {
	case r.Status == OK || r.Status == NoData:
		return nil
	case r.cause != nil:
		return r.cause
	}
	return &resolver.Error{Name: r.Name, Type: r.Type, Temporary: r.Status == TempError, NotFound: r.Status == NXDomain, Err: errors.New(r.Err)}
}

// LookupAll looks up several names of one type at once (DNSBL queries to
// several lists), concurrently, so that the slowest list, not the sum of
// them, sets the wait. The budget is charged for all of them first; the
// ones past it fail as TempError.
func (s *Session) LookupAll(names []string, qtype uint16) []Result {
	out := make([]Result, len(names))
	var asked []int
	for i, name := range names {
		out[i] = Result{Name: strings.ToLower(strings.TrimSuffix(name, ".")), Type: mdns.TypeToString[qtype]}
		if err := s.Take(); err != nil {
			out[i] = failed(out[i], err)
			continue
		}
		asked = append(asked, i)
	}
	var wg sync.WaitGroup
	for _, i := range asked {
		wg.Go(func() { out[i] = s.lookup(names[i], qtype) })
	}
	wg.Wait()
	return out
}
