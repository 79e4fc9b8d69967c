package smtpd

import (
	"bytes"
	"crypto/tls"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"
)

// chunkConn is a net.Conn whose reads return the input in fixed-size
// pieces, to exercise patterns split across TCP segments.
type chunkConn struct {
	net.Conn
	in    []byte
	chunk int
	out   bytes.Buffer
	// writes is what each Write carried: one per reply on the wire.
	writes []string
}

func (c *chunkConn) Read(b []byte) (int, error) {
	if len(c.in) == 0 {
		return 0, io.EOF
	}
	n := min(len(b), c.chunk, len(c.in))
	copy(b, c.in[:n])
	c.in = c.in[n:]
	return n, nil
}
func (c *chunkConn) Write(b []byte) (int, error) {
	c.writes = append(c.writes, string(b))
	return c.out.Write(b)
}
func (c *chunkConn) SetReadDeadline(time.Time) error  { return nil }
func (c *chunkConn) SetWriteDeadline(time.Time) error { return nil }
func (c *chunkConn) Close() error                     { return nil }
func (c *chunkConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

func newTestConn(in string, chunk int) *clientConn {
	cc := newClientConn(&chunkConn{in: []byte(in), chunk: chunk}, time.Now())
	cc.host = "mx.test"
	return cc
}

func readAll(cc *clientConn) (string, error) {
	var out bytes.Buffer
	buf := make([]byte, 4096)
	for {
		n, err := cc.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			return out.String(), err
		}
	}
}

// TestClientConnPassesBytes: the wrapper hands go-smtp exactly what the
// client sent, RCPT TO:<postmaster> and BDAT lines included.
func TestClientConnPassesBytes(t *testing.T) {
	for _, in := range []string{
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<postmaster>\r\nDATA\r\n",
		"BDAT 22 LAST\r\nRCPT TO:<postmaster>\r\n",
		"X" + strings.Repeat("y", 3000) + "\r\nRCPT TO:<postmaster>\r\n",
		"body\r\n..leading dot\r\n.\r\n",
	} {
		for _, chunk := range []int{1, 3, 7, 4096} {
			got, err := readAll(newTestConn(in, chunk))
			if got != in || err != io.EOF {
				t.Errorf("chunk %d: got %q, %v; want %q, EOF", chunk, got, err, in)
			}
		}
	}
}

// TestTripwire: a line starting with ".\r" not followed by "\n" ends the
// stream just before the offending byte, however the reads split it.
func TestTripwire(t *testing.T) {
	tests := []struct {
		in, before string
		trips      bool
	}{
		{"a\r\n.\rX\r\n", "a\r\n.\r", true},
		{"DATA\r\n.\r\r\n.\r\n", "DATA\r\n.\r", true},
		{"a\r\n.\r\n", "", false},
		{"a\r\n.\r\n.\rb", "a\r\n.\r\n.\r", true}, // the end marker's CRLF starts the next line
		{"a\n.\rb\r\n", "", false},                // go-smtp does not start a line at a bare LF
		{"a\r\n..\rb\r\n", "", false},             // a stuffed dot is fine
		{"a\r.\rb", "", false},
	}
	for _, tt := range tests {
		for _, chunk := range []int{1, 2, 5, 4096} {
			got, err := readAll(newTestConn(tt.in, chunk))
			switch {
			case tt.trips && (err != errDotCR || got != tt.before):
				t.Errorf("%q chunk %d: got %q, %v; want %q, errDotCR", tt.in, chunk, got, err, tt.before)
			case !tt.trips && (err != io.EOF || got != tt.in):
				t.Errorf("%q chunk %d: got %q, %v; want it unchanged", tt.in, chunk, got, err)
			}
		}
	}
}

