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
