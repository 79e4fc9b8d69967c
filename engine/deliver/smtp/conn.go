package smtp

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/larkpost/larkpost/engine/deliver"
	"github.com/larkpost/larkpost/engine/tlspolicy"
)

// target is one address to try.
type target struct {
	name             string // host name: the TLS server name and what logs show
	namaddr          string // "mx.example.com[192.0.2.1]", as in Postfix's replies
	relay            string // namaddr plus ":port" for TCP
	network, address string
}

func tcpTarget(name string, ip netip.Addr, port int) target {
	namaddr := name + "[" + ip.String() + "]"
	return target{
		name:    name,
		namaddr: namaddr,
		relay:   namaddr + ":" + strconv.Itoa(port),
		network: "tcp",
		address: net.JoinHostPort(ip.String(), strconv.Itoa(port)),
	}
}

// unixTarget names a socket the way Postfix's lmtp does: our own host name
// with the path where an address would be.
func unixTarget(hostname, path string) target {
	namaddr := hostname + "[" + path + "]"
	return target{name: hostname, namaddr: namaddr, relay: namaddr, network: "unix", address: path}
}

// failure is an outcome that applies to every recipient: the destination
// could not be resolved, or no server took the session.
type failure struct {
	status, reason string
	relay, tls     string // "" = none
	// perm marks a 5xx refusal of the session; when every server refuses
	// so, the mail bounces instead of waiting.
	perm bool
	// retryPlain asks for another connection without STARTTLS: the TLS
	// handshake failed and TLS was only opportunistic.
	retryPlain bool
}

func (f *failure) fill(res []Result) {
	r := Result{Status: deliver.Status{Enhanced: f.status, Text: f.reason}, Relay: f.relay, TLS: f.tls}
	if r.Relay == "" {
		r.Relay = "none"
	}
	if r.TLS == "" {
		r.TLS = tlsNone
	}
	for i := range res {
		res[i] = r
	}
}

const (
	tlsNone       = "none"
	tlsUnverified = "unverified"
	tlsVerified   = "verified"
)

// session is one connection that got through greeting, EHLO and the
// optional STARTTLS and AUTH.
type session struct {
	c       *Client
	t       target
	key     string   // destination key in the idle cache
	raw     net.Conn // the dialled connection; closing it ends the session
	conn    net.Conn // raw, or the TLS connection over it
	client  *smtp.Client
	tls     string
	dec     *tlspolicy.Decision // the TLS policy for this host, nil: the level alone
	lmtp    bool
	primary bool // the server is a most-preferred MX, so the session may be cached
	// open: a transaction may still be open on the server (MAIL was
	// taken and no reply to the data ended it), so reuse must RSET.
	open bool
	// reused: the session came from the idle cache, so a connection
	// found closed before anything was accepted is worth another try.
	reused bool
	// inData: the body is being sent. A session given up now must not
	// say QUIT: net/textproto's DATA writer (go-smtp's upstream) ends the
	// data with its dot first, and the server takes the part it got for
	// the whole message; the carried go-smtp's writer does not, and QUIT
	// would go out as message text. Either way: drop the connection.
	inData bool

	h    *handoffConn // what go-smtp talks over
	ehlo []byte       // the greeting and EHLO reply go-smtp was given
	rec  *recorder    // formats pipelined commands; nil until needed

	stop      func() bool // ends the context watch started by watch
	idleTimer *time.Timer // closes the session while it is cached
}

// watch closes the connection when ctx ends. go-smtp sets its own deadline
// for every command, so closing is the only way to make it honour ctx.
func (s *session) watch(ctx context.Context) {
	raw := s.raw
	s.stop = context.AfterFunc(ctx, func() { raw.Close() })
}

// unwatch ends the watch and reports whether the connection survived it.
func (s *session) unwatch() bool { return s.stop() }

