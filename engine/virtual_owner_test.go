package engine

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/larkpost/larkpost/rules/postfix"
)

// vmailConfig is a virtual mailbox domain vm.test with its mailboxes
// under base, bob's a Maildir and sue's an mbox, and owner settings.
func vmailConfig(t *testing.T, base, owner string) string {
	t.Helper()
	vmailbox := filepath.Join(t.TempDir(), "vmailbox")
	os.WriteFile(vmailbox, []byte("bob@vm.test vm.test/bob/\nsue@vm.test vm.test/sue.mbox\nlow@vm.test vm.test/low/\n"), 0o644)
	return fmt.Sprintf("config(notify_classes = [], virtual_mailbox_domains = [\"vm.test\"], virtual_mailbox_base = %q, virtual_mailbox_maps = [\"hash:%s\"])\nconfig(%s)\n",
		base, vmailbox, owner)
}

// waitFiles waits for a file matching pattern.
func waitFiles(pattern string) []string {
	deadline := time.Now().Add(5 * time.Second)
	for {
		files, _ := filepath.Glob(pattern)
		if len(files) > 0 || time.Now().After(deadline) {
			return files
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestVirtualOwnerNotRoot: without root, a virtual mailbox whose owner is
// larkpost's own uid is delivered, and one owned by another uid is
// deferred with a text that says what to do. As root (CI), the test runs
// itself again as nobody.
func TestVirtualOwnerNotRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		rerunAsNobody(t, "TestVirtualOwnerNotRoot")
		return
	}
	me, gid := os.Geteuid(), os.Getegid()
	uids := filepath.Join(t.TempDir(), "uids")
	os.WriteFile(uids, []byte(fmt.Sprintf("bob@vm.test %d\nsue@vm.test %d\n@vm.test %d\n", me, me, me+1)), 0o644)
	refused := fmt.Sprintf("virtual mailbox owner uid %d: larkpost runs as uid %d and cannot write as another user (start it as root, or set virtual_mailbox_owner to \"%d:%d\")",
		me+1, me, me, gid)
	tests := []struct {
		name, owner string
		delivered   []string // recipients whose mailbox gets the message
		deferred    string   // a recipient deferred with refused
	}{
		{"maps", fmt.Sprintf(`virtual_uid_maps = ["hash:%s"], virtual_gid_maps = ["static:%d"], virtual_minimum_uid = 1`, uids, gid),
			[]string{"bob", "sue"}, "low"},
		{"owner is larkpost", fmt.Sprintf(`virtual_mailbox_owner = "%d:%d", virtual_minimum_uid = 1`, me, gid), []string{"bob", "sue", "low"}, ""},
		{"owner is another user", fmt.Sprintf(`virtual_mailbox_owner = "%d:%d", virtual_minimum_uid = 1`, me+1, gid), nil, "bob"},
		{"no owner", ``, []string{"bob", "sue"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			h := start(t, vmailConfig(t, base, tt.owner))
			for _, u := range tt.delivered {
				if _, err := send(t, h.addr, "ann@example.org", []string{u + "@vm.test"}, "Subject: v\r\n\r\nhi\r\n"); err != nil {
					t.Fatal(err)
				}
				pattern := filepath.Join(base, "vm.test", u, "new", "*")
				if u == "sue" {
					pattern = filepath.Join(base, "vm.test", "sue.mbox")
				}
				if files := waitFiles(pattern); len(files) != 1 {
					t.Errorf("%s: %d files %s:\n%s", u, len(files), pattern, h.log)
				}
			}
			if tt.deferred != "" {
				if _, err := send(t, h.addr, "ann@example.org", []string{tt.deferred + "@vm.test"}, "Subject: v\r\n\r\nhi\r\n"); err != nil {
					t.Fatal(err)
				}
				if !h.log.WaitFor(`to=<`+tt.deferred+`@vm\.test>, .*dsn=4\.3\.0, status=deferred \(`+regexp.QuoteMeta(refused), 3*time.Second) {
					t.Errorf("no deferral %q:\n%s", refused, h.log)
				}
				if _, err := os.Stat(filepath.Join(base, "vm.test", tt.deferred)); !os.IsNotExist(err) {
					t.Errorf("the deferred mailbox was created: %v", err)
				}
			}
		})
	}
}

// rerunAsNobody runs test in a copy of the test binary as nobody, for the
// behaviour of a server without root, and fails unless it passes there
// without skipping.
func rerunAsNobody(t *testing.T, test string) {
	t.Helper()
	nobody, ok := postfix.LookupAccount("nobody")
	if !ok || nobody.UID == 0 {
		t.Fatal("no unprivileged account nobody")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The go tool's build directory is root's; nobody runs a copy.
	dir, err := os.MkdirTemp("", "larkpost-nonroot")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "engine.test")
	if err := copyFile(exe, bin); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "tmp")
	os.Mkdir(tmp, 0o700)
	os.Chown(tmp, nobody.UID, nobody.GID)
	cmd := exec.Command(bin, "-test.run=^"+test+"$", "-test.v", "-test.count=1")
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "HOME="+tmp, "GOCOVERDIR="+tmp)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(nobody.UID), Gid: uint32(nobody.GID), Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Contains(string(out), "--- SKIP") || !strings.Contains(string(out), "--- PASS: "+test) {
		t.Fatalf("%s as nobody: %v\n%s", test, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "--- PASS") {
			t.Log("as nobody:", strings.TrimSpace(line))
		}
	}
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// TestVirtualOwnerAsRoot: as root, virtual mailboxes are written with the
// ids virtual_uid_maps and virtual_gid_maps (or virtual_mailbox_owner)
// give, which need no account: the message file and the directories the
// delivery makes belong to them. A uid below virtual_minimum_uid defers.
func TestVirtualOwnerAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: .ci/run runs it as root and fails when it is skipped")
	}
	nobody, ok := postfix.LookupAccount("nobody")
	if !ok || nobody.UID == 0 {
		t.Fatal("no unprivileged account nobody")
	}
	uids := filepath.Join(t.TempDir(), "uids")
	os.WriteFile(uids, []byte("low@vm.test 99\n"), 0o644)
	tests := []struct {
		name, owner string
		uid, gid    int
	}{
		{"static maps", fmt.Sprintf(`virtual_uid_maps = ["hash:%s", "static:5000"], virtual_gid_maps = ["static:5000"]`, uids), 5000, 5000},
		{"owner numbers", `virtual_mailbox_owner = "5001:5002"`, 5001, 5002},
		{"owner account", `virtual_mailbox_owner = "nobody"`, nobody.UID, nobody.GID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The base belongs to the owner, as /var/vmail to vmail: the
			// delivery makes everything below it with the owner's rights.
			base, err := os.MkdirTemp("", "larkpost-vmail")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(base) })
			os.Chmod(base, 0o755)
			os.Chown(base, tt.uid, tt.gid)
			h := start(t, vmailConfig(t, base, tt.owner))
			if _, err := send(t, h.addr, "ann@example.org", []string{"bob@vm.test", "sue@vm.test"}, "Subject: v\r\n\r\nhi\r\n"); err != nil {
				t.Fatal(err)
			}
			files := waitFiles(filepath.Join(base, "vm.test", "bob", "new", "*"))
			mbox := waitFiles(filepath.Join(base, "vm.test", "sue.mbox"))
			if len(files) != 1 || len(mbox) != 1 {
				t.Fatalf("%d messages in bob's Maildir, %d mbox files:\n%s", len(files), len(mbox), h.log)
			}
			paths := append(files, mbox...)
			for _, d := range []string{"vm.test", "vm.test/bob", "vm.test/bob/new", "vm.test/bob/cur", "vm.test/bob/tmp"} {
				paths = append(paths, filepath.Join(base, d))
			}
			for _, p := range paths {
				fi, err := os.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				st := fi.Sys().(*syscall.Stat_t)
				if int(st.Uid) != tt.uid || int(st.Gid) != tt.gid {
					t.Errorf("%s is owned by %d:%d, want %d:%d", p, st.Uid, st.Gid, tt.uid, tt.gid)
				}
				if !fi.IsDir() && fi.Mode().Perm() != 0o600 {
					t.Errorf("%s has mode %#o, want 0600", p, fi.Mode().Perm())
				}
			}
			if tt.name != "static maps" {
				return
			}
			// low@vm.test's uid 99 is below virtual_minimum_uid (100).
			if _, err := send(t, h.addr, "ann@example.org", []string{"low@vm.test"}, "Subject: v\r\n\r\nhi\r\n"); err != nil {
				t.Fatal(err)
			}
			if !h.log.WaitFor(`to=<low@vm\.test>, .*dsn=4\.3\.0, status=deferred \(virtual mailbox owner uid 99 of low@vm\.test, from virtual_uid_maps \(hash:.*uids low@vm\.test\), is below virtual_minimum_uid \(100\)\)`, 3*time.Second) {
				t.Errorf("no deferral for uid 99:\n%s", h.log)
			}
			if _, err := os.Stat(filepath.Join(base, "vm.test", "low")); !os.IsNotExist(err) {
				t.Errorf("the refused mailbox was created: %v", err)
			}
		})
	}
}
