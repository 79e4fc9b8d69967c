package engine

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/larkpost/larkpost/rules/certs/certstest"
)

// tlsFixture is a CA and a certificate for mx.test written where a
// config can name them.
type tlsFixture struct {
	ca         *certstest.CA
	dir        string
	cert, key  string
	otherChain string // a key and chain for other.test, in one file
}

func newTLSFixture(t *testing.T) *tlsFixture {
	t.Helper()
	ca, err := certstest.NewCA("Test CA")
	if err != nil {
		t.Fatal(err)
	}
	f := &tlsFixture{ca: ca, dir: t.TempDir()}
	f.cert, f.key = filepath.Join(f.dir, "mx.crt"), filepath.Join(f.dir, "mx.key")
	leaf, err := ca.Issue(time.Time{}, time.Time{}, "mx.test")
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.WriteFiles(f.cert, f.key); err != nil {
		t.Fatal(err)
	}
	other, err := ca.Issue(time.Time{}, time.Time{}, "other.test")
	if err != nil {
		t.Fatal(err)
	}
	f.otherChain = filepath.Join(f.dir, "other.pem")
	if err := other.WriteChain(f.otherChain); err != nil {
		t.Fatal(err)
	}
	return f
}

// config is the TLS part of a config, plus extra settings.
func (f *tlsFixture) config(extra string) string {
	return fmt.Sprintf("config(smtpd_tls_cert_file = %q, smtpd_tls_key_file = %q%s)\n", f.cert, f.key, extra)
}

func (f *tlsFixture) client(name string) *tls.Config {
	return &tls.Config{RootCAs: f.ca.Pool(), ServerName: name}
}

// starttls upgrades a raw client after its STARTTLS got 220.
func (c *rawClient) starttls(cfg *tls.Config) tls.ConnectionState {
	c.t.Helper()
	c.cmd("STARTTLS", "220 2.0.0 Ready to start TLS")
	tc := tls.Client(c.Conn, cfg)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("handshake: %v", err)
	}
	tc.SetDeadline(time.Time{})
	c.Conn = tc
	return tc.ConnectionState()
}

// ehlo says EHLO and returns the capabilities.
func (c *rawClient) ehlo() []string {
	c.t.Helper()
	c.write("EHLO c.example\r\n")
	var caps []string
	for {
		line := c.readLine()
		if !strings.HasPrefix(line, "250") {
			c.t.Fatalf("EHLO: %q", line)
		}
		caps = append(caps, line[4:])
		if line[3] == ' ' {
			return caps
		}
	}
}

func has(caps []string, c string) bool {
	for _, x := range caps {
		if x == c {
			return true
		}
	}
	return false
}

func TestSTARTTLS(t *testing.T) {
	f := newTLSFixture(t)
	h := start(t, f.config(""))
	rc := dialRaw(t, h.addr)
	if caps := rc.ehlo(); !has(caps, "STARTTLS") || has(caps, "AUTH PLAIN LOGIN") {
		t.Errorf("plaintext EHLO: %v, want STARTTLS", caps)
	}
	st := rc.starttls(f.client("mx.test"))
	if st.Version != tls.VersionTLS13 {
		t.Errorf("version %x", st.Version)
	}
	// RFC 3207: nothing from before survives, EHLO comes first.
	rc.cmd("MAIL FROM:<a@example.org>", "503 5.5.1 Error: send HELO/EHLO first")
	if caps := rc.ehlo(); has(caps, "STARTTLS") {
		t.Errorf("EHLO over TLS still offers STARTTLS: %v", caps)
	}
	rc.cmd("STARTTLS", "554 5.5.1 Error: TLS already active")
	rc.cmd("MAIL FROM:<a@example.org>", "250 ")
	rc.cmd("RCPT TO:<alice@mx.test>", "250 ")
	rc.cmd("DATA", "354 ")
	rc.cmd("Subject: over TLS\r\n\r\nhello\r\n.", "250 ")
	rc.cmd("QUIT", "221 ")
	msgs := h.waitMailbox("alice", 1)
	if len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
	m := string(msgs[0])
	for _, want := range []string{"with ESMTPS id", "(using TLSv1.3 with cipher TLS_", "(No client certificate requested)"} {
		if !strings.Contains(m, want) {
			t.Errorf("Received header lacks %q:\n%s", want, m)
		}
	}
	if !h.log.WaitFor(`Anonymous TLS connection established from localhost\[127\.0\.0\.1\]: TLSv1\.3 with cipher TLS_\w+ \(\d+/\d+ bits\) sni=mx\.test`, 2*time.Second) {
		t.Error("no TLS log line")
	}
	if !h.log.WaitFor(`disconnect from localhost\[127\.0\.0\.1\] ehlo=2 starttls=2 mail=2 rcpt=1 data=1 quit=1`, 2*time.Second) {
		t.Error("no disconnect line with starttls=2")
	}
}

