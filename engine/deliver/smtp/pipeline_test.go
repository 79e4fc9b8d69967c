package smtp

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
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
	var conns atomic.Int32
	serverErr := make(chan error, 4)
	addr := listen(t, func(c net.Conn) {
		conns.Add(1)
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		serverErr <- pipelinedServer(c)
	})
	e := newEnv(t)
	e.client.MaxIdle = 1
	e.client.CommandTimeout = time.Second
	e.dns.Add("mx1.test. 300 IN A 192.0.2.1")
	e.route("192.0.2.1:25", addr)
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
					return plainAnswer(line, pipelining)
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
			addr, _ := scriptServer(b, "220 mx1.test ready", func(line string) string { return plainAnswer(line, pipelining) })
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
	return listen(tb, func(c net.Conn) {
		s, err := net.Dial("tcp", addr)
		if err != nil {
			c.Close()
			return
		}
		go delayCopy(s, c, delay)
		delayCopy(c, s, delay)
	})
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

// TestRandomReplies sends 300 messages one after another, with and without
// PIPELINING, to a server that answers each command at random: success,
// 4xx, 5xx, 421 and a hang-up, a broken line, or a hang-up without a
// reply. Whatever happens, a message counts as sent exactly when the
// server took its body, and every reply a result quotes is one the
// server gave, during that delivery, to the command the result names
// (each reply carries a serial number): a pipelined reply read for the
// wrong command would show as a message sent that the server never
// took, or as another command's refusal.
func TestRandomReplies(t *testing.T) {
	t.Parallel()
	for _, pipelining := range []bool{false, true} {
		t.Run(fmt.Sprintf("pipelining=%v", pipelining), func(t *testing.T) {
			t.Parallel()
			srv := &randomServer{pipelining: pipelining, rnd: rand.New(rand.NewPCG(1, 2)), taken: map[string]int{}, verbOf: map[int]string{}}
			addr := srv.start(t)
			e := newEnv(t)
			e.client.MaxIdle = 1
			e.client.CommandTimeout = 2 * time.Second
			e.dns.Add("mx1.test. 300 IN A 192.0.2.1")
			e.route("192.0.2.1:25", addr)
			dest := Destination{Host: "mx1.test", NoMX: true}
			sent := 0
			for i := range 300 {
				id := fmt.Sprintf("m-%d", i)
				req := request("x@example.com", "y@example.com")
				req.Body = bytes.NewReader([]byte("Subject: " + id + "\r\n\r\nhello\r\n"))
				srv.mu.Lock()
				first := srv.serial
				srv.mu.Unlock()
				res := e.deliver(dest, req)
				srv.mu.Lock()
				taken := srv.taken[id]
				srv.mu.Unlock()
				for _, r := range res {
					srv.check(t, id, first, r)
				}
				any := false
				for _, r := range res {
					if r.Enhanced[0] == '2' {
						any = true
						sent++
						if !strings.Contains(r.Text, "queued "+id+" ") {
							t.Fatalf("%s: sent with the reply %q", id, r.Text)
						}
					}
				}
				if any != (taken == 1) || taken > 1 {
					t.Fatalf("%s: results %+v, but the server took it %d times", id, res, taken)
				}
			}
			t.Logf("%d of 600 recipients sent over %d connections", sent, srv.conns.Load())
			if sent < 100 || srv.conns.Load() < 10 {
				t.Errorf("the random server let %d recipients through over %d connections: not the mix this test needs", sent, srv.conns.Load())
			}
		})
	}
}

// randomServer keeps an SMTP transaction's state as Postfix does and picks
// each reply at random.
type randomServer struct {
	pipelining bool
	conns      atomic.Int32

	mu     sync.Mutex
	rnd    *rand.Rand
	taken  map[string]int // bodies answered with 250, by Subject
	serial int            // replies numbered so far
	verbOf map[int]string // what each numbered reply answered
}

var quoted = regexp.MustCompile(`#(\d+)(?: \(in reply to (.*) command\))?$`)

