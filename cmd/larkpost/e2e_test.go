package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/enginetest"
	"github.com/larkpost/larkpost/engine/privsep"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestMain lets the test binary stand in for the larkpost binary: run with
// LARKPOST_AS_MAIN=1 it is larkpost, so end-to-end tests exercise real
// processes (signals, kill -9, exit codes) without a separate build step.
func TestMain(m *testing.M) {
	if len(os.Args) == 2 && os.Args[1] == privsep.FilterChildArg {
		privsep.FilterChildMain() // a filter child of a test run as root
	}
	if os.Getenv("LARKPOST_AS_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func larkpost(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "LARKPOST_AS_MAIN=1", "LARKPOST_CONFIG=")
	return cmd
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

// TestCheck runs `larkpost check` on each testdata/check/*.star and
// compares the output with the .golden file beside it (-update rewrites).
func TestCheck(t *testing.T) {
	files, _ := filepath.Glob("testdata/check/*.star")
	if len(files) == 0 {
		t.Fatal("no testdata/check/*.star")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			var out bytes.Buffer
			cmd := larkpost("check", "-c", f)
			cmd.Stdout, cmd.Stderr = &out, &out
			code := exitCode(cmd.Run())
			got := fmt.Sprintf("exit %d\n%s", code, out.String())
			golden := strings.TrimSuffix(f, ".star") + ".golden"
			if *update {
				os.WriteFile(golden, []byte(got), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if got != string(want) {
				t.Errorf("check output differs:\n--- got\n%s--- want\n%s", got, want)
			}
		})
	}
}

func TestInitProfilesPassTheirTests(t *testing.T) {
	for _, profile := range profiles {
		dir := filepath.Join(t.TempDir(), profile)
		var out bytes.Buffer
		if code := run([]string{"init", "--profile", profile, "--hostname", "mx.example.com", dir}, &out, &out); code != 0 {
			t.Fatalf("init %s: exit %d: %s", profile, code, out.String())
		}
		out.Reset()
		cfg := filepath.Join(dir, "larkpost.star")
		if code := run([]string{"check", "-c", cfg}, &out, &out); code != 0 {
			t.Errorf("check %s: exit %d: %s", profile, code, out.String())
		}
		out.Reset()
		code := run([]string{"test", "-c", cfg}, &out, &out)
		if code != 0 || !regexp.MustCompile(`(?m)^[1-9]\d* passed, 0 failed$`).MatchString(out.String()) {
			t.Errorf("test %s: exit %d:\n%s", profile, code, out.String())
		}
		if code := run([]string{"init", "--profile", profile, dir}, &out, &out); code != 1 {
			t.Errorf("init over existing files: exit %d, want 1", code)
		}
	}
}

func TestVerbs(t *testing.T) {
	tests := []struct {
		args []string
		env  string
		code int
		want string
	}{
		{[]string{"version"}, "", 0, `^larkpost \S+`},
		{[]string{"help"}, "", 0, `larkpost serve`},
		{nil, "", 2, `usage: larkpost COMMAND`},
		{[]string{"frobnicate"}, "", 2, `unknown command "frobnicate"`},
		{[]string{"check"}, "", 0, `embedded:default.star: ok`},
		{[]string{"check"}, "testdata/check/good.star", 0, `testdata/check/good.star: ok`},
		{[]string{"check"}, "testdata/check/errors.star", 1, `testdata/check/errors.star:\d+:\d+: `},
		{[]string{"check", "-c", "testdata/nonexistent.star"}, "", 1, `read config: open testdata/nonexistent.star`},
		{[]string{"serve", "-c", "testdata/check/errors.star"}, "", 1, `(?s)errors.star:\d+:\d+: .*has errors; not starting`},
		{[]string{"test", "-c", "../../examples/local-only/larkpost.star"}, "", 0, `(?m)^4 passed, 0 failed$`},
		{[]string{"test", "-v", "-run", "relayed", "-c", "../../examples/local-only/larkpost.star"}, "", 0, `(?m)^--- PASS: .*local_test.star:test_nothing_is_relayed .*\n1 passed, 0 failed$`},
		{[]string{"test", "-c", "testdata/check/errors.star"}, "", 1, `errors.star:3:5: unknown setting`},
		{[]string{"test", "-c", "testdata/failing/larkpost.star"}, "", 1, `(?m)^--- FAIL: testdata/failing/policy_test.star:test_open_relay \(line 3\): expected accept at rcpt for x@elsewhere.example, got reject 554 5.7.1 .*\n0 passed, 1 failed$`},
		{[]string{"test", "-run", "(", "-c", "testdata/failing/larkpost.star"}, "", 2, `bad -run`},
		{[]string{"trace", "-c", "testdata/trace/policy.star"}, "", 2, `at least one --to`},
		{[]string{"map", "query", "-c", "../../examples/transport-table/larkpost.star", "transport_maps", "a@eu.awesomedomain.com"}, "", 0, `^smtp:\[gateway.awesomedomain.com\]:2525\t\(hash:transport, key "\.awesomedomain\.com"\)`},
		{[]string{"map", "query", "-c", "../../examples/smarthost/larkpost.star", "smtp_sasl_password_maps", "[smtp.provider.example]:587"}, "", 0, `^office@example.com:\*{8}\t`},
		{[]string{"map", "query", "-c", "../../examples/access-table/larkpost.star", "hash:access", "1.2.3.9"}, "", 0, `^REJECT\t\(hash:access, access-ip lookup, key "1\.2\.3"\)`},
		{[]string{"map", "query", "-c", "../../examples/virtual-domain/larkpost.star", "virtual_alias_maps", "nobody@anotherexample.com"}, "", 1, `not found`},
		{[]string{"init", "--profile", "mainframe", "x"}, "", 2, `unknown profile "mainframe"`},
	}
	for _, tt := range tests {
		cmd := larkpost(tt.args...)
		if tt.env != "" {
			cmd.Env = append(cmd.Env, "LARKPOST_CONFIG="+tt.env)
		}
		out, err := cmd.CombinedOutput()
		if code := exitCode(err); code != tt.code || !regexp.MustCompile(tt.want).Match(out) {
			t.Errorf("larkpost %v (LARKPOST_CONFIG=%q): exit %d, output:\n%s\nwant exit %d and match %s", tt.args, tt.env, code, out, tt.code, tt.want)
		}
	}
}

// server is a real `larkpost serve` process.
type server struct {
	t    *testing.T
	cmd  *exec.Cmd
	addr string
	data string
	log  *syncBuffer
	done chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startServer(t *testing.T, extra string, env ...string) *server {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := filepath.Join(dir, "larkpost.star")
	os.WriteFile(cfg, []byte(fmt.Sprintf("config(listen = {\"smtp\": \"127.0.0.1:0\"}, data_dir = %q, hostname = \"mx.test\", resolvers = [])\n%s", data, extra)), 0o600)
	return runServer(t, cfg, data, env...)
}

// runServer starts `larkpost serve -c cfg`, with env added to its
// environment, and waits for its listener.
func runServer(t *testing.T, cfg, data string, env ...string) *server {
	t.Helper()
	if os.Geteuid() == 0 {
		// These tests are about one process; the split a root start
		// makes is TestSplitServer's and .ci/privs.sh's.
		if b, err := os.ReadFile(cfg); err == nil && !bytes.Contains(b, []byte("allow_root")) && !bytes.Contains(b, []byte("mail_owner")) {
			os.WriteFile(cfg, append(b, "\nconfig(allow_root = True)\n"...), 0o600)
		}
	}
	cmd := larkpost("serve", "-c", cfg)
	cmd.Env = append(cmd.Env, env...)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, cmd: cmd, data: data, log: &syncBuffer{}, done: make(chan error, 1)}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		re := regexp.MustCompile(`listening on smtp (\S+)`)
		for sc.Scan() {
			line := sc.Text()
			s.log.Write([]byte(line + "\n"))
			if m := re.FindStringSubmatch(line); m != nil {
				addrc <- m[1]
			}
		}
		s.done <- cmd.Wait()
	}()
	select {
	case s.addr = <-addrc:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("server did not start:\n%s", s.log.String())
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("server log:\n%s", s.log.String())
		}
	})
	return s
}

