package smtpd

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
)

// STARTTLS is done here, under go-smtp, not by go-smtp: go-smtp would put
// its TLS layer above clientConn, which then saw only ciphertext and
// could no longer keep its deadlines per command, Postfix's reply texts,
// the command counts or the dot tripwire. go-smtp runs without a
// TLSConfig; clientConn advertises STARTTLS in the EHLO reply, takes
// go-smtp's "502 TLS not supported" to the command as its cue, answers
// 220 itself and runs the handshake on the socket; from then on it reads
// and writes through the TLS connection, and go-smtp goes on unaware.
//
// RFC 3207 wants nothing of the session before STARTTLS to survive: the
// connection gets a fresh rules.Intake (no HELO, no transaction, no
// login) and must say EHLO again before MAIL or AUTH. A command that
// go-smtp had already buffered when TLS started (a client, or a man in
// the middle, pipelining after STARTTLS: the CVE-2011-0411 class) is
// answered by go-smtp before anything was read through TLS: that reply is
// replaced by 554 and the connection ends, as Postfix does.

// tlsConfig is the server side of a listener's TLS: certificates from the
// store (SNI, reloads), the protocols and ciphers of its level, and a
// client certificate asked for when smtpd_tls_ask_ccert is set.
func (s *Server) tlsConfig(ln rules.Listener, set *rules.Settings) *tls.Config {
	if s.Certs == nil || ln.TLSLevel == "none" || ln.TLSLevel == "" {
		return nil
	}
	protocols := set.TLS.Protocols
	if ln.TLSLevel == "encrypt" {
		protocols = set.TLS.MandatoryProtocols
	}
	lo, hi, err := rules.ParseTLSProtocols(protocols)
	if err != nil { // checked at load; keep Go's defaults if not
		lo, hi = 0, 0
	}
	cfg := &tls.Config{GetCertificate: s.Certs.GetCertificate, MinVersion: lo, MaxVersion: hi}
	if ln.TLSLevel == "encrypt" && set.TLS.MandatoryCiphers == "high" {
		cfg.CipherSuites = []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		}
	}
	if set.TLS.AskCCert {
		// Asked, not required, and verified by us afterwards: Postfix
		// accepts an untrusted client certificate and says so in the log.
		cfg.ClientAuth = tls.RequestClientCert
	}
	return cfg
}