func (s *session) fail(status, reason string, perm bool) *failure {
	return &failure{status: status, reason: reason, relay: s.t.relay, tls: s.tls, perm: perm}
}

// quit ends the session politely, without waiting long for the answer.
func (s *session) quit() {
	if s.client == nil || s.inData {
		s.raw.Close()
		return
	}
	s.client.CommandTimeout = quitTimeout
	if err := s.client.Quit(); err != nil {
		s.client.Close()
	}
}

// connect resolves dest and opens a session with the first server that
// takes one, trying hosts and addresses in order like Postfix.
func (c *Client) connect(ctx context.Context, dest Destination, queueID string) (*session, *failure) {
	hosts, err := c.mxHosts(ctx, dest)
	if err != nil {
		return nil, dnsFailure(err, true)
	}
	var (
		last   *failure
		dnsErr error
		all5xx = true
		tried  = 0
	)
hosts:
	for i := range hosts {
		if tried == maxAddrs || ctx.Err() != nil {
			break
		}
		h := &hosts[i]
		var targets []target
		if dest.Unix != "" {
			targets = []target{unixTarget(c.hostname(), dest.Unix)}
		} else {
			if err := c.lookupAddrs(ctx, h); err != nil {
				// A temporary failure outranks "no such host": the
				// host may exist after all, so the mail should wait.
				if dnsErr == nil || isTemporaryDNS(err) && !isTemporaryDNS(dnsErr) {
					dnsErr = err
				}
				continue
			}
			for _, ip := range h.Addrs {
				targets = append(targets, tcpTarget(h.Name, ip, port(dest)))
			}
		}
		dec, f := c.tlsDecision(ctx, dest, h.Name)
		if f != nil {
			last = f
			all5xx = false
			continue
		}
		for _, t := range targets {
			if tried == maxAddrs || ctx.Err() != nil {
				break hosts
			}
			tried++
			s, f := c.open(ctx, dest, t, dest.NoTLS, queueID, dec)
			if f != nil && f.retryPlain {
				s, f = c.open(ctx, dest, t, true, queueID, dec)
			}
			if f == nil {
				s.primary = h.Pref == hosts[0].Pref
				return s, nil
			}
			last = f
			all5xx = all5xx && f.perm
		}
	}
	if last == nil {
		if dnsErr == nil {
			// Only a context that ended before the first attempt gets
			// here.
			return nil, &failure{status: "4.4.1", reason: fmt.Sprintf("delivery to %s stopped: %v", dest.Host, ctx.Err())}
		}
		return nil, dnsFailure(dnsErr, false)
	}
	if !all5xx {
		last.status = asTemporary(last.status)
	}
	return nil, last
}

// open runs one connection attempt and logs it.
func (c *Client) open(ctx context.Context, dest Destination, t target, noTLS bool, queueID string, dec *tlspolicy.Decision) (*session, *failure) {
	s, f := c.handshake(ctx, dest, t, noTLS, dec)
	proto := "smtp"
	if dest.LMTP {
		proto = "lmtp"
	}
	if f != nil {
		c.log().Debug(proto+" connection failed", "queue_id", queueID, "relay", t.relay, "reason", f.reason)
	} else {
		c.log().Debug(proto+" connection", "queue_id", queueID, "relay", t.relay, "tls", s.tls)
	}
	return s, f
}

