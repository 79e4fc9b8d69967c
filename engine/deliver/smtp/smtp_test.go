package smtp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	mdns "github.com/miekg/dns"

	"github.com/larkpost/larkpost/engine/enginetest"
	"github.com/larkpost/larkpost/engine/resolver"
	"github.com/larkpost/larkpost/engine/resolver/dnstest"
)

const ourName = "client.larkpost.test"

var testBody = []byte("From: a@example.org\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nhello\r\n")

// --- certificates ---

type testCerts struct {
	roots     *x509.CertPool
	trusted   tls.Certificate // for the mx*.test names, in roots
	untrusted tls.Certificate // the same names, self-signed outside roots
}

var certs = sync.OnceValue(func() *testCerts {
	tc := &testCerts{roots: x509.NewCertPool()}
	var leaf *x509.Certificate
	tc.trusted, leaf = selfSigned()
	tc.roots.AddCert(leaf)
	tc.untrusted, _ = selfSigned()
	return tc
})

func selfSigned() (tls.Certificate, *x509.Certificate) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "mx.test"},
		DNSNames:              []string{"mx1.test", "mx2.test", "mx3.test", "relay.test"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf
}

// --- in-process servers ---

type serverConfig struct {
	lmtp, dsn, utf8 bool
	cert            *tls.Certificate
	minTLS          uint16
	maxSize         int64
	user, pass      string // enables AUTH
	mechs           []string
	insecureAuth    bool
	unix            string // listen on this socket path instead of tcp
}

type hello struct {
	name string
	tls  bool
}

type tx struct {
	from     string
	mailOpts smtp.MailOptions
	rcpts    []string
	rcptOpts []smtp.RcptOptions
	data     []byte
	tls      bool
}

// server is a go-smtp server that records what it sees and answers as
// configured.
type server struct {
	addr  string
	conns atomic.Int32

	mu      sync.Mutex
	hellos  []hello
	txs     []*tx
	authOK  int
	wire    bytes.Buffer
	mailErr *smtp.SMTPError
	rcptErr map[string]*smtp.SMTPError
	dataErr *smtp.SMTPError
	lmtpErr map[string]*smtp.SMTPError
	cfg     serverConfig
}

func newServer(t *testing.T, cfg serverConfig) *server {
	t.Helper()
	s := &server{cfg: cfg, rcptErr: map[string]*smtp.SMTPError{}, lmtpErr: map[string]*smtp.SMTPError{}}
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = "server.test"
	srv.LMTP = cfg.lmtp
	srv.EnableDSN = cfg.dsn
	srv.EnableSMTPUTF8 = cfg.utf8
	srv.AllowInsecureAuth = cfg.insecureAuth
	srv.MaxMessageBytes = cfg.maxSize
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	srv.ErrorLog = log.New(io.Discard, "", 0)
	srv.Debug = lockedWriter{&s.mu, &s.wire}
	if cfg.cert != nil {
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cfg.cert}, MinVersion: cfg.minTLS}
	}
	var l net.Listener
	var err error
	if cfg.unix != "" {
		l, err = net.Listen("unix", cfg.unix)
	} else {
		l, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	s.addr = l.Addr().String()
	go srv.Serve(countingListener{l, &s.conns})
	t.Cleanup(func() { srv.Close() })
	return s
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

type countingListener struct {
	net.Listener
	n *atomic.Int32
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func (s *server) reject(rcpt string, code int, enh smtp.EnhancedCode, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rcptErr[rcpt] = &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: msg}
}

func (s *server) transactions() []*tx {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.txs)
}

func (s *server) helloNames() []hello {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.hellos)
}

func (s *server) wireLog() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wire.String()
}

func (s *server) newSession(c *smtp.Conn) (smtp.Session, error) {
	_, isTLS := c.TLSConnectionState()
	s.mu.Lock()
	s.hellos = append(s.hellos, hello{c.Hostname(), isTLS})
	s.mu.Unlock()
	return &srvSession{s: s, tls: isTLS}, nil
}

type srvSession struct {
	s   *server
	tls bool
	cur *tx
}

func (se *srvSession) Reset()        { se.cur = nil }
func (se *srvSession) Logout() error { return nil }

func (se *srvSession) Mail(from string, opts *smtp.MailOptions) error {
	se.s.mu.Lock()
	defer se.s.mu.Unlock()
	if se.s.mailErr != nil {
		return se.s.mailErr
	}
	se.cur = &tx{from: from, mailOpts: *opts, tls: se.tls}
	se.s.txs = append(se.s.txs, se.cur)
	return nil
}

func (se *srvSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	se.s.mu.Lock()
	defer se.s.mu.Unlock()
	if err := se.s.rcptErr[to]; err != nil {
		return err
	}
	se.cur.rcpts = append(se.cur.rcpts, to)
	se.cur.rcptOpts = append(se.cur.rcptOpts, *opts)
	return nil
}

func (se *srvSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	se.s.mu.Lock()
	defer se.s.mu.Unlock()
	se.cur.data = b
	if se.s.dataErr != nil {
		return se.s.dataErr
	}
	return nil
}

func (se *srvSession) LMTPData(r io.Reader, status smtp.StatusCollector) error {
	if err := se.Data(r); err != nil {
		return err
	}
	se.s.mu.Lock()
	defer se.s.mu.Unlock()
	for _, rcpt := range se.cur.rcpts {
		if err := se.s.lmtpErr[rcpt]; err != nil {
			status.SetStatus(rcpt, err)
		} else {
			status.SetStatus(rcpt, nil)
		}
	}
	return nil
}

func (se *srvSession) AuthMechanisms() []string {
	if se.s.cfg.user == "" {
		return nil
	}
	if se.s.cfg.mechs != nil {
		return se.s.cfg.mechs
	}
	return []string{sasl.Plain}
}

func (se *srvSession) Auth(mech string) (sasl.Server, error) {
	check := func(user, pass string) error {
		if user != se.s.cfg.user || pass != se.s.cfg.pass {
			return smtp.ErrAuthFailed
		}
		se.s.mu.Lock()
		se.s.authOK++
		se.s.mu.Unlock()
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, user, pass string) error { return check(user, pass) }), nil
	case sasl.Login:
		return &loginServer{check: check}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// loginServer is the LOGIN mechanism, which go-sasl has only as a client,