func (s *server) wait(timeout time.Duration) (int, bool) {
	select {
	case err := <-s.done:
		return exitCode(err), true
	case <-time.After(timeout):
		return 0, false
	}
}

func countMaildir(t *testing.T, dir string) int {
	ents, err := os.ReadDir(filepath.Join(dir, "new"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return len(ents)
}

// TestKill9AfterAck is the durability promise with a real process: every
// message answered 250 is in the Maildir after kill -9, mid-load.
func TestKill9AfterAck(t *testing.T) {
	s := startServer(t, "")
	const clients, perClient = 4, 25
	var mu sync.Mutex
	acked := 0
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perClient; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := sendOne(s.addr, "ann@example.org", "bob@mx.test", "Subject: kill test\r\n\r\nbody\r\n"); err != nil {
					return // the server died under us: not acknowledged
				}
				mu.Lock()
				acked++
				n := acked
				mu.Unlock()
				if n == clients*perClient/2 {
					s.cmd.Process.Signal(syscall.SIGKILL)
					close(stop)
				}
			}
		}()
	}
	wg.Wait()
	s.wait(5 * time.Second)
	mu.Lock()
	defer mu.Unlock()
	if acked < clients*perClient/2 {
		t.Fatalf("only %d messages acknowledged before the kill", acked)
	}
	// Restart on the same queue: what was acknowledged but not yet
	// delivered is delivered now.
	before := countMaildir(t, filepath.Join(s.data, "mail", "bob"))
	s2 := runServer(t, s.cmd.Args[len(s.cmd.Args)-1], s.data)
	got := waitCount(t, filepath.Join(s.data, "mail", "bob"), acked)
	if got < acked {
		t.Fatalf("%d messages acknowledged but only %d delivered after kill -9 and restart", acked, got)
	}
	t.Logf("%d acknowledged, %d delivered before the kill, %d after restart", acked, before, got)
	s2.cmd.Process.Signal(syscall.SIGTERM)
	s2.wait(5 * time.Second)
}

