package smtpd

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// chunkConn is a net.Conn whose reads return the input in fixed-size
// pieces, to exercise command lines split across TCP segments.
type chunkConn struct {
	net.Conn
	in    []byte
	chunk int
	out   bytes.Buffer
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
func (c *chunkConn) Write(b []byte) (int, error)      { return c.out.Write(b) }
func (c *chunkConn) SetReadDeadline(time.Time) error  { return nil }
func (c *chunkConn) SetWriteDeadline(time.Time) error { return nil }
func (c *chunkConn) Close() error                     { return nil }
func (c *chunkConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

func newTestConn(in string, chunk int) *clientConn {
	cc := newClientConn(&chunkConn{in: []byte(in), chunk: chunk}, time.Now())
	cc.host = "mx.test"
	cc.postmasterDomain = "mx.test"
	cc.idle = time.Minute
	cc.end = time.Now().Add(time.Hour)
	return cc
}

// readAll reads through cc the way go-smtp's bufio reader does, noting
// how many reads returned data that spanned a line end.
func readAll(t *testing.T, cc *clientConn) (string, int) {
	t.Helper()
	var out bytes.Buffer
	multi := 0
	buf := make([]byte, 4096)
	for {
		n, err := cc.Read(buf)
		if n > 0 {
			if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 && i < n-1 && !cc.inData.Load() && cc.bdatLeft == 0 {
				multi++
			}
			out.Write(buf[:n])
		}
		if err != nil {
			return out.String(), multi
		}
	}
}

func TestClientConnCommandLines(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain commands pass unchanged", "EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n", "EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"},
		{"postmaster gets our domain", "RCPT TO:<postmaster>\r\n", "RCPT TO:<postmaster@mx.test>\r\n"},
		{"any case, params kept", "rcpt to:<PostMaster> NOTIFY=NEVER\r\n", "RCPT TO:<postmaster@mx.test> NOTIFY=NEVER\r\n"},
		{"postmaster with a domain is left alone", "RCPT TO:<postmaster@example.org>\r\n", "RCPT TO:<postmaster@example.org>\r\n"},
		{"not in MAIL FROM", "MAIL FROM:<postmaster>\r\n", "MAIL FROM:<postmaster>\r\n"},
		{"BDAT chunk is opaque", "BDAT 22 LAST\r\nRCPT TO:<postmaster>\r\nRCPT TO:<postmaster>\r\n", "BDAT 22 LAST\r\nRCPT TO:<postmaster>\r\nRCPT TO:<postmaster@mx.test>\r\n"},
		{"bare LF line", "NOOP\nRCPT TO:<postmaster>\n", "NOOP\nRCPT TO:<postmaster@mx.test>\r\n"},
		{"long line passes through", "X" + strings.Repeat("y", 3000) + "\r\nRCPT TO:<postmaster>\r\n", "X" + strings.Repeat("y", 3000) + "\r\nRCPT TO:<postmaster@mx.test>\r\n"},
		{"partial last line", "NOOP\r\nQUI", "NOOP\r\nQUI"},
	}
	for _, tt := range tests {
		for _, chunk := range []int{1, 3, 7, 64, 4096} {
			cc := newTestConn(tt.in, chunk)
			got, multi := readAll(t, cc)
			if got != tt.want {
				t.Errorf("%s (chunk %d): got %q, want %q", tt.name, chunk, got, tt.want)
			}
			if multi > 0 {
				t.Errorf("%s (chunk %d): %d reads returned more than one command line", tt.name, chunk, multi)
			}
		}
	}
}

func TestClientConnCounts(t *testing.T) {
	cc := newTestConn("EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nrcpt to:<e@f>\r\nQUIT\r\n", 4096)
	readAll(t, cc)
	if got := cc.summary(); got != "ehlo=1 mail=1 rcpt=2 quit=1 commands=5" {
		t.Errorf("summary %q", got)
	}
}

func TestClientConnBannerAndReplies(t *testing.T) {
	conn := &chunkConn{chunk: 1}
	cc := newClientConn(conn, time.Now())
	cc.banner = "mx.test ESMTP larkpost"
	for _, w := range []string{
		"220 mx.test ESMTP Service Ready\r\n",
		"250 2.0.0 Roger, accepting mail from <a@b>\r\n",
		"250 2.0.0 I'll make sure <c@d> gets this\r\n",
		"354 Go ahead. End your data with <CR><LF>.<CR><LF>\r\n",
		"550 5.7.1 Roger, accepting mail from nobody\r\n",
	} {
		if n, err := cc.Write([]byte(w)); n != len(w) || err != nil {
			t.Fatalf("Write returned %d, %v", n, err)
		}
	}
	want := "220 mx.test ESMTP larkpost\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n550 5.7.1 Roger, accepting mail from nobody\r\n"
	if conn.out.String() != want {
		t.Errorf("wire:\n%q\nwant\n%q", conn.out.String(), want)
	}
	if !cc.inData.Load() || cc.dataEnd.Load() == 0 {
		t.Error("354 did not switch to data mode with a deadline")
	}
	cc.endTransfer()
	if cc.inData.Load() || cc.dataEnd.Load() != 0 {
		t.Error("endTransfer left data mode on")
	}
}

func TestClientConnDataPassThrough(t *testing.T) {
	cc := newTestConn("RCPT TO:<postmaster>\r\nmore\r\n", 5)
	cc.inData.Store(true)
	got, _ := readAll(t, cc)
	if got != "RCPT TO:<postmaster>\r\nmore\r\n" {
		t.Errorf("message data was altered: %q", got)
	}
}

// FuzzClientConn checks the wire layer never changes a byte of input that
// holds no bare "RCPT TO:<postmaster>" line, whatever the segmentation.
func FuzzClientConn(f *testing.F) {
	f.Add("EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n", uint8(3))
	f.Add("BDAT 5\r\nabcdeBDAT 3 LAST\r\nxyz", uint8(1))
	f.Add("BDAT 99999999999\r\nx", uint8(200))
	f.Add(strings.Repeat("a", 2000)+"\nb\r\n", uint8(17))
	f.Fuzz(func(t *testing.T, in string, chunk uint8) {
		if strings.Contains(strings.ToLower(in), "<postmaster>") {
			return
		}
		cc := newTestConn(in, int(chunk)+1)
		got, _ := readAll(t, cc)
		if got != in {
			t.Fatalf("altered input:\n in %q\nout %q", in, got)
		}
	})
}
