package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
)

// gate is the listener go-smtp serves. go-smtp creates a session only at
// EHLO, so connection limits, the client's name and on_connect run here,
// before a connection is handed over; a refused client never sees go-smtp.
type gate struct {
	net.Listener
	s         *Server
	name      string
	listener  rules.Listener
	tlsCfg    *tls.Config // nil: no TLS on this listener
	conns     chan net.Conn
	done      chan struct{}
	once      sync.Once // closes done
	closeOnce sync.Once
	active    atomic.Int64
	stress    atomic.Bool // open sessions at or past smtpd_stress_threshold
	err       error

	mu   sync.Mutex
	open map[*clientConn]struct{}
}

// drain asks every open session to end (see clientConn.drainNow).
func (g *gate) drain() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for c := range g.open {
		c.drainNow()
	}
}

func (g *gate) stressed() bool { return g.stress.Load() }

// updateStress switches the listener in and out of stress, Postfix's
// overload mode: past smtpd_stress_threshold open sessions every
// session's timeouts drop to smtpd_stress_timeout, reads already waiting
// included, so idle and slow clients give their slots up quickly.
func (g *gate) updateStress(active int64, threshold int) {
	on := active >= int64(threshold)
	if g.stress.Swap(on) == on {
		return
	}
	if on {
		g.s.Log.Warn("warning: " + g.name + ": " + itoa64(active) + " sessions: stress mode on, timeouts shortened")
	} else {
		g.s.Log.Info(g.name + ": stress mode off")
	}
	g.mu.Lock()
	conns := make([]*clientConn, 0, len(g.open))
	for c := range g.open {
		conns = append(conns, c)
	}
	g.mu.Unlock()
	for _, c := range conns {
		c.rearm()
	}
}

func (g *gate) Accept() (net.Conn, error) {
	select {
	case c := <-g.conns:
		return c, nil
	case <-g.done:
		if g.err != nil {
			return nil, g.err
		}
		return nil, net.ErrClosed
	}
}

// Close is idempotent: both Shutdown and go-smtp close the gate.
func (g *gate) Close() error {
	var err error
	g.closeOnce.Do(func() {
		g.once.Do(func() { close(g.done) })
		err = g.Listener.Close()
	})
	return err
}

func (g *gate) loop() {
	var backoff time.Duration
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, errTooManyFiles) {
				// Out of file descriptors or a transient error: pause
				// like net/http does instead of spinning.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				g.s.Log.Warn("accept: " + err.Error() + "; retrying")
				time.Sleep(backoff)
				continue
			}
			// Set err only inside once: Accept reads it after done closes.
			g.once.Do(func() {
				g.err = fmt.Errorf("accept: %v", err)
				close(g.done)
			})
			return
		}
		backoff = 0
		go g.admit(c)
	}
}