// TestSTARTTLSInjection: commands sent in plaintext after STARTTLS, in
// the same packet (CVE-2011-0411), are never run as if sent over TLS.
func TestSTARTTLSInjection(t *testing.T) {
	f := newTLSFixture(t)
	h := start(t, f.config(""))
	rc := dialRaw(t, h.addr)
	rc.ehlo()
	rc.write("STARTTLS\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<alice@mx.test>\r\n")
	rc.expect("220 2.0.0 Ready to start TLS")
	tc := tls.Client(rc.Conn, f.client("mx.test"))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	rc.Conn = tc
	rc.write("EHLO c.example\r\n")
	rc.expect("554 5.5.1 Error: improper command pipelining after STARTTLS")
	rc.expectClosed()
	if !h.log.WaitFor(`reject: STARTTLS from localhost\[127\.0\.0\.1\]: 554 5\.5\.1 Error: improper command pipelining after STARTTLS`, 2*time.Second) {
		t.Error("not logged")
	}
	h.settle()
	if n := len(h.mailbox("alice")); n != 0 {
		t.Errorf("%d messages", n)
	}
}

// TestSTARTTLSInTransaction: STARTTLS between MAIL and DATA would let a
// transaction begun in plaintext finish under TLS; refused, as Postfix.
func TestSTARTTLSInTransaction(t *testing.T) {
	f := newTLSFixture(t)
	h := start(t, f.config(""))
	rc := dialReady(t, h.addr)
	rc.cmd("MAIL FROM:<a@example.org>", "250 ")
	rc.cmd("STARTTLS", "503 5.5.1 Error: MAIL transaction in progress")
	rc.cmd("QUIT", "221 ")
}

func TestTLSEncryptLevel(t *testing.T) {
	f := newTLSFixture(t)
	h := start(t, f.config(`, smtpd_tls_security_level = "encrypt"`))
	rc := dialReady(t, h.addr)
	rc.cmd("MAIL FROM:<a@example.org>", "530 5.7.0 Must issue a STARTTLS command first")
	rc.starttls(f.client("mx.test"))
	rc.ehlo()
	rc.cmd("MAIL FROM:<a@example.org>", "250 ")
	rc.cmd("QUIT", "221 ")
}

// TestTLSProtocols: smtpd_tls_mandatory_protocols at level encrypt.
func TestTLSProtocols(t *testing.T) {
	f := newTLSFixture(t)
	h := start(t, f.config(`, smtpd_tls_security_level = "encrypt", smtpd_tls_mandatory_protocols = ">=TLSv1.3"`))
	rc := dialReady(t, h.addr)
	rc.cmd("STARTTLS", "220 ")
	cfg := f.client("mx.test")
	cfg.MaxVersion = tls.VersionTLS12
	if err := tls.Client(rc.Conn, cfg).Handshake(); err == nil {
		t.Fatal("a TLS 1.2 handshake succeeded")
	}
	if !h.log.WaitFor(`SSL_accept error from localhost\[127\.0\.0\.1\]: .*version`, 2*time.Second) {
		t.Error("handshake failure not logged")
	}
}

