package milter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
)

func TestRejectRcpt(t *testing.T) {
	f := &fake{rcpt: func(to string, _ *gomilter.Modifier) (gomilter.Response, error) {
		switch to {
		case "bad@example.net":
			return gomilter.RespReject, nil
		case "gone@example.net":
			return gomilter.NewResponseStr('y', "550 5.1.1 No such user here"), nil
		}
		return gomilter.RespContinue, nil
	}}
	addr, _ := serve(t, "tcp", f)
	s := open(t, newMilter(t, Config{Addr: addr}))
	ctx := context.Background()
	envelope(t, s, "a@example.org", "good@example.net")

	v, err := s.Rcpt(ctx, "bad@example.net", nil)
	if err != nil || v != rejectVerdict {
		t.Errorf("Rcpt(bad) = %v, %v; want %v", v, err, rejectVerdict)
	}
	v, err = s.Rcpt(ctx, "gone@example.net", nil)
	want := Verdict{Action: Reject, Code: 550, Status: "5.1.1", Text: "No such user here"}
	if err != nil || v != want {
		t.Errorf("Rcpt(gone) = %#v, %v; want %#v", v, err, want)
	}
	// A refused recipient leaves the message going.
	v, err = s.Rcpt(ctx, "other@example.net", nil)
	must(t, "Rcpt(other)", v, err, Continue)
	v, _, err = s.EndOfMessage(ctx, []byte(testHeader), strings.NewReader("hi\r\n"))
	must(t, "EndOfMessage", v, err, Accept)
}

func TestTempfailMail(t *testing.T) {
	f := &fake{mail: func(from string, _ *gomilter.Modifier) (gomilter.Response, error) {
		if from == "busy@example.org" {
			return gomilter.RespTempFail, nil
		}
		return gomilter.RespContinue, nil
	}}
	addr, _ := serve(t, "tcp", f)
	s := open(t, newMilter(t, Config{Addr: addr}))
	ctx := context.Background()

	v, err := s.Mail(ctx, "busy@example.org", []string{"SIZE=100"})
	if err != nil || v != tempfailVerdict {
		t.Fatalf("Mail = %v, %v; want %v", v, err, tempfailVerdict)
	}
	// The client tries another sender without RSET: the session goes on.
	envelope(t, s, "ok@example.org", "b@example.net")
	v, _, err = s.EndOfMessage(ctx, []byte(testHeader), strings.NewReader("hi\r\n"))
	must(t, "EndOfMessage", v, err, Accept)
}

func TestModifications(t *testing.T) {
	f := &fake{eom: func(m *gomilter.Modifier) (gomilter.Response, error) {
		for _, err := range []error{
			m.AddHeader("X-Spam", "yes"),
			m.AddHeader("X-Multi", "a\r\n\tb"),
			m.ChangeHeader(1, "Subject", "[SPAM] hello"),
			m.ChangeHeader(1, "X-Old", ""),
			m.InsertHeader(0, "X-First", "1"),
			m.ChangeFrom("<new@example.org>"),
			m.AddRecipient("added@example.net"),
			m.DeleteRecipient("b@example.net"),
		} {
			if err != nil {
				return nil, err
			}
		}
		return gomilter.RespAccept, nil
	}}
	addr, _ := serve(t, "tcp", f)
	s := open(t, newMilter(t, Config{Addr: addr}))
	envelope(t, s, "a@example.org", "b@example.net")
	v, mods, err := s.EndOfMessage(context.Background(), []byte(testHeader), strings.NewReader("hi\r\n"))
	must(t, "EndOfMessage", v, err, Accept)
	want := []Modification{
		{Kind: ModAddHeader, Name: "X-Spam", Value: " yes"},
		{Kind: ModAddHeader, Name: "X-Multi", Value: " a\r\n\tb"},
		{Kind: ModChangeHeader, Name: "Subject", Value: " [SPAM] hello", Index: 1},
		{Kind: ModDeleteHeader, Name: "X-Old", Index: 1},
		{Kind: ModInsertHeader, Name: "X-First", Value: " 1", Index: 0},
		{Kind: ModChangeFrom, Addr: "new@example.org"},
		{Kind: ModAddRcpt, Addr: "added@example.net"},
		{Kind: ModDeleteRcpt, Addr: "b@example.net"},
	}
	if !reflect.DeepEqual(mods, want) {
		t.Errorf("modifications:\n got %+v\nwant %+v", mods, want)
	}
}

