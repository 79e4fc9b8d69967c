package smtp

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestPipelining has a server that answers nothing of a transaction until it
// has read its whole envelope: a client that waits for the reply to MAIL
// FROM before sending RCPT TO never gets one. Two messages go over one
// connection, the second without a NOOP first.
func TestPipelining(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var conns atomic.Int32
	serverErr := make(chan error, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				serverErr <- pipelinedServer(c)
			}()
		}
	}()
	e := newEnv(t)
	e.client.MaxIdle = 1
	e.client.CommandTimeout = time.Second
	e.dns.Add("mx1.test. 300 IN A 192.0.2.1")
	e.route("192.0.2.1:25", l.Addr().String())
	dest := Destination{Host: "mx1.test", NoMX: true}
	for i := range 2 {
		res := e.deliver(dest, request("x@example.com", "y@example.com"))
		for _, r := range res {
			checkResult(t, r, "2.0.0", "250 2.0.0 queued as", "mx1.test[192.0.2.1]:25")
		}
		if t.Failed() {
			t.Fatalf("message %d was not sent", i+1)
		}
	}
	e.client.Close()
	if err := <-serverErr; err != nil {
		t.Error(err)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for two messages, want 1", n)
	}
}

// pipelinedServer reads each transaction's commands up to DATA before it
// answers any, and refuses a NOOP: the client must know from the socket
// alone that a cached connection is usable.
func pipelinedServer(c net.Conn) error {
	r := bufio.NewReader(c)
	io.WriteString(c, "220 mx1.test ready\r\n")
	line := func() (string, error) {
		l, err := r.ReadString('\n')
		return strings.TrimRight(l, "\r\n"), err
	}
	l, err := line()
	if err != nil || !strings.HasPrefix(l, "EHLO ") {
		return fmt.Errorf("want EHLO, got %q %v", l, err)
	}
	io.WriteString(c, "250-mx1.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
	for n := 1; ; n++ {
		var replies []string
		for {
			l, err := line()
			if err != nil {
				return fmt.Errorf("transaction %d: %v", n, err)
			}
			switch v := strings.ToUpper(l); {
			case v == "QUIT" && len(replies) == 0:
				io.WriteString(c, "221 bye\r\n")
				return nil
			case strings.HasPrefix(v, "MAIL FROM:"), strings.HasPrefix(v, "RCPT TO:"):
				replies = append(replies, "250 2.1.0 ok")
			case v == "DATA":
				replies = append(replies, "354 go ahead")
			default:
				return fmt.Errorf("transaction %d: unexpected %q", n, l)
			}
			if replies[len(replies)-1][0] == '3' {
				break
			}
		}
		if len(replies) != 4 {
			return fmt.Errorf("transaction %d: %d commands before the replies, want MAIL, 2 RCPT, DATA", n, len(replies))
		}
		io.WriteString(c, strings.Join(replies, "\r\n")+"\r\n")
		for {
			l, err := line()
			if err != nil {
				return err
			}
			if l == "." {
				break
			}
		}
		fmt.Fprintf(c, "250 2.0.0 queued as %d\r\n", n)
	}
}

// TestCachedConnectionClosed: a server that closed a cached connection, or
// closes it as the next transaction begins (its idle timeout), costs the
// message nothing: it goes over a new connection at once.
func TestCachedConnectionClosed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		answer func(mails int, line string) string
	}{
		{"closed while idle", func(_ int, line string) string {
			if line == "." {
				return "250 2.0.0 queued<close>"
			}
			return ""
		}},
		{"closed at the next MAIL FROM", func(mails int, line string) string {
			if mails == 2 && strings.HasPrefix(line, "MAIL") {
				return "<close>"
			}
			return ""
		}},
	}
	for _, pipelining := range []bool{false, true} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s pipelining=%v", tt.name, pipelining), func(t *testing.T) {
				t.Parallel()
				var mails atomic.Int32
				addr, rec := scriptServer(t, "220 mx1.test ready", func(line string) string {
					l := strings.ToUpper(line)
					n := int(mails.Load())
					if strings.HasPrefix(l, "MAIL") {
						n = int(mails.Add(1))
					}
					if a := tt.answer(n, l); a != "" {
						return a
					}
					switch {
					case strings.HasPrefix(l, "EHLO") && pipelining:
						return "250-mx1.test\r\n250 PIPELINING"
					case l == "DATA":
						return "354 go ahead"
					case l == ".":
						return "250 2.0.0 queued"
					}
					return "250 ok"
				})
				e := newEnv(t)
				e.client.MaxIdle = 1
				e.dns.Add("mx1.test. 300 IN A 192.0.2.1")
				e.route("192.0.2.1:25", addr)
				dest := Destination{Host: "mx1.test", NoMX: true}
				for range 2 {
					res := e.deliver(dest, request("x@example.com"))
					checkResult(t, res[0], "2.0.0", "250 2.0.0 queued", "mx1.test[192.0.2.1]:25")
					time.Sleep(50 * time.Millisecond) // the server's close arrives
				}
				var ehlos, noops int
				for _, l := range rec.all() {
					ehlos += btoi(strings.HasPrefix(l, "EHLO"))
					noops += btoi(l == "NOOP")
				}
				if ehlos != 2 || noops != 0 {
					t.Errorf("%d connections and %d NOOPs for two messages, want 2 and 0:\n%s", ehlos, noops, strings.Join(rec.all(), "\n"))
				}
			})
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// BenchmarkSlowLink relays messages one after another over one cached
// connection to a server 10 ms away (a proxy delays each direction by
// 5 ms), with and without PIPELINING announced: the round trips per
// message show as ms/msg (`go test -bench SlowLink -benchtime 20x`).
func BenchmarkSlowLink(b *testing.B) {
	for _, pipelining := range []bool{false, true} {
		name := "lockstep"
		if pipelining {
			name = "pipelining"
		}
		b.Run(name, func(b *testing.B) {
			addr, _ := scriptServer(b, "220 mx1.test ready", func(line string) string {
				switch l := strings.ToUpper(line); {
				case strings.HasPrefix(l, "EHLO") && pipelining:
					return "250-mx1.test\r\n250 PIPELINING"
				case l == "DATA":
					return "354 go ahead"
				case l == ".":
					return "250 2.0.0 queued"
				}
				return "250 ok"
			})
			c := &Client{Hostname: ourName, MaxIdle: 1, CommandTimeout: 5 * time.Second, DataTimeout: 5 * time.Second}
			defer c.Close()
			dest := Destination{Host: "127.0.0.1", Port: mustPort(b, slowLink(b, addr, 5*time.Millisecond)), NoMX: true, NoTLS: true}
			ctx := b.Context()
			deliver := func() {
				if res := c.Deliver(ctx, dest, request("x@example.com")); res[0].Enhanced != "2.0.0" {
					b.Fatalf("%+v", res[0])
				}
			}
			deliver() // the connection, to be cached
			b.ResetTimer()
			for range b.N {
				deliver()
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/msg")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func mustPort(tb testing.TB, addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Fatal(err)
	}
	var n int
	fmt.Sscan(p, &n)
	return n
}

// slowLink is a proxy to addr that holds every chunk for delay in each
// direction, like a link with that one-way latency.
func slowLink(tb testing.TB, addr string, delay time.Duration) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			go delayCopy(s, c, delay)
			go delayCopy(c, s, delay)
		}
	}()
	return l.Addr().String()
}

func delayCopy(dst, src net.Conn, delay time.Duration) {
	type chunk struct {
		b   []byte
		due time.Time
	}
	ch := make(chan chunk, 1024)
	go func() {
		defer close(ch)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				ch <- chunk{buf[:n], time.Now().Add(delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		time.Sleep(time.Until(c.due))
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
}
