// The attack tests measure the server process's memory and timing, which
// the race detector multiplies: they run in the plain test run only.

//go:build !race

package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// These tests attack a real `larkpost serve` process the way a hostile
// client would and measure the process itself: its peak resident memory
// (VmHWM from /proc/PID/status) and how fast a fresh client gets its
// banner meanwhile.

// peakRSS returns the process's high-water mark of resident memory.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	return procStatus(t, pid, "VmHWM:")
}

func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatalf("read /proc status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, field) {
			f := strings.Fields(line)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc status", field)
	return 0
}

// bannerWatch dials the server every 100 ms from srcIP until stop and
// records the slowest time to the 220 banner (or a failure).
type bannerWatch struct {
	worst  atomic.Int64
	failed atomic.Int64
	stop   chan struct{}
	done   sync.WaitGroup
}

func watchBanner(addr, srcIP string) *bannerWatch {
	w := &bannerWatch{stop: make(chan struct{})}
	w.done.Add(1)
	go func() {
		defer w.done.Done()
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			start := time.Now()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(srcIP)}, Timeout: 5 * time.Second}
			c, err := d.Dial("tcp", addr)
			if err != nil {
				w.failed.Add(1)
				continue
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if err != nil || !strings.HasPrefix(line, "220 ") {
				w.failed.Add(1)
				continue
			}
			if d := time.Since(start); int64(d) > w.worst.Load() {
				w.worst.Store(int64(d))
			}
		}
	}()
	return w
}

func (w *bannerWatch) finish() (time.Duration, int64) {
	close(w.stop)
	w.done.Wait()
	return time.Duration(w.worst.Load()), w.failed.Load()
}

// smtpPrelude dials from srcIP and opens a transaction.
func smtpPrelude(addr, srcIP, mail string) (net.Conn, *bufio.Reader, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(srcIP)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	r := bufio.NewReader(c)
	expect := func(prefix string) error {
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return err
			}
			if strings.HasPrefix(l, prefix) {
				return nil
			}
			if !strings.HasPrefix(l, "250-") {
				return fmt.Errorf("got %q, want %q", l, prefix)
			}
		}
	}
	steps := []struct{ send, want string }{{"", "220 "}, {"EHLO attacker.example\r\n", "250 "}, {mail + "\r\n", "250 "},
		{"RCPT TO:<alice@mx.test>\r\n", "250 "}, {"DATA\r\n", "354 "}}
	for _, s := range steps {
		if s.send != "" {
			if _, err := c.Write([]byte(s.send)); err != nil {
				c.Close()
				return nil, nil, err
			}
		}
		if err := expect(s.want); err != nil {
			c.Close()
			return nil, nil, err
		}
	}
	return c, r, nil
}

const mb = 1 << 20

// TestBigMessagesBoundedMemory: 50 concurrent 9.5 MB messages from one IP
// (3.7 GB of peak RSS before bodies were streamed to disk). Every message
// is acknowledged and delivered, the server's peak RSS stays under
// 300 MB, and a fresh client gets its banner within a second throughout.
func TestBigMessagesBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 475 MB")
	}
	s := startServer(t, `config(networks = ["192.0.2.0/24"], destinations = ["mx.test"], local_recipients = ["alice"])`)
	pid := s.cmd.Process.Pid
	base := peakRSS(t, pid)
	watch := watchBanner(s.addr, "127.0.0.9")
	const n, size = 50, 9_500_000
	line := strings.Repeat("0123456789", 99) + "\r\n" // 992 bytes
	block := strings.Repeat(line, 64)
	var wg sync.WaitGroup
	var acked atomic.Int64
	errs := make(chan error, n)
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, r, err := smtpPrelude(s.addr, "127.0.0.2", fmt.Sprintf("MAIL FROM:<big%d@example.org> SIZE=%d", i, size))
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			w := bufio.NewWriterSize(c, 64<<10)
			w.WriteString("Subject: big " + strconv.Itoa(i) + "\r\n\r\n")
			for sent := 0; sent < size; sent += len(block) {
				w.WriteString(block)
			}
			w.WriteString(".\r\n")
			if err := w.Flush(); err != nil {
				errs <- err
				return
			}
			l, err := r.ReadString('\n')
			if err != nil || !strings.HasPrefix(l, "250 2.0.0 Ok: queued as") {
				errs <- fmt.Errorf("message %d: %q %v", i, l, err)
				return
			}
			acked.Add(1)
		}(i)
	}
	wg.Wait()
	took := time.Since(start)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	delivered := waitCount(t, filepath.Join(s.data, "mail", "alice"), int(acked.Load()))
	worst, failed := watch.finish()
	peak := peakRSS(t, pid)
	t.Logf("%d of %d messages of 9.5 MB acknowledged in %v, %d delivered; server RSS %d MB at start, peak %d MB; slowest fresh banner %v, %d failed",
		acked.Load(), n, took.Round(time.Millisecond), delivered, base/mb, peak/mb, worst.Round(time.Millisecond), failed)
	if acked.Load() != n || delivered != n {
		t.Errorf("%d acknowledged and %d delivered, want %d", acked.Load(), delivered, n)
	}
	if peak > 300*mb {
		t.Errorf("peak RSS %d MB, want under 300 MB", peak/mb)
	}
	if worst > time.Second || failed > 0 {
		t.Errorf("fresh clients waited up to %v for the banner (%d failed), want under 1s", worst, failed)
	}
}

