package privsep

import (
	"bytes"
	"context"
	"io"
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
	f := Filing(FilterChild{Exe: os.Args[0]}.Run(context.Background(), nil, bytes.NewReader(in), lim.Timeout))
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
	// A reader that kills the process group of the child once the child
	// has read its input: the child is then in the endless loop.
	pr, pw := io.Pipe()
	go func() {
		pw.Write(in)
		pw.Close()
		time.Sleep(500 * time.Millisecond)
		killChildren(t, FilterChildArg)
	}()
	start := time.Now()
	f := Filing(FilterChild{Exe: os.Args[0]}.Run(context.Background(), nil, pr, job.Limits.Timeout))
	if f.Err == nil || !strings.Contains(f.Err.Error(), "signal 9") || f.Folder != "" {
		t.Fatalf("filing %+v, want the inbox with a kill", f)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("took %v", took)
	}
}

// killChildren sends SIGKILL to this process's children whose command
// line ends in arg.
func killChildren(t *testing.T, arg string) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.HasSuffix(b, []byte(arg+"\x00")) {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		// pid (comm) state ppid ...
		if fs := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(fs) > 1 && fs[1] == strconv.Itoa(os.Getpid()) {
			pid, _ := strconv.Atoi(e.Name())
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Error(err)
			}
		}
	}
}

// TestRunFilterAsUser: the parent runs a filter child with the user's
// rights: it reads a script only that user may read, cannot read root's,
// and a memory bomb in it is stopped by the child's limit.
func TestRunFilterAsUser(t *testing.T) {
	asRoot(t)
	const uid = 54321
	user := "#54321:54321"
	c := start(t, &Server{Filter: FilterChild{Exe: testExe(t)}})
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
			in, err := FilterInput(filterJob(write(strings.ReplaceAll(c2.name, " ", "-")+".star", c2.script, c2.owner)), nil)
			if err != nil {
				t.Fatal(err)
			}
			f := Filing(c.RunFilter(context.Background(), RunFilter{User: user, Timeout: limits.Timeout}, in))
			t.Logf("%+v", f)
			if f.Folder != c2.folder {
				t.Errorf("folder %q, want %q", f.Folder, c2.folder)
			}
			if c2.err == "" && f.Err != nil || c2.err != "" && (f.Err == nil || !strings.Contains(f.Err.Error(), c2.err)) {
				t.Errorf("error %v, want %q", f.Err, c2.err)
			}
		})
	}
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
