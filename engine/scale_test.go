//go:build scale

// The queue at scale (issue 21): N messages deferred to a destination
// that is down (an in-process sink answering every connection 421), then
// a restart as a real `larkpost serve`, queue listings, and a drain once
// the sink accepts, compared with the drain of a small queue.
//
//	go test -tags scale -run TestQueueAtScale -v -timeout 60m ./engine -args -scale.n=100000
//
// Flags (after -args): -scale.n (default 100000; the target is
// 1000000), -scale.smtp (how many of them go through SMTP, the rest
// through cleanup.Inject; 10000), -scale.sessions (8), -scale.baseline
// (2000), -scale.drain (longest drain window, 3m; the rate is what was
// delivered in it), -scale.heapprofile FILE, -scale.cpuprofile PREFIX.
//
// On the 2-core development machine (December 2026) N=200000 with
// -scale.drain=2m takes about 3 minutes (enqueue 1 min, flush 10 s, the
// whole drain 1m20s at ~2,500 msgs/s); N=1000000 with -scale.drain=4m
// about 10 (enqueue 4-6 min, flush about a minute, the 4-minute window
// ends with about 60% delivered): the rate is read off the partial drain. Every step
// has a deadline and the test
// fails with the step's name past it; the targets (5 s to the
// banner, 300 MB, 2 s listings, 80% drain) are marked in the table the
// test prints at the end, not enforced.
package engine

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/larkpost/larkpost/engine/cleanup"
	"github.com/larkpost/larkpost/engine/enginetest"
	"github.com/larkpost/larkpost/engine/maillog"
	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
)

var (
	scaleN        = flag.Int("scale.n", 100000, "messages to queue (the issue's target is 1000000)")
	scaleSMTP     = flag.Int("scale.smtp", 10000, "of those, how many go through SMTP (the rest through cleanup.Inject)")
	scaleSessions = flag.Int("scale.sessions", 8, "concurrent SMTP sessions (and Inject goroutines)")
	scaleBaseline = flag.Int("scale.baseline", 2000, "messages of the empty-queue drain baseline")
	scaleHeap     = flag.String("scale.heapprofile", "", "write a heap profile of the test process after the deferral to `FILE`")
	scaleCPU      = flag.String("scale.cpuprofile", "", "write CPU profiles of the restarted server and of the baseline's to `PREFIX`-big.prof and PREFIX-baseline.prof")
	scaleDrain    = flag.Duration("scale.drain", 3*time.Minute, "longest drain window; the rate is measured over what was delivered in it")
)

// scaleSink is a minimal SMTP server: while down it answers every
// connection "421" and closes; while up it accepts every message.
type scaleSink struct {
	port      int
	up        atomic.Bool
	refused   atomic.Int64
	delivered atomic.Int64
	first     atomic.Int64 // unix nanos of the first delivery since reset
	last      atomic.Int64 // unix nanos of the latest delivery
}

func newScaleSink(t testing.TB) *scaleSink {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scaleSink{port: l.Addr().(*net.TCPAddr).Port}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *scaleSink) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	if !s.up.Load() {
		s.refused.Add(1)
		c.Write([]byte("421 4.3.2 sink.test service not available\r\n"))
		return
	}
	r := bufio.NewReader(c)
	w := bufio.NewWriter(c)
	reply := func(s string) bool {
		w.WriteString(s + "\r\n")
		return w.Flush() == nil
	}
	if !reply("220 sink.test ESMTP") {
		return
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		verb := strings.ToUpper(strings.TrimSpace(line))
		if i := strings.IndexAny(verb, " :"); i >= 0 {
			verb = verb[:i]
		}
		switch verb {
		case "EHLO":
			reply("250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES")
		case "HELO", "RSET", "NOOP":
			reply("250 2.0.0 ok")
		case "MAIL":
			reply("250 2.1.0 ok")
		case "RCPT":
			reply("250 2.1.5 ok")
		case "DATA":
			reply("354 go ahead")
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" || l == ".\n" {
					break
				}
			}
			now := time.Now().UnixNano()
			s.first.CompareAndSwap(0, now)
			s.last.Store(now)
			s.delivered.Add(1)
			reply("250 2.0.0 queued")
		case "QUIT":
			reply("221 2.0.0 bye")
			return
		default:
			reply("502 5.5.2 unknown command")
		}
	}
}