// TestIdleDataSessionsBoundedMemory: 900 sessions each declare SIZE=10240000,
// reach DATA, send one header line and go quiet (9.1 GB of RSS when SIZE
// sized a buffer up front). The server stays under 300 MB and keeps
// answering fresh clients within a second.
func TestIdleDataSessionsBoundedMemory(t *testing.T) {
	// The fresh client is the admin's own host (networks): outside
	// clients may take 900 of the 1000 slots, the rest is kept for it.
	s := startServer(t, `config(networks = ["127.0.0.1/32"], destinations = ["mx.test"], local_recipients = ["alice"],
		smtpd_client_connection_count_limit = 40, smtpd_timeout = "60s")`)
	pid := s.cmd.Process.Pid
	// A server that has been taking mail for a while: its heap has freed
	// spans, and reusing one costs touching (zeroing) it.
	warm := strings.Repeat(strings.Repeat("x", 998)+"\r\n", 4000)
	for i := 0; i < 5; i++ {
		if err := sendOne(s.addr, "warm@example.org", "alice@mx.test", "Subject: warm\r\n\r\n"+warm); err != nil {
			t.Fatal(err)
		}
	}
	base := peakRSS(t, pid)
	vmBase := procStatus(t, pid, "VmData:")
	watch := watchBanner(s.addr, "127.0.0.1")
	const n = 900
	var conns []net.Conn
	var mu sync.Mutex
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			src := fmt.Sprintf("127.0.1.%d", 1+i%30) // 30 clients of 30 sessions
			c, _, err := smtpPrelude(s.addr, src, "MAIL FROM:<idle@example.org> SIZE=10240000")
			if err != nil {
				failed.Add(1)
				return
			}
			c.Write([]byte("Subject: x\r\n"))
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}(i)
		if i%50 == 49 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	wg.Wait()
	time.Sleep(2 * time.Second) // held idle in DATA
	worst, bannerFails := watch.finish()
	peak := peakRSS(t, pid)
	rss := procStatus(t, pid, "VmRSS:")
	vm := procStatus(t, pid, "VmData:")
	mu.Lock()
	held := len(conns)
	for _, c := range conns {
		c.Close()
	}
	mu.Unlock()
	t.Logf("%d sessions idle in DATA after SIZE=10240000 (%d refused); server RSS %d MB at start, %d MB with them, peak %d MB; data segment %d MB -> %d MB; slowest fresh banner %v, %d failed",
		held, failed.Load(), base/mb, rss/mb, peak/mb, vmBase/mb, vm/mb, worst.Round(time.Millisecond), bannerFails)
	// RSS alone can miss it: a buffer sized from SIZE= is mapped but only
	// touched where written (unless transparent huge pages or a reused
	// span make the kernel or the runtime touch it all, as on the machine
	// that measured 9.1 GB). The data segment shows what was allocated.
	if vm-vmBase > 300*mb {
		t.Errorf("the data segment grew by %d MB: SIZE= allocated memory", (vm-vmBase)/mb)
	}
	if held < 800 {
		t.Errorf("only %d of %d sessions reached DATA", held, n)
	}
	if peak > 300*mb {
		t.Errorf("peak RSS %d MB, want under 300 MB", peak/mb)
	}
	if worst > time.Second || bannerFails > 0 {
		t.Errorf("fresh clients waited up to %v for the banner (%d failed), want under 1s", worst, bannerFails)
	}
}

