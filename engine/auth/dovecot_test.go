package auth

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const fakeGreeting = "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nSPID\t4242\nCUID\t7\nCOOKIE\t0123456789abcdef0123456789abcdef\nDONE\n"

// fakeDovecot is an in-process stand-in for Dovecot's auth server, enough
// of it for the client: the handshake and AUTH ... PLAIN. What it answers
// depends on the user name (see answer).
type fakeDovecot struct {
	t        *testing.T
	ln       net.Listener
	mu       sync.Mutex
	greeting string
	hangup   bool       // close right after the greeting
	hello    [][]string // the client's first two lines, per connection
	auths    []string   // AUTH lines as received
	conns    []net.Conn
}

func newFakeDovecot(t *testing.T, network string) (*fakeDovecot, string) {
	t.Helper()
	var ln net.Listener
	var err error
	var path string
	if network == "unix" {
		sock := filepath.Join(t.TempDir(), "auth-client")
		ln, err = net.Listen("unix", sock)
		path = sock
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		if err == nil {
			path = "inet:" + ln.Addr().String()
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeDovecot{t: t, ln: ln, greeting: fakeGreeting}
	t.Cleanup(func() {
		ln.Close()
		f.dropAll()
	})
	go f.serve()
	return f, path
}

func (f *fakeDovecot) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns = append(f.conns, c)
		f.mu.Unlock()
		go f.handle(c)
	}
}

// dropAll closes every connection, as a Dovecot restart would.
func (f *fakeDovecot) dropAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
}

func (f *fakeDovecot) numConns() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.conns)
}

func (f *fakeDovecot) handle(c net.Conn) {
	defer c.Close()
	var wmu sync.Mutex
	send := func(s string) {
		wmu.Lock()
		defer wmu.Unlock()
		c.Write([]byte(s))
	}
	f.mu.Lock()
	greeting, hangup := f.greeting, f.hangup
	f.mu.Unlock()
	send(greeting)
	if hangup {
		return
	}
	r := bufio.NewReader(c)
	var hello []string
	for range 2 {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		hello = append(hello, strings.TrimSuffix(line, "\n"))
	}
	f.mu.Lock()
	f.hello = append(f.hello, hello)
	f.mu.Unlock()
	conts := map[string]string{} // id -> user awaiting a CONT
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		fields := strings.Split(strings.TrimSuffix(line, "\n"), "\t")
		switch fields[0] {
		case "AUTH":
			f.mu.Lock()
			f.auths = append(f.auths, line)
			f.mu.Unlock()
			id := fields[1]
			resp := ""
			for _, p := range fields {
				if v, ok := strings.CutPrefix(p, "resp="); ok {
					resp = v
				}
			}
			b, _ := base64.StdEncoding.DecodeString(resp)
			parts := strings.Split(string(b), "\x00")
			if len(parts) != 3 {
				send("FAIL\t" + id + "\treason=bad resp\n")
				continue
			}
			user, pass := parts[1], parts[2]
			switch user {
			case "cont", "contcont":
				conts[id] = user
				send("CONT\t" + id + "\t\n")
				continue
			case "close":
				return
			}
			f.answer(send, id, user, pass)
		case "CONT":
			id := fields[1]
			user := conts[id]
			if user == "contcont" {
				send("CONT\t" + id + "\t\n")
				continue
			}
			b, _ := base64.StdEncoding.DecodeString(fields[2])
			if string(b) == "\x00"+user+"\x00secret" {
				send("OK\t" + id + "\tuser=" + user + "\n")
			} else {
				send("FAIL\t" + id + "\tuser=" + user + "\n")
			}
		}
	}
}

