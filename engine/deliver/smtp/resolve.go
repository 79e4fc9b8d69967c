package smtp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/larkpost/larkpost/engine/resolver"
)

// errNoHost says that the destination names neither a host nor a socket,
// a routing bug that must not bounce mail.
var errNoHost = errors.New("destination has no host")

// errNoAddress says that a host exists but has neither A nor AAAA records.
var errNoAddress = errors.New("host has no address records")

// Hosts returns the ordered list of hosts Deliver would try for dest (MX
// preference order, random among equal preferences, implicit MX = the domain
// itself when there is no MX), with their addresses; for `larkpost trace
// --resolve`. Hosts without addresses are left out, as Deliver skips them.
// A unix socket destination gives one Host named by its path. err classifies
// like Deliver: resolver.IsTemporary for failures worth retrying, and otherwise
// permanent (NXDOMAIN, null MX matching resolver.ErrNullMX, no address at all).
func (c *Client) Hosts(ctx context.Context, dest Destination) ([]Host, error) {
	hosts, err := c.mxHosts(ctx, dest)
	if err != nil || dest.Unix != "" {
		return hosts, err
	}
	var (
		out     []Host
		lastErr error
	)
	for i := range hosts {
		if err := c.lookupAddrs(ctx, &hosts[i]); err != nil {
			if lastErr == nil || isTemporaryDNS(err) && !isTemporaryDNS(lastErr) {
				lastErr = err
			}
			continue
		}
		out = append(out, hosts[i])
	}
	if len(out) == 0 {
		return nil, lastErr
	}
	return out, nil
}

// mxHosts returns the hosts for dest in delivery order. Addresses are only
// filled in when they need no lookup (IP literals); lookupAddrs does the
// rest, so that Deliver resolves a backup MX only when it needs it.
func (c *Client) mxHosts(ctx context.Context, dest Destination) ([]Host, error) {
	if dest.Unix != "" {
		return []Host{{Name: dest.Unix}}, nil
	}
	host := hostName(dest.Host)
	if host == "" {
		return nil, errNoHost
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return []Host{{Name: host, Addrs: []netip.Addr{ip.Unmap()}}}, nil
	}
	if dest.NoMX {
		return []Host{{Name: host}}, nil
	}
	r, err := c.dnsResolver()
	if err != nil {
		return nil, err
	}
	mxs, err := r.LookupMX(ctx, host)
	if err != nil {
		return nil, err
	}
	if len(mxs) == 0 {
		// RFC 5321 5.1: without MX records the domain is its own mail
		// exchanger.
		return []Host{{Name: host}}, nil
	}
	hosts := make([]Host, len(mxs))
	for i, mx := range mxs {
		hosts[i] = Host{Name: mx.Host, Pref: int(mx.Pref)}
	}
	return hosts, nil
}

// hostName strips what the "[host]" notation may leave around a name or
// address: brackets, the "IPv6:" tag of address literals, a trailing dot.
func hostName(h string) string {
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if len(h) > 5 && strings.EqualFold(h[:5], "ipv6:") {
		h = h[5:]
	}
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

// lookupAddrs fills h.Addrs. A host that exists without addresses gives a
// permanent *resolver.Error wrapping errNoAddress.
func (c *Client) lookupAddrs(ctx context.Context, h *Host) error {
	if len(h.Addrs) > 0 {
		return nil
	}
	r, err := c.dnsResolver()
	if err != nil {
		return err
	}
	addrs, err := r.LookupIP(ctx, h.Name)
	if err != nil {
		return err
	}
	if len(addrs) == 0 {
		return &resolver.Error{Name: h.Name, Type: "A", Rcode: "NOERROR", Err: errNoAddress}
	}
	h.Addrs = addrs
	return nil
}

func (c *Client) dnsResolver() (*resolver.Resolver, error) {
	if c.Resolver != nil {
		return c.Resolver, nil
	}
	c.resolverOnce.Do(func() {
		c.resolver, c.resolverErr = resolver.FromResolvConf("/etc/resolv.conf")
	})
	return c.resolver, c.resolverErr
}

// isTemporaryDNS is resolver.IsTemporary, extended to errors that did not come
// from a lookup (a missing resolver configuration): those are worth a retry
// too.
func isTemporaryDNS(err error) bool {
	var de *resolver.Error
	return resolver.IsTemporary(err) || !errors.As(err, &de)
}

// dnsFailure turns a lookup error into a failure with Postfix's wording.
// domain says the name is the destination itself rather than one of its
// mail exchangers: a domain that does not exist is a bad address (5.1.2),
// a mail exchanger that does not resolve is a routing problem (5.4.4).
func dnsFailure(err error, domain bool) *failure {
	var de *resolver.Error
	switch {
	case errors.Is(err, errNoHost):
		return &failure{status: "4.3.5", reason: err.Error()}
	case !errors.As(err, &de):
		return &failure{status: "4.4.3", reason: fmt.Sprintf("Name service error: %v", err)}
	}
	prefix := fmt.Sprintf("Host or domain name not found. Name service error for name=%s type=%s", de.Name, de.Type)
	switch {
	case errors.Is(err, resolver.ErrNullMX):
		return &failure{status: "5.1.10", reason: fmt.Sprintf("Domain %s does not accept mail (null MX)", de.Name)}
	case de.Temporary:
		return &failure{status: "4.4.3", reason: prefix + ": Host not found, try again"}
	case errors.Is(err, errNoAddress):
		return &failure{status: "5.4.4", reason: prefix + ": Host found but no data record of requested type"}
	}
	status := "5.4.4"
	if domain {
		status = "5.1.2"
	}
	if de.NotFound {
		return &failure{status: status, reason: prefix + ": Host not found"}
	}
	return &failure{status: status, reason: prefix + ": " + de.Error()}
}