// scaleWords is the vocabulary of the test messages' text.
var scaleWords = strings.Fields(`the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were her she there been one all we their has would when if so no what up out who them some could more will into then its time only about other new than these two may first any like now my such make over our even most me state after also made many did must before back see through way where get much go well your know should down work year because come people just`)

// scaleMessage is the test message: about 1 KB of text made of random
// words, so that Badger's block compression sees what real text gives it
// (a repeated sentence would compress to almost nothing).
func scaleMessage(i int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "From: Ann <ann@mx.test>\r\nTo: Bob <bob@remote.test>\r\nSubject: scale test message %d\r\nMessage-ID: <scale.%d@mx.test>\r\nDate: Fri, 04 Dec 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n", i, i)
	r := rand.New(rand.NewPCG(uint64(i), 21))
	line := 0
	for b.Len() < 1000 {
		w := scaleWords[r.IntN(len(scaleWords))]
		b.WriteString(w)
		line += len(w) + 1
		if line > 70 {
			b.WriteString("\r\n")
			line = 0
		} else {
			b.WriteByte(' ')
		}
	}
	b.WriteString("\r\n")
	return b.String()
}

// scaleConfig is the config both the in-process engine and the child
// `larkpost serve` run.
func scaleConfig(t testing.TB, dir string, smtpPort, sinkPort int) (file, data string) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	data = filepath.Join(dir, "data")
	cfg := fmt.Sprintf(`config(listen = {"smtp": "127.0.0.1:%d"}, data_dir = %q, hostname = "mx.test", resolvers = [],
    allow_root = True, relayhost = "[127.0.0.1]:%d", minimal_backoff = "1h", maximal_backoff = "4h")
`, smtpPort, data, sinkPort)
	file = filepath.Join(dir, "larkpost.star")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return file, data
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// smtpFlood sends messages [from, to) over `sessions` persistent SMTP
// sessions; it returns how many were accepted.
func smtpFlood(t testing.TB, addr string, from, to, sessions int, deadline time.Time) int {
	var next atomic.Int64
	next.Store(int64(from))
	var ok atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *smtp.Client
			defer func() {
				if c != nil {
					c.Quit()
				}
			}()
			for time.Now().Before(deadline) {
				i := int(next.Add(1) - 1)
				if i >= to {
					return
				}
				if c == nil {
					var err error
					if c, err = smtp.Dial(addr); err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
					c.CommandTimeout, c.SubmissionTimeout = 30*time.Second, 60*time.Second
					if err := c.Hello("client.example"); err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
				}
				err := func() error {
					if err := c.Mail("ann@mx.test", nil); err != nil {
						return err
					}
					if err := c.Rcpt("bob@remote.test", nil); err != nil {
						return err
					}
					w, err := c.Data()
					if err != nil {
						return err
					}
					if _, err := w.Write([]byte(scaleMessage(i))); err != nil {
						return err
					}
					return w.Close()
				}()
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					c.Close()
					c = nil
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		t.Logf("smtp flood: first error: %v", e)
	}
	return int(ok.Load())
}

// census counts queued messages by state.
func census(q *queue.Queue) map[queue.State]int {
	m, _ := q.Counts(time.Now())
	return m
}

// anonRSS is a process's RssAnon: its own memory, without the queue's
// memory-mapped tables, which the kernel drops under pressure.
func anonRSS(pid string) string {
	b, _ := os.ReadFile("/proc/" + pid + "/status")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "RssAnon:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return mb(n * 1024)
		}
	}
	return "?"
}

// procStatus returns VmRSS and VmHWM of a process in bytes.
func procStatus(pid string) (rss, hwm int64) {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return -1, -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = n * 1024
		case "VmHWM:":
			hwm = n * 1024
		}
	}
	return rss, hwm
}

// diskUsage is the apparent size (du -sb) and the allocated size (du -s)
// of the files under dir.
func diskUsage(dir string) (apparent, allocated int64, files int) {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		files++
		apparent += fi.Size()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			allocated += st.Blocks * 512
		}
		return nil
	})
	return
}

func mb(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }

// child is a real `larkpost serve` process.
type child struct {
	cmd   *exec.Cmd
	pid   string
	bin   string
	cfg   string
	log   string
	start time.Time
}

