// Package smtpd is larkpost's SMTP server: go-smtp sessions that run the
// policy hooks at each stage and hand accepted messages to the next stage
// (a Sink). A 250 reply to DATA is sent only after the Sink has the message
// on disk.
package smtpd

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/emersion/go-smtp"

	"github.com/larkpost/larkpost/engine/auth"
	"github.com/larkpost/larkpost/engine/cleanup"
	"github.com/larkpost/larkpost/engine/milter"
	"github.com/larkpost/larkpost/rules"
	"github.com/larkpost/larkpost/rules/certs"
)

// Sink takes accepted messages (cleanup). Inject must return only once
// the message is durable: the client is told 250 right after. It takes
// over the Content's File on success; an error wrapping cleanup.ErrPolicy
// is the policy's failure, not the disk's.
type Sink interface {
	Inject(ctx context.Context, sub *cleanup.Submission) (string, error)
}

// Space is the queue file system's free space, for Postfix's
// queue_minfree check at MAIL FROM.
type Space interface {
	HasRoom(n, floor int64) bool
	Free() int64
}

// NameResolver finds a client's verified host name (forward-confirmed
// reverse DNS); temporary reports a DNS failure rather than "no name".
type NameResolver interface {
	VerifiedName(ctx context.Context, ip netip.Addr) (name string, temporary bool)
}

// Server runs SMTP listeners sharing one policy, sink and per-client limits.
type Server struct {
	Sink     Sink
	Bodies   BodyStore    // where large messages are spooled
	Space    Space        // nil: no free-space check
	Resolver NameResolver // nil: names are "unknown" except for loopback
	Log      *slog.Logger
	// Notify reports problems for the postmaster's notices (notify_classes):
	// "software" (a failing hook), "resource" (the queue cannot write),
	// "policy" (a policy reject), "protocol" (a client's protocol error).
	Notify func(class, text string)
	// Observe is told what sessions do (metrics, the web page); nil:
	// nothing is.
	Observe Observer
	// Certs are the server's certificates; nil offers no TLS.
	Certs *certs.Store
	// ClientCAs verify client certificates (smtpd_tls_CAfile); nil shows
	// them unverified.
	ClientCAs *x509.CertPool
	// Auth checks AUTH logins; nil offers no AUTH.
	Auth *auth.Authenticator
	// Milters are asked at each stage after the hooks (smtpd_milters).
	Milters []*milter.Milter

	policy   atomic.Pointer[rules.Policy]
	inflight atomic.Int64 // bytes held for messages being received, all sessions
	base     context.Context
	cancel   context.CancelFunc

	mu      sync.Mutex
	perIP   map[netip.Addr]int
	servers []*smtp.Server
	gates   []*gate
	// stopped: Shutdown or Close ran. A Serve that had not registered its
	// listener yet (its goroutine started late) must not begin serving
	// then: nothing would ever close it, and a shutdown right after the
	// start waited for it forever.
	stopped bool
}

// New returns a server using policy p. Listeners are added with Serve.
func New(p *rules.Policy, sink Sink, res NameResolver, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{Sink: sink, Resolver: res, Log: log, perIP: map[netip.Addr]int{}}
	s.base, s.cancel = context.WithCancel(context.Background())
	s.policy.Store(p)
	return s
}

// charge takes n bytes of the sessions' shared memory budget
// (smtpd_inflight_bytes), if there are that many left.
func (s *Server) charge(n int64) bool {
	limit := s.Policy().Settings.InflightBytes
	for {
		cur := s.inflight.Load()
		if cur+n > limit {
			return false
		}
		if s.inflight.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

func (s *Server) uncharge(n int64) { s.inflight.Add(-n) }

// Inflight is the memory sessions hold for messages being received.
func (s *Server) Inflight() int64 { return s.inflight.Load() }

// Policy returns the policy new connections get.
func (s *Server) Policy() *rules.Policy { return s.policy.Load() }

// SetPolicy replaces the policy for new connections; sessions in progress
// keep the one they started with.
func (s *Server) SetPolicy(p *rules.Policy) { s.policy.Store(p) }

// Serve accepts SMTP connections on l under the listener name until
// Shutdown or Close.
func (s *Server) Serve(name string, l net.Listener) error {
	p := s.Policy()
	set := p.Settings
	srv := smtp.NewServer(&backend{s: s})
	srv.Domain = set.Hostname
	srv.MaxMessageBytes = set.MessageSizeLimit
	srv.MaxRecipients = set.RecipientLimit
	srv.MaxLineLength = set.LineLengthLimit
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = true
	srv.ReadTimeout = 0  // clientConn enforces command, DATA and session deadlines
	srv.WriteTimeout = 0 // and the write deadline, which shrinks under stress
	srv.ErrorLog = log.New(slogWriter{s.Log}, "", 0)
	// go-smtp gets no TLSConfig: clientConn does STARTTLS (see tls.go),
	// and the session decides when AUTH is offered.
	srv.AllowInsecureAuth = true
	ln := set.Listener(name)
	if ln.ProxyProtocol {
		l = proxyListener(l, set.ProxyNetworks)
	}
	g := &gate{Listener: l, s: s, name: name, conns: make(chan net.Conn), done: make(chan struct{}), open: map[*clientConn]struct{}{},
		listener: ln, tlsCfg: s.tlsConfig(ln, set)}
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	s.servers = append(s.servers, srv)
	s.gates = append(s.gates, g)
	s.mu.Unlock()
	go g.loop()
	err := srv.Serve(g)
	if errors.Is(err, smtp.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, ends idle sessions with 421, lets sessions in
// a transaction finish until ctx is done, then closes the rest.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.stopped = true
	servers := append([]*smtp.Server(nil), s.servers...)
	gates := append([]*gate(nil), s.gates...)
	s.mu.Unlock()
	for _, g := range gates {
		g.Close()
		g.drain()
	}
	var errs []error
	for _, srv := range servers {
		if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			srv.Close()
			errs = append(errs, err)
		}
	}
	s.cancel()
	return errors.Join(errs...)
}

// Close stops everything at once.
func (s *Server) Close() error {
	s.mu.Lock()
	s.stopped = true
	servers := append([]*smtp.Server(nil), s.servers...)
	s.mu.Unlock()
	for _, srv := range servers {
		srv.Close()
	}
	s.cancel()
	return nil
}

// slogWriter turns go-smtp's log.Logger output into warning lines.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(b []byte) (int, error) {
	w.l.Warn(fmt.Sprintf("smtp: %s", trimNL(b)))
	return len(b), nil
}

func trimNL(b []byte) string {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return string(b)
}

type backend struct{ s *Server }

var _ smtp.Backend = (*backend)(nil)

func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	cc := unwrapConn(c.Conn())
	if cc == nil {
		return nil, &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Error: internal error"}
	}
	return newSession(b.s, cc, c)
}

func (s *Server) notify(class, text string) {
	if s.Notify != nil {
		s.Notify(class, text)
	}
}