// asking for the user name first as Exchange does.
type loginServer struct {
	step  int
	user  string
	check func(user, pass string) error
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	l.step++
	switch l.step {
	case 1:
		return []byte("Username:"), false, nil
	case 2:
		l.user = string(resp)
		return []byte("Password:"), false, nil
	}
	return nil, true, l.check(l.user, string(resp))
}

// scriptServer is a hand-written SMTP peer for behaviour go-smtp's server
// cannot produce. It greets with greeting (or stays silent when it is "")
// and answers each command line with answer(line); after a 354 it reads
// the body up to the final dot and answers answer("."). QUIT gets 221. It
// returns its address and a record of the lines it received.
func scriptServer(t testing.TB, greeting string, answer func(line string) string) (string, *lineLog) {
	t.Helper()
	rec := new(lineLog)
	addr := listen(t, func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if greeting == "" {
			io.Copy(io.Discard, c)
			return
		}
		io.WriteString(c, greeting+"\r\n")
		sc := bufio.NewScanner(c)
		data := false
		// The transaction's state, kept as Postfix does, so that
		// pipelined commands after a refusal get its replies; an
		// answer that starts with "!" is given regardless, and
		// one that ends with "<close>" ends the connection.
		mail, rcpts := false, 0
		for sc.Scan() {
			line := sc.Text()
			rec.add(line)
			verb := strings.ToUpper(line)
			switch {
			case data && line == ".":
				data = false
				mail, rcpts = false, 0
				reply, hangUp := strings.CutSuffix(answer("."), "<close>")
				io.WriteString(c, reply+"\r\n")
				if hangUp {
					return
				}
				continue
			case data:
				continue
			case verb == "QUIT":
				io.WriteString(c, "221 2.0.0 bye\r\n")
				return
			}
			reply := answer(line)
			forced := strings.HasPrefix(reply, "!")
			reply = strings.TrimPrefix(reply, "!")
			switch {
			case forced:
			case !mail && (strings.HasPrefix(verb, "RCPT") || verb == "DATA"):
				reply = "503 5.5.1 Error: need MAIL command"
			case verb == "DATA" && rcpts == 0:
				reply = "554 5.5.1 Error: no valid recipients"
			}
			ok := strings.HasPrefix(reply, "2")
			switch {
			case strings.HasPrefix(verb, "MAIL"):
				mail = ok
			case strings.HasPrefix(verb, "RCPT") && ok:
				rcpts++
			case verb == "RSET":
				mail, rcpts = false, 0
			}
			reply, hangUp := strings.CutSuffix(reply, "<close>")
			if hangUp {
				if reply != "" {
					io.WriteString(c, reply+"\r\n")
				}
				return
			}
			data = strings.HasPrefix(reply, "354")
			io.WriteString(c, reply+"\r\n")
		}
	})
	return addr, rec
}

// plainAnswer is how the script servers answer what a test does not
// script: EHLO (announcing PIPELINING when asked), DATA, the final dot and
// "250 ok" for the rest.
func plainAnswer(line string, pipelining bool) string {
	switch l := strings.ToUpper(line); {
	case strings.HasPrefix(l, "EHLO") && pipelining:
		return "250-mx1.test\r\n250 PIPELINING"
	case l == "DATA":
		return "354 go ahead"
	case l == ".":
		return "250 2.0.0 queued"
	}
	return "250 ok"
}

// listen accepts connections on 127.0.0.1 until the test ends, handing
// each to serve on a goroutine of its own, and returns the address.
func listen(tb testing.TB, serve func(net.Conn)) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return l.Addr().String()
}

type lineLog struct {
	mu sync.Mutex
	l  []string
}

func (l *lineLog) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.l = append(l.l, s)
}

func (l *lineLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.l)
}

// --- test environment: DNS plus a dial hook that maps fake addresses ---

type env struct {
	t      *testing.T
	dns    *dnstest.Server
	client *Client

	mu     sync.Mutex
	routes map[string]string // "192.0.2.1:25" -> the real listener
}