// handshake dials t and takes the session to the point where mail can be
// sent: greeting, EHLO (or HELO), STARTTLS and a second EHLO, AUTH. On
// success the context watch is left running for the transaction.
func (c *Client) handshake(ctx context.Context, dest Destination, t target, noTLS bool, dec *tlspolicy.Decision) (s *session, f *failure) {
	dctx, cancel := context.WithTimeout(ctx, c.dialTimeout())
	raw, err := c.dial(dctx, t.network, t.address)
	cancel()
	if err != nil {
		return nil, &failure{status: "4.4.1", reason: fmt.Sprintf("connect to %s: %s", t.relay, errText(err))}
	}
	s = &session{c: c, t: t, raw: raw, conn: raw, tls: tlsNone, lmtp: dest.LMTP, dec: dec}
	s.watch(ctx)
	defer func() {
		if f != nil {
			s.unwatch()
			if s.client != nil {
				s.quit()
			}
			raw.Close()
			s = nil
		}
	}()

	tp := textproto.NewConn(raw)
	s.deadline()
	if _, _, err := tp.ReadResponse(220); err != nil {
		if r, ok := protoReply(err); ok {
			s.quitRaw(tp)
			return s, s.fail(r.status(), fmt.Sprintf("host %s refused to talk to me: %s", t.namaddr, r), r.class() == 5)
		}
		return s, s.fail("4.4.2", lost(ctx, t.namaddr, "receiving the initial server greeting", err), false)
	}
	lines, f := s.hello(ctx, tp)
	if f != nil {
		return s, f
	}
	offered := hasExt(lines, "STARTTLS")
	if offered && !noTLS && t.network != "unix" {
		var ok bool
		if tp, ok, f = s.startTLS(ctx, tp, dest.RequireTLS); f != nil {
			return s, f
		}
		if ok {
			if lines, f = s.hello(ctx, tp); f != nil {
				return s, f
			}
		}
	}
	if dest.RequireTLS && s.tls != tlsVerified {
		s.quitRaw(tp)
		return s, s.fail("4.7.5", fmt.Sprintf("TLS is required, but was not offered by host %s", t.namaddr), false)
	}
	if dec != nil && s.tls == tlsNone {
		if v := dec.CheckTLS(tlspolicy.ErrNoSTARTTLS); !v.Deliver {
			s.quitRaw(tp)
			return s, s.fail("4.7.5", v.Report+" ("+dec.Why+")", false)
		}
	}
	if err := s.handoff(tp, lines); err != nil {
		return s, s.fail("4.4.2", lost(ctx, t.namaddr, "handing over the session", err), false)
	}
	if dest.Auth != nil {
		if f = s.auth(ctx, dest); f != nil {
			return s, f
		}
	}
	s.raw.SetDeadline(time.Time{})
	return s, nil
}

func (s *session) deadline() {
	s.conn.SetDeadline(time.Now().Add(s.c.commandTimeout()))
}

// cmd sends one command and reads the reply, for the part of the session
// that precedes the handoff to go-smtp.
func (s *session) cmd(tp *textproto.Conn, expect int, format string, args ...any) (string, error) {
	s.deadline()
	id, err := tp.Cmd(format, args...)
	if err != nil {
		return "", err
	}
	tp.StartResponse(id)
	defer tp.EndResponse(id)
	_, msg, err := tp.ReadResponse(expect)
	return msg, err
}

// quitRaw says QUIT before the handoff, for servers that wait for it after
// refusing us; the answer does not matter.
func (s *session) quitRaw(tp *textproto.Conn) {
	s.conn.SetDeadline(time.Now().Add(quitTimeout))
	if id, err := tp.Cmd("QUIT"); err == nil {
		tp.StartResponse(id)
		tp.ReadResponse(221)
		tp.EndResponse(id)
	}
}