// waitCount waits until a Maildir has at least n messages.
func waitCount(t *testing.T, dir string, n int) int {
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := countMaildir(t, dir)
		if got >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSIGTERMDrains: idle sessions are told 421 and closed, a session in
// the middle of a transaction may finish it, then the process exits 0.
func TestSIGTERMDrains(t *testing.T) {
	s := startServer(t, "")
	idle := dial(t, s.addr)
	busy := dial(t, s.addr)
	busy.cmd("MAIL FROM:<ann@example.org>", "250 ")
	busy.cmd("RCPT TO:<carol@mx.test>", "250 ")
	busy.cmd("DATA", "354 ")
	busy.write("Subject: in flight\r\n\r\n")

	s.cmd.Process.Signal(syscall.SIGTERM)
	if line := idle.line(); !strings.HasPrefix(line, "421 4.3.2 mx.test Service shutting down") {
		t.Errorf("idle session got %q, want 421 shutting down", line)
	}
	time.Sleep(200 * time.Millisecond)
	if c, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
		c.Close()
		t.Errorf("new connection accepted after SIGTERM")
	}
	busy.write("still here\r\n")
	busy.cmd(".", "250 2.0.0 Ok: queued as")
	busy.write("QUIT\r\n")
	code, ok := s.wait(10 * time.Second)
	if !ok || code != 0 {
		t.Fatalf("server exit %d (exited: %v), want 0", code, ok)
	}
	// Acknowledged during the drain: delivered now, or after a restart.
	if countMaildir(t, filepath.Join(s.data, "mail", "carol")) == 0 {
		s2 := runServer(t, s.cmd.Args[len(s.cmd.Args)-1], s.data)
		defer s2.cmd.Process.Signal(syscall.SIGTERM)
	}
	if n := waitCount(t, filepath.Join(s.data, "mail", "carol"), 1); n != 1 {
		t.Errorf("in-flight message: %d delivered, want 1", n)
	}
}

