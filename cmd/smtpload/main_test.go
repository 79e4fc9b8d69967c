package main

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
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// sink is a minimal SMTP server that accepts everything, for the load to
// hit without a real MTA.
type sink struct {
	ln        net.Listener
	tls       *tls.Config   // offers STARTTLS when set and not implicit
	implicit  bool          // TLS from the first byte
	failEvery int           // reply 451 to every failEvery-th message
	stall     bool          // never answer the final dot
	delay     time.Duration // wait this long before answering the final dot
	slowEvery int           // only every slowEvery-th message waits delay
	pipelined bool          // answer MAIL only once DATA (or BDAT) has been read: a client that waits for each reply hangs
	chunking  bool          // offer CHUNKING and take BDAT

	conns, handshakes, rcpts, rsets, msgs atomic.Int64

	mu     sync.Mutex
	bodies [][]byte // received messages, un-stuffed
	open   []net.Conn
}

func startSink(t *testing.T, s *sink) *sink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.ln = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.open = append(s.open, c)
			s.mu.Unlock()
			s.conns.Add(1)
			go s.serve(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, c := range s.open {
			c.Close()
		}
	})
	return s
}

func (s *sink) addr() string { return s.ln.Addr().String() }

func (s *sink) serve(c net.Conn) {
	defer c.Close()
	if s.implicit {
		tc := tls.Server(c, s.tls)
		if tc.Handshake() != nil {
			return
		}
		s.handshakes.Add(1)
		c = tc
	}
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	reply := func(l string) { w.WriteString(l + "\r\n"); w.Flush() }
	reply("220 sink ESMTP")
	encrypted := s.implicit
	data := func() bool {
		reply("354 go ahead")
		body, err := readData(r)
		if err != nil {
			return false
		}
		s.mu.Lock()
		s.bodies = append(s.bodies, body)
		s.mu.Unlock()
		n := s.msgs.Add(1)
		if s.slowEvery == 0 || n%int64(s.slowEvery) == 0 {
			time.Sleep(s.delay)
		}
		switch {
		case s.stall:
		case s.failEvery > 0 && n%int64(s.failEvery) == 0:
			reply("451 4.3.0 sink: try again later")
		default:
			reply("250 2.0.0 queued")
		}
		return true
	}
	// bdat takes a "BDAT n LAST" chunk: n bytes as they are, no dot.
	bdat := func(line string) bool {
		f := strings.Fields(line)
		n, err := strconv.Atoi(f[1])
		if len(f) != 3 || err != nil || !strings.EqualFold(f[2], "LAST") || !s.chunking {
			reply("501 5.5.4 sink: one BDAT n LAST chunk only")
			return false
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return false
		}
		s.mu.Lock()
		s.bodies = append(s.bodies, body)
		s.mu.Unlock()
		s.msgs.Add(1)
		reply("250 2.0.0 queued")
		return true
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		verb := strings.ToUpper(strings.Fields(line + " x")[0])
		switch verb {
		case "EHLO", "HELO":
			ext := "250-sink\r\n250-PIPELINING"
			if s.chunking {
				ext += "\r\n250-CHUNKING"
			}
			if s.tls != nil && !encrypted {
				ext += "\r\n250-STARTTLS"
			}
			reply(ext + "\r\n250 8BITMIME")
		case "STARTTLS":
			reply("220 2.0.0 go ahead")
			tc := tls.Server(c, s.tls)
			if tc.Handshake() != nil {
				return
			}
			s.handshakes.Add(1)
			c, encrypted = tc, true
			r, w = bufio.NewReader(c), bufio.NewWriter(c)
		case "MAIL":
			if s.pipelined {
				// The envelope must arrive whole before any reply.
				var replies []string
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					v := strings.ToUpper(strings.TrimSpace(l))
					if strings.HasPrefix(v, "RCPT") {
						s.rcpts.Add(1)
						replies = append(replies, "250 2.1.5 ok")
						continue
					}
					if v != "DATA" && !strings.HasPrefix(v, "BDAT ") {
						reply("503 5.5.1 not pipelined: " + v)
						return
					}
					reply(strings.Join(append([]string{"250 2.1.0 ok"}, replies...), "\r\n"))
					if v == "DATA" && !data() || v != "DATA" && !bdat(l) {
						return
					}
					break
				}
				continue
			}
			reply("250 2.1.0 ok")
		case "RCPT":
			s.rcpts.Add(1)
			reply("250 2.1.5 ok")
		case "DATA":
			if !data() {
				return
			}
		case "BDAT":
			if !bdat(line) {
				return
			}
		case "RSET":
			s.rsets.Add(1)
			reply("250 2.0.0 ok")
		case "QUIT":
			reply("221 2.0.0 bye")
			return
		default:
			reply("502 5.5.2 what")
		}
	}
}