func newEnv(t *testing.T, records ...string) *env {
	t.Helper()
	e := &env{t: t, dns: dnstest.NewServer(t, records...), routes: map[string]string{}}
	e.client = &Client{
		Hostname:       ourName,
		Resolver:       resolver.New([]string{e.dns.Addr}, time.Second),
		TLSConfig:      &tls.Config{RootCAs: certs().roots},
		DialTimeout:    2 * time.Second,
		CommandTimeout: 5 * time.Second,
		DataTimeout:    5 * time.Second,
		Dial:           e.dial,
		Log:            slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	t.Cleanup(func() { e.client.Close() })
	return e
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (e *env) route(fake, real string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.routes[fake] = real
}

// serve starts a server for host name at the fake address ip (port 25).
func (e *env) serve(name, ip string, cfg serverConfig) *server {
	s := newServer(e.t, cfg)
	e.dns.Add(name + ". 300 IN A " + ip)
	e.route(ip+":25", s.addr)
	return s
}

func (e *env) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if network == "unix" {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	e.mu.Lock()
	real, ok := e.routes[addr]
	e.mu.Unlock()
	if !ok {
		return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", real)
}

func (e *env) deliver(dest Destination, req *Request) []Result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := e.client.Deliver(ctx, dest, req)
	if len(res) != len(req.Rcpts) {
		e.t.Fatalf("got %d results for %d recipients", len(res), len(req.Rcpts))
	}
	return res
}

func request(rcpts ...string) *Request {
	req := &Request{QueueID: "Q1", Sender: "a@example.org", Body: bytes.NewReader(testBody)}
	for _, r := range rcpts {
		req.Rcpts = append(req.Rcpts, Rcpt{Addr: r})
	}
	return req
}

func checkResult(t *testing.T, got Result, status, reply, relay string) {
	t.Helper()
	if got.Enhanced != status || !strings.Contains(got.Text, reply) || relay != "" && got.Relay != relay {
		t.Errorf("result = %+v, want status %s, reply containing %q, relay %q", got, status, reply, relay)
	}
}

// --- routing ---

func TestRouting(t *testing.T) {
	t.Parallel()
	type peer struct {
		name, ip string
		kind     string // "smtp", "421", "554", or "" for refusing connections
	}
	tests := []struct {
		name    string
		records []string
		peers   []peer
		dest    Destination
		status  string
		reply   string
		relay   string
		gotIt   string // the peer that must have received the message
	}{
		{
			name:    "mx preference order",
			records: []string{"example.com. 300 IN MX 20 mx2.test.", "example.com. 300 IN MX 10 mx1.test."},
			peers:   []peer{{"mx1.test", "192.0.2.1", "smtp"}, {"mx2.test", "192.0.2.2", "smtp"}},
			dest:    Destination{Host: "example.com"},
			status:  "2.0.0", reply: "250 2.0.0", relay: "mx1.test[192.0.2.1]:25", gotIt: "mx1.test",
		},
		{
			name:    "first mx refuses connections",
			records: []string{"example.com. 300 IN MX 10 mx1.test.", "example.com. 300 IN MX 20 mx2.test."},
			peers:   []peer{{"mx1.test", "192.0.2.1", ""}, {"mx2.test", "192.0.2.2", "smtp"}},
			dest:    Destination{Host: "example.com"},
			status:  "2.0.0", relay: "mx2.test[192.0.2.2]:25", gotIt: "mx2.test",
		},
		{
			name:    "first mx answers 421",
			records: []string{"example.com. 300 IN MX 10 mx1.test.", "example.com. 300 IN MX 20 mx2.test."},
			peers:   []peer{{"mx1.test", "192.0.2.1", "421"}, {"mx2.test", "192.0.2.2", "smtp"}},
			dest:    Destination{Host: "example.com"},
			status:  "2.0.0", relay: "mx2.test[192.0.2.2]:25", gotIt: "mx2.test",
		},
		{
			name:    "mx host without address is skipped",
			records: []string{"example.com. 300 IN MX 10 noaddr.example.com.", "noaddr.example.com. 300 IN TXT x", "example.com. 300 IN MX 20 mx2.test."},
			peers:   []peer{{"mx2.test", "192.0.2.2", "smtp"}},
			dest:    Destination{Host: "example.com"},
			status:  "2.0.0", relay: "mx2.test[192.0.2.2]:25", gotIt: "mx2.test",
		},
		{
			name:   "implicit mx",
			peers:  []peer{{"example.com", "192.0.2.7", "smtp"}},
			dest:   Destination{Host: "example.com"},
			status: "2.0.0", relay: "example.com[192.0.2.7]:25", gotIt: "example.com",
		},
		{
			name:    "bracketed host skips the mx lookup",
			records: []string{"relay.test. 300 IN MX 10 mx1.test."},
			peers:   []peer{{"mx1.test", "192.0.2.1", "smtp"}, {"relay.test", "192.0.2.9", "smtp"}},
			dest:    Destination{Host: "relay.test", NoMX: true},
			status:  "2.0.0", relay: "relay.test[192.0.2.9]:25", gotIt: "relay.test",
		},
		{
			name:    "null mx",
			records: []string{"example.com. 300 IN MX 0 ."},
			dest:    Destination{Host: "example.com"},
			status:  "5.1.10", reply: "does not accept mail (null MX)", relay: "none",
		},
		{
			name:    "nxdomain",
			records: []string{"other.test. 300 IN A 192.0.2.1"},
			dest:    Destination{Host: "example.com"},
			status:  "5.1.2", reply: "Host or domain name not found", relay: "none",
		},
		{
			name:   "servfail",
			dest:   Destination{Host: "fail.test"},
			status: "4.4.3", reply: "Host or domain name not found", relay: "none",
		},
		{
			name:    "no mx host resolves",
			records: []string{"example.com. 300 IN MX 10 gone.test.", "other.test. 300 IN A 192.0.2.1"},
			dest:    Destination{Host: "example.com"},
			status:  "5.4.4", reply: "name=gone.test type=A: Host not found", relay: "none",
		},
		{
			name:    "every server refuses connections",
			records: []string{"example.com. 300 IN MX 10 mx1.test.", "example.com. 300 IN MX 20 mx2.test."},
			peers:   []peer{{"mx1.test", "192.0.2.1", ""}, {"mx2.test", "192.0.2.2", ""}},
			dest:    Destination{Host: "example.com"},
			status:  "4.4.1", reply: "connect to mx2.test[192.0.2.2]:25: connection refused", relay: "none",
		},
		{
			name:    "every server refuses with 5xx",
			records: []string{"example.com. 300 IN MX 10 mx1.test.", "example.com. 300 IN MX 20 mx2.test."},
			peers:   []peer{{"mx1.test", "192.0.2.1", "554"}, {"mx2.test", "192.0.2.2", "554"}},
			dest:    Destination{Host: "example.com"},
			status:  "5.7.1", reply: "host mx2.test[192.0.2.2] refused to talk to me: 554 5.7.1 go away", relay: "mx2.test[192.0.2.2]:25",
		},
		{
			name:    "5xx and a connection failure defer",
			records: []string{"example.com. 300 IN MX 10 mx1.test.", "example.com. 300 IN MX 20 mx2.test."},
			peers:   []peer{{"mx1.test", "192.0.2.1", "554"}, {"mx2.test", "192.0.2.2", ""}},
			dest:    Destination{Host: "example.com"},
			status:  "4.4.1", reply: "connect to mx2.test", relay: "none",
		},
		{
			name:    "last temporary reply",
			records: []string{"example.com. 300 IN MX 10 mx1.test.", "example.com. 300 IN MX 20 mx2.test."},
			peers:   []peer{{"mx1.test", "192.0.2.1", ""}, {"mx2.test", "192.0.2.2", "421"}},
			dest:    Destination{Host: "example.com"},
			status:  "4.3.2", reply: "refused to talk to me: 421 4.3.2 busy", relay: "mx2.test[192.0.2.2]:25",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, tt.records...)
			e.dns.SetRcode("fail.test", mdns.RcodeServerFailure)
			servers := map[string]*server{}
			for _, p := range tt.peers {
				switch p.kind {
				case "smtp":
					servers[p.name] = e.serve(p.name, p.ip, serverConfig{})
				case "421", "554":
					greeting := "421 4.3.2 busy"
					if p.kind == "554" {
						greeting = "554 5.7.1 go away"
					}
					addr, _ := scriptServer(t, greeting, func(string) string { return "503 5.5.1 no" })
					e.dns.Add(p.name + ". 300 IN A " + p.ip)
					e.route(p.ip+":25", addr)
				default:
					e.dns.Add(p.name + ". 300 IN A " + p.ip)
				}
			}
			res := e.deliver(tt.dest, request("b@example.com"))
			checkResult(t, res[0], tt.status, tt.reply, tt.relay)
			for name, s := range servers {
				n := len(s.transactions())
				if want := name == tt.gotIt; want != (n == 1) {
					t.Errorf("%s got %d transactions, want message: %v", name, n, want)
				}
			}
		})
	}
}