// hello sends EHLO (LHLO) and returns the reply lines. Like Postfix it falls
// back to HELO when EHLO gets a 5xx: RFC 5321 servers without ESMTP may
// answer anything from 500 to 554, and go-smtp only handles 500 and 502.
func (s *session) hello(ctx context.Context, tp *textproto.Conn) ([]string, *failure) {
	verb := "EHLO"
	if s.lmtp {
		verb = "LHLO"
	}
	name := s.c.hostname()
	msg, err := s.cmd(tp, 250, "%s %s", verb, name)
	if err == nil {
		return strings.Split(msg, "\n"), nil
	}
	r, ok := protoReply(err)
	if !ok {
		return nil, s.fail("4.4.2", lost(ctx, s.t.namaddr, "performing the "+verb+" handshake", err), false)
	}
	if s.lmtp || r.class() != 5 {
		s.quitRaw(tp)
		return nil, s.fail(r.status(), fmt.Sprintf("host %s refused to talk to me: %s", s.t.namaddr, r), r.class() == 5)
	}
	msg, err = s.cmd(tp, 250, "HELO %s", name)
	if err != nil {
		if r, ok := protoReply(err); ok {
			s.quitRaw(tp)
			return nil, s.fail(r.status(), fmt.Sprintf("host %s refused to talk to me: %s", s.t.namaddr, r), r.class() == 5)
		}
		return nil, s.fail("4.4.2", lost(ctx, s.t.namaddr, "performing the HELO handshake", err), false)
	}
	// Only the first line: go-smtp would take further lines for
	// extensions, and HELO announces none.
	first, _, _ := strings.Cut(msg, "\n")
	return []string{first}, nil
}

// hasExt reports whether the EHLO reply lines announce keyword; the first
// line is the server's greeting, not an extension.
func hasExt(lines []string, keyword string) bool {
	for i, l := range lines {
		k, _, _ := strings.Cut(l, " ")
		if i > 0 && strings.EqualFold(k, keyword) {
			return true
		}
	}
	return false
}

// startTLS upgrades the session. ok false with a nil failure means the
// server refused STARTTLS and the plaintext session goes on, as
// opportunistic TLS allows.
func (s *session) startTLS(ctx context.Context, tp *textproto.Conn, require bool) (_ *textproto.Conn, ok bool, _ *failure) {
	namaddr := s.t.namaddr
	if _, err := s.cmd(tp, 220, "STARTTLS"); err != nil {
		r, isReply := protoReply(err)
		if !isReply {
			return tp, false, s.fail("4.4.2", lost(ctx, namaddr, "sending STARTTLS", err), false)
		}
		if require || s.dec != nil && s.dec.RequireTLS {
			s.quitRaw(tp)
			return tp, false, s.fail("4.7.5", fmt.Sprintf("TLS is required, but host %s refused to start TLS: %s", namaddr, r), false)
		}
		return tp, false, nil
	}
	if tp.R.Buffered() > 0 {
		// Bytes that arrived with the 220 would be taken for TLS-protected
		// replies: the classic STARTTLS response injection.
		return tp, false, s.fail("4.4.2", fmt.Sprintf("host %s sent unexpected data after its STARTTLS reply", namaddr), false)
	}
	tc := tls.Client(s.raw, s.c.tlsConfig(s.t.name))
	hctx, cancel := context.WithTimeout(ctx, s.c.commandTimeout())
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		if require || s.dec != nil && s.dec.RequireTLS {
			return tp, false, s.fail("4.7.5", fmt.Sprintf("TLS is required, but the TLS handshake with host %s failed: %v", namaddr, err), false)
		}
		f := s.fail("4.7.5", fmt.Sprintf("TLS handshake with host %s failed: %v", namaddr, err), false)
		f.retryPlain = true
		return tp, false, f
	}
	s.conn = tc
	s.tls = tlsVerified
	tp = textproto.NewConn(tc)
	if d := s.dec; d != nil && d.Auth != tlspolicy.AuthNone {
		// DANE or MTA-STS: their verification, their verdict.
		verr := d.CheckPeer(s.c.TLSConfig, tc.ConnectionState())
		if verr != nil {
			s.tls = tlsUnverified
		}
		v := d.CheckTLS(verr)
		if !v.Deliver {
			s.quitRaw(tp)
			return tp, false, s.fail("4.7.5", v.Report+" ("+d.Why+")", false)
		}
		if v.Report != "" {
			s.c.log().Warn("warning: " + v.Report)
		}
		return tp, true, nil
	}
	if verr := verifyPeer(s.c.TLSConfig, s.t.name, tc.ConnectionState()); verr != nil {
		s.tls = tlsUnverified
		if require {
			s.quitRaw(tp)
			return tp, false, s.fail("4.7.5", fmt.Sprintf("TLS is required, but the certificate of host %s was not verified: %v", namaddr, verr), false)
		}
	}
	return tp, true, nil
}

