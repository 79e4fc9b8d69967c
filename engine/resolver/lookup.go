package resolver

import (
	"cmp"
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"

	mdns "github.com/miekg/dns"
)

// MX is one mail exchanger of a domain.
type MX struct {
	Host string // lower-case, without trailing dot
	Pref uint16
}

// LookupMX returns MX hosts in delivery order: by preference, with equal
// preferences in random order to spread the load. NODATA gives (nil, nil) so
// the caller can use the implicit MX; a null MX gives ErrNullMX (wrapped in
// *Error with Temporary false).
func (r *Resolver) LookupMX(ctx context.Context, domain string) ([]MX, error) {
	in, err := r.query(ctx, domain, mdns.TypeMX)
	if err != nil {
		return nil, err
	}
	var mxs []MX
	null := false
	// Only MX records count: a recursive resolver puts the CNAME chain
	// that led to them in the same section.
	for _, rr := range in.Answer {
		mx, ok := rr.(*mdns.MX)
		if !ok {
			continue
		}
		host := displayName(mx.Mx)
		if host == "" {
			null = true
			continue
		}
		mxs = append(mxs, MX{Host: host, Pref: mx.Preference})
	}
	if len(mxs) == 0 {
		if null {
			// RFC 7505 defines the null MX as a lone "0 ." record. Any
			// set made only of "." hosts is treated alike: there is
			// nowhere to deliver, and falling back to the implicit MX,
			// as for NODATA, would contradict the domain's records.
			return nil, &Error{Name: displayName(domain), Type: "MX", Rcode: "NOERROR", Err: ErrNullMX}
		}
		return nil, nil
	}
	// Shuffling first and then sorting stably leaves equal preferences in
	// random order.
	rand.Shuffle(len(mxs), func(i, j int) { mxs[i], mxs[j] = mxs[j], mxs[i] })
	slices.SortStableFunc(mxs, func(a, b MX) int { return cmp.Compare(a.Pref, b.Pref) })
	return mxs, nil
}

// LookupIP returns the A and AAAA answers for host, IPv4 first. It queries
// both types concurrently. NODATA for both gives (nil, nil). When one type
// answered and the other failed, it returns what answered: the caller can
// deliver to those addresses, so the failure need not delay the mail.
func (r *Resolver) LookupIP(ctx context.Context, host string) ([]netip.Addr, error) {
	var (
		wg   sync.WaitGroup
		v6   []netip.Addr
		err6 error
	)
	wg.Go(func() { v6, err6 = r.lookupAddrs(ctx, host, mdns.TypeAAAA) })
	v4, err4 := r.lookupAddrs(ctx, host, mdns.TypeA)
	wg.Wait()

	if addrs := append(v4, v6...); len(addrs) > 0 {
		return addrs, nil
	}
	switch {
	case err4 == nil && err6 == nil:
		return nil, nil
	// A temporary failure outranks NXDOMAIN: the failed query might have
	// found the addresses, and deferring is the cautious choice.
	case IsTemporary(err4):
		return nil, err4
	case IsTemporary(err6):
		return nil, err6
	// One type got NODATA, so the name exists whatever the other said.
	case err4 == nil || err6 == nil:
		return nil, nil
	}
	return nil, err4
}

func (r *Resolver) lookupAddrs(ctx context.Context, host string, qtype uint16) ([]netip.Addr, error) {
	in, err := r.query(ctx, host, qtype)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	for _, rr := range in.Answer {
		var ip netip.Addr
		var ok bool
		switch rr := rr.(type) {
		case *mdns.A:
			ip, ok = netip.AddrFromSlice(rr.A.To4())
		case *mdns.AAAA:
			ip, ok = netip.AddrFromSlice(rr.AAAA.To16())
		}
		if ok {
			addrs = append(addrs, ip)
		}
	}
	return addrs, nil
}

// LookupTXT returns the TXT records of name, the strings of each record
// joined with "" as SPF and DKIM require. NODATA gives (nil, nil).
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	in, err := r.query(ctx, name, mdns.TypeTXT)
	if err != nil {
		return nil, err
	}
	var txts []string
	for _, rr := range in.Answer {
		if txt, ok := rr.(*mdns.TXT); ok {
			txts = append(txts, strings.Join(txt.Txt, ""))
		}
	}
	return txts, nil
}

var errInvalidAddr = errors.New("invalid ip address")

// LookupPTR returns the PTR names for ip (trailing dot stripped,
// lower-cased). An IPv4-mapped IPv6 address is looked up as the IPv4 address
// it carries. NODATA gives (nil, nil).
func (r *Resolver) LookupPTR(ctx context.Context, ip netip.Addr) ([]string, error) {
	if !ip.IsValid() {
		return nil, &Error{Name: ip.String(), Type: "PTR", Err: errInvalidAddr}
	}
	arpa, err := mdns.ReverseAddr(unmap(ip).String())
	if err != nil {
		return nil, &Error{Name: ip.String(), Type: "PTR", Err: errInvalidAddr}
	}
	in, err := r.query(ctx, arpa, mdns.TypePTR)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, rr := range in.Answer {
		if ptr, ok := rr.(*mdns.PTR); ok {
			names = append(names, displayName(ptr.Ptr))
		}
	}
	return names, nil
}

// VerifiedName does what Postfix does for the client hostname: PTR lookup,
// then forward lookup of each name, and returns the first name whose forward
// lookup includes ip ("forward-confirmed reverse DNS"). It returns "unknown"
// when there is no such name, and temporary=true when a lookup failed
// temporarily and no name could be confirmed (Postfix then also says
// "unknown" but distinguishes it for reject_unknown_client_hostname's 450 vs
// 550).
func (r *Resolver) VerifiedName(ctx context.Context, ip netip.Addr) (name string, temporary bool) {
	const unknown = "unknown"
	ip = unmap(ip)
	names, err := r.LookupPTR(ctx, ip)
	if err != nil {
		return unknown, IsTemporary(err)
	}
	// Only the client's own family can confirm it, and asking for the other
	// would let its failure turn a plain mismatch into a temporary error.
	qtype := mdns.TypeA
	if ip.Is6() {
		qtype = mdns.TypeAAAA
	}
	for _, name := range names {
		// Whoever controls the reverse zone chooses the PTR, so a name
		// such as "127.0.0.1" or one with odd characters must not pass
		// for a hostname in access checks, as in Postfix.
		if !validHostname(name) {
			continue
		}
		addrs, err := r.lookupAddrs(ctx, name, qtype)
		if err != nil {
			temporary = temporary || IsTemporary(err)
			continue
		}
		for _, a := range addrs {
			if unmap(a) == ip {
				return name, false
			}
		}
	}
	return unknown, temporary
}

// validHostname reports whether name is a syntactically valid hostname
// (letters, digits, hyphens and underscores in labels that do not begin or
// end with a hyphen) and not an IP address.
func validHostname(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// displayName is how names appear in results and errors: lower-case,
// without the trailing dot.
func displayName(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}
