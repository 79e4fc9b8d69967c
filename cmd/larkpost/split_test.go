package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/enginetest"
	"github.com/larkpost/larkpost/rules/postfix"
)

// TestSplitServer starts `larkpost serve` as root with mail_owner: a root
// parent binds the listener and keeps only the privileged work; the
// daemon that talks SMTP runs as mail_owner; a .forward pipe, which needs
// the user's rights, is run by the parent as the user; root's sendmail
// file, which the daemon may not read, reaches pickup through the parent;
// SIGTERM stops both.
func TestSplitServer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: .ci/run runs it as root and fails when it is skipped")
	}
	owner, ok := postfix.LookupAccount("nobody")
	if !ok || owner.UID == 0 {
		t.Fatal("no unprivileged account nobody")
	}
	// mail_owner must reach the config and data_dir (t.TempDir is root's).
	dir, err := os.MkdirTemp("", "larkpost-split")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o777)
	os.Chmod(out, 0o777)
	data := filepath.Join(dir, "data")
	fwd := filepath.Join(dir, "nobody.forward")
	os.WriteFile(fwd, []byte("\"|id -u > "+filepath.Join(out, "uid")+"\"\n"), 0o644)
	os.Lchown(fwd, owner.UID, owner.GID)
	cfg := filepath.Join(dir, "larkpost.star")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`config(listen = {"smtp": "127.0.0.1:0"}, data_dir = %q, hostname = "mx.test", resolvers = [],
    mail_owner = "nobody", forward_path = %q)
`, data, filepath.Join(dir, "{user}.forward"))), 0o644)

	s := runServer(t, cfg, data)
	m := regexp.MustCompile(`privileged parent (\d+) started the daemon (\d+) as nobody \(uid (\d+)\)`).FindStringSubmatch(s.log.String())
	if m == nil {
		t.Fatalf("no split in the log:\n%s", s.log)
	}
	if parent, _ := strconv.Atoi(m[1]); parent != s.cmd.Process.Pid {
		t.Errorf("the parent is %d, want the process started, %d", parent, s.cmd.Process.Pid)
	}
	daemon, _ := strconv.Atoi(m[2])
	if uid := procUID(t, daemon); uid != owner.UID {
		t.Errorf("the daemon runs as uid %d, want %d", uid, owner.UID)
	}
	if uid := procUID(t, s.cmd.Process.Pid); uid != 0 {
		t.Errorf("the parent runs as uid %d, want root", uid)
	}
	// The queue's beat: the daemon writes into a pipe the parent reads.
	shared := false
	for inode := range pipeEnds(t, daemon, true) {
		shared = shared || pipeEnds(t, s.cmd.Process.Pid, false)[inode]
	}
	if !shared {
		t.Error("no pipe from the daemon to the parent for the queue's beat")
	}
	if reply, err := enginetest.Send(s.addr, "ann@example.org", []string{"alice@mx.test", "nobody@mx.test"}, "Subject: split\r\n\r\nhi\r\n"); err != nil {
		t.Fatalf("send: %v (%s)", err, reply)
	}
	var got []byte
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && len(got) == 0; time.Sleep(20 * time.Millisecond) {
		got, _ = os.ReadFile(filepath.Join(out, "uid"))
	}
	if strings.TrimSpace(string(got)) != strconv.Itoa(owner.UID) {
		t.Errorf("the .forward pipe ran as uid %q, want %d", got, owner.UID)
	}
	boxes, _ := filepath.Glob(filepath.Join(data, "mail", "alice", "new", "*"))
	if len(boxes) != 1 {
		t.Errorf("alice has %d messages", len(boxes))
	} else if fi, err := os.Stat(boxes[0]); err == nil && int(fi.Sys().(*syscall.Stat_t).Uid) != owner.UID {
		t.Errorf("the daemon's mailbox file is owned by uid %d, want mail_owner", fi.Sys().(*syscall.Stat_t).Uid)
	}
	// root's sendmail leaves a file mode 0600 that mail_owner cannot
	// read: the parent opens it for pickup.
	if _, stderr, code := runSendmailCmd(t, cfg, "Subject: from cron\n\nlocal mail\n", "bob"); code != 0 {
		t.Fatalf("sendmail: exit %d: %s", code, stderr)
	}
	if n := waitCount(t, filepath.Join(data, "mail", "bob"), 1); n != 1 {
		t.Errorf("bob has %d messages from sendmail, want 1:\n%s", n, s.log)
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	if code, ok := s.wait(40 * time.Second); !ok || code != 0 {
		t.Errorf("after SIGTERM: exit %d, exited %v", code, ok)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", daemon)); err == nil {
		t.Errorf("the daemon outlived the parent")
	}
}

// TestRootNeedsMailOwner: started as root without the mail_owner account
// and without allow_root, serve refuses, saying what to do.
func TestRootNeedsMailOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: .ci/run runs it as root and fails when it is skipped")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "larkpost.star")
	os.WriteFile(cfg, []byte(fmt.Sprintf("config(listen = {\"smtp\": \"127.0.0.1:0\"}, data_dir = %q, mail_owner = \"no-such-lp-user\")\n", filepath.Join(dir, "data"))), 0o600)
	var stderr bytes.Buffer
	cmd := larkpost("serve", "-c", cfg)
	cmd.Stderr = &stderr
	err := cmd.Run()
	if exitCode(err) != 1 || !strings.Contains(stderr.String(), `mail_owner "no-such-lp-user" has no account: create it`) {
		t.Errorf("exit %d:\n%s", exitCode(err), stderr.String())
	}
}

func procUID(t *testing.T, pid int) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 2 && fields[0] == "Uid:" {
			uid, _ := strconv.Atoi(fields[2]) // effective
			return uid
		}
	}
	t.Fatalf("no Uid in /proc/%d/status", pid)
	return -1
}

// pipeEnds returns the pipes (by inode) whose write end (write) or read
// end (!write) process pid holds.
func pipeEnds(t *testing.T, pid int, write bool) map[string]bool {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	ends := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err != nil || !strings.HasPrefix(link, "pipe:") {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, fd.Name()))
		if err != nil {
			continue
		}
		var flags int64
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				flags, _ = strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			}
		}
		if (flags&syscall.O_ACCMODE == syscall.O_WRONLY) == write {
			ends[link] = true
		}
	}
	return ends
}
