package tlspolicy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// MaxPolicySize is the largest policy body accepted (RFC 8461 section 3.3
// suggests 64 KiB); a policy is a few lines, so more is a wrong URL or abuse.
const MaxPolicySize = 64 << 10

// DefaultFetchTimeout bounds one policy fetch when the context has no
// earlier deadline. RFC 8461 section 3.3 asks for a timeout but warns
// against very short ones; a slow fetch only delays mail to one domain.
const DefaultFetchTimeout = time.Minute

// DialContextFunc dials like net.Dialer.DialContext.
type DialContextFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// NewHTTPClient returns the client policy fetches need: certificates
// verified against tlsConfig's RootCAs (nil config: system roots), no
// redirects (RFC 8461 section 3.3: following one would let whoever
// controls the target define the policy), no proxy from the environment
// (the daemon's environment should not decide where policies come from),
// and the given timeout (0: DefaultFetchTimeout). dial may be nil; tests
// pass one that sends mta-sts.DOMAIN:443 to an in-process server.
func NewHTTPClient(tlsConfig *tls.Config, dial DialContextFunc, timeout time.Duration) *http.Client {
	if timeout <= 0 {
		timeout = DefaultFetchTimeout
	}
	tr := &http.Transport{
		Proxy:                 nil,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		MaxIdleConns:          10,
		IdleConnTimeout:       30 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	if tlsConfig != nil {
		tr.TLSClientConfig = tlsConfig.Clone()
	}
	if dial != nil {
		tr.DialContext = dial
	} else {
		tr.DialContext = (&net.Dialer{Timeout: timeout}).DialContext
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// PolicyURL returns where the policy of domain is published.
func PolicyURL(domain string) string {
	return "https://mta-sts." + displayName(domain) + "/.well-known/mta-sts.txt"
}

var errRedirect = errors.New("redirect refused")

// fetchPolicy downloads and parses the policy of domain with client.
func fetchPolicy(ctx context.Context, client *http.Client, domain string) (*Policy, error) {
	url := PolicyURL(domain)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("mta-sts: fetch %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		// The client's error already names the method and URL.
		return nil, fmt.Errorf("mta-sts: fetch policy: %w", err)
	}
	defer resp.Body.Close()
	// Drain a little so the connection can be reused; a hostile server
	// cannot make us read more than the limit anyway.
	defer io.Copy(io.Discard, io.LimitReader(resp.Body, MaxPolicySize))

	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return nil, fmt.Errorf("mta-sts: fetch %s: status %d: %w", url, resp.StatusCode, errRedirect)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("mta-sts: fetch %s: status %d", url, resp.StatusCode)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "text/plain" {
		return nil, fmt.Errorf("mta-sts: fetch %s: content type %q is not text/plain", url, resp.Header.Get("Content-Type"))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxPolicySize+1))
	if err != nil {
		return nil, fmt.Errorf("mta-sts: fetch %s: %w", url, err)
	}
	if len(body) > MaxPolicySize {
		return nil, fmt.Errorf("mta-sts: fetch %s: policy larger than %d bytes", url, MaxPolicySize)
	}
	p, err := ParsePolicy(body)
	if err != nil {
		return nil, fmt.Errorf("mta-sts: fetch %s: %w", url, err)
	}
	return p, nil
}

// AddrLookup resolves a host name, as resolver.Resolver.LookupIP does.
type AddrLookup func(ctx context.Context, host string) ([]netip.Addr, error)

// ResolverDial returns a dial function that resolves host names with
// lookup, so that policy hosts are found through the same resolvers as
// the MX hosts they govern, not through the system's. Addresses are tried
// in order, as net.Dialer does.
func ResolverDial(lookup AddrLookup, timeout time.Duration) DialContextFunc {
	d := &net.Dialer{Timeout: timeout}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			return d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
		}
		addrs, err := lookup(ctx, host)
		if err != nil {
			return nil, err
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("%s: no address records", host)
		}
		var errs []error
		for _, ip := range addrs {
			c, err := d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
		return nil, errors.Join(errs...)
	}
}