func TestReplaceBody(t *testing.T) {
	// Bigger than one read from the connection, in two SMFIR_REPLBODY
	// packets, with LF line endings (go-milter's ReplaceBody makes them).
	part1 := strings.Repeat("replacement line\r\n", 20000)
	f := &fake{eom: func(m *gomilter.Modifier) (gomilter.Response, error) {
		if err := m.AddHeader("X-Replaced", "yes"); err != nil {
			return nil, err
		}
		if err := m.ReplaceBody([]byte(part1)); err != nil {
			return nil, err
		}
		if err := m.ReplaceBody([]byte("last\r\n")); err != nil {
			return nil, err
		}
		return gomilter.RespAccept, nil
	}}
	addr, _ := serve(t, "tcp", f)
	tmp := t.TempDir()
	s := open(t, newMilter(t, Config{Addr: addr, TempDir: tmp}))
	envelope(t, s, "a@example.org", "b@example.net")
	v, mods, err := s.EndOfMessage(context.Background(), []byte(testHeader), strings.NewReader("original\r\n"))
	must(t, "EndOfMessage", v, err, Accept)
	if len(mods) != 2 || mods[0].Kind != ModAddHeader || mods[1].Kind != ModReplaceBody || mods[1].Body == nil {
		t.Fatalf("modifications = %+v", mods)
	}
	body := mods[1].Body
	defer body.Close()
	got, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	if want := part1 + "last\r\n"; string(got) != want {
		t.Errorf("replaced body: %d bytes, want %d (CRLF restored)", len(got), len(want))
	}
	// The spool file is already gone from the directory.
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("spool directory holds %v", ents)
	}
}

// genReader produces n bytes of CRLF-terminated text without holding
// them, and notes the largest read it was asked for.
type genReader struct {
	n, off  int64
	maxRead int
}

func genByte(i int64) byte {
	switch i % 80 {
	case 78:
		return '\r'
	case 79:
		return '\n'
	}
	return 'a' + byte(i%26)
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.off >= g.n {
		return 0, io.EOF
	}
	g.maxRead = max(g.maxRead, len(p))
	k := min(int64(len(p)), g.n-g.off)
	for i := range k {
		p[i] = genByte(g.off + i)
	}
	g.off += k
	return int(k), nil
}

func TestLargeBodyStreamed(t *testing.T) {
	const size = 5 << 20
	var (
		mu       sync.Mutex
		h        = sha256.New()
		seen     int
		maxChunk int
	)
	f := &fake{chunk: func(chunk []byte) (gomilter.Response, error) {
		mu.Lock()
		defer mu.Unlock()
		h.Write(chunk)
		seen += len(chunk)
		maxChunk = max(maxChunk, len(chunk))
		return gomilter.RespContinue, nil
	}}
	addr, _ := serve(t, "unix", f)
	s := open(t, newMilter(t, Config{Addr: addr}))
	envelope(t, s, "a@example.org", "b@example.net")

	body := &genReader{n: size}
	v, _, err := s.EndOfMessage(context.Background(), []byte(testHeader), body)
	must(t, "EndOfMessage", v, err, Accept)

	want := sha256.New()
	io.Copy(want, &genReader{n: size})
	mu.Lock()
	defer mu.Unlock()
	if seen != size || !bytes.Equal(h.Sum(nil), want.Sum(nil)) {
		t.Errorf("milter saw %d bytes (hash match %v), want all %d", seen, bytes.Equal(h.Sum(nil), want.Sum(nil)), size)
	}
	if maxChunk > gomilter.MaxBodyChunk || body.maxRead > gomilter.MaxBodyChunk {
		t.Errorf("largest chunk %d, largest read %d; limit %d", maxChunk, body.maxRead, gomilter.MaxBodyChunk)
	}
}

func TestQuarantine(t *testing.T) {
	f := &fake{eom: func(m *gomilter.Modifier) (gomilter.Response, error) {
		if err := m.Quarantine("looks viral"); err != nil {
			return nil, err
		}
		return gomilter.RespAccept, nil
	}}
	addr, _ := serve(t, "tcp", f)
	s := open(t, newMilter(t, Config{Addr: addr}))
	envelope(t, s, "a@example.org", "b@example.net")
	v, mods, err := s.EndOfMessage(context.Background(), []byte(testHeader), strings.NewReader("hi\r\n"))
	if err != nil || v != (Verdict{Action: Quarantine, Text: "looks viral"}) {
		t.Fatalf("EndOfMessage = %v, %v", v, err)
	}
	if len(mods) != 1 || mods[0].Kind != ModQuarantine || mods[0].Reason != "looks viral" {
		t.Errorf("modifications = %+v", mods)
	}
}

