package smtpd

import (
	"bytes"
	"crypto/tls"
	"io"
	"strings"
	"testing"
	"time"
)

// countConn is a chunkConn that counts the reads it answers.
type countConn struct {
	chunkConn
	reads int
}

func (c *countConn) Read(b []byte) (int, error) {
	c.reads++
	return c.chunkConn.Read(b)
}

// transferring starts a transfer already past aheadAfter bytes.
func transferring(cc *clientConn) {
	cc.beginTransfer()
	cc.xferBytes.Store(aheadAfter)
}

// readBy reads cc to the end in reads of size, as go-smtp's buffer does
// with 4096; at after bytes (if > 0) the transfer ends.
func readBy(cc *clientConn, size, after int) (string, error) {
	var out bytes.Buffer
	buf := make([]byte, size)
	for {
		if after > 0 && out.Len() >= after {
			cc.endTransfer()
			after = 0
		}
		n, err := cc.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			return out.String(), err
		}
	}
}

// TestReadAheadPassesBytes: during a transfer the socket is read in
// aheadSize reads, and the caller gets exactly the bytes sent, in order,
// whatever the socket's pieces, also when the transfer ends with bytes
// read ahead (the commands pipelined after the data); every buffer goes
// back.
func TestReadAheadPassesBytes(t *testing.T) {
	body := strings.Repeat("0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,;\r\n", 3000) // 213 KB
	in := body + ".\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"
	for _, chunk := range []int{1, 7, 4096, 65536, 1 << 20} {
		for _, after := range []int{0, len(body) / 2, len(body) + 3} {
			conn := &countConn{chunkConn: chunkConn{in: []byte(in), chunk: chunk}}
			cc := newClientConn(conn, time.Now())
			cc.beginTransfer() // from the start: the first aheadAfter bytes as before
			got, err := readBy(cc, 4096, after)
			want := io.EOF
			if after == 0 {
				want = io.ErrUnexpectedEOF // the client hung up mid-transfer
			}
			if got != in || err != want {
				t.Errorf("chunk %d, transfer ends at %d: got %d bytes (equal: %v), %v; want %d, %v", chunk, after, len(got), got == in, err, len(in), want)
			}
			if n := aheadOut.Load(); n != 0 {
				t.Errorf("chunk %d, transfer ends at %d: %d buffers not given back", chunk, after, n)
			}
			// Without read-ahead a 4096-byte caller makes 51 reads of
			// the socket at least; with it, 8 for the first 32 KB, then
			// 3 (and 1 for the EOF).
			if chunk >= 65536 && after == 0 && conn.reads > aheadAfter/4096+len(in)/aheadSize+2 {
				t.Errorf("chunk %d: %d reads of the socket for %d bytes", chunk, conn.reads, len(in))
			}
		}
	}
}

// TestReadAheadTripwire: the tripwire still cuts the stream just before
// the offending byte when it lies deep in a read ahead.
func TestReadAheadTripwire(t *testing.T) {
	before := strings.Repeat("x", 70000) + "\r\n.\r"
	in := before + "SMUGGLED\r\n"
	cc := newClientConn(&chunkConn{in: []byte(in), chunk: 1 << 20}, time.Now())
	transferring(cc)
	got, err := readBy(cc, 4096, 0)
	if got != before || err != errDotCR {
		t.Errorf("got %d bytes ending %q, %v; want %d ending %q, errDotCR", len(got), got[max(0, len(got)-8):], err, len(before), before[len(before)-8:])
	}
	if n := aheadOut.Load(); n != 0 {
		t.Errorf("%d buffers not given back", n)
	}
}

// TestReadAheadBounded: at most aheadMax buffers are out however many
// sessions hold bytes read ahead; the others read as before, and Close
// gives every buffer back.
func TestReadAheadBounded(t *testing.T) {
	in := strings.Repeat("y", 200)
	var ccs []*clientConn
	for range aheadMax + 10 {
		cc := newClientConn(&chunkConn{in: []byte(in), chunk: 100}, time.Now())
		transferring(cc)
		var one [1]byte
		if n, err := cc.Read(one[:]); n != 1 || err != nil {
			t.Fatalf("first read: %d, %v", n, err)
		}
		ccs = append(ccs, cc)
	}
	if n := aheadOut.Load(); n != aheadMax {
		t.Errorf("%d buffers out, want %d", n, aheadMax)
	}
	for i, cc := range ccs {
		rest, err := readBy(cc, 4096, 0)
		if "y"+rest != in || err != io.ErrUnexpectedEOF {
			t.Errorf("session %d: got %d bytes, %v", i, 1+len(rest), err)
		}
		if i == 5 {
			break
		}
	}
	for _, cc := range ccs {
		cc.Close()
	}
	if n := aheadOut.Load(); n != 0 {
		t.Errorf("%d buffers out after Close, want 0", n)
	}
}