func TestHosts(t *testing.T) {
	t.Parallel()
	e := newEnv(t,
		"example.com. 300 IN MX 10 a.example.com.",
		"example.com. 300 IN MX 10 b.example.com.",
		"example.com. 300 IN MX 20 c.example.com.",
		"example.com. 300 IN MX 30 noaddr.example.com.",
		"noaddr.example.com. 300 IN TXT x",
		"a.example.com. 300 IN A 192.0.2.1",
		"b.example.com. 300 IN A 192.0.2.2",
		"b.example.com. 300 IN AAAA 2001:db8::2",
		"c.example.com. 300 IN A 192.0.2.3",
		"implicit.test. 300 IN A 192.0.2.4",
		"null.test. 300 IN MX 0 .",
	)
	e.dns.SetRcode("fail.test", mdns.RcodeServerFailure)
	ctx := context.Background()

	seen := map[string]bool{}
	for range 40 {
		hosts, err := e.client.Hosts(ctx, Destination{Host: "example.com"})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, h := range hosts {
			names = append(names, h.Name)
		}
		order := strings.Join(names, " ")
		if order != "a.example.com b.example.com c.example.com" && order != "b.example.com a.example.com c.example.com" {
			t.Fatalf("hosts = %s", order)
		}
		seen[order] = true
		for _, h := range hosts {
			if h.Name == "b.example.com" {
				want := []netip.Addr{netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("2001:db8::2")}
				if h.Pref != 10 || !slices.Equal(h.Addrs, want) {
					t.Errorf("b = %+v", h)
				}
			}
		}
	}
	if len(seen) != 2 {
		t.Errorf("equal preferences were never shuffled: %v", seen)
	}

	tests := []struct {
		name  string
		dest  Destination
		hosts string // "name pref addr,addr; ..."
		check func(error) bool
	}{
		{"implicit mx", Destination{Host: "implicit.test"}, "implicit.test 0 192.0.2.4", nil},
		{"ip literal", Destination{Host: "[IPv6:2001:db8::9]", NoMX: true}, "2001:db8::9 0 2001:db8::9", nil},
		{"bracketed host", Destination{Host: "a.example.com", NoMX: true}, "a.example.com 0 192.0.2.1", nil},
		{"unix socket", Destination{Unix: "/run/lmtp", LMTP: true}, "/run/lmtp 0 ", nil},
		{"null mx", Destination{Host: "null.test"}, "", func(err error) bool { return errors.Is(err, resolver.ErrNullMX) && !resolver.IsTemporary(err) }},
		{"nxdomain", Destination{Host: "missing.test"}, "", resolver.IsNotFound},
		{"servfail", Destination{Host: "fail.test"}, "", resolver.IsTemporary},
	}
	for _, tt := range tests {
		hosts, err := e.client.Hosts(ctx, tt.dest)
		if tt.check != nil {
			if err == nil || !tt.check(err) {
				t.Errorf("%s: err = %v", tt.name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		var got []string
		for _, h := range hosts {
			var addrs []string
			for _, a := range h.Addrs {
				addrs = append(addrs, a.String())
			}
			got = append(got, h.Name+" "+strconv.Itoa(h.Pref)+" "+strings.Join(addrs, ","))
		}
		if g := strings.Join(got, "; "); g != tt.hosts {
			t.Errorf("%s: hosts = %q, want %q", tt.name, g, tt.hosts)
		}
	}
}

// --- the transaction ---

func TestRecipientReplies(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.serve("mx1.test", "192.0.2.1", serverConfig{})
	s.reject("tmp@example.com", 450, smtp.EnhancedCode{4, 2, 1}, "try later")
	s.reject("bad@example.com", 550, smtp.EnhancedCode{5, 1, 1}, "<bad@example.com>: no such user")
	dest := Destination{Host: "mx1.test", NoMX: true}

	res := e.deliver(dest, request("ok1@example.com", "tmp@example.com", "bad@example.com", "ok2@example.com"))
	checkResult(t, res[0], "2.0.0", "250 2.0.0", "mx1.test[192.0.2.1]:25")
	checkResult(t, res[1], "4.2.1", "host mx1.test[192.0.2.1] said: 450 4.2.1 try later (in reply to RCPT TO command)", "mx1.test[192.0.2.1]:25")
	checkResult(t, res[2], "5.1.1", "host mx1.test[192.0.2.1] said: 550 5.1.1 <bad@example.com>: no such user (in reply to RCPT TO command)", "")
	checkResult(t, res[3], "2.0.0", "250 2.0.0", "")
	txs := s.transactions()
	if len(txs) != 1 || !slices.Equal(txs[0].rcpts, []string{"ok1@example.com", "ok2@example.com"}) || !bytes.Equal(txs[0].data, testBody) {
		t.Fatalf("server saw %+v", txs)
	}
	if got := strings.Count(s.wireLog(), "DATA\r\n"); got != 1 {
		t.Errorf("DATA sent %d times", got)
	}
	if txs[0].mailOpts.Size != int64(len(testBody)) || txs[0].mailOpts.Body != smtp.Body8BitMIME {
		t.Errorf("MAIL options = %+v", txs[0].mailOpts)
	}
	if h := s.helloNames(); len(h) != 1 || h[0].name != ourName {
		t.Errorf("EHLO names = %v", h)
	}
}

func TestTransactionFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     serverConfig
		setup   func(*server)
		rcpts   []string
		status  []string
		reply   string
		wantTx  bool // MAIL was accepted
		wantDat bool // the body reached the server
	}{
		{
			name:   "no recipient accepted",
			setup:  func(s *server) { s.reject("bad@example.com", 550, smtp.EnhancedCode{5, 1, 1}, "no such user") },
			rcpts:  []string{"bad@example.com"},
			status: []string{"5.1.1"}, reply: "(in reply to RCPT TO command)", wantTx: true,
		},
		{
			name: "4xx on DATA defers everyone",
			setup: func(s *server) {
				s.dataErr = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "disk full"}
			},
			rcpts:  []string{"x@example.com", "y@example.com"},
			status: []string{"4.3.0", "4.3.0"}, reply: "said: 451 4.3.0 disk full (in reply to end of DATA command)", wantTx: true, wantDat: true,
		},
		{
			name: "5xx on DATA bounces",
			setup: func(s *server) {
				s.dataErr = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "spam"}
			},
			rcpts:  []string{"x@example.com"},
			status: []string{"5.6.0"}, reply: "554 5.6.0 spam", wantTx: true, wantDat: true,
		},
		{
			name:   "message too large for the server",
			cfg:    serverConfig{maxSize: 10},
			setup:  func(*server) {},
			rcpts:  []string{"x@example.com"},
			status: []string{"5.3.4"}, reply: "exceeds size limit 10 of server mx1.test[192.0.2.1]",
		},
		{
			name: "MAIL FROM rejected",
			setup: func(s *server) {
				s.mailErr = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 8}, Message: "bad sender"}
			},
			rcpts:  []string{"x@example.com", "y@example.com"},
			status: []string{"5.1.8", "5.1.8"}, reply: "(in reply to MAIL FROM command)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			s := e.serve("mx1.test", "192.0.2.1", tt.cfg)
			tt.setup(s)
			res := e.deliver(Destination{Host: "mx1.test", NoMX: true}, request(tt.rcpts...))
			for i, r := range res {
				checkResult(t, r, tt.status[i], tt.reply, "mx1.test[192.0.2.1]:25")
			}
			txs := s.transactions()
			if tt.wantTx != (len(txs) == 1) || tt.wantDat != (len(txs) == 1 && txs[0].data != nil) {
				t.Errorf("server saw %d transactions %+v", len(txs), txs)
			}
			// The server pipelines, so DATA itself goes out with the
			// envelope; the body must not.
			if !tt.wantDat && strings.Contains(s.wireLog(), "Subject: hi") {
				t.Error("the body was sent")
			}
		})
	}
}

