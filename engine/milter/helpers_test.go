package milter

import (
	"context"
	"encoding/binary"
	"errors"
	"maps"
	"net"
	"net/netip"
	"net/textproto"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
)

// fake is a go-milter server-side milter whose callbacks the tests fill
// in; unset ones continue (and accept at end of message). It records the
// macros each stage saw.
type fake struct {
	mail   func(from string, m *gomilter.Modifier) (gomilter.Response, error)
	rcpt   func(to string, m *gomilter.Modifier) (gomilter.Response, error)
	header func(name, value string) (gomilter.Response, error)
	chunk  func(chunk []byte) (gomilter.Response, error)
	eom    func(m *gomilter.Modifier) (gomilter.Response, error)

	mu     sync.Mutex
	macros map[string]map[string]string // stage → macros seen
	conn   []string                     // host, family, port, addr of the last connect
	helo   string
}

func (f *fake) saw(stage string, m *gomilter.Modifier) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.macros == nil {
		f.macros = map[string]map[string]string{}
	}
	f.macros[stage] = maps.Clone(m.Macros)
}

func (f *fake) seen(stage string) map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.macros[stage]
}

func (f *fake) Connect(host, family string, port uint16, addr net.IP, m *gomilter.Modifier) (gomilter.Response, error) {
	f.saw("connect", m)
	f.mu.Lock()
	f.conn = []string{host, family, strconv.Itoa(int(port)), addr.String()}
	f.mu.Unlock()
	return gomilter.RespContinue, nil
}

func (f *fake) Helo(name string, m *gomilter.Modifier) (gomilter.Response, error) {
	f.saw("helo", m)
	f.mu.Lock()
	f.helo = name
	f.mu.Unlock()
	return gomilter.RespContinue, nil
}

func (f *fake) MailFrom(from string, m *gomilter.Modifier) (gomilter.Response, error) {
	f.saw("mail", m)
	if f.mail != nil {
		return f.mail(from, m)
	}
	return gomilter.RespContinue, nil
}

func (f *fake) RcptTo(to string, m *gomilter.Modifier) (gomilter.Response, error) {
	f.saw("rcpt", m)
	if f.rcpt != nil {
		return f.rcpt(to, m)
	}
	return gomilter.RespContinue, nil
}

func (f *fake) Header(name, value string, m *gomilter.Modifier) (gomilter.Response, error) {
	if f.header != nil {
		return f.header(name, value)
	}
	return gomilter.RespContinue, nil
}

func (f *fake) Headers(h textproto.MIMEHeader, m *gomilter.Modifier) (gomilter.Response, error) {
	f.saw("eoh", m)
	return gomilter.RespContinue, nil
}

func (f *fake) BodyChunk(chunk []byte, m *gomilter.Modifier) (gomilter.Response, error) {
	if f.chunk != nil {
		return f.chunk(chunk)
	}
	return gomilter.RespContinue, nil
}

func (f *fake) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	f.saw("eom", m)
	if f.eom != nil {
		return f.eom(m)
	}
	return gomilter.RespAccept, nil
}

func (f *fake) Abort(m *gomilter.Modifier) error { return nil }

// allActions is what the test milters say they may do.
const allActions = gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptAddRcpt |
	gomilter.OptRemoveRcpt | gomilter.OptChangeFrom | gomilter.OptChangeBody | gomilter.OptQuarantine

// counter counts the connections a listener accepts.
type counter struct {
	net.Listener
	n atomic.Int32
}

func (c *counter) Accept() (net.Conn, error) {
	conn, err := c.Listener.Accept()
	if err == nil {
		c.n.Add(1)
	}
	return conn, err
}