// TestDeveloperProfiles: the profiling variables the performance guide
// uses write a CPU profile, a heap profile and an execution trace of a
// run that carried a message, when serve exits on SIGTERM.
func TestDeveloperProfiles(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"LARKPOST_CPUPROFILE": filepath.Join(dir, "cpu.prof"),
		"LARKPOST_MEMPROFILE": filepath.Join(dir, "mem.prof"),
		"LARKPOST_TRACE":      filepath.Join(dir, "trace.out"),
	}
	var env []string
	for k, v := range files {
		env = append(env, k+"="+v)
	}
	s := startServer(t, "", env...)
	if err := sendOne(s.addr, "ann@example.org", "dave@mx.test", "Subject: profiled\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	waitCount(t, filepath.Join(s.data, "mail", "dave"), 1)
	s.cmd.Process.Signal(syscall.SIGTERM)
	if code, ok := s.wait(10 * time.Second); !ok || code != 0 {
		t.Fatalf("server exit %d (exited: %v), want 0", code, ok)
	}
	for _, k := range []string{"LARKPOST_CPUPROFILE", "LARKPOST_MEMPROFILE"} {
		f, err := os.Open(files[k])
		if err != nil {
			t.Errorf("%s: %v", k, err)
			continue
		}
		// pprof's format: a gzipped protocol buffer.
		zr, err := gzip.NewReader(f)
		if err == nil {
			var n int64
			n, err = io.Copy(io.Discard, zr)
			if err == nil && n == 0 {
				err = errors.New("empty profile")
			}
		}
		f.Close()
		if err != nil {
			t.Errorf("%s: %v", k, err)
		}
	}
	b, err := os.ReadFile(files["LARKPOST_TRACE"])
	if err != nil || !regexp.MustCompile(`^go 1\.\d+ trace\x00`).Match(b) || len(b) < 1000 {
		t.Errorf("LARKPOST_TRACE: %d bytes beginning %q (%v), want Go's execution trace", len(b), b[:min(len(b), 16)], err)
	}
}

// TestSIGHUPReload: a good new config takes effect for new connections,
// a broken one is refused and the running policy stays.
func TestSIGHUPReload(t *testing.T) {
	s := startServer(t, "")
	cfg := s.cmd.Args[len(s.cmd.Args)-1]
	orig, _ := os.ReadFile(cfg)
	if err := sendOne(s.addr, "ann@example.org", "dave@mx.test", "Subject: before\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	waitCount(t, filepath.Join(s.data, "mail", "dave"), 1)
	os.WriteFile(cfg, append(orig, []byte("def on_rcpt(tx, rcpt):\n    return reject(\"closed for the day\")\n")...), 0o600)
	s.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, s, "reloaded config")
	if err := sendOne(s.addr, "ann@example.org", "dave@mx.test", "Subject: after\r\n\r\n"); err == nil || !strings.Contains(err.Error(), "closed for the day") {
		t.Fatalf("after reload: %v, want the new policy's reject", err)
	}
	os.WriteFile(cfg, append(orig, []byte("def on_rcpt(tx):\n    pass\n")...), 0o600)
	s.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, s, "reload refused")
	if !strings.Contains(s.log.String(), "on_rcpt takes 2 parameters") {
		t.Errorf("refused reload does not say why")
	}
	if err := sendOne(s.addr, "ann@example.org", "dave@mx.test", "Subject: still\r\n\r\n"); err == nil || !strings.Contains(err.Error(), "closed for the day") {
		t.Fatalf("after a broken reload: %v, want the previous policy still running", err)
	}
}