// TestConnectionFlood: 2000 connections from 60 addresses try to take every
// slot and hold it. Clients outside networks get at most
// smtpd_connection_limit minus smtpd_networks_reserve of them (the rest
// 421 at once), a client in networks still gets its banner within a
// second, and under stress (past smtpd_stress_threshold, 750 sessions)
// idle ones are dropped after smtpd_stress_timeout instead of
// smtpd_timeout, until the listener is out of stress.
func TestConnectionFlood(t *testing.T) {
	s := startServer(t, `config(networks = ["127.0.0.1/32"], smtpd_timeout = "300s", smtpd_stress_timeout = "3s")`)
	pid := s.cmd.Process.Pid
	const n = 2000
	type result struct {
		banner  bool
		dropped time.Duration // when the server closed a held session
	}
	results := make(chan result, n)
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 2, byte(1+i%60))}, Timeout: 10 * time.Second}
			c, err := d.Dial("tcp", s.addr)
			if err != nil {
				results <- result{}
				return
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(8 * time.Second))
			r := bufio.NewReader(c)
			l, err := r.ReadString('\n')
			if err != nil || !strings.HasPrefix(l, "220 ") {
				results <- result{}
				return
			}
			// Hold the slot, saying nothing, until the server gives up.
			for {
				if _, err := r.ReadString('\n'); err != nil {
					break
				}
			}
			results <- result{banner: true, dropped: time.Since(start)}
		}(i)
		if i%100 == 99 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Let the flood settle, then the admin's host asks for a session.
	time.Sleep(500 * time.Millisecond)
	before := time.Now()
	c := dial(t, s.addr) // from 127.0.0.1, in networks
	trusted := time.Since(before)
	c.cmd("QUIT", "221 ")
	wg.Wait()
	close(results)
	held, early := 0, 0
	for r := range results {
		if r.banner {
			held++
			if r.dropped < 7*time.Second {
				early++
			}
		}
	}
	t.Logf("%d connections from 60 addresses: %d got a session, the rest 421; a networks client got its banner in %v; %d idle sessions dropped within 7s under stress (smtpd_stress_timeout 3s), the others when the client gave up at 8s; peak RSS %d MB",
		n, held, trusted.Round(time.Millisecond), early, peakRSS(t, pid)/mb)
	if held > 900 {
		t.Errorf("%d sessions from outside networks, want at most 900 (1000 minus the reserve of 100)", held)
	}
	if trusted > time.Second {
		t.Errorf("the networks client waited %v for its banner, want under a second", trusted)
	}
	if early < held-750 {
		t.Errorf("only %d idle sessions dropped under stress, want at least %d (down to the threshold)", early, held-750)
	}
	if !strings.Contains(s.log.String(), "stress mode on") || !strings.Contains(s.log.String(), "stress mode off") {
		t.Errorf("stress mode was not logged on and off:\n%s", grepLines(s.log.String(), "stress"))
	}
}

// TestSlowClients: a command sent a byte at a time must still be complete
// within smtpd_timeout of the last reply, and a DATA transfer must keep
// smtpd_min_data_rate after a grace of smtpd_timeout; either one past its
// limit gets 421 and the connection is closed.
func TestSlowClients(t *testing.T) {
	s := startServer(t, `config(smtpd_timeout = "2s", smtpd_min_data_rate = 500)`)
	drip := func(c *rawConn, text string, every time.Duration) time.Duration {
		start := time.Now()
		for i := 0; i < len(text); i++ {
			if _, err := c.c.Write([]byte{text[i]}); err != nil {
				break
			}
			time.Sleep(every)
			if time.Since(start) > 20*time.Second {
				break
			}
		}
		return time.Since(start)
	}
	t.Run("command", func(t *testing.T) {
		t.Parallel()
		c := dial(t, s.addr)
		start := time.Now()
		go drip(c, "MAIL FROM:<"+strings.Repeat("a", 200)+"@example.org>\r\n", 100*time.Millisecond)
		if l := c.line(); !strings.HasPrefix(l, "421 4.4.2") {
			t.Errorf("got %q, want 421 4.4.2", l)
		}
		if d := time.Since(start); d > 4*time.Second {
			t.Errorf("a command dripping a byte every 100 ms was cut after %v, want about smtpd_timeout (2s)", d)
		}
	})
	t.Run("data", func(t *testing.T) {
		t.Parallel()
		c := dial(t, s.addr)
		c.cmd("MAIL FROM:<a@example.org>", "250 ")
		c.cmd("RCPT TO:<alice@mx.test>", "250 ")
		c.cmd("DATA", "354 ")
		start := time.Now()
		// 20 bytes a second: never idle for smtpd_timeout, far below
		// smtpd_min_data_rate.
		go drip(c, "Subject: slow\r\n\r\n"+strings.Repeat("x", 2000), 50*time.Millisecond)
		if l := c.line(); !strings.HasPrefix(l, "421 4.4.2") {
			t.Errorf("got %q, want 421 4.4.2", l)
		}
		if d := time.Since(start); d < 1500*time.Millisecond || d > 5*time.Second {
			t.Errorf("a transfer at 20 bytes/s was cut after %v, want about the 2s grace", d)
		}
	})
}