// answer decides by user name: ann@example.org (any case) with "secret"
// succeeds; temp fails as temporary; slow answers after 200 ms; hang never
// answers; huge answers with a line over the limit; anyone else fails.
func (f *fakeDovecot) answer(send func(string), id, user, pass string) {
	switch strings.ToLower(user) {
	case "ann@example.org":
		if pass == "secret" {
			send("OK\t" + id + "\tuser=ann@example.org\n")
		} else {
			send("FAIL\t" + id + "\tuser=ann@example.org\n")
		}
	case "temp":
		send("FAIL\t" + id + "\ttemp\treason=passdb \x01tunavailable\n")
	case "slow":
		go func() {
			time.Sleep(200 * time.Millisecond)
			send("OK\t" + id + "\tuser=slow\n")
		}()
	case "hang":
	case "huge":
		send("OK\t" + id + "\tuser=" + strings.Repeat("x", maxDovecotLine) + "\n")
	default:
		send("FAIL\t" + id + "\tuser=" + user + "\treason=Password mismatch\n")
	}
}

func (f *fakeDovecot) lastAuth() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.auths) == 0 {
		return ""
	}
	return f.auths[len(f.auths)-1]
}

func newTestDovecot(t *testing.T, path string, timeout time.Duration) *Dovecot {
	t.Helper()
	d, err := NewDovecot(path, DovecotOptions{Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestDovecotAuth(t *testing.T) {
	t.Parallel()
	for _, network := range []string{"unix", "tcp"} {
		t.Run(network, func(t *testing.T) {
			f, path := newFakeDovecot(t, network)
			d := newTestDovecot(t, path, 0)
			ctx := context.Background()

			res, err := d.Authenticate(ctx, "Ann@Example.org", "secret", testIP)
			if err != nil || !res.OK || res.User != "ann@example.org" {
				t.Fatalf("good login: %+v, %v", res, err)
			}
			want := "AUTH\t1\tPLAIN\tservice=smtp\tnologin\trip=192.0.2.1\tno-penalty\tsecured\tresp=" +
				base64.StdEncoding.EncodeToString([]byte("\x00Ann@Example.org\x00secret")) + "\n"
			if got := f.lastAuth(); got != want {
				t.Errorf("AUTH line\n got %q\nwant %q", got, want)
			}
			f.mu.Lock()
			hello := f.hello[0]
			f.mu.Unlock()
			if hello[0] != "VERSION\t1\t1" || hello[1] != "CPID\t"+strconv.Itoa(os.Getpid()) {
				t.Errorf("client handshake %q", hello)
			}

			res, err = d.Authenticate(ctx, "ann@example.org", "guess", testIP)
			if err != nil || res.OK || res.Reason != "authentication failed" {
				t.Errorf("wrong password: %+v, %v", res, err)
			}
			res, err = d.Authenticate(ctx, "nobody", "guess", testIP)
			if err != nil || res.OK || res.Reason != "Password mismatch" {
				t.Errorf("unknown user: %+v, %v", res, err)
			}
			_, err = d.Authenticate(ctx, "temp", "secret", testIP)
			if err == nil || !strings.Contains(err.Error(), "temporary failure: passdb \tunavailable") {
				t.Errorf("temp: %v", err)
			}
			if n := f.numConns(); n != 1 {
				t.Errorf("%d connections, want 1", n)
			}
		})
	}
}

func TestDovecotRequestOptions(t *testing.T) {
	f, path := newFakeDovecot(t, "unix")
	d := newTestDovecot(t, path, 0)
	d.Authenticate(context.Background(), "ann@example.org", "secret", netip.Addr{})
	if got := f.lastAuth(); strings.Contains(got, "rip=") {
		t.Errorf("AUTH line %q has rip= without an address", got)
	}
	d.Authenticate(context.Background(), "ann@example.org", "secret", netip.MustParseAddr("::ffff:192.0.2.7"))
	if got := f.lastAuth(); !strings.Contains(got, "\trip=192.0.2.7\t") {
		t.Errorf("AUTH line %q: IPv4-mapped address not unmapped", got)
	}
	before := f.lastAuth()
	if res, err := d.Authenticate(context.Background(), "ann@example.org\x00x", "secret", testIP); err != nil || res.OK || f.lastAuth() != before {
		t.Errorf("NUL in user: %+v, %v, sent %q", res, err, f.lastAuth())
	}
	d, err := NewDovecot(path, DovecotOptions{Penalty: true, Service: "submission"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.Authenticate(context.Background(), "ann@example.org", "secret", testIP)
	if got := f.lastAuth(); strings.Contains(got, "no-penalty") || !strings.Contains(got, "\tservice=submission\t") {
		t.Errorf("AUTH line %q with Penalty and Service set", got)
	}
}

func TestDovecotReconnect(t *testing.T) {
	f, path := newFakeDovecot(t, "unix")
	d := newTestDovecot(t, path, 0)
	ctx := context.Background()
	if res, err := d.Authenticate(ctx, "ann@example.org", "secret", testIP); err != nil || !res.OK {
		t.Fatalf("%+v, %v", res, err)
	}
	// Dovecot restarts: the idle connection is gone. The next login
	// goes through on a new one.
	f.dropAll()
	if res, err := d.Authenticate(ctx, "ann@example.org", "secret", testIP); err != nil || !res.OK {
		t.Fatalf("after restart: %+v, %v", res, err)
	}
	// The connection dies under a request: a temporary error, then a
	// fresh connection for the next one.
	if _, err := d.Authenticate(ctx, "close", "secret", testIP); err == nil {
		t.Error("closed under a request: no error")
	}
	if res, err := d.Authenticate(ctx, "ann@example.org", "secret", testIP); err != nil || !res.OK {
		t.Fatalf("after close: %+v, %v", res, err)
	}
	if n := f.numConns(); n < 3 {
		t.Errorf("%d connections, want at least 3", n)
	}
}

func TestDovecotConcurrent(t *testing.T) {
	t.Parallel()
	f, path := newFakeDovecot(t, "unix")
	d := newTestDovecot(t, path, 0)
	ctx := context.Background()
	// Connect first, so all requests share one connection.
	d.Authenticate(ctx, "ann@example.org", "secret", testIP)

	var wg sync.WaitGroup
	var mu sync.Mutex
	var slowAt time.Time
	var fastAt []time.Time
	wg.Add(1)
	go func() {
		defer wg.Done()
		res, err := d.Authenticate(ctx, "slow", "x", testIP)
		if err != nil || !res.OK || res.User != "slow" {
			t.Errorf("slow: %+v, %v", res, err)
		}
		mu.Lock()
		slowAt = time.Now()
		mu.Unlock()
	}()
	time.Sleep(20 * time.Millisecond)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pass := "secret"
			if i%2 == 1 {
				pass = "guess"
			}
			res, err := d.Authenticate(ctx, "ann@example.org", pass, testIP)
			if err != nil || res.OK != (i%2 == 0) {
				t.Errorf("request %d: %+v, %v", i, res, err)
			}
			mu.Lock()
			fastAt = append(fastAt, time.Now())
			mu.Unlock()
		}()
	}
	wg.Wait()
	// The slow answer, sent first and answered 200 ms later, held up
	// none of the others.
	for i, at := range fastAt {
		if !at.Before(slowAt) {
			t.Errorf("answer %d came after the slow one", i)
		}
	}
	if n := f.numConns(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

func TestDovecotTimeout(t *testing.T) {
	f, path := newFakeDovecot(t, "unix")
	d := newTestDovecot(t, path, 100*time.Millisecond)
	ctx := context.Background()
	start := time.Now()
	_, err := d.Authenticate(ctx, "hang", "x", testIP)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hang: %v", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("timeout took %v", el)
	}
	// An answer after the timeout (slow answers at 200 ms) is dropped,
	// and does not end up as the answer to a later request.
	if _, err := d.Authenticate(ctx, "slow", "x", testIP); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("slow: %v", err)
	}
	time.Sleep(150 * time.Millisecond)
	if res, err := d.Authenticate(ctx, "nobody", "x", testIP); err != nil || res.OK {
		t.Errorf("after a late answer: %+v, %v", res, err)
	}
	if res, err := d.Authenticate(ctx, "ann@example.org", "secret", testIP); err != nil || !res.OK {
		t.Fatalf("after timeouts: %+v, %v", res, err)
	}
	// Late answers are Dovecot's right, so the connection stays.
	if n := f.numConns(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}

	// The caller's deadline counts too.
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := d.Authenticate(cctx, "hang", "x", testIP); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("caller deadline: %v", err)
	}
}

func TestDovecotCont(t *testing.T) {
	_, path := newFakeDovecot(t, "unix")
	d := newTestDovecot(t, path, time.Second)
	ctx := context.Background()
	if res, err := d.Authenticate(ctx, "cont", "secret", testIP); err != nil || !res.OK {
		t.Errorf("CONT answered: %+v, %v", res, err)
	}
	if _, err := d.Authenticate(ctx, "contcont", "secret", testIP); err == nil || !strings.Contains(err.Error(), "repeated CONT") {
		t.Errorf("repeated CONT: %v", err)
	}
}

func TestDovecotLongLine(t *testing.T) {
	_, path := newFakeDovecot(t, "unix")
	d := newTestDovecot(t, path, time.Second)
	_, err := d.Authenticate(context.Background(), "huge", "x", testIP)
	if err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("huge answer: %v", err)
	}
}

func TestDovecotHandshake(t *testing.T) {
	tests := []struct{ name, greeting, want string }{
		{"major version 2", strings.Replace(fakeGreeting, "VERSION\t1\t2", "VERSION\t2\t0", 1), "major version"},
		{"no PLAIN", strings.Replace(fakeGreeting, "MECH\tPLAIN\tplaintext\n", "", 1), "does not offer PLAIN"},
		{"no VERSION", strings.Replace(fakeGreeting, "VERSION\t1\t2\n", "", 1), "no VERSION"},
		{"garbage", "220 smtp.example.org ESMTP\n", "malformed line"},
		{"long line", "VERSION\t1\t2\nCOOKIE\t" + strings.Repeat("0", maxDovecotLine) + "\nDONE\n", "longer than"},
		{"closed before DONE", "VERSION\t1\t2\nMECH\tPLAIN\n", "dovecot auth"}, // EOF or a broken pipe
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, path := newFakeDovecot(t, "unix")
			f.mu.Lock()
			f.greeting, f.hangup = tt.greeting, tt.name == "closed before DONE"
			f.mu.Unlock()
			d := newTestDovecot(t, path, 500*time.Millisecond)
			_, err := d.Authenticate(context.Background(), "ann@example.org", "secret", testIP)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestDovecotDownAndClosed(t *testing.T) {
	d := newTestDovecot(t, filepath.Join(t.TempDir(), "nothing"), time.Second)
	if _, err := d.Authenticate(context.Background(), "ann", "secret", testIP); err == nil {
		t.Error("no server: no error")
	}
	_, path := newFakeDovecot(t, "unix")
	d = newTestDovecot(t, path, time.Second)
	d.Close()
	if _, err := d.Authenticate(context.Background(), "ann", "secret", testIP); !errors.Is(err, ErrDovecotClosed) {
		t.Errorf("after Close: %v", err)
	}
}

func TestParseDovecotPath(t *testing.T) {
	tests := []struct{ in, network, addr string }{
		{"private/auth", "unix", "private/auth"},
		{"/var/spool/postfix/private/auth", "unix", "/var/spool/postfix/private/auth"},
		{"unix:/run/dovecot/auth-client", "unix", "/run/dovecot/auth-client"},
		{"inet:127.0.0.1:12345", "tcp", "127.0.0.1:12345"},
		{"inet:[::1]:12345", "tcp", "[::1]:12345"},
		{"inet:auth.example.org:12345", "tcp", "auth.example.org:12345"},
	}
	for _, tt := range tests {
		n, a, err := ParseDovecotPath(tt.in)
		if err != nil || n != tt.network || a != tt.addr {
			t.Errorf("ParseDovecotPath(%q) = %q, %q, %v", tt.in, n, a, err)
		}
	}
	for _, bad := range []string{"", "unix:", "inet:", "inet:host", "inet:[::1"} {
		if _, _, err := ParseDovecotPath(bad); err == nil {
			t.Errorf("ParseDovecotPath(%q): no error", bad)
		}
	}
	if _, err := NewDovecot("/x", DovecotOptions{Service: "sm\ttp"}); err == nil {
		t.Error("service with a tab accepted")
	}
}