// check finds the reply a result quotes and makes sure the server gave it
// after first, to the command the result says.
func (s *randomServer) check(t *testing.T, id string, first int, r Result) {
	t.Helper()
	m := quoted.FindStringSubmatch(r.Text)
	if m == nil {
		// Our own words: a lost connection, never a success.
		if r.Enhanced[0] == '2' || strings.Contains(r.Text, "said:") {
			t.Fatalf("%s: %+v quotes no reply of this server", id, r)
		}
		return
	}
	n, _ := strconv.Atoi(m[1])
	want := map[string]string{"": ".", "MAIL FROM": "MAIL", "RCPT TO": "RCPT", "DATA": "DATA", "end of DATA": "."}[m[2]]
	s.mu.Lock()
	got := s.verbOf[n]
	s.mu.Unlock()
	if n <= first || got != want {
		t.Fatalf("%s: %+v quotes reply #%d, which answered %q (want %q) and came before the delivery began (#%d)? %v", id, r, n, got, want, first, n <= first)
	}
}

func (s *randomServer) pick(choices ...string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Success most of the time; each other outcome now and then.
	if s.rnd.IntN(20) < 17 {
		return choices[0]
	}
	return choices[1+s.rnd.IntN(len(choices)-1)]
}

func (s *randomServer) start(t *testing.T) string {
	return listen(t, func(c net.Conn) {
		s.conns.Add(1)
		s.serve(c)
	})
}

func (s *randomServer) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	verb := ""
	say := func(reply string) bool {
		if reply == "<close>" {
			return false
		}
		if len(reply) > 3 && (reply[0] == '2' || reply[0] == '4' || reply[0] == '5') && !strings.Contains(reply, "\r\n") && verb != "" {
			s.mu.Lock()
			s.serial++
			s.verbOf[s.serial] = verb
			reply += fmt.Sprintf(" #%d", s.serial)
			s.mu.Unlock()
		}
		io.WriteString(c, reply+"\r\n")
		return !strings.HasPrefix(reply, "421")
	}
	say("220 mx1.test ready")
	mail, rcpts := false, 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimRight(line, "\r\n"))
		verb, _, _ = strings.Cut(cmd, " ")
		var reply string
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			reply = "250-mx1.test\r\n250 8BITMIME"
			if s.pipelining {
				reply = "250-mx1.test\r\n250-PIPELINING\r\n250 8BITMIME"
			}
		case strings.HasPrefix(cmd, "MAIL"):
			reply = s.pick("250 2.1.0 ok", "451 4.3.0 later", "550 5.7.1 no", "421 4.3.2 closing", "", "<close>")
			mail = reply[:min(1, len(reply))] == "2"
		case strings.HasPrefix(cmd, "RCPT") && !mail:
			reply = "503 5.5.1 Error: need MAIL command"
		case strings.HasPrefix(cmd, "RCPT"):
			reply = s.pick("250 2.1.5 ok", "450 4.2.0 busy", "550 5.1.1 unknown", "421 4.3.2 closing", "<close>")
			if strings.HasPrefix(reply, "2") {
				rcpts++
			}
		case cmd == "DATA" && !mail:
			reply = "503 5.5.1 Error: need MAIL command"
		case cmd == "DATA" && rcpts == 0:
			reply = "554 5.5.1 Error: no valid recipients"
		case cmd == "DATA":
			reply = s.pick("354 go ahead", "451 4.3.0 later", "421 4.3.2 closing", "<close>")
			if strings.HasPrefix(reply, "354") {
				if !say(reply) {
					return
				}
				verb = "."
				id, err := readBody(r)
				if err != nil {
					return
				}
				reply = s.pick("250 2.0.0 queued "+id+" ok", "451 4.3.0 later", "554 5.7.1 spam", "421 4.3.2 closing", "<close>")
				if strings.HasPrefix(reply, "250") {
					s.mu.Lock()
					s.taken[id]++
					s.mu.Unlock()
				}
				mail, rcpts = false, 0
			}
		case cmd == "RSET":
			reply = "250 2.0.0 ok"
			mail, rcpts = false, 0
		case cmd == "NOOP":
			reply = "250 2.0.0 ok"
		case cmd == "QUIT":
			say("221 2.0.0 bye")
			return
		default:
			reply = "502 5.5.2 what"
		}
		if !say(reply) {
			return
		}
	}
}

// readBody reads the data up to the lone dot and returns its Subject.
func readBody(r *bufio.Reader) (string, error) {
	id := ""
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "." {
			return id, nil
		}
		if s, ok := strings.CutPrefix(line, "Subject: "); ok {
			id = s
		}
	}
}