func waitLog(t *testing.T, s *server, text string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(s.log.String(), text) {
		if time.Now().After(deadline) {
			t.Fatalf("log never said %q", text)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sendOne(addr, from, to, body string) error {
	_, err := enginetest.Send(addr, from, []string{to}, body)
	return err
}

type rawConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc := &rawConn{t: t, c: c, r: bufio.NewReader(c)}
	rc.expect("220 ")
	rc.cmd("EHLO client.example", "250 ")
	return rc
}

func (c *rawConn) write(s string) {
	c.t.Helper()
	if _, err := c.c.Write([]byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawConn) line() string {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := c.r.ReadString('\n')
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return strings.TrimRight(l, "\r\n")
}

func (c *rawConn) expect(prefix string) {
	c.t.Helper()
	for {
		l := c.line()
		if strings.HasPrefix(l, prefix) {
			return
		}
		if !strings.HasPrefix(l, "250-") {
			c.t.Fatalf("got %q, want %q", l, prefix)
		}
	}
}

func (c *rawConn) cmd(line, want string) {
	c.t.Helper()
	c.write(line + "\r\n")
	c.expect(want)
}

// TestCrashRounds kills the server with SIGKILL at random moments under
// load, several times, then restarts it: every message that got a 250 is
// delivered, and no delivered file is half-written. The guarantee is
// at-least-once: a crash between a mailbox write and the queue update
// delivers that message again, and the test reports how often.
func TestCrashRounds(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := filepath.Join(dir, "larkpost.star")
	os.WriteFile(cfg, []byte(fmt.Sprintf("config(listen = {\"smtp\": \"127.0.0.1:0\"}, data_dir = %q, hostname = \"mx.test\", resolvers = [])\n", data)), 0o600)

	var mu sync.Mutex
	acked := map[int]bool{}
	next := 0
	for round := 0; round < 4; round++ {
		s := runServer(t, cfg, data)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for c := 0; c < 8; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					mu.Lock()
					n := next
					next++
					mu.Unlock()
					payload := strings.Repeat("payload ", 50)
					if n%4 == 0 {
						// Over queue.InlineMax: a body file, synced by the commit.
						payload = strings.Repeat(strings.Repeat("payload ", 10)+"\r\n", 900)
					}
					body := fmt.Sprintf("Subject: crash-%d\r\n\r\n%s\r\nEND-%d\r\n", n, payload, n)
					if err := sendOne(s.addr, "ann@example.org", "bob@mx.test", body); err != nil {
						return
					}
					mu.Lock()
					acked[n] = true
					mu.Unlock()
				}
			}()
		}
		time.Sleep(time.Duration(150+round*137%450) * time.Millisecond)
		// Alternate a crash and a graceful stop in the middle of deliveries:
		// neither may lose an acknowledged message.
		sig := syscall.SIGKILL
		if round%2 == 1 {
			sig = syscall.SIGTERM
		}
		s.cmd.Process.Signal(sig)
		close(stop)
		wg.Wait()
		s.wait(5 * time.Second)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(acked) < 50 {
		t.Fatalf("only %d messages acknowledged over all rounds", len(acked))
	}
	big := 0
	for n := range acked {
		if n%4 == 0 {
			big++
		}
	}
	if big < 5 {
		t.Fatalf("only %d messages with a body file acknowledged", big)
	}
	s := runServer(t, cfg, data)
	defer s.cmd.Process.Signal(syscall.SIGTERM)
	box := filepath.Join(data, "mail", "bob", "new")
	var seen map[int]int
	deadline := time.Now().Add(20 * time.Second)
	for {
		seen = map[int]int{}
		files, _ := filepath.Glob(filepath.Join(box, "*"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var n int
			if _, err := fmt.Sscanf(string(b[bytes.Index(b, []byte("Subject: crash-")):]), "Subject: crash-%d", &n); err != nil {
				t.Fatalf("unparseable message %s", f)
			}
			if !bytes.HasSuffix(b, []byte(fmt.Sprintf("\nEND-%d\n", n))) {
				t.Fatalf("half-written message in new/: %s", f)
			}
			seen[n]++
		}
		missing := 0
		for n := range acked {
			if seen[n] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged messages never delivered", missing, len(acked))
		}
		time.Sleep(50 * time.Millisecond)
	}
	dups, unacked := 0, 0
	for n, c := range seen {
		dups += c - 1
		if !acked[n] {
			unacked++
		}
	}
	t.Logf("4 rounds (kill -9, SIGTERM, kill -9, SIGTERM): %d acknowledged (%d with a body file), all delivered; %d duplicates; %d delivered whose 250 the client never saw", len(acked), big, dups, unacked)
}
