package privsep

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/larkpost/larkpost/rules"
)

// The test binary is also the filter child, as larkpost's binary is.
func TestMain(m *testing.M) {
	if len(os.Args) == 2 && os.Args[1] == FilterChildArg {
		FilterChildMain()
	}
	os.Exit(m.Run())
}

// testExe is this test binary where any user may run it (the go tool
// builds it in a directory only root may enter).
func testExe(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := public(t)
	exe := filepath.Join(dir, "larkpost-test")
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return exe
}

var limits = rules.FilterLimits{Timeout: 5 * time.Second, MaxSteps: 1e10, MaxMemory: 32 << 20}

func filterJob(path string) rules.FilterJob {
	msg := rules.ParseMessage([]byte("Subject: [golang-nuts] hello\r\nFrom: a@example.org\r\n\r\nbody\r\n"))
	return rules.FilterJob{User: "alice", Rcpt: "alice@example.com", Path: path, Msg: msg, Limits: limits}
}

// testChildren are the filter children of the tests that run as this
// process's user.
var testChildren = &FilterChildren{Exe: os.Args[0]}

// runChild runs a filter child of this process's user on script.
func runChild(t *testing.T, script string, lim rules.FilterLimits) (rules.Filing, time.Duration) {
	t.Helper()
	job := filterJob("/filters/alice.star")
	job.Limits = lim
	in, err := FilterInput(job, []byte(script))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	f := Filing(testChildren.Run(context.Background(), nil, in, lim.Timeout))
	return f, time.Since(start)
}

func TestFilterChild(t *testing.T) {
	for _, c := range []struct {
		name, script string
		lim          rules.FilterLimits
		folder       string
		vacation     bool
		err          string // in the filing's error: filed to the inbox
	}{
		{name: "folder and vacation", script: "def file(msg):\n    if 'golang' in msg.header('Subject'):\n        vacation('away')\n        return 'Lists/go'\n",
			lim: limits, folder: "Lists/go", vacation: true},
		{name: "inbox", script: "def file(msg):\n    return None\n", lim: limits},
		{name: "script error", script: "def file(msg):\n    return 1 // 0\n", lim: limits, err: "division by zero"},
		{name: "bad folder", script: "def file(msg):\n    return '../../etc'\n", lim: limits, err: "bad folder name"},
		{name: "caught by the budget", script: "def file(msg):\n    return 'a' * 1000000000\n", lim: limits, err: "filter_max_memory"},
		// Small objects the budget does not count: only the address space
		// limit stops this one.
		{name: "memory bomb", script: "def file(msg):\n    d = {}\n    for i in range(100000000):\n        d[i] = [i, i, i]\n",
			lim: limits, err: "out of memory"},
		{name: "endless loop", script: "def file(msg):\n    for i in range(100000000000):\n        pass\n",
			lim: rules.FilterLimits{Timeout: 500 * time.Millisecond, MaxSteps: 1e12, MaxMemory: 32 << 20}, err: "deadline exceeded"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if raceBuild && c.err == "out of memory" {
				t.Skip("a race build sets no address-space limit (see race.go); the plain test run covers this")
			}
			f, took := runChild(t, c.script, c.lim)
			t.Logf("%v: %+v", took, f)
			if f.Folder != c.folder || (f.Vacation != nil) != c.vacation {
				t.Errorf("filing %+v, want folder %q vacation %v", f, c.folder, c.vacation)
			}
			switch {
			case c.err == "" && f.Err != nil:
				t.Errorf("error %v", f.Err)
			case c.err != "" && (f.Err == nil || !strings.Contains(f.Err.Error(), c.err)):
				t.Errorf("error %v, want one saying %q", f.Err, c.err)
			}
			if took > c.lim.Timeout+filterGrace {
				t.Errorf("took %v", took)
			}
		})
	}
}

// TestFilterChildKilled: a child killed from outside (the OOM killer, an
// admin's kill -9) files to the inbox with the reason.
func TestFilterChildKilled(t *testing.T) {
	job := filterJob("/filters/alice.star")
	job.Limits = rules.FilterLimits{Timeout: 30 * time.Second, MaxSteps: 1e12, MaxMemory: 32 << 20}
	in, err := FilterInput(job, []byte("def file(msg):\n    for i in range(100000000000):\n        pass\n"))
	if err != nil {
		t.Fatal(err)
	}
	// Kill the child once it is in the endless loop.
	go func() {
		time.Sleep(500 * time.Millisecond)
		for _, pid := range children(FilterChildArg) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}()
	start := time.Now()
	f := Filing((&FilterChildren{Exe: os.Args[0]}).Run(context.Background(), nil, in, job.Limits.Timeout))
	if f.Err == nil || !strings.Contains(f.Err.Error(), "signal 9") || f.Folder != "" {
		t.Fatalf("filing %+v, want the inbox with a kill", f)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("took %v", took)
	}
}