func grepLines(log, pattern string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		for _, p := range strings.Split(pattern, "|") {
			if strings.Contains(l, p) {
				out = append(out, l)
				break
			}
		}
	}
	if len(out) > 20 {
		out = out[:20]
	}
	return strings.Join(out, "\n")
}

// TestFilterBombsNeverLoop: a user's filter that tries to exhaust memory
// is stopped by filter_max_memory and the message goes to the INBOX; a
// filter that is still running when the server dies (kill -9) is not run
// again on that message after the restart, so a filter that can take the
// server down cannot do it again at every restart.
func TestFilterBombsNeverLoop(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := filepath.Join(dir, "larkpost.star")
	os.MkdirAll(filepath.Join(data, "filters"), 0o700)
	os.WriteFile(filepath.Join(data, "filters", "alice.star"), []byte(`
def file(msg):
    if msg.subject == "bomb":
        return str([msg.body] * 1000000000)
    if msg.subject == "loop":
        n = 0
        while True:
            n += 1
    return "Kept"
`), 0o600)
	timeout := "120s" // the server is killed long before
	if os.Geteuid() == 0 {
		timeout = "3s" // in a filter child, this is what stops the loop
	}
	os.WriteFile(cfg, []byte(fmt.Sprintf(`config(listen = {"smtp": "127.0.0.1:0"}, data_dir = %q, hostname = "mx.test", resolvers = [],
	filter_path = "{data_dir}/filters/{user}.star", filter_max_steps = 2000000000, filter_timeout = %q)
`, data, timeout)), 0o600)
	inbox := filepath.Join(data, "mail", "alice")
	s := runServer(t, cfg, data)
	if err := sendOne(s.addr, "ann@example.org", "alice@mx.test", "Subject: bomb\r\n\r\n"+strings.Repeat("x", 1000)+"\r\n"); err != nil {
		t.Fatal(err)
	}
	if got := waitCount(t, inbox, 1); got != 1 {
		t.Fatalf("the bomb message was not filed to the INBOX (%d messages)", got)
	}
	waitLog(t, s, "filter failed, filed to INBOX")
	waitLog(t, s, "memory budget exceeded")

	if err := sendOne(s.addr, "ann@example.org", "alice@mx.test", "Subject: loop\r\n\r\nspin\r\n"); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// Run as root, filters run in filter children: the spinning one
		// is stopped by filter_timeout there, and the server never was
		// in danger (no marker is needed; see engine/privsep's filter tests).
		if got := waitCount(t, inbox, 2); got != 2 {
			t.Fatalf("INBOX has %d messages, want 2", got)
		}
		waitLog(t, s, "Starlark computation cancelled: hook deadline exceeded")
		return
	}
	// Kill the server while the filter spins.
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, _ := filepath.Glob(filepath.Join(data, "filtering", "*.alice"))
		if len(m) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the looping filter never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.cmd.Process.Kill()
	s.wait(5 * time.Second)
	for round := 1; round <= 2; round++ {
		s = runServer(t, cfg, data)
		if got := waitCount(t, inbox, 2); got != 2 {
			t.Fatalf("restart %d: INBOX has %d messages, want 2", round, got)
		}
		if round == 1 {
			waitLog(t, s, "an earlier run on this message never finished")
		}
		time.Sleep(300 * time.Millisecond)
		s.cmd.Process.Kill()
		s.wait(5 * time.Second)
	}
	if got := countMaildir(t, inbox); got != 2 {
		t.Errorf("INBOX has %d messages after two restarts, want 2", got)
	}
}