func TestDiscard(t *testing.T) {
	t.Run("end of message", func(t *testing.T) {
		f := &fake{eom: func(m *gomilter.Modifier) (gomilter.Response, error) {
			m.AddHeader("X-Moot", "yes")
			return gomilter.RespDiscard, nil
		}}
		addr, _ := serve(t, "tcp", f)
		s := open(t, newMilter(t, Config{Addr: addr}))
		envelope(t, s, "a@example.org", "b@example.net")
		v, mods, err := s.EndOfMessage(context.Background(), []byte(testHeader), strings.NewReader("hi\r\n"))
		must(t, "EndOfMessage", v, err, Discard)
		if mods != nil {
			t.Errorf("modifications of a discarded message: %+v", mods)
		}
	})
	t.Run("recipient", func(t *testing.T) {
		var chunks atomic.Int32
		f := &fake{
			rcpt: func(to string, _ *gomilter.Modifier) (gomilter.Response, error) {
				if to == "spamtrap@example.net" {
					return gomilter.RespDiscard, nil
				}
				return gomilter.RespContinue, nil
			},
			chunk: func([]byte) (gomilter.Response, error) {
				chunks.Add(1)
				return gomilter.RespContinue, nil
			},
		}
		addr, _ := serve(t, "tcp", f)
		s := open(t, newMilter(t, Config{Addr: addr}))
		ctx := context.Background()
		envelope(t, s, "a@example.org")
		v, err := s.Rcpt(ctx, "spamtrap@example.net", nil)
		must(t, "Rcpt", v, err, Discard)
		// The whole message is discarded; the milter is not asked again.
		v, err = s.Rcpt(ctx, "b@example.net", nil)
		must(t, "Rcpt", v, err, Discard)
		v, _, err = s.EndOfMessage(ctx, []byte(testHeader), strings.NewReader("hi\r\n"))
		must(t, "EndOfMessage", v, err, Discard)
		if n := chunks.Load(); n != 0 {
			t.Errorf("milter got %d body chunks of a discarded message", n)
		}
		// The next message is filtered again.
		envelope(t, s, "a@example.org", "b@example.net")
		v, _, err = s.EndOfMessage(ctx, []byte(testHeader), strings.NewReader("hi\r\n"))
		must(t, "EndOfMessage", v, err, Accept)
	})
}

func TestMacros(t *testing.T) {
	f := &fake{}
	addr, _ := serve(t, "tcp", f)
	s := open(t, newMilter(t, Config{Addr: addr}))
	ctx := context.Background()

	s.SetMacro("{tls_version}", "TLSv1.3")
	v, err := s.Helo(ctx, "client.example.org")
	must(t, "Helo", v, err, Continue)
	s.SetMacro("{auth_type}", "PLAIN")
	s.SetMacro("{auth_authen}", "alice")
	s.SetMacro("i", "QID1")
	v, err = s.Mail(ctx, "a@example.org", nil)
	must(t, "Mail", v, err, Continue)
	v, err = s.Rcpt(ctx, "b@example.net", nil)
	must(t, "Rcpt", v, err, Continue)
	v, _, err = s.EndOfMessage(ctx, []byte(testHeader), strings.NewReader("hi\r\n"))
	must(t, "EndOfMessage", v, err, Accept)

	for _, c := range []struct {
		stage string
		want  map[string]string
	}{
		{"connect", map[string]string{
			"j": "mx.example.net", "{daemon_name}": "smtpd", "{daemon_addr}": "192.0.2.1",
			"{client_addr}": "198.51.100.7", "{client_port}": "40123",
			"{client_name}": "client.example.org", "_": "client.example.org [198.51.100.7]",
		}},
		{"helo", map[string]string{"{tls_version}": "TLSv1.3"}},
		{"mail", map[string]string{"i": "QID1", "{auth_type}": "PLAIN", "{auth_authen}": "alice", "{mail_addr}": "a@example.org"}},
		{"rcpt", map[string]string{"i": "QID1", "{rcpt_addr}": "b@example.net"}},
		{"eoh", map[string]string{"i": "QID1"}},
		{"eom", map[string]string{"i": "QID1"}},
	} {
		got := f.seen(c.stage)
		for k, want := range c.want {
			if got[k] != want {
				t.Errorf("%s: macro %s = %q, want %q (all: %v)", c.stage, k, got[k], want, got)
			}
		}
	}
	f.mu.Lock()
	conn := f.conn
	f.mu.Unlock()
	if want := []string{"client.example.org", "tcp4", "40123", "198.51.100.7"}; !reflect.DeepEqual(conn, want) {
		t.Errorf("connect event %v, want %v", conn, want)
	}

	// The queue ID belonged to the finished message; AUTH is the session's.
	v, err = s.Mail(ctx, "a@example.org", nil)
	must(t, "Mail", v, err, Continue)
	got := f.seen("mail")
	if _, ok := got["i"]; ok || got["{auth_authen}"] != "alice" {
		t.Errorf("second message's MAIL macros: %v", got)
	}
}