func TestClientConnBannerRepliesAndCounts(t *testing.T) {
	conn := &chunkConn{chunk: 1}
	cc := newClientConn(conn, time.Now())
	cc.banner = "mx.test ESMTP larkpost"
	cc.host = "mx.test"
	for _, w := range []string{
		"220 mx.test ESMTP Service Ready\r\n",
		"250-Hello c.example\r\n", "250-PIPELINING\r\n", "250 LIMITS RCPTMAX=10\r\n",
		"250 2.0.0 Roger, accepting mail from <a@b>\r\n",
		"250 2.0.0 I'll make sure <c@d> gets this\r\n",
		"354 Go ahead. End your data with <CR><LF>.<CR><LF>\r\n",
		"250 2.0.0 Ok: queued as X\r\n",
		"500 5.5.2 Syntax errors, FOO command unrecognized\r\n",
		"550 5.7.1 Roger, accepting mail from nobody\r\n",
		"221 2.0.0 Bye\r\n",
	} {
		if n, err := cc.Write([]byte(w)); n != len(w) || err != nil {
			t.Fatalf("Write returned %d, %v", n, err)
		}
	}
	cc.Close() // sends what is pending
	want := "220 mx.test ESMTP larkpost\r\n250-Hello c.example\r\n250-PIPELINING\r\n250 LIMITS RCPTMAX=10\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n" +
		"354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as X\r\n500 5.5.2 Syntax errors, FOO command unrecognized\r\n" +
		"550 5.7.1 Roger, accepting mail from nobody\r\n221 2.0.0 Bye\r\n"
	if conn.out.String() != want {
		t.Errorf("wire:\n%q\nwant\n%q", conn.out.String(), want)
	}
	if got := cc.summary(); got != "ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=7" {
		t.Errorf("summary %q", got)
	}
	if !cc.esmtp.Load() {
		t.Error("EHLO reply did not mark the session ESMTP")
	}
}

// TestRepliesWaitForRead: go-smtp writes a reply line by line and each
// reply on its own; the client gets what was written in one write when the
// server next reads from the network (or closes): an EHLO reply, with
// STARTTLS added, in one write, and the replies to pipelined MAIL, RCPT
// and DATA in one.
func TestRepliesWaitForRead(t *testing.T) {
	conn := &chunkConn{chunk: 1}
	cc := newClientConn(conn, time.Now())
	cc.banner, cc.host = "mx.test ESMTP larkpost", "mx.test"
	cc.tlsCfg = &tls.Config{}
	for _, step := range [][]string{
		{"220 mx.test ESMTP Service Ready\r\n"},
		{"250-Hello c.example\r\n", "250-PIPELINING\r\n", "250-8BITMIME\r\n", "250 LIMITS RCPTMAX=10\r\n"},
		{"250 2.0.0 Roger, accepting mail from <a@b>\r\n", "250 2.0.0 I'll make sure <c@d> gets this\r\n", "354 Go ahead. End your data with <CR><LF>.<CR><LF>\r\n"},
		{"214-a\r\n214 b\r\n", "221 2.0.0 Bye\r\n"},
	} {
		before := len(conn.writes)
		for _, w := range step {
			if n, err := cc.Write([]byte(w)); n != len(w) || err != nil {
				t.Fatalf("Write returned %d, %v", n, err)
			}
		}
		if len(conn.writes) != before {
			t.Fatalf("sent before the server read or closed: %q", conn.writes[before:])
		}
		if strings.HasPrefix(step[0], "214") {
			cc.Close()
		} else {
			cc.Read(make([]byte, 10)) // the input is empty: EOF
		}
		conn.writes, conn.out = append(conn.writes, "|"), bytes.Buffer{}
	}
	want := []string{
		"220 mx.test ESMTP larkpost\r\n", "|",
		"250-Hello c.example\r\n250-PIPELINING\r\n250-STARTTLS\r\n250-8BITMIME\r\n250 LIMITS RCPTMAX=10\r\n", "|",
		"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n", "|",
		"214-a\r\n214 b\r\n221 2.0.0 Bye\r\n", "|",
	}
	if strings.Join(conn.writes, "") != strings.Join(want, "") || len(conn.writes) != len(want) {
		t.Errorf("writes:\n%q\nwant\n%q", conn.writes, want)
	}
	// A reply the server sends itself (a timeout's 421) goes after those
	// go-smtp wrote, in the same write.
	conn.writes = nil
	cc.Write([]byte("250 2.0.0 Ok\r\n"))
	cc.send([]byte("421 4.4.2 mx.test Error: timeout exceeded\r\n"))
	if want := []string{"250 2.0.0 Ok\r\n421 4.4.2 mx.test Error: timeout exceeded\r\n"}; strings.Join(conn.writes, "|") != strings.Join(want, "|") {
		t.Errorf("writes %q, want %q", conn.writes, want)
	}
}