// handoff gives the session to go-smtp, which wants to read a greeting and
// send EHLO itself: handoffConn plays back a greeting and the EHLO reply we
// already have and drops go-smtp's EHLO line, so the server sees one EHLO
// and go-smtp learns the real extensions.
func (s *session) handoff(tp *textproto.Conn, lines []string) error {
	var b bytes.Buffer
	b.WriteString("220 " + s.t.name + "\r\n")
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		b.WriteString("250" + sep + l + "\r\n")
	}
	s.ehlo = bytes.Clone(b.Bytes())
	// Whatever the reader buffered belongs after the replayed replies.
	if n := tp.R.Buffered(); n > 0 {
		p, _ := tp.R.Peek(n)
		b.Write(p)
	}
	h := &handoffConn{Conn: s.conn, pending: b.Bytes(), swallow: true}
	s.h = h
	if s.lmtp {
		s.client = smtp.NewClientLMTP(h)
	} else {
		s.client = smtp.NewClient(h)
	}
	s.client.CommandTimeout = s.c.commandTimeout()
	s.client.SubmissionTimeout = s.c.dataTimeout()
	return s.client.Hello(s.c.hostname())
}

// handoffConn is the connection go-smtp talks over; see session.handoff
// and, for ahead and capture, pipeline.go.
type handoffConn struct {
	net.Conn
	pending []byte        // replayed replies, read before the connection
	swallow bool          // dropping go-smtp's EHLO line
	ahead   []byte        // commands already sent, which go-smtp's writes must match
	capture *bytes.Buffer // when set, keeps what go-smtp reads (a new EHLO reply)
}

func (h *handoffConn) Read(p []byte) (int, error) {
	if len(h.pending) > 0 {
		n := copy(p, h.pending)
		h.pending = h.pending[n:]
		return n, nil
	}
	n, err := h.Conn.Read(p)
	if h.capture != nil {
		h.capture.Write(p[:n])
	}
	return n, err
}

func (h *handoffConn) Write(p []byte) (int, error) {
	if len(h.ahead) > 0 {
		n := min(len(p), len(h.ahead))
		if !bytes.Equal(p[:n], h.ahead[:n]) {
			h.ahead = nil
			return 0, errOutOfStep
		}
		h.ahead = h.ahead[n:]
		if n == len(p) {
			return n, nil
		}
		m, err := h.Conn.Write(p[n:])
		return n + m, err
	}
	if !h.swallow {
		return h.Conn.Write(p)
	}
	i := bytes.IndexByte(p, '\n')
	if i < 0 {
		return len(p), nil
	}
	h.swallow = false
	if i+1 == len(p) {
		return len(p), nil
	}
	n, err := h.Conn.Write(p[i+1:])
	return i + 1 + n, err
}