// TestStartTLSRefusesReadAhead: bytes read ahead and still unread when
// STARTTLS comes were sent in plaintext after it: 554, and the session
// ends without a handshake.
func TestStartTLSRefusesReadAhead(t *testing.T) {
	conn := &chunkConn{in: []byte("STARTTLS\r\nMAIL FROM:<evil@example.org>\r\n"), chunk: 1 << 20}
	cc := newClientConn(conn, time.Now())
	cc.host = "mx.test"
	cc.tlsCfg = &tls.Config{}
	transferring(cc)
	var line [10]byte
	if n, err := cc.Read(line[:]); n != 10 || err != nil {
		t.Fatalf("read: %d, %v", n, err)
	}
	cc.endTransfer()
	var refused string
	cc.onRefusal = func(verb, reply string) { refused = verb + ": " + reply }
	if err := cc.startTLS(); err != io.EOF {
		t.Errorf("startTLS: %v, want EOF", err)
	}
	cc.flush()
	if out := conn.out.String(); out != "554 5.5.1 Error: improper command pipelining after STARTTLS\r\n" || !cc.dead.Load() || cc.tlsc != nil {
		t.Errorf("sent %q, dead %v, TLS %v; want the 554 alone and the session ended", out, cc.dead.Load(), cc.tlsc != nil)
	}
	if !strings.HasPrefix(refused, "STARTTLS: 554") {
		t.Errorf("refusal logged as %q", refused)
	}
	cc.Close()
}

// TestReadAheadSettleCopies: what is left when a transfer ends is copied
// out before its buffer goes back, so the next session that takes the
// buffer cannot change what this one reads next.
func TestReadAheadSettleCopies(t *testing.T) {
	in := strings.Repeat("a", 100) + ".\r\nQUIT\r\n"
	a := newClientConn(&chunkConn{in: []byte(in), chunk: 1 << 20}, time.Now())
	transferring(a)
	buf := make([]byte, 10)
	n, _ := a.Read(buf)
	got := string(buf[:n])
	a.endTransfer()
	n, _ = a.Read(buf[:1]) // the buffer goes back here
	got += string(buf[:n])
	b := newClientConn(&chunkConn{in: bytes.Repeat([]byte("b"), 70000), chunk: 1 << 20}, time.Now())
	transferring(b)
	b.Read(buf[:1]) // takes a buffer, most likely the one a gave back
	rest, err := readBy(a, 4096, 0)
	if got+rest != in || err != io.EOF {
		t.Errorf("got %q, %v; want %q, EOF", got+rest, err, in)
	}
	b.Close()
}

// TestReadAheadOnlyPastFirstBytes: a transfer's first aheadAfter bytes
// are read as commands are, so a message of a few KB never takes a
// buffer; past them the socket is read aheadSize at a time.
func TestReadAheadOnlyPastFirstBytes(t *testing.T) {
	conn := &countConn{chunkConn: chunkConn{in: bytes.Repeat([]byte("z"), aheadAfter+aheadSize), chunk: 1 << 20}}
	cc := newClientConn(conn, time.Now())
	cc.beginTransfer()
	buf := make([]byte, 4096)
	for read := 0; read < aheadAfter; read += 4096 {
		if n, err := cc.Read(buf); n != 4096 || err != nil || aheadOut.Load() != 0 {
			t.Fatalf("at %d: read %d, %v, %d buffers out; want 4096, none out", read, n, err, aheadOut.Load())
		}
	}
	if n, err := cc.Read(buf); n != 4096 || err != nil || aheadOut.Load() != 1 || len(cc.ahead.left) != aheadSize-4096 {
		t.Errorf("past %d: read %d, %v, %d buffers out, %d bytes ahead; want 4096, 1, %d", aheadAfter, n, err, aheadOut.Load(), len(cc.ahead.left), aheadSize-4096)
	}
	if conn.reads != aheadAfter/4096+1 {
		t.Errorf("%d reads of the socket, want %d", conn.reads, aheadAfter/4096+1)
	}
	cc.Close()
}
