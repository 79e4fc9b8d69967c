// Package resolver is the mail router's DNS client. It talks to a fixed list of
// recursive resolvers and classifies every failure as temporary (defer the
// mail) or permanent (bounce it), which the system resolver in package net
// cannot report reliably.
package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

// defaultTimeout is used per attempt when Resolver.Timeout is zero.
const defaultTimeout = 5 * time.Second

// ednsSize is the EDNS buffer size recommended by DNS Flag Day 2020: large
// enough for most answers, small enough to avoid IP fragmentation.
const ednsSize = 1232

// Resolver sends queries to a fixed list of servers ("host:port"). The zero
// Timeout means 5s per attempt.
type Resolver struct {
	Servers []string
	Timeout time.Duration
	// Cache, when set, keeps answers for their TTL (see Cache).
	Cache *Cache
	// Table, when set, answers every query instead of Servers: fake DNS
	// for rule tests and dry runs.
	Table *Table
}

// FromResolvConf reads servers from a resolv.conf-format file (port from the
// file, default 53). The file's "options timeout:n" sets the per-attempt
// timeout.
func FromResolvConf(path string) (*Resolver, error) {
	conf, err := mdns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("read resolver config: %w", err)
	}
	servers := conf.Servers
	if len(servers) == 0 {
		// Like glibc and package net: without nameserver lines the
		// resolver on the local machine is used.
		servers = []string{"127.0.0.1", "::1"}
	}
	port := conf.Port
	if port == "" {
		port = "53"
	}
	r := &Resolver{Timeout: time.Duration(conf.Timeout) * time.Second}
	for _, s := range servers {
		r.Servers = append(r.Servers, net.JoinHostPort(s, port))
	}
	return r, nil
}

// New returns a Resolver for the given servers; a server without a port gets
// :53. A bare IPv6 address such as "::1" is taken as an address, not as
// host and port.
func New(servers []string, timeout time.Duration) *Resolver {
	r := &Resolver{Timeout: timeout}
	for _, s := range servers {
		r.Servers = append(r.Servers, withPort(s))
	}
	return r
}

func withPort(s string) string {
	if _, _, err := net.SplitHostPort(s); err == nil {
		return s
	}
	// SplitHostPort fails on both "::1" and "[::1]", which are addresses
	// without a port.
	host := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	return net.JoinHostPort(host, "53")
}

func (r *Resolver) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return defaultTimeout
}

var (
	errNoServers        = errors.New("no dns servers configured")
	errInvalidName      = errors.New("invalid domain name")
	errQuestionMismatch = errors.New("reply does not match the question")
)

// normalize returns the lower-case fully qualified form of name that is sent
// in queries, and the form without the trailing dot that appears in errors.
func normalize(name string) (fqdn, display string, err error) {
	display = displayName(name)
	fqdn = display + "."
	// The root is never a sensible name for mail and an empty argument is
	// a caller bug; both would otherwise turn into a query for ".".
	if display == "" {
		return "", display, errInvalidName
	}
	if _, ok := mdns.IsDomainName(fqdn); !ok {
		return "", display, errInvalidName
	}
	return fqdn, display, nil
}

// Query asks for name's records of type qtype. It returns the message for
// NOERROR (which may be NODATA: no answer records), a NotFound *Error for
// NXDOMAIN, and a temporary *Error when no server gave a definite answer
// (a permanent one for an invalid name). The message may come from the
// cache and must not be modified.
func (r *Resolver) Query(ctx context.Context, name string, qtype uint16) (*mdns.Msg, error) {
	return r.query(ctx, name, qtype)
}

// query asks the cache, then each server in turn until one gives a
// definite answer.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) (*mdns.Msg, error) {
	typ := mdns.TypeToString[qtype]
	fqdn, display, err := normalize(name)
	if err != nil {
		return nil, &Error{Name: display, Type: typ, Err: err}
	}
	if r.Cache != nil {
		if in, nx, ok := r.Cache.get(fqdn, qtype); ok {
			if nx {
				return nil, &Error{Name: display, Type: typ, Rcode: "NXDOMAIN", NotFound: true}
			}
			return in, nil
		}
	}
	if r.Table != nil {
		m := new(mdns.Msg)
		m.SetQuestion(fqdn, qtype)
		return r.answer(r.Table.exchange(m), fqdn, display, typ, qtype)
	}
	if len(r.Servers) == 0 {
		return nil, &Error{Name: display, Type: typ, Temporary: true, Err: errNoServers}
	}

	m := new(mdns.Msg)
	m.SetQuestion(fqdn, qtype)
	m.RecursionDesired = true
	m.SetEdns0(ednsSize, false)

	last := &Error{Name: display, Type: typ, Temporary: true}
	for _, server := range r.Servers {
		if err := ctxDone(ctx); err != nil {
			last.Rcode, last.Err = "", err
			return nil, last
		}
		in, err := r.exchange(ctx, m, server)
		if err != nil {
			// A deadline that expired mid-exchange surfaces as an i/o
			// timeout; report the context so the caller sees why.
			if cerr := ctxDone(ctx); cerr != nil {
				err = cerr
			}
			last.Rcode, last.Err = "", fmt.Errorf("%s: %w", server, err)
			continue
		}
		if in.Rcode == mdns.RcodeSuccess || in.Rcode == mdns.RcodeNameError {
			return r.answer(in, fqdn, display, typ, qtype)
		}
		// SERVFAIL, REFUSED and the rest say something about this
		// server, not about the name, so another server may do better.
		last.Rcode, last.Err = rcodeString(in.Rcode), nil
	}
	return nil, last
}