// downAddr returns an address where nothing listens.
func downAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "inet:" + addr
}

func TestMilterDown(t *testing.T) {
	for _, c := range []struct {
		action string
		want   Verdict
	}{
		{"", tempfailVerdict},
		{"tempfail", tempfailVerdict},
		{"reject", rejectVerdict},
		{"accept", Verdict{Action: Accept}},
	} {
		for _, addr := range []string{downAddr(t), "unix:/nonexistent/milter.sock"} {
			t.Run(c.action+" "+addr, func(t *testing.T) {
				m := newMilter(t, Config{Addr: addr, DefaultAction: c.action})
				ctx := context.Background()
				s, v, err := m.Open(ctx, testInfo)
				if err == nil || v != c.want {
					t.Fatalf("Open = %v, %v; want %v and an error", v, err, c.want)
				}
				defer s.Close()
				// Every later stage: the same answer, no error, no I/O.
				v, err = s.Helo(ctx, "x")
				if err != nil || v != c.want {
					t.Errorf("Helo = %v, %v", v, err)
				}
				v, err = s.Rcpt(ctx, "b@example.net", nil)
				if err != nil || v != c.want {
					t.Errorf("Rcpt = %v, %v", v, err)
				}
				v, mods, err := s.EndOfMessage(ctx, []byte(testHeader), strings.NewReader("x"))
				if err != nil || v != c.want || mods != nil {
					t.Errorf("EndOfMessage = %v, %v, %v", v, mods, err)
				}
			})
		}
	}
}

func TestCommandTimeout(t *testing.T) {
	// Negotiates, then never answers.
	addr := rawServer(t, func(c net.Conn) {
		if negotiateV6(c, 0) == nil {
			io.Copy(io.Discard, c)
		}
	})
	before := runtime.NumGoroutine()
	m := newMilter(t, Config{Addr: addr, CommandTimeout: 200 * time.Millisecond})
	start := time.Now()
	s, v, err := m.Open(context.Background(), testInfo)
	elapsed := time.Since(start)
	if v != tempfailVerdict || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Open = %v, %v; want tempfail and a timeout", v, err)
	}
	if elapsed < 200*time.Millisecond || elapsed > 3*time.Second {
		t.Errorf("gave up after %v, want about 200ms", elapsed)
	}
	start = time.Now()
	v, err = s.Mail(context.Background(), "a@example.org", nil)
	if v != tempfailVerdict || err != nil || time.Since(start) > 50*time.Millisecond {
		t.Errorf("Mail after failure = %v, %v after %v", v, err, time.Since(start))
	}
	s.Close()
	noLeaks(t, before)
}

func TestConnectTimeout(t *testing.T) {
	// Never answers the option negotiation.
	addr := rawServer(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	before := runtime.NumGoroutine()
	m := newMilter(t, Config{Addr: addr, ConnectTimeout: 200 * time.Millisecond, DefaultAction: "reject"})
	start := time.Now()
	s, v, err := m.Open(context.Background(), testInfo)
	if v != rejectVerdict || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Open = %v, %v; want reject and a timeout", v, err)
	}
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Errorf("gave up after %v, want about 200ms", elapsed)
	}
	s.Close()
	noLeaks(t, before)
}

