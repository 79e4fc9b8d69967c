package engine

import (
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// authConfig is a server with a submission listener (TLS and AUTH
// required) beside the plain one, users from a passwd-file: alice's
// password bcrypt-hashed, bob's in {PLAIN}.
func authConfig(t *testing.T, f *tlsFixture, extra string) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte("alice-secret"), 5)
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(f.dir, "users.passwd")
	os.WriteFile(users, []byte("alice:{BLF-CRYPT}"+string(hash)+"\nbob@example.com:{PLAIN}bob-secret\nmallory:{PLAIN}mallory-secret\n"), 0o600)
	return f.config(fmt.Sprintf(`, smtpd_sasl_path = %q, listen = {"smtp": "127.0.0.1:0",
    "submission": {"addr": "127.0.0.1:0", "tls_security_level": "encrypt", "sasl_auth_enable": True, "require_auth": True}}%s`, users, extra)) + `
def on_auth(conn, user, mechanism):
    if user == "mallory":
        return reject("not from here", code = 535, status = "5.7.8")
`
}

func plain(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestAuthSubmission(t *testing.T) {
	f := newTLSFixture(t)
	h := start(t, authConfig(t, f, ""))
	sub := h.e.Addr("submission").String()

	rc := dialRaw(t, sub)
	if caps := rc.ehlo(); has(caps, "AUTH PLAIN LOGIN") {
		t.Errorf("AUTH offered before TLS: %v", caps)
	}
	rc.cmd("MAIL FROM:<alice@mx.test>", "530 5.7.0 Must issue a STARTTLS command first")
	rc.cmd("AUTH PLAIN "+plain("alice", "alice-secret"), "503 5.5.1 Error: authentication not enabled")
	rc.starttls(f.client("mx.test"))
	if caps := rc.ehlo(); !has(caps, "AUTH PLAIN LOGIN") {
		t.Errorf("no AUTH over TLS: %v", caps)
	}
	rc.cmd("MAIL FROM:<alice@mx.test>", "530 5.7.0 Authentication required")
	rc.cmd("AUTH PLAIN "+plain("alice", "wrong"), "535 5.7.8")
	rc.cmd("AUTH LOGIN "+b64("alice"), "334 ")
	rc.cmd(b64("alice-secret"), "235 ")
	rc.cmd("AUTH PLAIN "+plain("bob@example.com", "bob-secret"), "503 5.5.1 Error: already authenticated")
	// An authenticated client may relay.
	rc.cmd("MAIL FROM:<alice@mx.test>", "250 ")
	rc.cmd("RCPT TO:<someone@elsewhere.example>", "250 ")
	rc.cmd("RSET", "250 ")
	rc.cmd("MAIL FROM:<alice@mx.test>", "250 ")
	rc.cmd("RCPT TO:<carol@mx.test>", "250 ")
	rc.cmd("DATA", "354 ")
	rc.cmd("Subject: submitted\r\n\r\nhi\r\n.", "250 ")
	rc.cmd("QUIT", "221 ")
	msgs := h.waitMailbox("carol", 1)
	if len(msgs) != 1 || !strings.Contains(string(msgs[0]), "with ESMTPSA id") {
		t.Fatalf("messages: %q", msgs)
	}
	if !h.log.WaitFor(`(?m): client=localhost\[127\.0\.0\.1\], sasl_method=LOGIN, sasl_username=alice$`, 2*time.Second) {
		t.Error("no client= line with the login")
	}
	if !h.log.WaitFor(`SASL PLAIN authentication failed: .*sasl_username=alice`, 2*time.Second) {
		t.Error("failure not logged")
	}
	// After STARTTLS the new EHLO name is the one refusals log, and an
	// AUTH LOGIN exchange is one command, whatever its challenges.
	if !h.log.WaitFor(`530 5\.7\.0 Authentication required; from=<alice@mx\.test> proto=ESMTP helo=<c\.example>`, 2*time.Second) {
		t.Error("the refusal after STARTTLS does not log the new EHLO name")
	}
	if !h.log.WaitFor(`disconnect from localhost\[127\.0\.0\.1\] ehlo=2 starttls=1 auth=4 mail=4 rcpt=2 data=1 rset=1 quit=1 commands=16`, 2*time.Second) {
		t.Error("the disconnect line miscounts")
	}

	// on_auth refuses a login the passwords accept.
	rc = dialRaw(t, sub)
	rc.ehlo()
	rc.starttls(f.client("mx.test"))
	rc.ehlo()
	rc.cmd("AUTH PLAIN "+plain("mallory", "mallory-secret"), "535 5.7.8 not from here")
	rc.cmd("MAIL FROM:<mallory@mx.test>", "530 5.7.0 Authentication required")
	rc.cmd("QUIT", "221 ")

	// The plain listener offers no AUTH at all.
	rc = dialRaw(t, h.addr)
	rc.starttls(f.client("mx.test"))
	if caps := rc.ehlo(); has(caps, "AUTH PLAIN LOGIN") {
		t.Errorf("AUTH on the smtp listener: %v", caps)
	}
	rc.cmd("QUIT", "221 ")

	for _, secret := range []string{"alice-secret", "bob-secret", "mallory-secret", "wrong"} {
		if strings.Contains(h.log.String(), secret) {
			t.Errorf("the log holds a password %q", secret)
		}
	}
}

// TestAuthBruteForce: a client that keeps guessing is cut off (421) and
// refused AUTH for a while, cheaply; the right password from another
// address still works at once.
func TestAuthBruteForce(t *testing.T) {
	f := newTLSFixture(t)
	h := start(t, authConfig(t, f, `, smtpd_sasl_failure_limit = 5, smtpd_sasl_failure_backoff = "1m"`))
	sub := h.e.Addr("submission").String()
	dialFrom := func(src string) *rawClient {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", sub)
		if err != nil {
			t.Fatal(err)
		}
		rc := &rawClient{Conn: c, t: t}
		rc.expect("220 ")
		rc.ehlo()
		rc.starttls(f.client("mx.test"))
		rc.ehlo()
		return rc
	}
	rc := dialFrom("127.0.0.1")
	for i := 1; i < 5; i++ {
		rc.cmd("AUTH PLAIN "+plain("alice", fmt.Sprint("guess", i)), "535 5.7.8")
	}
	rc.cmd("AUTH PLAIN "+plain("alice", "guess5"), "421 4.7.0 mx.test Error: too many failed authentication attempts")
	rc.expectClosed()
	start := time.Now()
	for i := 0; i < 95; i++ {
		rc := dialFrom("127.0.0.1")
		rc.cmd("AUTH PLAIN "+plain("alice", "alice-secret"), "454 4.7.0 Too many failed authentication attempts")
		if i == 0 {
			// The session goes on: only AUTH is refused.
			rc.cmd("NOOP", "250 ")
			rc.cmd("AUTH PLAIN "+plain("alice", "alice-secret"), "454 4.7.0")
		}
		rc.Close()
	}
	t.Logf("95 refused sessions in %v", time.Since(start))
	other := dialFrom("127.0.0.2")
	begin := time.Now()
	other.cmd("AUTH PLAIN "+plain("alice", "alice-secret"), "235 ")
	if d := time.Since(begin); d > time.Second {
		t.Errorf("the right password from another address took %v", d)
	}
	if !h.log.WaitFor(`SASL PLAIN authentication failed: too many failures, blocked for another`, 2*time.Second) {
		t.Error("block not logged")
	}
}

// TestSenderLoginMismatch: reject_sender_login_mismatch with
// smtpd_sender_login_maps.
func TestSenderLoginMismatch(t *testing.T) {
	f := newTLSFixture(t)
	logins := filepath.Join(f.dir, "sender_logins")
	os.WriteFile(logins, []byte("alice@mx.test alice\n@example.com bob@example.com\n"), 0o644)
	h := start(t, authConfig(t, f, fmt.Sprintf(`, reject_sender_login_mismatch = True, smtpd_sender_login_maps = "texthash:%s"`, logins)))
	rc := dialRaw(t, h.e.Addr("submission").String())
	rc.ehlo()
	rc.starttls(f.client("mx.test"))
	rc.ehlo()
	rc.cmd("AUTH PLAIN "+plain("alice", "alice-secret"), "235 ")
	rc.cmd("MAIL FROM:<alice@mx.test>", "250 ")
	rc.cmd("RSET", "250 ")
	rc.cmd("MAIL FROM:<boss@example.com>", "553 5.7.1 <boss@example.com>: Sender address rejected: not owned by user alice")
	rc.cmd("MAIL FROM:<>", "250 ")
	rc.cmd("QUIT", "221 ")
	// Without a login, an address that belongs to one is refused.
	rc = dialReady(t, h.addr)
	rc.cmd("MAIL FROM:<alice@mx.test>", "553 5.7.1 <alice@mx.test>: Sender address rejected: not logged in")
	rc.cmd("MAIL FROM:<stranger@elsewhere.example>", "250 ")
	rc.cmd("QUIT", "221 ")
}
