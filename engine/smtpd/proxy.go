package smtpd

import (
	"net"
	"net/netip"
	"time"

	"github.com/pires/go-proxyproto"
)

// Behind a load balancer (HAProxy, a cloud's), a listener with
// upstream_proxy_protocol = "haproxy" reads the PROXY header (v1 or v2)
// first: conn.ip, the logs, the limits and networks then see the real
// client. The header is required, and taken only from
// upstream_proxy_networks: anyone else could claim any address.

// proxyListener wraps l to read PROXY headers from trusted sources.
func proxyListener(l net.Listener, trusted []netip.Prefix) net.Listener {
	return &proxyproto.Listener{
		Listener: l,
		ConnPolicy: func(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
			ap, err := netip.ParseAddrPort(o.Upstream.String())
			if err == nil {
				for _, p := range trusted {
					if p.Contains(ap.Addr().Unmap()) {
						return proxyproto.REQUIRE, nil
					}
				}
			}
			// Dropped at Accept, unanswered; the listener goes on.
			return proxyproto.REJECT, proxyproto.ErrInvalidUpstream
		},
		ReadHeaderTimeout: 10 * time.Second,
	}
}

// proxyHeader reads a connection's PROXY header when there is one to
// read: false (and the connection closed, with a log line) when it is
// missing or malformed.
func (g *gate) proxyHeader(raw net.Conn) bool {
	pc, ok := raw.(*proxyproto.Conn)
	if !ok {
		return true
	}
	if h := pc.ProxyHeader(); h != nil {
		return true
	}
	_, err := pc.Read(make([]byte, 0))
	g.s.Log.Warn("warning: " + g.name + ": no valid PROXY header from " + pc.Raw().RemoteAddr().String() + ": " + errText(err))
	pc.Close()
	return false
}

func errText(err error) string {
	if err == nil {
		return "none"
	}
	return err.Error()
}