// tlsInfo is what scripts, logs and the Received header learn of a
// finished handshake.
func (s *Server) tlsInfo(st tls.ConnectionState) *rules.TLSInfo {
	info := &rules.TLSInfo{Version: tlsVersion(st.Version), Cipher: tls.CipherSuiteName(st.CipherSuite),
		Bits: cipherBits(st.CipherSuite), SNI: st.ServerName}
	if len(st.PeerCertificates) > 0 {
		leaf := st.PeerCertificates[0]
		info.PeerSubject = leaf.Subject.CommonName
		if info.PeerSubject == "" {
			info.PeerSubject = leaf.Subject.String()
		}
		info.PeerIssuer = leaf.Issuer.CommonName
		if info.PeerIssuer == "" {
			info.PeerIssuer = leaf.Issuer.String()
		}
		sum := sha256.Sum256(leaf.Raw)
		hex := fmt.Sprintf("% X", sum[:])
		info.PeerFingerprint = strings.ReplaceAll(hex, " ", ":")
		if s.ClientCAs != nil {
			inter := x509.NewCertPool()
			for _, c := range st.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := leaf.Verify(x509.VerifyOptions{Roots: s.ClientCAs, Intermediates: inter,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			info.PeerVerified = err == nil
		}
	}
	return info
}

func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLSv1"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return fmt.Sprintf("TLS(%#x)", v)
}

func cipherBits(id uint16) int {
	name := tls.CipherSuiteName(id)
	switch {
	case strings.Contains(name, "AES_256"), strings.Contains(name, "CHACHA20"):
		return 256
	case strings.Contains(name, "AES_128"):
		return 128
	}
	return 0
}

// tlsLogLine is Postfix's "Anonymous TLS connection established from
// host[ip]: TLSv1.3 with cipher X (256/256 bits)", "Trusted" or
// "Untrusted" when the client showed a certificate.
func tlsLogLine(client string, t *rules.TLSInfo) string {
	kind := "Anonymous"
	if t.PeerSubject != "" {
		kind = "Untrusted"
		if t.PeerVerified {
			kind = "Trusted"
		}
	}
	line := fmt.Sprintf("%s TLS connection established from %s: %s with cipher %s (%d/%d bits)", kind, client, t.Version, t.Cipher, t.Bits, t.Bits)
	if t.SNI != "" {
		line += " sni=" + t.SNI
	}
	if t.PeerSubject != "" {
		line += fmt.Sprintf(" client=%q fingerprint=%s", t.PeerSubject, t.PeerFingerprint)
	}
	return line
}

// handshake runs the server handshake on the socket within the session's
// timeout and records what was negotiated.
func (c *clientConn) handshake(cfg *tls.Config) (*tls.Conn, error) {
	t := tls.Server(c.Conn, cfg)
	ctx, cancel := context.WithTimeout(c.ctx, c.currentTimeout())
	defer cancel()
	c.Conn.SetDeadline(time.Now().Add(c.currentTimeout()))
	err := t.HandshakeContext(ctx)
	c.Conn.SetDeadline(time.Time{})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// startTLS answers STARTTLS: refuses it when TLS is on already, else says
// 220, runs the handshake and starts the session over (see above).
func (c *clientConn) startTLS() error {
	if c.tlsc != nil {
		out := []byte("554 5.5.1 Error: TLS already active\r\n")
		c.countReply("STARTTLS", out)
		return c.send(out)
	}
	if c.inTx.Load() {
		out := []byte("503 5.5.1 Error: MAIL transaction in progress\r\n")
		c.countReply("STARTTLS", out)
		return c.send(out)
	}
	c.ahead.mu.Lock()
	early := len(c.ahead.left) > 0
	c.ahead.mu.Unlock()
	if early {
		// Bytes read ahead after a message (readahead.go) and still
		// unread when STARTTLS comes were sent in plaintext after it.
		return c.refusePipelinedTLS()
	}
	ready := []byte("220 2.0.0 Ready to start TLS\r\n")
	c.countReply("STARTTLS", ready)
	if err := c.send(ready); err != nil {
		return err
	}
	t, err := c.handshake(c.tlsCfg)
	if err != nil {
		c.kill()
		if c.onTLSError != nil {
			c.onTLSError(c, err)
		}
		return err
	}
	c.tlsc, c.tlsFresh = t, true
	c.info.TLS, c.info.TLSInfo = true, c.tlsServer().tlsInfo(t.ConnectionState())
	c.info.TLSInfo.CertAsked = c.tlsCfg.ClientAuth != tls.NoClientCert
	c.info.Helo, c.info.User, c.authMech = "", "", ""
	c.needHelo.Store(true)
	c.intake = rules.NewIntake(c.policy, &c.info, queue.NewID)
	if c.onTLS != nil {
		c.onTLS(c)
	}
	return nil
}

// tlsServer is the Server whose certificates the connection uses.
func (c *clientConn) tlsServer() *Server {
	if c.gate != nil {
		return c.gate.s
	}
	return &Server{}
}

// transport is what the session's bytes travel over: the socket, or the
// TLS connection on it.
func (c *clientConn) transport() net.Conn {
	if c.tlsc != nil {
		return c.tlsc
	}
	return c.Conn
}

// send writes bytes of the server's own to the client, within the
// current timeout.
func (c *clientConn) send(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(c.pending) > 0 {
		// Replies go out in order: those go-smtp wrote first.
		b = append(c.pending, b...)
		c.pending = c.pending[:0]
	}
	c.Conn.SetWriteDeadline(time.Now().Add(c.currentTimeout()))
	_, err := c.transport().Write(b)
	return err
}