func TestQuotedLocalPart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.serve("mx1.test", "192.0.2.1", serverConfig{})
	req := request("john doe@example.com")
	req.Sender = `a"b@example.org`
	res := e.deliver(Destination{Host: "mx1.test", NoMX: true}, req)
	checkResult(t, res[0], "2.0.0", "250", "")
	wire := s.wireLog()
	for _, want := range []string{`RCPT TO:<"john doe"@example.com>`, `MAIL FROM:<"a\"b"@example.org>`} {
		if !strings.Contains(wire, want) {
			t.Errorf("wire lacks %s:\n%s", want, wire)
		}
	}
}

func TestSMTPUTF8(t *testing.T) {
	t.Parallel()
	for _, offered := range []bool{false, true} {
		e := newEnv(t)
		s := e.serve("mx1.test", "192.0.2.1", serverConfig{utf8: offered})
		req := request("usér@example.com")
		req.SMTPUTF8 = true
		res := e.deliver(Destination{Host: "mx1.test", NoMX: true}, req)
		txs := s.transactions()
		if !offered {
			checkResult(t, res[0], "5.6.7", "SMTPUTF8 is required, but was not offered by host mx1.test[192.0.2.1]", "")
			if len(txs) != 0 {
				t.Errorf("MAIL sent to a server without SMTPUTF8: %+v", txs)
			}
			continue
		}
		checkResult(t, res[0], "2.0.0", "250", "")
		if len(txs) != 1 || !txs[0].mailOpts.UTF8 || txs[0].rcpts[0] != "usér@example.com" {
			t.Errorf("server saw %+v", txs)
		}
	}
}

func TestDSN(t *testing.T) {
	t.Parallel()
	req := &Request{
		QueueID: "Q1", Sender: "a@example.org", Body: bytes.NewReader(testBody), EnvID: "QQ+z", RetFull: true,
		Rcpts: []Rcpt{
			{Addr: "x@example.com", Notify: []string{"success", "FAILURE"}, ORcpt: "rfc822;orig@example.net"},
			{Addr: "y@example.com", Notify: []string{"FAILURE"}},
		},
	}
	t.Run("offered", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		s := e.serve("mx1.test", "192.0.2.1", serverConfig{dsn: true})
		res := e.deliver(Destination{Host: "mx1.test", NoMX: true}, req)
		if res[0].Enhanced != "2.0.0" || res[0].Relayed || res[1].Relayed {
			t.Errorf("results = %+v", res)
		}
		txs := s.transactions()
		if len(txs) != 1 {
			t.Fatalf("server saw %+v", txs)
		}
		tx := txs[0]
		if tx.mailOpts.Return != smtp.DSNReturnFull || tx.mailOpts.EnvelopeID != "QQ+z" {
			t.Errorf("MAIL options = %+v", tx.mailOpts)
		}
		o := tx.rcptOpts[0]
		if !slices.Equal(o.Notify, []smtp.DSNNotify{smtp.DSNNotifySuccess, smtp.DSNNotifyFailure}) ||
			o.OriginalRecipientType != smtp.DSNAddressTypeRFC822 || o.OriginalRecipient != "orig@example.net" {
			t.Errorf("RCPT options = %+v", o)
		}
	})
	t.Run("not offered", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		s := e.serve("mx1.test", "192.0.2.1", serverConfig{})
		res := e.deliver(Destination{Host: "mx1.test", NoMX: true}, req)
		if res[0].Enhanced != "2.0.0" || !res[0].Relayed || res[1].Relayed {
			t.Errorf("results = %+v", res)
		}
		if strings.Contains(s.wireLog(), "NOTIFY=") {
			t.Error("DSN parameters sent to a server without DSN")
		}
	})
}

// --- TLS and AUTH ---

