package auth

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// fakeBackend knows ann (any case) with password "secret". A user named
// "down" cannot be checked; its error quotes the password, as a careless
// backend might.
type fakeBackend struct {
	mu    sync.Mutex
	calls int
}

func (b *fakeBackend) Authenticate(ctx context.Context, user, pass string, client netip.Addr) (Result, error) {
	b.mu.Lock()
	b.calls++
	b.mu.Unlock()
	switch {
	case user == "down":
		return Result{}, fmt.Errorf("backend down while checking %q with %q", user, pass)
	case strings.EqualFold(user, "ann") && pass == "secret":
		return Result{OK: true, User: "ann"}, nil
	}
	return Result{Reason: "wrong password " + pass}, nil
}

func (b *fakeBackend) numCalls() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls
}

type authFixture struct {
	a       *Authenticator
	backend *fakeBackend
	clock   *fakeClock
	logs    *syncBuffer
}

func newAuthFixture() *authFixture {
	f := &authFixture{backend: &fakeBackend{}, clock: newFakeClock(), logs: &syncBuffer{}}
	f.a = &Authenticator{
		Backend: f.backend,
		Limiter: NewLimiter(LimiterConfig{Now: f.clock.Now}),
		Logger:  slog.New(slog.NewTextHandler(f.logs, nil)),
	}
	return f
}

// run performs one exchange with the given client responses and returns
// the attempt (nil if Start refused) and the last error.
func (f *authFixture) run(mech string, responses ...[]byte) (*Attempt, error) {
	t, err := f.a.Start(context.Background(), mech, testIP)
	if err != nil {
		return nil, err
	}
	for _, r := range responses {
		_, done, err := t.Next(r)
		if err != nil || done {
			return t, err
		}
	}
	return t, nil
}

func TestAuthenticator(t *testing.T) {
	plain := func(authz, user, pass string) []byte { return []byte(authz + "\x00" + user + "\x00" + pass) }
	tests := []struct {
		name      string
		mech      string
		responses [][]byte
		want      error // nil: success
		user      string
		temporary bool
		counted   bool // a failure for the limiter
		backend   bool // the backend was asked
	}{
		{"PLAIN", "PLAIN", [][]byte{nil, plain("", "Ann", "secret")}, nil, "ann", false, false, true},
		{"plain lower case", "plain", [][]byte{plain("", "ann", "secret")}, nil, "ann", false, false, true},
		{"LOGIN", "LOGIN", [][]byte{nil, []byte("ann"), []byte("secret")}, nil, "ann", false, false, true},
		{"LOGIN initial response", "LOGIN", [][]byte{[]byte("ann"), []byte("secret")}, nil, "ann", false, false, true},
		{"wrong password", "PLAIN", [][]byte{plain("", "ann", "guess")}, ReplyInvalid, "", false, true, true},
		{"backend down", "LOGIN", [][]byte{[]byte("down"), []byte("secret")}, ReplyTemporary, "", true, false, true},
		{"foreign authzid", "PLAIN", [][]byte{plain("root", "ann", "secret")}, ReplyInvalid, "", false, true, false},
		{"malformed PLAIN", "PLAIN", [][]byte{[]byte("ann\x00secret")}, ReplyInvalid, "", false, true, false},
		{"control character", "LOGIN", [][]byte{[]byte("ann\r\nRCPT")}, ReplyInvalid, "", false, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newAuthFixture()
			att, err := f.run(tt.mech, tt.responses...)
			if err != tt.want {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if !att.Done() || att.User() != tt.user || att.Temporary() != tt.temporary {
				t.Errorf("done=%v user=%q temporary=%v", att.Done(), att.User(), att.Temporary())
			}
			if (f.backend.numCalls() > 0) != tt.backend {
				t.Errorf("backend calls %d", f.backend.numCalls())
			}
			if got := f.a.Limiter.Len() > 0; got != tt.counted {
				t.Errorf("limiter has an entry: %v, want %v", got, tt.counted)
			}
			if _, _, err := att.Next([]byte("again")); err != ReplyInvalid {
				t.Errorf("Next after the end: %v", err)
			}
		})
	}
}