func startChild(t testing.TB, bin, cfg, logFile string) *child {
	out, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "-c", cfg)
	cmd.Stdout, cmd.Stderr = out, out
	if *scaleCPU != "" {
		name := "-big.prof"
		if strings.Contains(logFile, "baseline") {
			name = "-baseline.prof"
		}
		cmd.Env = append(os.Environ(), "LARKPOST_CPUPROFILE="+*scaleCPU+name)
	}
	c := &child{cmd: cmd, bin: bin, cfg: cfg, log: logFile, start: time.Now()}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.pid = strconv.Itoa(cmd.Process.Pid)
	t.Cleanup(func() { c.stop(t); out.Close() })
	return c
}

func (c *child) stop(t testing.TB) {
	if c.cmd.ProcessState != nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Logf("larkpost serve (pid %s) did not stop in 30s after SIGTERM; killing it", c.pid)
		c.cmd.Process.Kill()
		<-done
	}
}

// banner waits for the SMTP greeting on addr; it returns when it came.
func waitBanner(addr string, deadline time.Time) (time.Time, error) {
	for time.Now().Before(deadline) {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		conn.SetDeadline(deadline)
		line, err := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		if err == nil && strings.HasPrefix(line, "220") {
			return time.Now(), nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Time{}, errors.New("no SMTP banner before the deadline")
}

// cli runs the larkpost binary against the child; it returns the time
// taken, stdout's size and its first bytes.
func (c *child) cli(t testing.TB, limit time.Duration, args ...string) (time.Duration, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	args = append(args, "-c", c.cfg)
	cmd := exec.CommandContext(ctx, c.bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	d := time.Since(start)
	if err != nil {
		err = fmt.Errorf("larkpost %s: %v (after %v): %s", strings.Join(args, " "), err, d.Round(time.Millisecond), strings.TrimSpace(stderr.String()))
	}
	return d, out, err
}

// status asks the child for its queue census.
func (c *child) status(t testing.TB) (map[string]int, error) {
	_, out, err := c.cli(t, time.Minute, "status", "--json")
	if err != nil {
		return nil, err
	}
	var st struct{ Queue map[string]int }
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, fmt.Errorf("status --json: %v", err)
	}
	return st.Queue, nil
}

// drain flushes the child's queue into the sink (now up) and measures
// deliveries until want arrived or the window closed.
func drain(t testing.TB, c *child, sink *scaleSink, want int, window time.Duration) (rate float64, delivered int64, flushTook time.Duration, flushErr error, took time.Duration) {
	sink.delivered.Store(0)
	sink.first.Store(0)
	sink.up.Store(true)
	start := time.Now()
	deadline := start.Add(window)
	flushDone := make(chan struct{})
	go func() {
		defer close(flushDone)
		flushTook, _, flushErr = c.cli(t, window, "queue", "flush", "--all")
	}()
	lastLog := start
	for time.Now().Before(deadline) && sink.delivered.Load() < int64(want) {
		time.Sleep(50 * time.Millisecond)
		if time.Since(lastLog) > 15*time.Second {
			lastLog = time.Now()
			t.Logf("  drain: %d/%d delivered after %v", sink.delivered.Load(), want, time.Since(start).Round(time.Second))
		}
	}
	took = time.Since(start)
	delivered = sink.delivered.Load()
	<-flushDone
	return float64(delivered) / took.Seconds(), delivered, flushTook, flushErr, took
}

func TestQueueAtScale(t *testing.T) {
	n := *scaleN
	viaSMTP := min(*scaleSMTP, n)
	sessions := *scaleSessions
	type row struct{ k, v string }
	var table []row
	add := func(k, f string, a ...any) {
		table = append(table, row{k, fmt.Sprintf(f, a...)})
		t.Logf("%-44s %s", k, fmt.Sprintf(f, a...))
	}
	defer func() {
		var b strings.Builder
		fmt.Fprintf(&b, "\n==== queue at scale: N=%d ====\n", n)
		for _, r := range table {
			fmt.Fprintf(&b, "%-44s %s\n", r.k, r.v)
		}
		t.Log(b.String())
	}()
	// stepDeadline scales with N: a base plus a per-message allowance.
	stepDeadline := func(base time.Duration, perMsg time.Duration) time.Time {
		return time.Now().Add(base + time.Duration(n)*perMsg)
	}

	dir := t.TempDir()
	bin := filepath.Join(dir, "larkpost")
	buildStart := time.Now()
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/larkpost/larkpost/cmd/larkpost").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("built larkpost in %v", time.Since(buildStart).Round(time.Millisecond))

	// 1. An engine whose relayhost is down.
	sink := newScaleSink(t)
	smtpPort := freePort(t)
	cfg, data := scaleConfig(t, filepath.Join(dir, "big"), smtpPort, sink.port)
	lb := &enginetest.LogBuffer{}
	log := slog.New(maillog.New(lb, slog.LevelWarn))
	p, err := rules.LoadFileWith(cfg, rules.Options{Logger: log})
	if err != nil {
		t.Fatalf("load config:\n%v", err)
	}
	e, err := NewWith(p, log, Options{})
	if err != nil {
		t.Fatal(err)
	}
	e.Start()
	engineUp := true
	defer func() {
		if engineUp {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			e.Shutdown(ctx)
		}
	}()
	addr := e.Addr("smtp").String()
	add("N (messages, ~1 KB each, 1 recipient)", "%d", n)

	// 2a. The real path: SMTP, several sessions.
	start := time.Now()
	got := smtpFlood(t, addr, 0, viaSMTP, sessions, stepDeadline(time.Minute, 20*time.Millisecond))
	smtpTook := time.Since(start)
	if got != viaSMTP {
		t.Fatalf("enqueue over SMTP: %d of %d accepted before the deadline (%v)", got, viaSMTP, smtpTook)
	}
	add("enqueue over SMTP", "%d msgs in %v = %.0f msgs/s (%d sessions)", got, smtpTook.Round(time.Millisecond), float64(got)/smtpTook.Seconds(), sessions)
	t.Logf("  sink refusals so far: %d", sink.refused.Load())

	// 2b. The rest through cleanup.Inject, as the SMTP server does after DATA.
	if rest := n - viaSMTP; rest > 0 {
		start = time.Now()
		deadline := stepDeadline(time.Minute, 10*time.Millisecond)
		var next atomic.Int64
		next.Store(int64(viaSMTP))
		var injErr atomic.Value
		var wg sync.WaitGroup
		client := rules.Conn{IP: netip.AddrFrom4([4]byte{127, 0, 0, 1}), RDNS: "localhost", InNetworks: true}
		for range sessions {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					i := int(next.Add(1) - 1)
					if i >= n {
						return
					}
					msg := []byte(scaleMessage(i))
					sub := &cleanup.Submission{Origin: cleanup.SMTP, Sender: "ann@mx.test", Rcpts: []cleanup.Rcpt{{Addr: "bob@remote.test"}},
						Client: client, Proto: "ESMTP", Arrival: time.Now(), Content: cleanup.Whole(msg)}
					if _, err := e.cleanup.Inject(context.Background(), sub); err != nil {
						injErr.CompareAndSwap(nil, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		took := time.Since(start)
		if err := injErr.Load(); err != nil {
			t.Fatalf("inject: %v", err)
		}
		if next.Load() < int64(n) {
			t.Fatalf("enqueue through cleanup.Inject: past the deadline after %v (%d of %d)", took, next.Load()-int64(viaSMTP), rest)
		}
		add("enqueue through cleanup.Inject", "%d msgs in %v = %.0f msgs/s (%d goroutines)", rest, took.Round(time.Millisecond), float64(rest)/took.Seconds(), sessions)
	}
	enqueueEnd := time.Now()

	// Wait until the first attempt deferred every message.
	deadline := stepDeadline(time.Minute, 20*time.Millisecond)
	var c map[queue.State]int
	var walks time.Duration
	nWalks := 0
	for {
		ws := time.Now()
		c = census(e.Queue())
		walks += time.Since(ws)
		nWalks++
		if c[queue.Active] == 0 && c[queue.Deferred] >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deferral: not all deferred before the deadline: %v (sink refused %d connections)\n%s", c, sink.refused.Load(), lb.String())
		}
		time.Sleep(2 * time.Second)
	}
	add("all deferred after end of enqueue", "%v (sink refused %d connections)", time.Since(enqueueEnd).Round(time.Millisecond), sink.refused.Load())
	add("census (in-process, index keys, = status)", "%v per census of %d messages", (walks / time.Duration(nWalks)).Round(time.Millisecond), n)

	// 3. Memory and disk.
	rss, hwm := procStatus("self")
	add("RSS of test process after deferral", "VmRSS %s, VmHWM %s (includes the test harness)", mb(rss), mb(hwm))
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	add("Go heap of test process after GC", "HeapInuse %s, HeapSys %s, Sys %s", mb(int64(ms.HeapInuse)), mb(int64(ms.HeapSys)), mb(int64(ms.Sys)))
	if *scaleHeap != "" {
		if f, err := os.Create(*scaleHeap); err == nil {
			pprof.WriteHeapProfile(f)
			f.Close()
			t.Logf("heap profile of the test process (engine with the deferred queue) in %s", *scaleHeap)
		}
	}
	lsm, vlog := e.Queue().Sizes()
	app, alloc, files := diskUsage(data)
	add("data_dir before shutdown", "%s apparent, %s allocated, %d files; badger lsm %s vlog %s", mb(app), mb(alloc), files, mb(lsm), mb(vlog))

	// 4. Restart as a real `larkpost serve`.
	start = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	err = e.Shutdown(ctx)
	cancel()
	engineUp = false
	if err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	add("in-process engine shutdown", "%v", time.Since(start).Round(time.Millisecond))
	app, alloc, files = diskUsage(data)
	add("data_dir after shutdown", "%s apparent, %s allocated, %d files", mb(app), mb(alloc), files)
	add("disk per queued message", "%.0f B apparent, %.0f B allocated (Postfix: one queue file per message, the message plus a few hundred bytes of envelope records, in 4 KiB blocks: 4096 B allocated + an inode for a message this size)", float64(app)/float64(n), float64(alloc)/float64(n))

	ch := startChild(t, bin, cfg, filepath.Join(dir, "big-serve.log"))
	at, err := waitBanner(fmt.Sprintf("127.0.0.1:%d", smtpPort), ch.start.Add(60*time.Second))
	if err != nil {
		b, _ := os.ReadFile(ch.log)
		t.Fatalf("restart: %v\n%s", err, b)
	}
	toBanner := at.Sub(ch.start)
	verdict := "ok"
	if toBanner > 5*time.Second {
		verdict = "OVER the 5 s target"
	}
	add("restart: exec to first SMTP banner", "%v (%s)", toBanner.Round(time.Millisecond), verdict)
	time.Sleep(time.Until(ch.start.Add(10 * time.Second)))
	rss, hwm = procStatus(ch.pid)
	verdict = "ok"
	if rss > 300e6 {
		verdict = "OVER the 300 MB target"
	}
	add("restart: child RSS 10 s after exec", "VmRSS %s (RssAnon %s), VmHWM %s (%s)", mb(rss), anonRSS(ch.pid), mb(hwm), verdict)

	d, out, err := ch.cli(t, 5*time.Minute, "status", "--json")
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	var st struct{ Queue map[string]int }
	json.Unmarshal(out, &st)
	add("`larkpost status` (index census)", "%v -> %v", d.Round(time.Millisecond), st.Queue)

	target := func(d time.Duration) string {
		if d > 2*time.Second {
			return "OVER the 2 s target"
		}
		return "ok"
	}
	d, out, err = ch.cli(t, 5*time.Minute, "queue", "list", "--count")
	if err != nil {
		add("`larkpost queue list --count`", "FAILED after %v: %v", d.Round(time.Millisecond), err)
	} else {
		add("`larkpost queue list --count`", "%v (%s) -> %s", d.Round(time.Millisecond), target(d), strings.Join(strings.Fields(string(out)), " "))
	}
	d, out, err = ch.cli(t, 5*time.Minute, "queue", "list")
	if err != nil {
		add("`larkpost queue list` (first page)", "FAILED after %v: %v", d.Round(time.Millisecond), err)
	} else {
		add("`larkpost queue list` (first page)", "%v (%s), %s of output, %d lines", d.Round(time.Millisecond), target(d), mb(int64(len(out))), strings.Count(string(out), "\n"))
	}
	// The whole list is built in the server's memory (about 2 KB a
	// message): only at sizes where that is sane.
	if n > 100000 {
		add("`larkpost queue list --limit 0` (all of it)", "skipped above 100,000 messages")
	} else if d, out, err = ch.cli(t, 5*time.Minute, "queue", "list", "--limit", "0"); err != nil {
		add("`larkpost queue list --limit 0` (all of it)", "FAILED after %v: %v", d.Round(time.Millisecond), err)
	} else {
		lines := strings.Count(string(out), "\n")
		add("`larkpost queue list --limit 0` (all of it)", "%v, %s of output, %d lines", d.Round(time.Millisecond), mb(int64(len(out))), lines)
	}
	d, _, err = ch.cli(t, 5*time.Minute, "queue", "list", "--to", "nobody-matches")
	if err != nil {
		add("`queue list --to nobody-matches` (walk, empty reply)", "FAILED after %v: %v", d.Round(time.Millisecond), err)
	} else {
		add("`queue list --to nobody-matches` (walk, empty reply)", "%v", d.Round(time.Millisecond))
	}
	rss, hwm = procStatus(ch.pid)
	add("child RSS after the listings", "VmRSS %s (RssAnon %s), VmHWM %s", mb(rss), anonRSS(ch.pid), mb(hwm))

	// 5. The destination comes back.
	drainStart := time.Now()
	rate, delivered, flushTook, flushErr, took := drain(t, ch, sink, n, *scaleDrain)
	if flushErr != nil {
		add("`larkpost queue flush --all`", "FAILED after %v: %v", flushTook.Round(time.Millisecond), flushErr)
	} else {
		add("`larkpost queue flush --all`", "%v", flushTook.Round(time.Millisecond))
	}
	add("drain with the full queue", "%d of %d delivered in %v = %.0f msgs/s", delivered, n, took.Round(time.Millisecond), rate)
	if f, l := sink.first.Load(), sink.last.Load(); f != 0 {
		add("  drain: first delivery / first→last rate", "%v after the flush started; %.0f msgs/s between first and last delivery", time.Unix(0, f).Sub(drainStart).Round(time.Millisecond), float64(delivered)/time.Unix(0, l).Sub(time.Unix(0, f)).Seconds())
	}
	rss, hwm = procStatus(ch.pid)
	add("child RSS after the drain", "VmRSS %s (RssAnon %s), VmHWM %s", mb(rss), anonRSS(ch.pid), mb(hwm))
	ch.stop(t)

	// The same path with a small queue: fresh data_dir, sink down,
	// enqueue over SMTP into the child, wait for deferral, flush, drain.
	bn := *scaleBaseline
	bsink := newScaleSink(t)
	bport := freePort(t)
	bcfg, _ := scaleConfig(t, filepath.Join(dir, "baseline"), bport, bsink.port)
	bch := startChild(t, bin, bcfg, filepath.Join(dir, "baseline-serve.log"))
	if _, err := waitBanner(fmt.Sprintf("127.0.0.1:%d", bport), time.Now().Add(30*time.Second)); err != nil {
		t.Fatalf("baseline: %v", err)
	}
	start = time.Now()
	if got := smtpFlood(t, fmt.Sprintf("127.0.0.1:%d", bport), 0, bn, sessions, time.Now().Add(5*time.Minute)); got != bn {
		t.Fatalf("baseline: %d of %d accepted", got, bn)
	}
	add("baseline: enqueue over SMTP into `serve`", "%d msgs = %.0f msgs/s", bn, float64(bn)/time.Since(start).Seconds())
	deadline = time.Now().Add(2 * time.Minute)
	for {
		q, err := bch.status(t)
		if err != nil {
			t.Fatalf("baseline: %v", err)
		}
		if q["active"] == 0 && q["deferred"] >= bn {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("baseline: not all deferred in 2 minutes: %v", q)
		}
		time.Sleep(500 * time.Millisecond)
	}
	brate, bdel, _, bflushErr, btook := drain(t, bch, bsink, bn, 2*time.Minute)
	if bflushErr != nil {
		t.Errorf("baseline flush: %v", bflushErr)
	}
	add("drain with a small queue (baseline)", "%d of %d delivered in %v = %.0f msgs/s", bdel, bn, btook.Round(time.Millisecond), brate)
	ratio := rate / brate
	verdict = "ok"
	if ratio < 0.8 {
		verdict = "UNDER the 80% target"
	}
	add("drain ratio full/baseline", "%.0f%% (%s)", 100*ratio, verdict)
	bch.stop(t)
}