func TestTLS(t *testing.T) {
	t.Parallel()
	c := certs()
	tests := []struct {
		name     string
		cfg      serverConfig
		dest     Destination
		tlsMax   uint16 // client's MaxVersion, to make the handshake fail
		status   string
		reply    string
		tls      string
		wantTx   bool
		wantConn int32
	}{
		{"verified", serverConfig{cert: &c.trusted}, Destination{}, 0, "2.0.0", "250", tlsVerified, true, 1},
		{"unverified", serverConfig{cert: &c.untrusted}, Destination{}, 0, "2.0.0", "250", tlsUnverified, true, 1},
		{"no STARTTLS offered", serverConfig{}, Destination{}, 0, "2.0.0", "250", tlsNone, true, 1},
		{"never STARTTLS", serverConfig{cert: &c.trusted}, Destination{NoTLS: true}, 0, "2.0.0", "250", tlsNone, true, 1},
		{"failed handshake falls back to plaintext", serverConfig{cert: &c.trusted, minTLS: tls.VersionTLS13}, Destination{}, tls.VersionTLS12, "2.0.0", "250", tlsNone, true, 2},
		{"required and verified", serverConfig{cert: &c.trusted}, Destination{RequireTLS: true}, 0, "2.0.0", "250", tlsVerified, true, 1},
		{"required, untrusted certificate", serverConfig{cert: &c.untrusted}, Destination{RequireTLS: true}, 0, "4.7.5", "TLS is required, but the certificate of host mx1.test[192.0.2.1] was not verified", tlsUnverified, false, 1},
		{"required, not offered", serverConfig{}, Destination{RequireTLS: true}, 0, "4.7.5", "TLS is required, but was not offered by host mx1.test[192.0.2.1]", tlsNone, false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.client.TLSConfig.MaxVersion = tt.tlsMax
			s := e.serve("mx1.test", "192.0.2.1", tt.cfg)
			dest := tt.dest
			dest.Host, dest.NoMX = "mx1.test", true
			res := e.deliver(dest, request("x@example.com"))
			checkResult(t, res[0], tt.status, tt.reply, "mx1.test[192.0.2.1]:25")
			if res[0].TLS != tt.tls {
				t.Errorf("TLS = %q, want %q", res[0].TLS, tt.tls)
			}
			txs := s.transactions()
			if tt.wantTx != (len(txs) == 1) {
				t.Fatalf("server saw %+v", txs)
			}
			if tt.wantTx && txs[0].tls != (tt.tls != tlsNone) {
				t.Errorf("server saw TLS %v", txs[0].tls)
			}
			if n := s.conns.Load(); n != tt.wantConn {
				t.Errorf("%d connections, want %d", n, tt.wantConn)
			}
			// The EHLO name is ours before and after STARTTLS.
			for _, h := range s.helloNames() {
				if h.name != ourName {
					t.Errorf("EHLO names = %v", s.helloNames())
				}
			}
			if tt.tls != tlsNone && tt.wantTx {
				if h := s.helloNames(); len(h) != 2 || h[0].tls || !h[1].tls {
					t.Errorf("EHLO before and after STARTTLS = %v", h)
				}
			}
		})
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	c := certs()
	tests := []struct {
		name   string
		cfg    serverConfig
		dest   Destination
		status string
		reply  string
		authOK int
	}{
		{"plain over TLS", serverConfig{cert: &c.trusted, user: "u", pass: "p"}, Destination{Auth: &Auth{User: "u", Password: "p"}}, "2.0.0", "250", 1},
		{"login over TLS", serverConfig{cert: &c.trusted, user: "u", pass: "p", mechs: []string{"LOGIN"}}, Destination{Auth: &Auth{User: "u", Password: "p"}}, "2.0.0", "250", 1},
		{"wrong password", serverConfig{cert: &c.trusted, user: "u", pass: "p"}, Destination{Auth: &Auth{User: "u", Password: "bad"}}, "4.7.8", "SASL authentication failed; server mx1.test[192.0.2.1] said: 535 5.7.8", 0},
		{"no credentials over plaintext", serverConfig{user: "u", pass: "p", insecureAuth: true}, Destination{Auth: &Auth{User: "u", Password: "p"}}, "4.7.0", "refusing to send credentials", 0},
		{"plaintext allowed", serverConfig{user: "u", pass: "p", insecureAuth: true}, Destination{Auth: &Auth{User: "u", Password: "p"}, AllowPlainAuth: true}, "2.0.0", "250", 1},
		{"no common mechanism", serverConfig{cert: &c.trusted, user: "u", pass: "p", mechs: []string{"CRAM-MD5"}}, Destination{Auth: &Auth{User: "u", Password: "p"}}, "4.7.0", "no mechanism available", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			s := e.serve("mx1.test", "192.0.2.1", tt.cfg)
			dest := tt.dest
			dest.Host, dest.NoMX = "mx1.test", true
			res := e.deliver(dest, request("x@example.com"))
			checkResult(t, res[0], tt.status, tt.reply, "mx1.test[192.0.2.1]:25")
			s.mu.Lock()
			authOK := s.authOK
			s.mu.Unlock()
			if authOK != tt.authOK {
				t.Errorf("%d logins, want %d", authOK, tt.authOK)
			}
			if sent := len(s.transactions()) == 1; sent != (tt.status[0] == '2') {
				t.Errorf("message sent: %v", sent)
			}
		})
	}
}

// --- connection reuse ---

func TestConnectionReuse(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "example.com. 300 IN MX 10 mx1.test.")
	e.client.MaxIdle = 2
	s := e.serve("mx1.test", "192.0.2.1", serverConfig{cert: &certs().trusted})
	dest := Destination{Host: "example.com"}
	for i := range 3 {
		res := e.deliver(dest, request("x@example.com"))
		checkResult(t, res[0], "2.0.0", "250", "mx1.test[192.0.2.1]:25")
		if res[0].TLS != tlsVerified {
			t.Errorf("delivery %d: TLS = %q", i, res[0].TLS)
		}
	}
	if n := s.conns.Load(); n != 1 {
		t.Errorf("%d connections for three deliveries, want 1", n)
	}
	if n := len(s.transactions()); n != 3 {
		t.Errorf("%d transactions, want 3", n)
	}
	// Another destination must not get this connection.
	e.dns.Add("example.net. 300 IN MX 10 mx1.test.")
	e.deliver(Destination{Host: "example.net"}, request("x@example.net"))
	if n := s.conns.Load(); n != 2 {
		t.Errorf("%d connections after a second destination, want 2", n)
	}
	e.client.Close()
	e.deliver(dest, request("x@example.com"))
	e.deliver(dest, request("x@example.com"))
	if n := s.conns.Load(); n != 4 {
		t.Errorf("%d connections after Close, want 4", n)
	}
}