// answer turns a reply into query's result and keeps it in the cache.
func (r *Resolver) answer(in *mdns.Msg, fqdn, display, typ string, qtype uint16) (*mdns.Msg, error) {
	switch in.Rcode {
	case mdns.RcodeSuccess:
		if r.Cache != nil {
			r.Cache.put(fqdn, qtype, in, in.Ns)
		}
		return in, nil
	case mdns.RcodeNameError:
		if r.Cache != nil {
			r.Cache.put(fqdn, qtype, nil, in.Ns)
		}
		return nil, &Error{Name: display, Type: typ, Rcode: rcodeString(in.Rcode), NotFound: true}
	}
	return nil, &Error{Name: display, Type: typ, Rcode: rcodeString(in.Rcode), Temporary: true}
}

func (r *Resolver) exchange(ctx context.Context, m *mdns.Msg, server string) (*mdns.Msg, error) {
	obs := observer.Load()
	if obs == nil {
		return Exchange(ctx, m, server, r.timeout())
	}
	start := time.Now()
	in, err := Exchange(ctx, m, server, r.timeout())
	result := "error"
	switch {
	case err == nil:
		result = strings.ToLower(rcodeString(in.Rcode))
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		result = "timeout"
	}
	(*obs)(mdns.TypeToString[m.Question[0].Qtype], time.Since(start), result)
	return in, err
}

// Observer is told each query sent to a server: its type, how long the
// answer took and the result (noerror, nxdomain, servfail, ..., timeout
// or error). Cached answers are not queries.
type Observer func(qtype string, d time.Duration, result string)

// observer is process-wide: the resolvers are made by each policy load,
// and the metrics count the process's DNS traffic.
var observer atomic.Pointer[Observer]

// Observe sets the process's DNS observer (nil: none).
func Observe(f Observer) {
	if f == nil {
		observer.Store(nil)
		return
	}
	observer.Store(&f)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Exchange sends m to one server over UDP and repeats it over TCP when the
// reply is truncated, because a partial MX or TXT set is worse than none;
// a reply that does not echo m's question is refused. It is the one way
// larkpost asks a DNS server (the DANE lookups use it with their own
// query flags).
func Exchange(ctx context.Context, m *mdns.Msg, server string, timeout time.Duration) (*mdns.Msg, error) {
	in, err := exchangeOver(ctx, "udp", m, server, timeout)
	if err == nil && in.Truncated {
		in, err = exchangeOver(ctx, "tcp", m, server, timeout)
	}
	return in, err
}

func exchangeOver(ctx context.Context, network string, m *mdns.Msg, server string, timeout time.Duration) (*mdns.Msg, error) {
	c := &mdns.Client{Net: network, Timeout: timeout}
	conn, err := c.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// The client only looks at the context's deadline; closing the
	// connection makes a plain cancellation end the wait as well.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	in, _, err := c.ExchangeWithConnContext(ctx, m, conn)
	if err != nil {
		return nil, err
	}
	// The ID check alone is 16 bits; requiring the question to be echoed
	// makes accepting a stray or forged reply much less likely.
	if len(in.Question) != 1 || in.Question[0].Qtype != m.Question[0].Qtype ||
		!strings.EqualFold(in.Question[0].Name, m.Question[0].Name) {
		return nil, errQuestionMismatch
	}
	return in, nil
}

// ctxDone reports the context's error, also when the deadline has passed but
// the context's own timer has not fired yet; the exchange ends exactly at the
// deadline, so the two race.
func ctxDone(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

func rcodeString(rcode int) string {
	if s, ok := mdns.RcodeToString[rcode]; ok {
		return s
	}
	return fmt.Sprintf("RCODE%d", rcode)
}

// unmap strips what must not reach the wire or a comparison: the IPv4-mapped
// prefix (so ::ffff:1.2.3.4 is looked up under in-addr.arpa) and the zone.
func unmap(ip netip.Addr) netip.Addr {
	return ip.Unmap().WithZone("")
}