// serve runs a go-milter server for milter f on 127.0.0.1 ("tcp") or a unix
// socket ("unix") until the test ends, and returns its Config.Addr.
func serve(t testing.TB, network string, f gomilter.Milter) (string, *counter) {
	t.Helper()
	var ln net.Listener
	var err error
	var addr string
	switch network {
	case "tcp":
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		if err == nil {
			addr = "inet:" + ln.Addr().String()
		}
	case "unix":
		// t.TempDir can exceed the 108-byte socket path limit.
		dir, derr := os.MkdirTemp("", "milter")
		if derr != nil {
			t.Fatal(derr)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		path := filepath.Join(dir, "m.sock")
		ln, err = net.Listen("unix", path)
		addr = "unix:" + path
	}
	if err != nil {
		t.Fatal(err)
	}
	cl := &counter{Listener: ln}
	srv := &gomilter.Server{
		NewMilter: func() gomilter.Milter { return f },
		Actions:   allActions,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(cl)
	}()
	t.Cleanup(func() {
		// Closing the listener directly: Server.Close races with Serve.
		ln.Close()
		<-done
	})
	return addr, cl
}

// rawServer accepts connections on 127.0.0.1 and hands each to handle,
// for peers that misbehave. It waits for the handlers when the test ends.
func rawServer(t testing.TB, handle func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return "inet:" + ln.Addr().String()
}

// negotiateV6 answers the MTA's option negotiation as a version 6 milter
// asking for proto.
func negotiateV6(c net.Conn, proto gomilter.OptProtocol) error {
	code, n, err := readHeader(c)
	if err != nil {
		return err
	}
	if _, err := readData(c, n, nil); err != nil {
		return err
	}
	if code != 'O' {
		return errors.New("no OPTNEG")
	}
	data := make([]byte, 12)
	data[3] = 6
	data[7] = byte(allActions)
	binary.BigEndian.PutUint32(data[8:], uint32(proto))
	return writePacket(c, 'O', data)
}

// newMilter is New for tests, with short timeouts.
func newMilter(t testing.TB, cfg Config) *Milter {
	t.Helper()
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	if cfg.CommandTimeout == 0 {
		cfg.CommandTimeout = 5 * time.Second
	}
	if cfg.ContentTimeout == 0 {
		cfg.ContentTimeout = 10 * time.Second
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var testInfo = Info{
	Hostname:   "mx.example.net",
	DaemonName: "smtpd",
	DaemonAddr: netip.MustParseAddr("192.0.2.1"),
	ClientName: "client.example.org",
	ClientAddr: netip.MustParseAddr("198.51.100.7"),
	ClientPort: 40123,
}

// open opens a session and fails the test unless the milter continues.
func open(t testing.TB, m *Milter) *Session {
	t.Helper()
	s, v, err := m.Open(context.Background(), testInfo)
	if err != nil || v.Action != Continue {
		t.Fatalf("Open = %v, %v", v, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// must fails the test unless a stage got the wanted action without error.
func must(t testing.TB, stage string, v Verdict, err error, want string) {
	t.Helper()
	if err != nil || v.Action != want {
		t.Fatalf("%s = %v, %v; want %s", stage, v, err, want)
	}
}

// envelope runs HELO, MAIL and RCPT, all expected to continue.
func envelope(t testing.TB, s *Session, from string, to ...string) {
	t.Helper()
	ctx := context.Background()
	v, err := s.Helo(ctx, "client.example.org")
	must(t, "Helo", v, err, Continue)
	v, err = s.Mail(ctx, from, nil)
	must(t, "Mail", v, err, Continue)
	for _, r := range to {
		v, err = s.Rcpt(ctx, r, nil)
		must(t, "Rcpt", v, err, Continue)
	}
	v, err = s.Data(ctx)
	must(t, "Data", v, err, Continue)
}

// noLeaks waits for the goroutine count to come back to before.
func noLeaks(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d, want <= %d\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const testHeader = "From: a@example.org\r\n" +
	"To: b@example.net\r\n" +
	"Subject: hello\r\n" +
	"X-Old: remove me\r\n" +
	"\r\n"