func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.client.MaxIdle, e.client.IdleTimeout = 1, 50*time.Millisecond
	s := e.serve("mx1.test", "192.0.2.1", serverConfig{})
	dest := Destination{Host: "mx1.test", NoMX: true}
	e.deliver(dest, request("x@example.com"))
	time.Sleep(300 * time.Millisecond)
	res := e.deliver(dest, request("x@example.com"))
	checkResult(t, res[0], "2.0.0", "250", "")
	if n := s.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
	if !strings.Contains(s.wireLog(), "QUIT") {
		t.Error("idle connection closed without QUIT")
	}
}

func TestReuseOfDeadConnection(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.client.MaxIdle = 1
	s := e.serve("mx1.test", "192.0.2.1", serverConfig{})
	dest := Destination{Host: "mx1.test", NoMX: true}
	e.deliver(dest, request("x@example.com"))
	// Break the cached connection behind the cache's back.
	e.client.mu.Lock()
	for _, list := range e.client.idle {
		for _, se := range list {
			se.raw.Close()
		}
	}
	e.client.mu.Unlock()
	res := e.deliver(dest, request("x@example.com"))
	checkResult(t, res[0], "2.0.0", "250", "")
	if n := s.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

func TestContextEndsDelivery(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	addr, _ := scriptServer(t, "", nil) // accepts and stays silent
	e.dns.Add("mx1.test. 300 IN A 192.0.2.1")
	e.route("192.0.2.1:25", addr)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	res := e.client.Deliver(ctx, Destination{Host: "mx1.test", NoMX: true}, request("x@example.com"))
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Deliver took %v", d)
	}
	checkResult(t, res[0], "4.4.2", "initial server greeting: context deadline exceeded", "mx1.test[192.0.2.1]:25")
}

func TestHELOFallback(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	addr, rec := scriptServer(t, "220 old.test ready", func(line string) string {
		switch verb, _, _ := strings.Cut(line, " "); strings.ToUpper(verb) {
		case "EHLO":
			return "554 5.5.1 no ESMTP here"
		case "DATA":
			return "354 go ahead"
		case ".":
			return "250 queued as 42"
		}
		return "250 ok"
	})
	e.dns.Add("mx1.test. 300 IN A 192.0.2.1")
	e.route("192.0.2.1:25", addr)
	req := request("x@example.com")
	req.Body = bytes.NewReader([]byte("Subject: caf\xc3\xa9\r\n\r\ncaf\xc3\xa9\r\n"))
	res := e.deliver(Destination{Host: "mx1.test", NoMX: true}, req)
	checkResult(t, res[0], "2.0.0", "250 queued as 42", "mx1.test[192.0.2.1]:25")
	got := strings.Join(rec.all(), "\n")
	// No 8BITMIME, so no BODY parameter; the 8-bit body goes out as is.
	want := "EHLO " + ourName + "\nHELO " + ourName + "\nMAIL FROM:<a@example.org>\nRCPT TO:<x@example.com>\nDATA\n" +
		"Subject: caf\xc3\xa9\n\ncaf\xc3\xa9\n.\nQUIT"
	if got != want {
		t.Errorf("server received:\n%s\nwant:\n%s", got, want)
	}
}

// --- LMTP ---

func TestLMTP(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "lmtp.sock")
	tests := []struct {
		name  string
		cfg   serverConfig
		dest  func(s *server) Destination
		relay string
	}{
		{"tcp", serverConfig{lmtp: true}, func(s *server) Destination {
			ap := netip.MustParseAddrPort(s.addr)
			return Destination{Host: ap.Addr().String(), NoMX: true, Port: int(ap.Port()), LMTP: true}
		}, "127.0.0.1[127.0.0.1]:"},
		{"unix", serverConfig{lmtp: true, unix: sock}, func(*server) Destination {
			return Destination{Unix: sock, LMTP: true}
		}, ourName + "[" + sock + "]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.client.Dial = nil // real sockets, no fake addresses
			s := newServer(t, tt.cfg)
			s.reject("unknown@example.com", 550, smtp.EnhancedCode{5, 1, 1}, "no such user")
			s.mu.Lock()
			s.lmtpErr["full@example.com"] = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full"}
			s.lmtpErr["gone@example.com"] = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 2, 1}, Message: "mailbox disabled"}
			s.mu.Unlock()
			req := request("ok@example.com", "full@example.com", "unknown@example.com", "gone@example.com")
			req.Rcpts[0].Notify = []string{"SUCCESS"}
			res := e.deliver(tt.dest(s), req)
			if res[0].Relayed {
				t.Error("LMTP delivery marked relayed")
			}
			want := []struct{ status, reply string }{
				{"2.0.0", "250 2.0.0"},
				{"4.2.2", "452 4.2.2 <full@example.com> mailbox full (in reply to end of DATA command)"},
				{"5.1.1", "550 5.1.1 no such user (in reply to RCPT TO command)"},
				{"5.2.1", "550 5.2.1 <gone@example.com> mailbox disabled (in reply to end of DATA command)"},
			}
			for i, w := range want {
				checkResult(t, res[i], w.status, w.reply, "")
				if !strings.HasPrefix(res[i].Relay, tt.relay) {
					t.Errorf("relay = %q, want prefix %q", res[i].Relay, tt.relay)
				}
			}
			txs := s.transactions()
			if len(txs) != 1 || len(txs[0].rcpts) != 3 || !bytes.Equal(txs[0].data, testBody) {
				t.Errorf("server saw %+v", txs)
			}
			if h := s.helloNames(); len(h) != 1 || h[0].name != ourName {
				t.Errorf("LHLO names = %v", h)
			}
		})
	}
}

// --- pieces ---