func TestContentTimeout(t *testing.T) {
	// Answers everything but the end of message.
	addr := scripted(t, 0, func(code byte, _ []byte) []packet {
		if code == 'E' {
			return nil
		}
		return continueReply(code)
	})
	m := newMilter(t, Config{Addr: addr, ContentTimeout: 200 * time.Millisecond})
	s := open(t, m)
	envelope(t, s, "a@example.org", "b@example.net")
	start := time.Now()
	v, mods, err := s.EndOfMessage(context.Background(), []byte(testHeader), strings.NewReader("hi\r\n"))
	if v != tempfailVerdict || mods != nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("EndOfMessage = %v, %v, %v; want tempfail and a timeout", v, mods, err)
	}
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Errorf("gave up after %v, want about 200ms", elapsed)
	}
}

func TestContextCancel(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) {
		if negotiateV6(c, 0) == nil {
			io.Copy(io.Discard, c)
		}
	})
	before := runtime.NumGoroutine()
	m := newMilter(t, Config{Addr: addr, CommandTimeout: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	s, v, err := m.Open(ctx, testInfo)
	if v != tempfailVerdict || !errors.Is(err, context.Canceled) {
		t.Fatalf("Open = %v, %v; want tempfail and context.Canceled", v, err)
	}
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Errorf("cancellation took %v", elapsed)
	}
	s.Close()
	noLeaks(t, before)
}

func TestGarbage(t *testing.T) {
	afterConnect := func(reply []byte) func(net.Conn) {
		return func(c net.Conn) {
			if negotiateV6(c, 0) != nil {
				return
			}
			for {
				code, n, err := readHeader(c)
				if err != nil {
					return
				}
				if _, err := readData(c, n, nil); err != nil {
					return
				}
				if code == 'C' {
					c.Write(reply)
					io.Copy(io.Discard, c)
					return
				}
			}
		}
	}
	pkt := func(code byte, data string) []byte {
		var b bytes.Buffer
		b.Write([]byte{0, 0, 0, byte(len(data) + 1), code})
		b.WriteString(data)
		return b.Bytes()
	}
	for _, c := range []struct {
		name   string
		handle func(net.Conn)
	}{
		{"http banner", func(c net.Conn) { io.WriteString(c, "HTTP/1.1 400 Bad Request\r\n\r\n") }},
		{"wrong negotiation code", func(c net.Conn) { c.Write(pkt('Z', "123456789012")) }},
		{"short negotiation", func(c net.Conn) { c.Write(pkt('O', "\x00\x00\x00")) }},
		{"unknown reply", afterConnect(pkt('Z', ""))},
		{"malformed reply code", afterConnect(pkt('y', "abc defg\x00"))},
		{"2xx reply code", afterConnect(pkt('y', "250 2.0.0 fine\x00"))},
		{"mismatched status", afterConnect(pkt('y', "550 4.7.1 make up your mind\x00"))},
		{"huge packet", afterConnect([]byte{0x7f, 0xff, 0xff, 0xff, 'c'})},
		{"zero-length packet", afterConnect([]byte{0, 0, 0, 0})},
		{"truncated packet", afterConnect([]byte{0, 0, 0, 9, 'y', '5'})},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := rawServer(t, c.handle)
			m := newMilter(t, Config{Addr: addr, CommandTimeout: 300 * time.Millisecond, ConnectTimeout: 300 * time.Millisecond})
			s, v, err := m.Open(context.Background(), testInfo)
			s.Close()
			if v != tempfailVerdict || err == nil {
				t.Fatalf("Open = %v, %v; want tempfail and an error", v, err)
			}
		})
	}

	t.Run("at end of message", func(t *testing.T) {
		for name, reply := range map[string][]packet{
			"bad change header": {{'m', []byte{0, 0}}},
			"unterminated":      {{'h', []byte("X-A")}},
			"body, header, body": {{'b', []byte("x\n")}, {'h', []byte("X-A\x00b\x00")},
				{'b', []byte("y\n")}, {'a', nil}},
			"progress with data": {{'p', []byte("x")}},
		} {
			t.Run(name, func(t *testing.T) {
				addr := scripted(t, 0, func(code byte, _ []byte) []packet {
					if code == 'E' {
						return reply
					}
					return continueReply(code)
				})
				s := open(t, newMilter(t, Config{Addr: addr, DefaultAction: "reject", TempDir: t.TempDir()}))
				envelope(t, s, "a@example.org", "b@example.net")
				v, mods, err := s.EndOfMessage(context.Background(), []byte(testHeader), strings.NewReader("hi\r\n"))
				if v != rejectVerdict || mods != nil || err == nil {
					t.Fatalf("EndOfMessage = %v, %v, %v; want reject and an error", v, mods, err)
				}
			})
		}
	})
}

