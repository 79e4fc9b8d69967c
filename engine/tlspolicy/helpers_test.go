package tlspolicy_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/larkpost/larkpost/engine/resolver/dnstest"
	"github.com/larkpost/larkpost/engine/tlspolicy"
)

// testCA issues certificates for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

var serial struct {
	sync.Mutex
	n int64
}

func nextSerial() *big.Int {
	serial.Lock()
	defer serial.Unlock()
	serial.n++
	return big.NewInt(serial.n)
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// leaf issues a server certificate for names, valid until notAfter (zero:
// a day from now); the chain sent includes the CA, as DANE-TA needs.
func (ca *testCA) leaf(t *testing.T, notAfter time.Time, names ...string) tls.Certificate {
	t.Helper()
	if notAfter.IsZero() {
		notAfter = time.Now().Add(24 * time.Hour)
	}
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    notAfter.Add(-48 * time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}
}

// dnsServer answers from a dnstest zone and sets the AD bit, as a
// validating resolver would, for the names marked secure, when the query
// asks for it with AD or DO.
type dnsServer struct {
	*dnstest.Server
	ADAddr string // the address that sets AD; Server.Addr never does

	mu     sync.Mutex
	secure map[string]bool
}

func newDNS(t *testing.T, rrs ...string) *dnsServer {
	t.Helper()
	s := &dnsServer{Server: dnstest.NewServer(t, rrs...), secure: map[string]bool{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.ADAddr = pc.LocalAddr().String()
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: s, NotifyStartedFunc: func() { close(started) }}
	go srv.ActivateAndServe()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("dns server did not start")
	}
	t.Cleanup(func() { srv.Shutdown() })
	return s
}

// Secure marks names as DNSSEC-validated.
func (s *dnsServer) Secure(names ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range names {
		s.secure[strings.ToLower(dns.Fqdn(n))] = true
	}
}

func (s *dnsServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	set := false
	if len(req.Question) == 1 {
		s.mu.Lock()
		set = s.secure[strings.ToLower(req.Question[0].Name)]
		s.mu.Unlock()
		opt := req.IsEdns0()
		set = set && (req.AuthenticatedData || opt != nil && opt.Do())
	}
	s.Server.ServeDNS(adWriter{w, set}, req)
}

type adWriter struct {
	dns.ResponseWriter
	ad bool
}

func (w adWriter) WriteMsg(m *dns.Msg) error {
	// The zone server never sets AD itself, so clear means insecure.
	m.AuthenticatedData = w.ad && m.Rcode != dns.RcodeServerFailure
	return w.ResponseWriter.WriteMsg(m)
}

// stsResponse is what the policy server sends for one domain.
type stsResponse struct {
	status      int // 0 means 200
	contentType string
	body        string
	location    string
}

// stsServer serves mta-sts.txt for several domains over HTTPS with a
// certificate from the test CA.
type stsServer struct {
	srv *httptest.Server
	mu  sync.Mutex
	res map[string]stsResponse // by domain
	n   map[string]int         // fetches by domain
}

func newSTSServer(t *testing.T, cert tls.Certificate) *stsServer {
	t.Helper()
	s := &stsServer{res: map[string]stsResponse{}, n: map[string]int{}}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	// Handshakes that fail on purpose would otherwise log to stderr.
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	return s
}

func (s *stsServer) set(domain string, r stsResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.res[domain] = r
}

func (s *stsServer) setPolicy(domain, policy string) {
	s.set(domain, stsResponse{contentType: "text/plain", body: policy})
}

func (s *stsServer) fetches(domain string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n[domain]
}

func (s *stsServer) serve(w http.ResponseWriter, r *http.Request) {
	domain, ok := strings.CutPrefix(r.Host, "mta-sts.")
	if !ok || r.URL.Path != "/.well-known/mta-sts.txt" {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	s.n[domain]++
	res, ok := s.res[domain]
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	if res.location != "" {
		w.Header().Set("Location", res.location)
	}
	w.Header().Set("Content-Type", res.contentType)
	if res.status != 0 {
		w.WriteHeader(res.status)
	}
	fmt.Fprint(w, res.body)
}

// client returns an HTTP client that trusts roots and sends every
// mta-sts.DOMAIN:443 to the server, the way DNS would in production.
func (s *stsServer) client(roots *x509.CertPool) *http.Client {
	addr := s.srv.Listener.Addr().String()
	dial := func(ctx context.Context, network, hostport string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(hostport)
		if err != nil || port != "443" || !strings.HasPrefix(host, "mta-sts.") {
			return nil, fmt.Errorf("test dialer: unexpected address %q", hostport)
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	return tlspolicy.NewHTTPClient(&tls.Config{RootCAs: roots}, dial, 5*time.Second)
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// handshake runs a TLS handshake between a server presenting cert and a
// client with cfg, and returns the client's view and error.
func handshake(t *testing.T, cert tls.Certificate, cfg *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	c, s := net.Pipe()
	defer c.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer s.Close()
		srv := tls.Server(s, &tls.Config{Certificates: []tls.Certificate{cert}})
		srv.SetDeadline(time.Now().Add(5 * time.Second))
		srv.Handshake()
	}()
	cl := tls.Client(c, cfg)
	cl.SetDeadline(time.Now().Add(5 * time.Second))
	err := cl.Handshake()
	cs := cl.ConnectionState()
	c.Close()
	<-done
	return cs, err
}