func TestHandoffConn(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	h := &handoffConn{Conn: a, pending: []byte("220 x\r\n"), swallow: true}
	go func() {
		h.Write([]byte("EHLO "))
		h.Write([]byte("name\r\nNOOP\r\n"))
	}()
	got := make([]byte, 6)
	if _, err := io.ReadFull(b, got); err != nil || string(got) != "NOOP\r\n" {
		t.Errorf("peer read %q, %v", got, err)
	}
	buf := make([]byte, 16)
	if n, _ := h.Read(buf); string(buf[:n]) != "220 x\r\n" {
		t.Errorf("replay = %q", buf[:n])
	}
}

func TestParseReply(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code   int
		msg    string
		str    string
		status string
	}{
		{550, "5.1.1 no such user", "550 5.1.1 no such user", "5.1.1"},
		{451, "no enhanced code", "451 no enhanced code", "4.0.0"},
		{550, "4.1.1 class mismatch", "550 4.1.1 class mismatch", "5.1.1"},
		{421, "4.3.2 first\n4.3.2 second", "421 4.3.2 first second", "4.3.2"},
		{250, "2.0.0 Ok: queued as ABC", "250 2.0.0 Ok: queued as ABC", "2.0.0"},
	}
	for _, tt := range tests {
		r := parseReply(tt.code, tt.msg)
		if r.String() != tt.str || r.status() != tt.status {
			t.Errorf("parseReply(%d, %q) = %q %s, want %q %s", tt.code, tt.msg, r, r.status(), tt.str, tt.status)
		}
	}
}

func TestNotifySet(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   []string
		want []smtp.DSNNotify
	}{
		{[]string{"success", " FAILURE", "SUCCESS"}, []smtp.DSNNotify{smtp.DSNNotifySuccess, smtp.DSNNotifyFailure}},
		{[]string{"NEVER"}, []smtp.DSNNotify{smtp.DSNNotifyNever}},
		{[]string{"NEVER", "DELAY"}, nil},
		{[]string{"BOGUS"}, nil},
		{nil, nil},
	}
	for _, tt := range tests {
		if got := notifySet(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("notifySet(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// --- site failures ---

// TestSiteFailures: a failure to get a session is the destination's
// (Site, which the scheduler counts towards a dead destination); a reply
// in a transaction is not, nor is a delivery we called off ourselves.
func TestSiteFailures(t *testing.T) {
	t.Parallel()
	closedPort := func(t *testing.T) string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		return addr
	}
	script := func(greeting string, answers map[string]string) func(t *testing.T) string {
		return func(t *testing.T) string {
			addr, _ := scriptServer(t, greeting, func(line string) string {
				verb, _, _ := strings.Cut(line, " ")
				verb, _, _ = strings.Cut(verb, ":")
				if a, ok := answers[strings.ToUpper(verb)]; ok {
					return a
				}
				return "250 ok"
			})
			return addr
		}
	}
	tests := []struct {
		name   string
		server func(t *testing.T) string // the listener for mx1.test, "" for no address record
		auth   *Auth
		cancel bool // the delivery's context ends before it starts
		status string
		site   bool
	}{
		{name: "connection refused", server: closedPort, status: "4.4.1", site: true},
		{name: "no such host", server: func(*testing.T) string { return "" }, status: "5.4.4", site: true},
		{name: "421 greeting", server: script("421 4.3.2 busy", nil), status: "4.3.2", site: true},
		{name: "EHLO refused", server: script("220 mx1.test", map[string]string{"EHLO": "421 4.7.0 go away"}), status: "4.7.0", site: true},
		{name: "AUTH refused", server: func(t *testing.T) string {
			return newServer(t, serverConfig{cert: &certs().trusted, user: "u", pass: "p"}).addr
		}, auth: &Auth{User: "u", Password: "bad"}, status: "4.7.8", site: true},
		{name: "MAIL deferred", server: script("220 mx1.test", map[string]string{"MAIL": "451 4.3.0 try later"}), status: "4.3.0"},
		{name: "RCPT deferred", server: func(t *testing.T) string {
			s := newServer(t, serverConfig{})
			for _, rcpt := range []string{"x@example.com", "y@example.com"} {
				s.reject(rcpt, 450, smtp.EnhancedCode{4, 2, 1}, "try later")
			}
			return s.addr
		}, status: "4.2.1"},
		{name: "delivery called off", server: closedPort, cancel: true, status: "4.4.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			if addr := tt.server(t); addr != "" {
				e.dns.Add("mx1.test. 300 IN A 192.0.2.1")
				e.route("192.0.2.1:25", addr)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if tt.cancel {
				cancel()
			}
			dest := Destination{Host: "mx1.test", NoMX: true, Auth: tt.auth}
			res := e.client.Deliver(ctx, dest, request("x@example.com", "y@example.com"))
			for i, r := range res {
				if r.Enhanced != tt.status || r.Site != tt.site {
					t.Errorf("result %d = %+v, want status %s and Site %v", i, r, tt.status, tt.site)
				}
			}
		})
	}
}

// TestUnreadableBody: a body that cannot be read to its end must never
// reach the server as a shorter message. The transfer has begun when the
// read fails, so the session must end without the end-of-data dot that
// would make the server take what it got so far: the recipients are
// deferred, the reason names our disk rather than the server, and the
// server has no message.
func TestUnreadableBody(t *testing.T) {
	t.Parallel()
	var body []byte
	body = append(body, "From: a@example.org\r\nSubject: long\r\n\r\n"...)
	for len(body) < 200<<10 {
		body = append(body, strings.Repeat("x", 76)+"\r\n"...)
	}
	e := newEnv(t)
	s := e.serve("mx1.test", "192.0.2.1", serverConfig{})
	req := request("x@example.com")
	req.Body = enginetest.FailingBody{B: body, Fail: 100 << 10}
	start := time.Now()
	res := e.deliver(Destination{Host: "mx1.test", NoMX: true}, req)
	// Dropped at once: a QUIT would either end the data for the server
	// (net/textproto's writer) or go out as message text and wait out
	// the quit timeout for a reply that cannot come (the carried one's).
	if d := time.Since(start); d > time.Second {
		t.Errorf("the session took %v to end: it was not dropped", d)
	}
	checkResult(t, res[0], "4.3.0", "error reading the queued message while sending it to mx1.test[192.0.2.1]: read bodies/Q1: input/output error", "")
	for _, tx := range s.transactions() {
		if tx.data != nil {
			t.Fatalf("the server took a message of %d bytes (the body has %d)", len(tx.data), len(body))
		}
	}
}