func TestOneConnectionPerSession(t *testing.T) {
	addr, conns := serve(t, "tcp", &fake{})
	m := newMilter(t, Config{Addr: addr})
	ctx := context.Background()

	// go-milter's server speaks protocol version 2: the first session
	// needs a second attempt, and the milter remembers it.
	s := open(t, m)
	s.Close()
	if n := conns.n.Load(); n != 2 {
		t.Errorf("first session: %d connections, want 2 (version 6 refused, then version 2)", n)
	}

	s = open(t, m)
	for range 3 {
		envelope(t, s, "a@example.org", "b@example.net")
		v, _, err := s.EndOfMessage(ctx, []byte(testHeader), strings.NewReader("hi\r\n"))
		must(t, "EndOfMessage", v, err, Accept)
	}
	envelope(t, s, "a@example.org", "b@example.net")
	if err := s.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	envelope(t, s, "a@example.org", "b@example.net")
	v, _, err := s.EndOfMessage(ctx, []byte(testHeader), strings.NewReader("hi\r\n"))
	must(t, "EndOfMessage", v, err, Accept)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := conns.n.Load(); n != 3 {
		t.Errorf("second session, five messages: %d connections in all, want 3", n)
	}
}

func TestParseReply(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Verdict
	}{
		{"550 5.7.1 Go away", Verdict{Reject, 550, "5.7.1", "Go away"}},
		{"451 Try later", Verdict{Tempfail, 451, "4.7.1", "Try later"}},
		{"554", Verdict{Reject, 554, "5.7.1", ""}},
		{"550-5.7.1 first\r\n550 5.7.1 second\r\n", Verdict{Reject, 550, "5.7.1", "first\nsecond"}},
		{"550 100%% sure", Verdict{Reject, 550, "5.7.1", "100% sure"}},
	} {
		got, err := replyVerdict(c.in)
		if err != nil || got != c.want {
			t.Errorf("replyVerdict(%q) = %#v, %v; want %#v", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "55", "250 ok", "550 4.7.1 mixed", "5x0 bad", "550+x", "550-a\r\n451 b"} {
		if v, err := replyVerdict(in); err == nil {
			t.Errorf("replyVerdict(%q) = %v, want an error", in, v)
		}
	}
}

func TestConfig(t *testing.T) {
	for _, bad := range []Config{
		{Addr: "localhost:8891"},
		{Addr: "inet:localhost"},
		{Addr: "unix:"},
		{Addr: "inet:127.0.0.1:1", DefaultAction: "bounce"},
		{Addr: "inet:127.0.0.1:1", Protocol: 5},
		{Addr: "inet:127.0.0.1:1", CommandTimeout: -1},
	} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%+v) accepted", bad)
		}
	}
	m, err := New(Config{Addr: "inet:[::1]:8891", Macros: &Macros{Rcpt: []string{}}})
	if err != nil {
		t.Fatal(err)
	}
	if m.cfg.ConnectTimeout != 30*time.Second || m.cfg.ContentTimeout != 300*time.Second ||
		m.cfg.Protocol != 6 || m.defaultVerdict != tempfailVerdict || m.Name() != "inet:[::1]:8891" {
		t.Errorf("defaults: %+v", m.cfg)
	}
	if len(m.macros.Rcpt) != 0 || len(m.macros.Mail) == 0 {
		t.Errorf("macro lists: %+v", m.macros)
	}
}

// failingReader yields some body, then an error, as a client that drops
// the connection mid-DATA.
type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("connection reset by client")
	}
	k := min(len(p), r.n)
	for i := range k {
		p[i] = 'x'
	}
	r.n -= k
	return k, nil
}