// TestReadDeadlines: the next command is due within the timeout of the
// last reply, not of the last byte; a transfer has an idle limit, a total
// limit and a minimum rate.
func TestReadDeadlines(t *testing.T) {
	now := time.Now()
	cc := newClientConn(&chunkConn{}, now)
	cc.timeout, cc.dataMax, cc.minRate = 300*time.Second, 10*time.Minute, 500
	cc.end = now.Add(time.Hour)
	cc.lastReply.Store(now.UnixNano())
	if d := cc.readDeadline(now.Add(200 * time.Second)); !d.Equal(now.Add(300 * time.Second)) {
		t.Errorf("command deadline %v after the reply, want 300s", d.Sub(now))
	}
	cc.xferStart.Store(now.UnixNano())
	cc.xferBytes.Store(0)
	if d := cc.readDeadline(now.Add(10 * time.Second)); !d.Equal(now.Add(300 * time.Second)) {
		t.Errorf("slow transfer deadline %v, want the grace of one timeout", d.Sub(now))
	}
	cc.xferBytes.Store(500 * 1000) // 1000 s of data at the minimum rate
	if d := cc.readDeadline(now.Add(10 * time.Second)); !d.Equal(now.Add(310 * time.Second)) {
		t.Errorf("idle deadline in a transfer %v, want 310s", d.Sub(now))
	}
	if d := cc.readDeadline(now.Add(590 * time.Second)); !d.Equal(now.Add(600 * time.Second)) {
		t.Errorf("transfer deadline %v, want smtpd_data_timeout", d.Sub(now))
	}
}

// TestTripwireSearchMatchesMachine: the vectorized tripwire finds what
// the byte-at-a-time machine finds, at the same byte, however the stream
// is cut into reads, and leaves the same state for the next read (after
// a trip nothing more is read).
func TestTripwireSearchMatchesMachine(t *testing.T) {
	parts := []string{"\r", "\n", ".", "x", "\r\n", "\r\n.", "\r\n.\r", "\r\n.\r\n", "\r\n..\r", "abc\r\n"}
	cutStreams(t, rand.New(rand.NewPCG(7, 21)), parts, 24, 12, func() func(b, p []byte, off int) bool {
		fast, slow := &clientConn{}, &clientConn{}
		return func(b, p []byte, off int) bool {
			i, j := fast.tripwire(p), slow.tripwireSlow(p)
			if i != j || (i < 0 && fast.dot != slow.dot) {
				t.Fatalf("stream %q, read %q at %d: search says %d (state %d), machine %d (state %d)", b, p, off, i, fast.dot, j, slow.dot)
			}
			return i < 0
		}
	})
}

// cutStreams makes 20,000 streams of up to maxParts random parts, cuts
// each into reads of 1 to maxRead bytes, and hands them to the checker a
// fresh stream gets, until it returns false (the stream ended early).
func cutStreams(t *testing.T, rng *rand.Rand, parts []string, maxParts, maxRead int, fresh func() func(b, p []byte, off int) bool) {
	t.Helper()
	for round := 0; round < 20000; round++ {
		var b []byte
		for n := rng.IntN(maxParts); n > 0; n-- {
			b = append(b, parts[rng.IntN(len(parts))]...)
		}
		check := fresh()
		for off := 0; off < len(b); {
			n := min(len(b)-off, 1+rng.IntN(maxRead))
			if !check(b, b[off:off+n], off) {
				break
			}
			off += n
		}
	}
}

// TestHasBare: a lone CR or LF anywhere in the read is found; CRLFs are not.
func TestHasBare(t *testing.T) {
	ref := func(p []byte) bool {
		for i, c := range p {
			switch {
			case c == '\r' && (i+1 == len(p) || p[i+1] != '\n'):
				return true
			case c == '\n' && (i == 0 || p[i-1] != '\r'):
				return true
			}
		}
		return false
	}
	rng := rand.New(rand.NewPCG(3, 5))
	parts := []string{"\r", "\n", "\r\n", "ab", "\r\r\n", "\r\n\n", "line\r\n"}
	for round := 0; round < 20000; round++ {
		var p []byte
		for n := rng.IntN(12); n > 0; n-- {
			p = append(p, parts[rng.IntN(len(parts))]...)
		}
		if got, want := hasBare(p), ref(p); got != want {
			t.Fatalf("hasBare(%q) = %v, want %v", p, got, want)
		}
	}
}