func TestAuthenticatorUnknownMechanism(t *testing.T) {
	f := newAuthFixture()
	if _, err := f.a.Start(context.Background(), "CRAM-MD5", testIP); err != smtp.ErrAuthUnknownMechanism {
		t.Errorf("err = %v", err)
	}
	if got := strings.Join(f.a.Mechanisms(), " "); got != "PLAIN LOGIN" {
		t.Errorf("Mechanisms() = %s", got)
	}
}

func TestAuthenticatorLimiter(t *testing.T) {
	f := newAuthFixture()
	// An exchange begun before the block ...
	pending, err := f.a.Start(context.Background(), "LOGIN", testIP)
	if err != nil {
		t.Fatal(err)
	}
	pending.Next([]byte("ann"))
	for range 5 {
		if _, err := f.run("PLAIN", []byte("\x00ann\x00guess")); err != ReplyInvalid {
			t.Fatalf("guess: %v", err)
		}
	}
	calls := f.backend.numCalls()
	// ... is refused when it gets to the password, without asking the
	// backend, even with the right one.
	if _, _, err := pending.Next([]byte("secret")); err != ReplyTooMany || !pending.Temporary() {
		t.Errorf("pending exchange: %v", err)
	}
	// New exchanges are refused before a password is sent.
	if _, err := f.a.Start(context.Background(), "PLAIN", testIP); err != ReplyTooMany {
		t.Errorf("blocked Start: %v", err)
	}
	if f.backend.numCalls() != calls {
		t.Error("backend asked during a block")
	}
	f.clock.Add(time.Minute)
	if att, err := f.run("PLAIN", []byte("\x00ann\x00secret")); err != nil || att.User() != "ann" {
		t.Errorf("after the block: %v", err)
	}
	if !strings.Contains(f.logs.String(), "too many failures") {
		t.Errorf("block not logged:\n%s", f.logs)
	}
}