// admit applies the connection limits and on_connect, then hands the
// connection to go-smtp.
func (g *gate) admit(raw net.Conn) {
	p := g.s.Policy()
	set := p.Settings
	if !g.proxyHeader(raw) {
		return
	}
	now := time.Now()
	cc := newClientConn(raw, now)
	cc.policy = p
	cc.gate = g
	cc.banner = set.Banner
	cc.host = set.Hostname
	cc.timeout, cc.stressTimeout = set.Timeout, set.StressTimeout
	cc.dataMax = set.DataTimeout
	cc.minRate = set.MinDataRate
	cc.end = now.Add(set.SessionTimeout)
	ap, _ := netip.ParseAddrPort(raw.RemoteAddr().String())
	cc.info = rules.Conn{IP: ap.Addr().Unmap(), Port: int(ap.Port()), Listener: g.name, RDNS: "unknown"}
	cc.info.InNetworks = set.InNetworks(cc.info.IP)
	cc.ctx, cc.cancel = context.WithCancel(g.s.base)
	obs := g.s.observer()
	obs.Connected(g.name)

	total := g.active.Add(1)
	g.mu.Lock()
	g.open[cc] = struct{}{}
	g.mu.Unlock()
	g.s.mu.Lock()
	g.s.perIP[cc.info.IP]++
	perIP := g.s.perIP[cc.info.IP]
	g.s.mu.Unlock()
	cc.onRefusal = func(verb, reply string) {
		proto := "SMTP"
		if cc.esmtp.Load() {
			proto = "ESMTP"
		}
		g.s.Log.Info("NOQUEUE: reject: " + verb + " from " + cc.client() + ": " + reply + "; proto=" + proto + " helo=<" + cc.info.Helo + ">")
		code, status, text := splitReply(reply)
		obs.Rejected(Reject{Listener: g.name, Stage: verb, Code: code, Status: status, Text: text, Decider: "smtpd", ID: "NOQUEUE", Client: cc.client()})
	}
	cc.onTimeout = func(cc *clientConn) {
		g.s.Log.Info("timeout after " + cc.lastVerb() + " from " + cc.client())
		cc.setOutcome("timeout")
	}
	cc.onClose = func(cc *clientConn) {
		g.updateStress(g.active.Add(-1), set.StressThreshold)
		g.mu.Lock()
		delete(g.open, cc)
		g.mu.Unlock()
		g.s.mu.Lock()
		if g.s.perIP[cc.info.IP]--; g.s.perIP[cc.info.IP] <= 0 {
			delete(g.s.perIP, cc.info.IP)
		}
		g.s.mu.Unlock()
		cc.cancel()
		cc.closeMilters()
		g.s.Log.Info("disconnect from " + cc.client() + " " + cc.summary())
		obs.Disconnected(g.name, cc.endOutcome())
	}

	g.updateStress(total, set.StressThreshold)
	// The last smtpd_networks_reserve slots are for trusted clients, so
	// that a flood from outside cannot lock the admin's own hosts out.
	limit := int64(set.ConnectionLimit)
	if !cc.info.InNetworks {
		limit -= int64(set.NetworksReserve)
	}
	if total > limit {
		g.refuse(cc, "421 4.7.0 "+set.Hostname+" Error: too many connections", "connection limit")
		return
	}
	if set.ClientConnectionLimit > 0 && perIP > set.ClientConnectionLimit && !cc.info.InNetworks {
		g.refuse(cc, "421 4.7.0 "+set.Hostname+" Error: too many connections from "+cc.info.IP.String(), "client connection limit")
		return
	}

	cc.listener = g.listener
	cc.onTLS = func(cc *clientConn) {
		g.s.Log.Info(tlsLogLine(cc.client(), cc.info.TLSInfo))
		obs.TLS(g.name, cc.info.TLSInfo.Version, nil)
	}
	cc.onTLSError = func(cc *clientConn, err error) {
		g.s.Log.Info("SSL_accept error from " + cc.client() + ": " + err.Error())
		obs.TLS(g.name, "", err)
	}
	cc.info.RDNS = g.clientName(cc)
	g.s.Log.Info("connect from " + cc.client())
	if g.listener.WrapperMode {
		// Implicit TLS (port 465): the handshake comes before the banner,
		// and on_connect sees its result.
		t, err := cc.handshake(g.tlsCfg)
		if err != nil {
			cc.onTLSError(cc, err)
			cc.Close()
			return
		}
		cc.tlsc = t
		cc.info.TLS, cc.info.TLSInfo = true, g.s.tlsInfo(t.ConnectionState())
		cc.info.TLSInfo.CertAsked = g.tlsCfg.ClientAuth != tls.NoClientCert
		cc.onTLS(cc)
	} else {
		cc.tlsCfg = g.tlsCfg
	}

	cc.intake = rules.NewIntake(p, &cc.info, queue.NewID)
	d := cc.intake.Connect(cc.ctx)
	if !d.Refused() {
		d = g.s.openMilters(cc)
	}
	if d.Refused() {
		d.LogFailure(g.s.Log, "client", cc.client())
		g.s.Log.Info("NOQUEUE: reject: CONNECT from " + cc.client() + ": " + itoa(d.Code) + " " + d.Status + " " + d.Text + "; source=" + d.Source)
		cc.setOutcome("refused")
		obs.Rejected(Reject{Listener: g.name, Stage: "CONNECT", Code: d.Code, Status: d.Status, Text: firstLine(d.Text), Decider: Decider(d), ID: "NOQUEUE", Client: cc.client()})
		cc.Write([]byte(itoa(d.Code) + " " + d.Status + " " + firstLine(d.Text) + "\r\n"))
		cc.Close()
		return
	}
	select {
	case g.conns <- cc:
	case <-g.done:
		cc.Close()
	}
}

var errTooManyFiles error = syscall.EMFILE

func (g *gate) refuse(cc *clientConn, reply, why string) {
	g.s.Log.Warn("warning: " + why + " exceeded for " + cc.client())
	cc.setOutcome("refused")
	code, status, text := splitReply(reply)
	g.s.observer().Rejected(Reject{Listener: g.name, Stage: "CONNECT", Code: code, Status: status, Text: text, Decider: "limit", ID: "NOQUEUE", Client: cc.client()})
	cc.send([]byte(reply + "\r\n"))
	cc.Close()
}

// clientName is the verified reverse-DNS name, "localhost" for loopback
// without asking DNS, or "unknown".
func (g *gate) clientName(cc *clientConn) string {
	ip := cc.info.IP
	if ip.IsLoopback() {
		return "localhost"
	}
	if !cc.policy.Settings.PeernameLookup || g.s.Resolver == nil {
		return "unknown"
	}
	ctx, cancel := context.WithTimeout(cc.ctx, 10*time.Second)
	defer cancel()
	name, _ := g.s.Resolver.VerifiedName(ctx, ip)
	if name == "" {
		name = "unknown"
	}
	return name
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