// bodyLines is 32 KB of 76-character lines, as a base64 attachment sends.
var bodyLines = bytes.Repeat([]byte(strings.Repeat("Q", 76)+"\r\n"), 32<<10/78)

func BenchmarkTripwire(b *testing.B) {
	c := &clientConn{}
	b.SetBytes(int64(len(bodyLines)))
	for b.Loop() {
		if c.tripwire(bodyLines) >= 0 {
			b.Fatal("tripped")
		}
	}
}

func BenchmarkHasBare(b *testing.B) {
	b.SetBytes(int64(len(bodyLines)))
	for b.Loop() {
		if hasBare(bodyLines) {
			b.Fatal("bare")
		}
	}
}

// bareSlow is bare a byte at a time, as it was: what bare must answer.
func (r *receiver) bareSlow(p []byte) string {
	for _, c := range p {
		switch {
		case r.prevCR && c != '\n':
			return "CR"
		case !r.prevCR && c == '\n':
			return "LF"
		}
		r.prevCR = c == '\r'
	}
	return ""
}

// TestBareSameAsByteWise: the line-at-a-time check of bare line ends
// answers as the byte loop does, for streams cut into reads anywhere.
func TestBareSameAsByteWise(t *testing.T) {
	parts := []string{"\r", "\n", "\r\n", "ab", "\r\r\n", "\r\n\n", "line\r\n", "x\ry"}
	cutStreams(t, rand.New(rand.NewPCG(7, 11)), parts, 12, 8, func() func(b, p []byte, off int) bool {
		fast, slow := &receiver{}, &receiver{}
		return func(b, p []byte, off int) bool {
			got, want := fast.bare(p), slow.bareSlow(p)
			if got != want || want == "" && fast.prevCR != slow.prevCR {
				t.Fatalf("stream %q, read %q at %d: bare %q (prevCR %v), byte loop %q (prevCR %v)", b, p, off, got, fast.prevCR, want, slow.prevCR)
			}
			return got == ""
		}
	})
}

func BenchmarkBare(b *testing.B) {
	for _, bc := range []struct {
		name string
		f    func(*receiver, []byte) string
	}{{"bytewise", (*receiver).bareSlow}, {"lines", (*receiver).bare}} {
		b.Run(bc.name, func(b *testing.B) {
			r := &receiver{}
			b.SetBytes(int64(len(bodyLines)))
			for b.Loop() {
				if bc.f(r, bodyLines) != "" {
					b.Fatal("bare")
				}
			}
		})
	}
}

// TestPendingRepliesBounded: replies to a flood of pipelined commands that
// the server never reads past (2,000 EHLO replies) go out once maxPending
// bytes wait, so a session holds at most that and one reply.
func TestPendingRepliesBounded(t *testing.T) {
	conn := &chunkConn{chunk: 1}
	cc := newClientConn(conn, time.Now())
	cc.banner, cc.host = "mx.test ESMTP larkpost", "mx.test"
	cc.Write([]byte("220 mx.test ESMTP Service Ready\r\n"))
	ehlo := []string{"250-Hello c.example\r\n", "250-PIPELINING\r\n", "250-8BITMIME\r\n", "250-ENHANCEDSTATUSCODES\r\n", "250-CHUNKING\r\n", "250 LIMITS RCPTMAX=10\r\n"}
	most := 0
	for range 2000 {
		for _, l := range ehlo {
			cc.Write([]byte(l))
			most = max(most, len(cc.pending))
		}
	}
	if most > maxPending+len("250 LIMITS RCPTMAX=10\r\n") {
		t.Errorf("%d bytes of replies waited, want at most %d and one line", most, maxPending)
	}
	cc.Close()
	if got := strings.Count(conn.out.String(), "250 LIMITS"); got != 2000 {
		t.Errorf("%d EHLO replies sent, want 2000", got)
	}
}