// readData reads up to the lone dot and undoes dot-stuffing.
func readData(r *bufio.Reader) ([]byte, error) {
	var b []byte
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		if line == ".\r\n" {
			return b, nil
		}
		b = append(b, strings.TrimPrefix(line, ".")...)
	}
}

// selfSigned makes a throwaway certificate for 127.0.0.1.
func selfSigned(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "sink.test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

func baseConfig(addr string) Config {
	return Config{
		Addr: addr, Messages: 40, Conc: 4, Size: 1000,
		From: "load@bench.test", To: []string{"benchuser@bench.test"},
		Insecure: true, Timeout: 5 * time.Second, Duration: 20 * time.Second,
	}
}

func checkOrdered(t *testing.T, what string, p Percentiles) {
	t.Helper()
	if p.P50 <= 0 || p.P50 > p.P90 || p.P90 > p.P99 || p.P99 > p.Max {
		t.Errorf("%s percentiles not positive and ordered: %+v", what, p)
	}
}

// checkBodies verifies what the sink got: headers, the exact payload after
// un-stuffing, and no line over 78 characters.
func checkBodies(t *testing.T, s *sink, size int) {
	t.Helper()
	want := makePayload(size)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.bodies {
		head, body, ok := bytes.Cut(b, []byte("\r\n\r\n"))
		if !ok {
			t.Fatalf("no header/body separator in %q", b)
		}
		for _, h := range []string{"From: ", "To: ", "Subject: ", "Message-ID: <", "Date: "} {
			if !bytes.Contains(head, []byte(h)) {
				t.Errorf("header %q missing in %q", h, head)
			}
		}
		if !bytes.Equal(body, want) {
			t.Fatalf("body differs from the payload: got %d bytes, want %d", len(body), len(want))
		}
		for _, l := range strings.Split(string(b), "\r\n") {
			if len(l) > 78 {
				t.Errorf("line of %d chars: %q", len(l), l)
			}
		}
	}
}

func TestRun(t *testing.T) {
	cert := selfSigned(t)
	cases := []struct {
		name      string
		sink      *sink
		edit      func(*Config)
		conns     func(n int64) bool // connections the sink saw
		handshake bool
		steps     map[string]int // round trips timed per step; -1: one per connection
	}{
		{name: "plain", sink: &sink{}, conns: func(n int64) bool { return n == 40 },
			edit:  func(c *Config) { c.To = []string{"a@bench.test", "b@bench.test"} },
			steps: map[string]int{"banner": 40, "EHLO": 40, "MAIL": 40, "RCPT": 80, "DATA": 40, "QUIT": 40}},
		{name: "starttls", sink: &sink{tls: cert}, handshake: true, conns: func(n int64) bool { return n == 40 },
			edit:  func(c *Config) { c.TLS = TLSStartTLS },
			steps: map[string]int{"banner": 40, "EHLO": 80, "STARTTLS": 40, "MAIL": 40, "RCPT": 40, "DATA": 40, "QUIT": 40}},
		{name: "implicit", sink: &sink{tls: cert, implicit: true}, handshake: true, conns: func(n int64) bool { return n == 40 },
			edit:  func(c *Config) { c.TLS = TLSImplicit },
			steps: map[string]int{"banner": 40, "EHLO": 40, "MAIL": 40, "RCPT": 40, "DATA": 40, "QUIT": 40}},
		{name: "pipelining", sink: &sink{pipelined: true}, conns: func(n int64) bool { return n == 40 },
			edit:  func(c *Config) { c.Pipelining, c.To = true, []string{"a@bench.test", "b@bench.test"} },
			steps: map[string]int{"banner": 40, "EHLO": 40, "envelope": 40, "QUIT": 40}},
		{name: "bdat", sink: &sink{chunking: true}, conns: func(n int64) bool { return n == 40 },
			edit:  func(c *Config) { c.BDAT = true },
			steps: map[string]int{"banner": 40, "EHLO": 40, "MAIL": 40, "RCPT": 40, "QUIT": 40}},
		{name: "bdat pipelined", sink: &sink{chunking: true, pipelined: true}, conns: func(n int64) bool { return n == 40 },
			edit:  func(c *Config) { c.BDAT, c.Pipelining, c.To = true, true, []string{"a@bench.test", "b@bench.test"} },
			steps: map[string]int{"banner": 40, "EHLO": 40, "QUIT": 40}},
		{name: "persist", sink: &sink{tls: cert}, handshake: true, conns: func(n int64) bool { return n >= 1 && n <= 4 },
			edit:  func(c *Config) { c.Persist, c.TLS = true, TLSStartTLS },
			steps: map[string]int{"banner": -1, "EHLO": -2, "STARTTLS": -1, "MAIL": 40, "RCPT": 40, "DATA": 40, "RSET": 40}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := startSink(t, tc.sink)
			cfg := baseConfig(s.addr())
			tc.edit(&cfg)
			res, err := Run(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if res.OK != 40 || res.Failed != 0 || res.Unfinished != 0 || res.Stopped {
				t.Fatalf("ok=%d failed=%d unfinished=%d stopped=%v samples=%q",
					res.OK, res.Failed, res.Unfinished, res.Stopped, res.Samples)
			}
			if got := s.conns.Load(); !tc.conns(got) || int64(res.Connections) != got {
				t.Errorf("sink saw %d connections, result says %d", got, res.Connections)
			}
			if got := s.rcpts.Load(); got != int64(40*len(cfg.To)) {
				t.Errorf("sink saw %d RCPTs, want %d", got, 40*len(cfg.To))
			}
			if cfg.Persist && s.rsets.Load() != 40 {
				t.Errorf("persist: %d RSETs, want one per message", s.rsets.Load())
			}
			checkOrdered(t, "latency", res.Latency)
			checkOrdered(t, "connect", res.Connect)
			for step, n := range tc.steps {
				if n < 0 {
					n *= -res.Connections
				}
				if got := res.Steps[step]; got.N != n {
					t.Errorf("step %s timed %d times, want %d", step, got.N, n)
				} else {
					checkOrdered(t, step, got)
				}
			}
			if len(res.Steps) != len(tc.steps) {
				t.Errorf("steps %v, want those of %v", res.Steps, tc.steps)
			}
			if tc.handshake {
				if res.Handshakes != res.Connections || s.handshakes.Load() != int64(res.Handshakes) {
					t.Errorf("handshakes: result %d, connections %d, sink %d", res.Handshakes, res.Connections, s.handshakes.Load())
				}
				checkOrdered(t, "handshake", res.Handshake)
				if res.HandshakesPerSec() <= 0 {
					t.Error("no handshakes/s")
				}
			} else if res.Handshakes != 0 {
				t.Errorf("%d handshakes in plain text", res.Handshakes)
			}
			if res.MsgsPerSec() <= 0 || res.BytesPerSec() <= 0 {
				t.Errorf("rates: %f msgs/s %f bytes/s", res.MsgsPerSec(), res.BytesPerSec())
			}
			checkBodies(t, s, cfg.Size)
		})
	}
}

// TestBDATNotOffered: -bdat against a server without CHUNKING fails
// every message and says why, rather than sending BDAT anyway.
func TestBDATNotOffered(t *testing.T) {
	s := startSink(t, &sink{})
	cfg := baseConfig(s.addr())
	cfg.BDAT, cfg.Messages = true, 5
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 0 || res.Failed != 5 || s.msgs.Load() != 0 {
		t.Fatalf("ok=%d failed=%d, sink took %d", res.OK, res.Failed, s.msgs.Load())
	}
	if !strings.Contains(fmt.Sprint(res.Samples), "does not offer CHUNKING") {
		t.Errorf("samples %q do not say CHUNKING is missing", res.Samples)
	}
}

// TestFailures runs the command's own path: every 3rd message gets 451,
// which must be counted, sampled, and make the exit status 1.
func TestFailures(t *testing.T) {
	s := startSink(t, &sink{failEvery: 3})
	var out, errw bytes.Buffer
	code := run(t.Context(), []string{"-n", "30", "-c", "3", "-s", "300", "-persist", s.addr()}, &out, &errw)
	t.Log("\n" + out.String())
	if code != 1 {
		t.Errorf("exit %d, want 1; stderr %s", code, errw.String())
	}
	for _, want := range []string{
		"failures:   451=10\n",
		"steps:      banner ",
		"sample:   end of data: 451 4.3.0 sink: try again later",
		"RESULT n=30 conc=3 size=300 tls=none ok=20 failed=10 secs=",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if s.conns.Load() > 3 {
		t.Errorf("451 must not drop the connection: %d connections", s.conns.Load())
	}
}

// TestVerify: with verification on, a self-signed certificate fails every
// message at the handshake.
func TestVerify(t *testing.T) {
	s := startSink(t, &sink{tls: selfSigned(t), implicit: true})
	cfg := baseConfig(s.addr())
	cfg.Messages, cfg.TLS, cfg.Insecure = 3, TLSImplicit, false
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 0 || res.FailCodes["handshake"] != 3 || len(res.Samples) != 1 {
		t.Errorf("ok=%d codes=%v samples=%q", res.OK, res.FailCodes, res.Samples)
	}
}

// TestDuration: a server that never answers is cut off by the run bound,
// not by the per-command timeout, and nothing is counted as failed.
func TestDuration(t *testing.T) {
	s := startSink(t, &sink{stall: true})
	cfg := baseConfig(s.addr())
	cfg.Messages, cfg.Conc, cfg.Duration, cfg.Timeout = 5, 2, 200*time.Millisecond, time.Minute
	start := time.Now()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("run took %s despite a 200ms bound", time.Since(start))
	}
	if !res.Stopped || res.OK != 0 || res.Failed != 0 || res.Unfinished != 5 {
		t.Errorf("stopped=%v ok=%d failed=%d unfinished=%d", res.Stopped, res.OK, res.Failed, res.Unfinished)
	}
}

// TestRate: with -rate the messages are offered open loop, message i due
// (i-1)/rate after the start; a server slower than the offered rate makes
// them start late, and the result says how late.
func TestRate(t *testing.T) {
	t.Run("on time", func(t *testing.T) {
		s := startSink(t, &sink{})
		cfg := baseConfig(s.addr())
		cfg.Messages, cfg.Conc, cfg.Rate = 20, 4, 100 // the last is due at 190ms
		start := time.Now()
		res, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < 190*time.Millisecond {
			t.Errorf("20 messages at 100/s took %s, want at least 190ms", took)
		}
		if res.OK != 20 || res.Lateness.N != 20 {
			t.Errorf("ok=%d, lateness measured for %d, want 20 and 20", res.OK, res.Lateness.N)
		}
	})
	t.Run("server too slow", func(t *testing.T) {
		// One session, 10ms apart, 40ms a message: from the second on
		// each starts 30ms later than the one before was due to.
		s := startSink(t, &sink{delay: 40 * time.Millisecond})
		cfg := baseConfig(s.addr())
		cfg.Messages, cfg.Conc, cfg.Rate = 5, 1, 100
		res, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if res.OK != 5 || res.Late < 4 || res.Lateness.Max < 90*time.Millisecond {
			t.Errorf("ok=%d late=%d lateness max %s, want 5, at least 4 and at least 90ms", res.OK, res.Late, res.Lateness.Max)
		}
		var out bytes.Buffer
		report(&out, cfg, res)
		if !strings.Contains(out.String(), "offered:    100.0 msgs/s; ") || !strings.Contains(out.String(), " rate=100.0 late=") {
			t.Errorf("report lacks the offered rate:\n%s", out.String())
		}
	})
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-n", "x", "127.0.0.1:25"},
		{"-tls", "-starttls", "127.0.0.1:25"},
		{"-n", "0", "127.0.0.1:25"},
		{"127.0.0.1"},
		{"192.0.2.1:25"}, // not loopback: refused before any dial
		{"-to", "", "127.0.0.1:25"},
		{"-rate", "-5", "127.0.0.1:25"},
	} {
		var out, errw bytes.Buffer
		if code := run(t.Context(), args, &out, &errw); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
	if err := checkLoopback(t.Context(), "192.0.2.1"); err == nil || !strings.Contains(err.Error(), "-allow-remote") {
		t.Errorf("remote host: %v", err)
	}
}

func TestPayload(t *testing.T) {
	for size := range 300 {
		p := makePayload(size)
		if len(p) != size {
			t.Fatalf("size %d: got %d bytes", size, len(p))
		}
		for _, l := range strings.Split(string(p), "\r\n") {
			if len(l) > 78 || strings.ContainsAny(l, "\r\n") {
				t.Fatalf("size %d: bad line %q", size, l)
			}
		}
		st := dotStuff(p)
		if size > 0 && !bytes.HasSuffix(st, []byte("\r\n")) {
			t.Fatalf("size %d: stuffed body does not end in CRLF", size)
		}
		if un := bytes.ReplaceAll(st, []byte("\r\n.."), []byte("\r\n.")); size > 2 && !bytes.Equal(bytes.TrimPrefix(un, []byte(".")), p) {
			t.Fatalf("size %d: stuffing does not round-trip", size)
		}
	}
	if h := addrHeader("To", strings.Split(strings.Repeat("someone.long@bench.test,", 8), ",")[:8]); strings.Count(h, "\r\n") < 2 {
		t.Errorf("To header not folded: %q", h)
	}
}

// TestLatencyLog: -latency-log writes a line per message that succeeded,
// in the order the replies came, each with its own latency: the slow
// ones stand out where they happened.
func TestLatencyLog(t *testing.T) {
	s := startSink(t, &sink{delay: 30 * time.Millisecond, slowEvery: 5, failEvery: 7})
	path := t.TempDir() + "/lat.txt"
	var stdout, stderr bytes.Buffer
	args := []string{"-n", "35", "-c", "1", "-s", "100", "-latency-log", path, s.addr()}
	if code := run(t.Context(), args, &stdout, &stderr); code != 1 {
		// 1: five of the 35 were refused (451), which the exit status says.
		t.Fatalf("exit %d, want 1 (some failed)\n%s%s", code, stdout.String(), stderr.String())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if !strings.HasPrefix(lines[0], "# ") {
		t.Fatalf("no header line: %q", lines[0])
	}
	lines = lines[1:]
	// 35 messages, every 7th refused: 30 lines. One session sends them
	// in order, so the n-th line is message n of those that passed.
	if len(lines) != 30 {
		t.Fatalf("%d lines, want 30:\n%s", len(lines), b)
	}
	var prev float64
	slow := 0
	for i, l := range lines {
		var at, lat float64
		if _, err := fmt.Sscanf(l, "%f %f", &at, &lat); err != nil {
			t.Fatalf("line %d %q: %v", i+1, l, err)
		}
		if at < prev || lat < 0 || at*1000 < lat {
			t.Errorf("line %d %q: out of order or impossible after %f", i+1, l, prev)
		}
		prev = at
		if lat >= 30 {
			slow++
		}
	}
	// Messages 5, 10, ..., 35 waited 30ms; 35 was also refused (7 | 35).
	if slow != 6 {
		t.Errorf("%d lines at 30ms or more, want the 6 slow messages that passed:\n%s", slow, b)
	}

	t.Run("unwritable", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		args := []string{"-n", "2", "-c", "1", "-latency-log", t.TempDir() + "/no/such/dir/lat.txt", s.addr()}
		if code := run(t.Context(), args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "latency log") {
			t.Errorf("exit %d, stderr %q: want 2 and the file named", code, stderr.String())
		}
		if !strings.Contains(stdout.String(), "RESULT ") {
			t.Errorf("the report is lost when the log cannot be written:\n%s", stdout.String())
		}
	})
}