func TestLocalFailures(t *testing.T) {
	var aborts atomic.Int32
	f := &fake{eom: func(m *gomilter.Modifier) (gomilter.Response, error) {
		if err := m.ReplaceBody([]byte("new body\n")); err != nil {
			return nil, err
		}
		return gomilter.RespAccept, nil
	}}
	addr, _ := serve(t, "tcp", &abortCounter{f, &aborts})
	ctx := context.Background()

	t.Run("reading the body", func(t *testing.T) {
		s := open(t, newMilter(t, Config{Addr: addr, TempDir: t.TempDir()}))
		envelope(t, s, "a@example.org", "b@example.net")
		v, mods, err := s.EndOfMessage(ctx, []byte(testHeader), &failingReader{n: 100 << 10})
		if v != localFailure || mods != nil || err == nil {
			t.Fatalf("EndOfMessage = %v, %v, %v; want the local failure", v, mods, err)
		}
		// The milter was told, and serves the next message.
		envelope(t, s, "a@example.org", "b@example.net")
		v, mods, err = s.EndOfMessage(ctx, []byte(testHeader), strings.NewReader("hi\r\n"))
		must(t, "EndOfMessage", v, err, Accept)
		for _, m := range mods {
			m.Body.Close()
		}
		if n := aborts.Load(); n != 1 {
			t.Errorf("milter got %d aborts, want 1", n)
		}
	})
	t.Run("spooling the new body", func(t *testing.T) {
		s := open(t, newMilter(t, Config{Addr: addr, TempDir: "/nonexistent/spool"}))
		for range 2 {
			envelope(t, s, "a@example.org", "b@example.net")
			v, mods, err := s.EndOfMessage(ctx, []byte(testHeader), strings.NewReader("hi\r\n"))
			if v != localFailure || mods != nil || !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("EndOfMessage = %v, %v, %v; want the local failure", v, mods, err)
			}
		}
	})
}

// abortCounter counts the aborts a fake gets.
type abortCounter struct {
	*fake
	n *atomic.Int32
}

func (a *abortCounter) Abort(m *gomilter.Modifier) error {
	a.n.Add(1)
	return nil
}

func TestNextField(t *testing.T) {
	h := []byte("A: 1\r\nB: x\r\n\ty\r\nnot a field\r\nC:\r\nD :  2\nE: 3\r\n\r\nbody: no\r\n")
	type field struct{ name, value string }
	var got []field
	for len(h) > 0 {
		var name, value string
		name, value, h = nextField(h)
		if name != "" {
			got = append(got, field{name, value})
		}
	}
	want := []field{{"A", " 1"}, {"B", " x\n\ty"}, {"C", ""}, {"D", "  2"}, {"E", " 3"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("fields %q, want %q", got, want)
	}
}

func TestCRLF(t *testing.T) {
	var b bytes.Buffer
	w := &crlf{w: &b}
	for _, p := range []string{"a\nb\r", "\nc\n", "\n", "d\r\n\r", "\n"} {
		io.WriteString(w, p)
	}
	if got, want := b.String(), "a\r\nb\r\nc\r\n\r\nd\r\n\r\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// shortWriter fails once it has taken n bytes, as a full disk.
type shortWriter struct{ n int }

func (w *shortWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		return 0, writeError{errors.New("no space left on device")}
	}
	w.n -= len(p)
	return len(p), nil
}

func TestCopyPacketWriteError(t *testing.T) {
	conn := strings.NewReader(strings.Repeat("x", 100000) + "NEXT")
	var werr error
	err := copyPacket(&shortWriter{n: 10}, conn, 100000, &werr, make([]byte, 4096))
	if err != nil || werr == nil {
		t.Fatalf("copyPacket = %v, recorded %v; want only the write error recorded", err, werr)
	}
	// The packet was consumed to its end, and no further.
	if rest, _ := io.ReadAll(conn); string(rest) != "NEXT" {
		t.Errorf("left %q unread", rest)
	}
	if err := copyPacket(io.Discard, strings.NewReader("short"), 10, &werr, nil); err == nil {
		t.Error("copyPacket of a truncated packet succeeded")
	}
}

func TestStrings(t *testing.T) {
	for v, want := range map[Verdict]string{
		rejectVerdict:    "550 5.7.1 Command rejected",
		{Action: Accept}: "accept",
		{Action: Quarantine, Text: "looks viral"}:      "quarantine: looks viral",
		{Action: Tempfail, Code: 421, Status: "4.7.0"}: "421 4.7.0",
	} {
		if got := v.String(); got != want {
			t.Errorf("%#v.String() = %q, want %q", v, got, want)
		}
	}
	if got := ModChangeFrom.String(); got != "change from" {
		t.Errorf("ModChangeFrom.String() = %q", got)
	}
}