// TestAuthenticatorKeepsPasswordSecret goes through every way an exchange
// can end and looks for the password in replies and log lines.
func TestAuthenticatorKeepsPasswordSecret(t *testing.T) {
	const pw = "Tr0ub4dor&3"
	f := newAuthFixture()
	f.a.Logger = slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var errs []error
	try := func(mech string, responses ...string) {
		var rs [][]byte
		for _, r := range responses {
			rs = append(rs, []byte(r))
		}
		_, err := f.run(mech, rs...)
		errs = append(errs, err)
	}
	try("PLAIN", "\x00ann\x00"+pw)                    // wrong password; the backend's reason quotes it
	try("LOGIN", "down", pw)                          // backend error quoting it
	try("PLAIN", "root\x00ann\x00"+pw)                // foreign authzid
	try("PLAIN", "\x00ann\x00"+pw+"\x00"+pw)          // malformed
	try("LOGIN", "ann", pw+strings.Repeat("x", 2000)) // too long
	try("LOGIN", "ann", pw+"\x00")                    // NUL
	try("PLAIN", "\x00ann\x00"+pw)                    // now blocked
	try("PLAIN", "\x00ann\x00secret")                 // blocked, right password
	f.clock.Add(time.Hour)
	try("PLAIN", "\x00ann\x00secret") // success
	for _, err := range errs {
		if err != nil && strings.Contains(err.Error(), pw) {
			t.Errorf("error quotes the password: %v", err)
		}
	}
	logs := f.logs.String()
	if strings.Contains(logs, pw) || strings.Contains(logs, "secret") {
		t.Errorf("log quotes the password:\n%s", logs)
	}
	for _, want := range []string{"authentication failed", "[password]", "sasl_username=ann", "authentication succeeded", "too many failures"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

// authSession is the least an SMTP session does to use an Authenticator.
type authSession struct {
	a       *Authenticator
	client  netip.Addr
	mu      sync.Mutex
	attempt *Attempt
}

func (s *authSession) AuthMechanisms() []string { return s.a.Mechanisms() }

func (s *authSession) Auth(mech string) (sasl.Server, error) {
	t, err := s.a.Start(context.Background(), mech, s.client)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.attempt = t
	s.mu.Unlock()
	return t, nil
}

func (s *authSession) Mail(string, *smtp.MailOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.attempt == nil || s.attempt.User() == "" {
		return smtp.ErrAuthRequired
	}
	return nil
}
func (s *authSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *authSession) Data(r io.Reader) error               { _, err := io.Copy(io.Discard, r); return err }
func (s *authSession) Reset()                               {}
func (s *authSession) Logout() error                        { return nil }

var _ smtp.AuthSession = (*authSession)(nil)

// startSMTP runs a go-smtp server using a on 127.0.0.1:0.
func startSMTP(t *testing.T, a *Authenticator) string {
	t.Helper()
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		ap, _ := netip.ParseAddrPort(c.Conn().RemoteAddr().String())
		return &authSession{a: a, client: ap.Addr()}, nil
	}))
	srv.Domain = "mx.example.org"
	srv.AllowInsecureAuth = true
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func TestAuthenticatorOverSMTP(t *testing.T) {
	f := newAuthFixture()
	addr := startSMTP(t, f.a)
	tests := []struct {
		name   string
		client sasl.Client
		code   int
		enh    smtp.EnhancedCode
	}{
		{"PLAIN", sasl.NewPlainClient("", "ann", "secret"), 0, smtp.EnhancedCode{}},
		{"LOGIN", sasl.NewLoginClient("ann", "secret"), 0, smtp.EnhancedCode{}},
		{"wrong password", sasl.NewPlainClient("", "ann", "guess"), 535, smtp.EnhancedCode{5, 7, 8}},
		{"backend down", sasl.NewLoginClient("down", "x"), 454, smtp.EnhancedCode{4, 7, 0}},
		{"foreign authzid", sasl.NewPlainClient("root", "ann", "secret"), 535, smtp.EnhancedCode{5, 7, 8}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := smtp.Dial(addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Hello("client.example.org"); err != nil {
				t.Fatal(err)
			}
			err = c.Auth(tt.client)
			if tt.code == 0 {
				if err != nil {
					t.Fatalf("Auth: %v", err)
				}
				if err := c.Mail("ann@example.org", nil); err != nil {
					t.Errorf("MAIL after AUTH: %v", err)
				}
				return
			}
			var se *smtp.SMTPError
			if !errors.As(err, &se) || se.Code != tt.code || se.EnhancedCode != tt.enh {
				t.Fatalf("Auth: %v, want %d %v", err, tt.code, tt.enh)
			}
			if err := c.Mail("ann@example.org", nil); err == nil {
				t.Error("MAIL accepted without AUTH")
			}
		})
	}
}

// TestLoginTranscript checks LOGIN's prompts on the wire, without the
// initial response go-sasl's client always sends.
func TestLoginTranscript(t *testing.T) {
	f := newAuthFixture()
	addr := startSMTP(t, f.a)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	b64 := base64.StdEncoding.EncodeToString
	dialog := []struct{ send, expect string }{
		{"", "220 "},
		{"EHLO client.example.org", "250 "},
		{"AUTH LOGIN", "334 " + b64([]byte("Username:"))},
		{b64([]byte("ann")), "334 " + b64([]byte("Password:"))},
		{b64([]byte("secret")), "235 2.0.0 "},
	}
	for _, d := range dialog {
		if d.send != "" {
			fmt.Fprintf(conn, "%s\r\n", d.send)
		}
		var line string
		for {
			line, err = r.ReadString('\n')
			if err != nil {
				t.Fatalf("after %q: %v", d.send, err)
			}
			if len(line) < 4 || line[3] != '-' {
				break
			}
		}
		if !strings.HasPrefix(line, d.expect) {
			t.Fatalf("after %q: got %q, want %q", d.send, line, d.expect)
		}
	}
}