// auth logs in with dest.Auth when the server offers AUTH. Like Postfix,
// a server that does not offer AUTH gets the mail unauthenticated.
func (s *session) auth(ctx context.Context, dest Destination) *failure {
	offered, mechs := s.client.Extension("AUTH")
	if !offered {
		return nil
	}
	namaddr := s.t.namaddr
	if s.tls == tlsNone && !dest.AllowPlainAuth {
		return s.fail("4.7.0", fmt.Sprintf("refusing to send credentials to host %s without TLS", namaddr), false)
	}
	var sc sasl.Client
	switch m := strings.Fields(strings.ToUpper(mechs)); {
	case slices.Contains(m, "PLAIN"):
		sc = sasl.NewPlainClient("", dest.Auth.User, dest.Auth.Password)
	case slices.Contains(m, "LOGIN"):
		sc = &loginClient{user: dest.Auth.User, pass: dest.Auth.Password}
	default:
		return s.fail("4.7.0", fmt.Sprintf("SASL authentication failed; cannot authenticate to server %s: no mechanism available (offered: %s)", namaddr, mechs), false)
	}
	if err := s.client.Auth(sc); err != nil {
		if r, ok := smtpReply(err); ok {
			// Wrong credentials are our configuration problem, not the
			// sender's: the mail waits for the fix instead of bouncing.
			return s.fail(asTemporary(r.status()), fmt.Sprintf("SASL authentication failed; server %s said: %s", namaddr, r), false)
		}
		return s.fail("4.7.0", lost(ctx, namaddr, "performing SASL authentication", err), false)
	}
	return nil
}

// loginClient is the LOGIN mechanism. go-sasl's sends the user name as an
// initial response and expects the challenge "Password:" verbatim, which
// servers that ask "Username:" first (Exchange, older Sendmail) refuse.
type loginClient struct{ user, pass string }

func (l *loginClient) Start() (string, []byte, error) { return "LOGIN", nil, nil }

func (l *loginClient) Next(challenge []byte) ([]byte, error) {
	switch ch := strings.ToLower(string(challenge)); {
	case strings.HasPrefix(ch, "user"):
		return []byte(l.user), nil
	case strings.HasPrefix(ch, "pass"):
		return []byte(l.pass), nil
	}
	return nil, fmt.Errorf("unexpected LOGIN challenge %q", challenge)
}

// tlsDecision asks the TLS policy about an MX host: DANE and MTA-STS
// apply to MX delivery at levels may and dane (encrypt and none are the
// admin's word, and relayhosts, LMTP and sockets have neither). A host
// the policy forbids now is a temporary failure, tried again later.
func (c *Client) tlsDecision(ctx context.Context, dest Destination, mx string) (*tlspolicy.Decision, *failure) {
	if c.Policy == nil || dest.NoMX || dest.Unix != "" || dest.LMTP || dest.NoTLS || dest.RequireTLS {
		return nil, nil
	}
	d := *c.Policy
	switch dest.TLSLevel {
	case "dane":
		d.Level = tlspolicy.LevelDANE
	case "", "may":
		d.Level = tlspolicy.LevelMay
	default:
		return nil, nil
	}
	dec := d.Decide(ctx, dest.Host, mx)
	if dec.Mechanism == tlspolicy.MechLevel && dec.Auth == tlspolicy.AuthNone && !dec.RequireTLS {
		for _, r := range dec.Reports {
			c.log().Debug("tls policy: " + r)
		}
		return nil, nil // plain opportunistic TLS, as without a policy
	}
	if dec.Defer {
		return nil, &failure{status: "4.7.5", reason: dec.Why, relay: mx}
	}
	return &dec, nil
}

// TLSPolicy says, in one line, what TLS delivery to an MX host of dest
// would insist on and why (`larkpost trace --resolve`).
func (c *Client) TLSPolicy(ctx context.Context, dest Destination, mx string) string {
	switch {
	case dest.NoTLS:
		return "none: no STARTTLS (smtp_tls_security_level or smtp_tls_policy_maps)"
	case dest.RequireTLS:
		return "encrypt: TLS with a verified certificate required, else the mail waits"
	case dest.NoMX || dest.Unix != "" || dest.LMTP:
		return "may: opportunistic TLS (no DANE or MTA-STS for a relayhost or LMTP)"
	}
	dec, f := c.tlsDecision(ctx, dest, mx)
	switch {
	case f != nil:
		return "not delivering now: " + f.reason
	case dec == nil:
		return "may: opportunistic TLS, the certificate verified when it can be (no DANE or MTA-STS policy applies)"
	}
	return dec.String()
}