// TestSMTPS: a listener with tls_wrappermode speaks TLS from the first
// byte (port 465), and the hooks see what was negotiated.
func TestSMTPS(t *testing.T) {
	f := newTLSFixture(t)
	h := start(t, f.config(`, listen = {"smtp": "127.0.0.1:0", "smtps": {"addr": "127.0.0.1:0", "tls_wrappermode": True}}`)+`
def on_mail(tx, sender):
    if sender.local == "probe":
        return reject("seen " + tx.conn.tls.version + " " + tx.conn.tls.cipher + " sni=" + str(tx.conn.tls.sni) + " listener=" + tx.conn.listener)
`)
	c, err := tls.Dial("tcp", h.e.Addr("smtps").String(), f.client("mx.test"))
	if err != nil {
		t.Fatal(err)
	}
	rc := &rawClient{Conn: c, t: t}
	rc.expect("220 ")
	rc.ehlo()
	rc.cmd("MAIL FROM:<probe@example.org>", "550 5.7.1 seen TLSv1.3 TLS_")
	rc.cmd("RSET", "250 ")
	rc.cmd("MAIL FROM:<a@example.org>", "250 ")
	rc.cmd("RCPT TO:<alice@mx.test>", "250 ")
	rc.cmd("DATA", "354 ")
	rc.cmd("Subject: smtps\r\n\r\nhello\r\n.", "250 ")
	msgs := h.waitMailbox("alice", 1)
	if len(msgs) != 1 || !strings.Contains(string(msgs[0]), "with ESMTPS id") {
		t.Fatalf("messages: %q", msgs)
	}
	// The plain listener still offers STARTTLS, and an implicit-TLS
	// client that speaks plaintext gets nothing.
	raw, err := net.Dial("tcp", h.e.Addr("smtps").String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, _ := raw.Read(make([]byte, 100)); n > 0 {
		t.Error("the wrapper-mode listener spoke before the handshake")
	}
}

// TestSNI: several certificates, chosen by the name the client asks for.
func TestSNI(t *testing.T) {
	f := newTLSFixture(t)
	h := start(t, fmt.Sprintf(`config(smtpd_tls_chain_files = [%q], smtpd_tls_cert_file = %q, smtpd_tls_key_file = %q)`, f.otherChain, f.cert, f.key))
	for _, c := range []struct{ sni, want string }{{"mx.test", "mx.test"}, {"other.test", "other.test"}, {"", "mx.test"}} {
		rc := dialReady(t, h.addr)
		cfg := &tls.Config{ServerName: c.sni, InsecureSkipVerify: true}
		st := rc.starttls(cfg)
		if got := st.PeerCertificates[0].Subject.CommonName; got != c.want {
			t.Errorf("SNI %q: certificate for %q, want %q", c.sni, got, c.want)
		}
		rc.Close()
	}
}

// TestCertificateReload: a renewed certificate is served to new sessions
// without a restart, and a session that started before goes on.
func TestCertificateReload(t *testing.T) {
	f := newTLSFixture(t)
	h := start(t, f.config(""))
	h.e.smtpd.Certs.Interval = 10 * time.Millisecond
	old := dialReady(t, h.addr)
	before := old.starttls(f.client("mx.test")).PeerCertificates[0].SerialNumber
	renewed, err := f.ca.Issue(time.Time{}, time.Time{}, "mx.test")
	if err != nil {
		t.Fatal(err)
	}
	// As certbot does: new files, then the link (here: a rename).
	if err := renewed.WriteFiles(f.cert+".new", f.key+".new"); err != nil {
		t.Fatal(err)
	}
	os.Rename(f.key+".new", f.key)
	os.Rename(f.cert+".new", f.cert)
	time.Sleep(50 * time.Millisecond)
	rc := dialReady(t, h.addr)
	after := rc.starttls(f.client("mx.test")).PeerCertificates[0].SerialNumber
	if after.Cmp(before) == 0 {
		t.Fatal("the renewed certificate is not served")
	}
	if !h.log.WaitFor(`TLS certificates reloaded: mx\.test until`, 2*time.Second) {
		t.Error("reload not logged")
	}
	// The session from before the renewal still works.
	old.ehlo()
	old.cmd("MAIL FROM:<a@example.org>", "250 ")
	old.cmd("RCPT TO:<alice@mx.test>", "250 ")
	old.cmd("DATA", "354 ")
	old.cmd("Subject: x\r\n\r\nx\r\n.", "250 ")

	// A broken renewal (a key that does not match) keeps the last good
	// certificate.
	other, _ := f.ca.Issue(time.Time{}, time.Time{}, "mx.test")
	os.WriteFile(f.key, other.KeyPEM, 0o600)
	time.Sleep(50 * time.Millisecond)
	rc = dialReady(t, h.addr)
	if got := rc.starttls(f.client("mx.test")).PeerCertificates[0].SerialNumber; got.Cmp(after) != 0 {
		t.Error("a broken renewal replaced the certificate")
	}
	if !h.log.WaitFor(`TLS certificates changed but cannot be loaded, keeping the ones in use`, 2*time.Second) {
		t.Error("broken renewal not logged")
	}
}

// TestClientCertificate: with smtpd_tls_ask_ccert the client's
// certificate is shown to hooks and in the log, verified against
// smtpd_tls_CAfile.
func TestClientCertificate(t *testing.T) {
	f := newTLSFixture(t)
	caFile := filepath.Join(f.dir, "ca.pem")
	os.WriteFile(caFile, f.ca.PEM, 0o644)
	h := start(t, f.config(fmt.Sprintf(`, smtpd_tls_ask_ccert = True, smtpd_tls_CAfile = %q`, caFile))+`
def on_mail(tx, sender):
    t = tx.conn.tls
    if t.peer_verified and t.peer_subject == "relay.example.org":
        return accept()
    return reject("no client certificate")
`)
	leaf, err := f.ca.Issue(time.Time{}, time.Time{}, "relay.example.org")
	if err != nil {
		t.Fatal(err)
	}
	rc := dialReady(t, h.addr)
	cfg := f.client("mx.test")
	cfg.Certificates = []tls.Certificate{leaf.TLS()}
	rc.starttls(cfg)
	rc.ehlo()
	rc.cmd("MAIL FROM:<a@example.org>", "250 ")
	rc.cmd("RCPT TO:<alice@mx.test>", "250 ")
	rc.cmd("DATA", "354 ")
	rc.cmd("Subject: from a trusted relay\r\n\r\nhi\r\n.", "250 ")
	rc.cmd("QUIT", "221 ")
	if m := h.waitMailbox("alice", 1); len(m) != 1 || !strings.Contains(string(m[0]), `(Client CN "relay.example.org", Issuer "Test CA" (verified OK))`) {
		t.Errorf("Received does not name the verified client certificate: %q", m)
	}
	if !h.log.WaitFor(`Trusted TLS connection established from localhost\[127\.0\.0\.1\]: .* client="relay\.example\.org" fingerprint=([0-9A-F]{2}:){31}[0-9A-F]{2}`, 2*time.Second) {
		t.Error("no trusted TLS log line")
	}

	// Without a certificate: asked, none given, refused by the hook.
	rc = dialReady(t, h.addr)
	rc.starttls(f.client("mx.test"))
	rc.ehlo()
	rc.cmd("MAIL FROM:<a@example.org>", "550 5.7.1 no client certificate")

	// A certificate from another CA is shown but not verified.
	stranger, _ := certstest.NewCA("Stranger")
	sl, _ := stranger.Issue(time.Time{}, time.Time{}, "relay.example.org")
	rc = dialReady(t, h.addr)
	cfg = f.client("mx.test")
	cfg.Certificates = []tls.Certificate{sl.TLS()}
	rc.starttls(cfg)
	rc.ehlo()
	rc.cmd("MAIL FROM:<a@example.org>", "550 5.7.1 no client certificate")
	if !h.log.WaitFor(`Untrusted TLS connection established`, 2*time.Second) {
		t.Error("no untrusted TLS log line")
	}
}

// TestSMTPTLSCAfile: outbound TLS verifies a private relayhost against
// smtp_tls_CAfile; without it the same server is only unverified. The
// receiving server is larkpost itself, with inbound TLS.
func TestSMTPTLSCAfile(t *testing.T) {
	ca, err := certstest.NewCA("Private CA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	leaf, _ := ca.Issue(time.Time{}, time.Time{}, "127.0.0.1")
	leaf.WriteFiles(filepath.Join(dir, "relay.crt"), filepath.Join(dir, "relay.key"))
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, ca.PEM, 0o644)
	relay := start(t, fmt.Sprintf(`config(smtpd_tls_cert_file = %q, smtpd_tls_key_file = %q, networks = ["127.0.0.0/8"], destinations = ["relay.test"])`,
		filepath.Join(dir, "relay.crt"), filepath.Join(dir, "relay.key")))
	_, port, _ := net.SplitHostPort(relay.addr)
	for _, c := range []struct {
		cfg, want string
	}{
		{fmt.Sprintf(`, smtp_tls_CAfile = %q`, caFile), "TLS verified"},
		{"", "TLS unverified"},
	} {
		h := start(t, fmt.Sprintf(`config(relayhost = "[127.0.0.1]:%s"%s)`, port, c.cfg))
		if _, err := send(t, h.addr, "ann@mx.test", []string{"bob@relay.test"}, "Subject: out\r\n\r\nhi\r\n"); err != nil {
			t.Fatal(err)
		}
		if !h.log.WaitFor(`smtp to 127\.0\.0\.1\[127\.0\.0\.1\]:`+port+`: `+c.want, 5*time.Second) {
			t.Errorf("%q: no %q", c.cfg, c.want)
		}
	}
	if n := len(relay.waitMailbox("bob", 2)); n != 2 {
		t.Errorf("the relay got %d messages", n)
	}
}