// children are the pids of this process's children whose command line
// ends in arg.
func children(arg string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.HasSuffix(b, []byte(arg+"\x00")) {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		// pid (comm) state ppid ...
		if fs := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(fs) > 1 && fs[0] != "Z" && fs[1] == strconv.Itoa(os.Getpid()) {
			pid, _ := strconv.Atoi(e.Name())
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestFilterChildReused: a child serves one user's jobs one after the
// other, a failed one is replaced, an idle one ends.
func TestFilterChildReused(t *testing.T) {
	p := &FilterChildren{Exe: os.Args[0], Idle: 300 * time.Millisecond}
	job := filterJob("/filters/alice.star")
	in, _ := FilterInput(job, []byte("def file(msg):\n    return 'Lists/go'\n"))
	run := func() rules.Filing { return Filing(p.Run(context.Background(), nil, in, limits.Timeout)) }
	if f := run(); f.Folder != "Lists/go" {
		t.Fatalf("filing %+v", f)
	}
	first := children(FilterChildArg)
	if len(first) != 1 {
		t.Fatalf("children %v, want one", first)
	}
	start := time.Now()
	const n = 90 // fewer than MaxUse
	for range n {
		if f := run(); f.Folder != "Lists/go" {
			t.Fatalf("filing %+v", f)
		}
	}
	per := time.Since(start) / n
	t.Logf("%v per job in a reused child", per)
	if now := children(FilterChildArg); len(now) != 1 || now[0] != first[0] {
		t.Errorf("children %v after %d jobs, want %v", now, n, first)
	}
	// A job that fails (here a script error that kills no child would
	// not do: a crash) retires its child.
	crash, _ := FilterInput(job, []byte("def file(msg):\n    return 'x'\n"))
	crash = crash[:len(crash)/2] // the child cannot read this job: it exits
	if f := Filing(p.Run(context.Background(), nil, crash, limits.Timeout)); f.Err == nil {
		t.Errorf("crash: %+v", f)
	}
	if f := run(); f.Folder != "Lists/go" {
		t.Fatalf("after the bomb: %+v", f)
	}
	if now := children(FilterChildArg); len(now) != 1 || now[0] == first[0] {
		t.Errorf("children %v after the crash, want one new one", now)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(children(FilterChildArg)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if now := children(FilterChildArg); len(now) != 0 {
		t.Errorf("children %v after idling, want none", now)
	}
}

// TestRunFilterAsUser: the parent runs a filter child with the user's
// rights: it reads a script only that user may read, cannot read root's,
// and a memory bomb in it is stopped by the child's limit.
func TestRunFilterAsUser(t *testing.T) {
	asRoot(t)
	const uid = 54321
	user := "#54321:54321"
	c := start(t, &Server{Filter: &FilterChildren{Exe: testExe(t)}})
	dir := public(t)
	write := func(name, script string, owner int) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(script), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, owner, owner); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c2 := range []struct {
		name, script string
		owner        int
		folder, err  string
	}{
		{"the user's own script", "def file(msg):\n    return 'Lists/go'\n", uid, "Lists/go", ""},
		{"a script only root may read", "def file(msg):\n    return 'Lists/go'\n", 0, "", "permission denied"},
		{"memory bomb", "def file(msg):\n    d = {}\n    for i in range(100000000):\n        d[i] = [i, i, i]\n", uid, "", "out of memory"},
	} {
		t.Run(c2.name, func(t *testing.T) {
			if raceBuild && c2.err == "out of memory" {
				t.Skip("a race build sets no address-space limit (see race.go); the plain test run covers this")
			}
			path := write(strings.ReplaceAll(c2.name, " ", "-")+".star", c2.script, c2.owner)
			in, err := FilterInput(filterJob(path), nil)
			if err != nil {
				t.Fatal(err)
			}
			f := Filing(c.RunFilter(context.Background(), RunFilter{User: user, Path: path, Timeout: limits.Timeout}, in))
			t.Logf("%+v", f)
			if f.Folder != c2.folder {
				t.Errorf("folder %q, want %q", f.Folder, c2.folder)
			}
			if c2.err == "" && f.Err != nil || c2.err != "" && (f.Err == nil || !strings.Contains(f.Err.Error(), c2.err)) {
				t.Errorf("error %v, want %q", f.Err, c2.err)
			}
		})
	}
	t.Run("no script, no child", func(t *testing.T) {
		in, _ := FilterInput(filterJob(dir+"/none.star"), nil)
		start := time.Now()
		f := Filing(c.RunFilter(context.Background(), RunFilter{User: user, Path: dir + "/none.star", Timeout: limits.Timeout}, in))
		if f.Err != nil || f.Folder != "" || time.Since(start) > 5*time.Millisecond {
			t.Errorf("filing %+v after %v, want the inbox at once", f, time.Since(start))
		}
	})
	t.Run("numeric owner of a mailbox", func(t *testing.T) {
		box := filepath.Join(dir, "vmail")
		if err := os.Mkdir(box, 0o700); err != nil {
			t.Fatal(err)
		}
		os.Chown(box, uid, uid)
		st := c.DeliverMailbox(context.Background(), DeliverMailbox{User: user, Mailbox: box + "/Maildir/", Rcpt: "bob@example.com"},
			body("Subject: x\r\n\r\nhi\r\n"))
		if !st.OK() {
			t.Fatalf("status %v", st)
		}
		files := newFiles(t, box+"/Maildir")
		if got, _ := owner(t, files[0]); got != uid {
			t.Errorf("message owned by %d, want %d", got, uid)
		}
	})
}
