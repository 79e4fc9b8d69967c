// Package dnstest provides an in-process authoritative DNS server for tests,
// so that code doing DNS lookups can be tested without the network.
package dnstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// noAnswer passed to SetRcode makes the server drop queries for the name.
const noAnswer = -1

// Server is a DNS server on 127.0.0.1 (UDP and TCP on the same port)
// answering from a zone map.
type Server struct {
	// Addr is the address the server listens on, "127.0.0.1:port".
	Addr string

	tb      testing.TB
	queries atomic.Int64

	mu     sync.RWMutex
	zone   map[string][]dns.RR // by lower-case owner name
	rcodes map[string]int      // by lower-case name
}

// NewServer starts a server for the zone given as RR strings in zone-file
// syntax, e.g. "example.com. 300 IN MX 10 mx1.example.com." and
// "mx1.example.com. 300 IN A 127.0.0.1". Names are case-insensitive. It
// registers t.Cleanup to shut down.
func NewServer(t testing.TB, rrs ...string) *Server {
	t.Helper()
	s := &Server{
		tb:     t,
		zone:   make(map[string][]dns.RR),
		rcodes: make(map[string]int),
	}
	s.Add(rrs...)

	pc, ln, err := listen()
	if err != nil {
		t.Fatalf("dnstest: %v", err)
	}
	s.Addr = pc.LocalAddr().String()

	udp := &dns.Server{PacketConn: pc, Handler: s}
	tcp := &dns.Server{Listener: ln, Handler: s}
	if err := start(udp, tcp); err != nil {
		pc.Close()
		ln.Close()
		t.Fatalf("dnstest: %v", err)
	}
	t.Cleanup(func() {
		// Bounded so that a stuck connection cannot hang the test binary.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		udp.ShutdownContext(ctx)
		tcp.ShutdownContext(ctx)
	})
	return s
}

// listen binds UDP on a free port and TCP on the same one. The port is free
// for UDP only, so binding TCP can fail when another process holds it; a
// different port is then tried.
func listen() (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range 10 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, fmt.Errorf("listen udp: %w", err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		lastErr = err
	}
	return nil, nil, fmt.Errorf("listen tcp on the udp port: %w", lastErr)
}

// start runs both servers and waits until they accept queries, so that the
// first query of a test cannot race the server's start.
func start(servers ...*dns.Server) error {
	errc := make(chan error, len(servers))
	for _, srv := range servers {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() {
			if err := srv.ActivateAndServe(); err != nil {
				errc <- err
			}
		}()
		select {
		case <-started:
		case err := <-errc:
			return fmt.Errorf("start server: %w", err)
		case <-time.After(5 * time.Second):
			return errors.New("start server: timed out")
		}
	}
	return nil
}

// Add adds records at run time (safe for concurrent use with queries). A
// record that does not parse fails the test.
func (s *Server) Add(rrs ...string) {
	s.tb.Helper()
	parsed := make([]dns.RR, 0, len(rrs))
	for _, text := range rrs {
		rr, err := dns.NewRR(text)
		if err != nil {
			s.tb.Fatalf("dnstest: parse record %q: %v", text, err)
		}
		// NewRR returns nil for a blank line or a comment.
		if rr == nil {
			s.tb.Fatalf("dnstest: parse record %q: no record", text)
		}
		parsed = append(parsed, rr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rr := range parsed {
		name := key(rr.Header().Name)
		s.zone[name] = append(s.zone[name], rr)
	}
}

// SetRcode makes every query for name (any type) answer with rcode (e.g.
// dns.RcodeServerFailure); rcode -1 makes it not answer at all (to test
// timeouts), and dns.RcodeSuccess restores answers from the zone.
func (s *Server) SetRcode(name string, rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rcode == dns.RcodeSuccess {
		delete(s.rcodes, key(name))
		return
	}
	s.rcodes[key(name)] = rcode
}

// Queries returns how many queries the server has received, over UDP and
// TCP, including those it did not answer because of SetRcode(name, -1). A
// lookup retried over TCP after truncation counts twice.
func (s *Server) Queries() int {
	return int(s.queries.Load())
}

func key(name string) string {
	return strings.ToLower(dns.Fqdn(name))
}

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	s.queries.Add(1)
	m := new(dns.Msg)
	if len(req.Question) != 1 {
		m.SetRcode(req, dns.RcodeFormatError)
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]

	s.mu.RLock()
	rcode, override := s.rcodes[key(q.Name)]
	if !override {
		m.SetReply(req)
		m.Answer, m.Rcode = s.answer(q)
	}
	s.mu.RUnlock()

	if override {
		if rcode == noAnswer {
			return
		}
		m.SetRcode(req, rcode)
	}
	m.Authoritative = true
	m.RecursionAvailable = true

	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = int(opt.UDPSize())
		m.SetEdns0(opt.UDPSize(), false)
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		m.Truncate(size)
	}
	// The error is dropped rather than reported with tb.Errorf: this runs
	// on the server's goroutine, possibly after the test has finished, and
	// the client notices a missing reply anyway.
	_ = w.WriteMsg(m)
}

// answer returns the answer section and rcode for q. The caller holds s.mu.
func (s *Server) answer(q dns.Question) ([]dns.RR, int) {
	name := key(q.Name)
	rrs, ok := s.zone[name]
	if !ok {
		if s.hasDescendant(name) {
			// An empty non-terminal exists: NODATA, as a real server says.
			return nil, dns.RcodeSuccess
		}
		return nil, dns.RcodeNameError
	}
	ans := ofType(rrs, q.Qtype)
	if len(ans) > 0 || q.Qtype == dns.TypeCNAME {
		return ans, dns.RcodeSuccess
	}
	cnames := ofType(rrs, dns.TypeCNAME)
	if len(cnames) == 0 {
		return nil, dns.RcodeSuccess
	}
	// One level of CNAME is followed, as a recursive resolver would hand
	// the chain to its client.
	target := key(cnames[0].(*dns.CNAME).Target)
	trrs, ok := s.zone[target]
	if !ok && !s.hasDescendant(target) {
		return cnames[:1], dns.RcodeNameError
	}
	return append(cnames[:1:1], ofType(trrs, q.Qtype)...), dns.RcodeSuccess
}

func (s *Server) hasDescendant(name string) bool {
	suffix := "." + name
	if name == "." {
		suffix = "."
	}
	for n := range s.zone {
		if strings.HasSuffix(n, suffix) && n != name {
			return true
		}
	}
	return false
}

func ofType(rrs []dns.RR, qtype uint16) []dns.RR {
	var out []dns.RR
	for _, rr := range rrs {
		if qtype == dns.TypeANY || rr.Header().Rrtype == qtype {
			out = append(out, rr)
		}
	}
	return out
}
