package engine

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/deliver"
	"github.com/larkpost/larkpost/engine/deliver/local"
	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules/postfix"
)

// TestForwardAttacks is what a hostile local user tries with larkpost
// running as root and forward_path set: a .forward that names a file only
// root may write, one that is a symlink to a file only root may read, one
// that others may write, and a pipe. local(8)'s rules hold: the .forward
// is read with the user's rights and only when it is the user's (or
// root's) and nobody else's to write; its file and pipe targets run as
// the user. Nothing root-only changes or leaks.
func TestForwardAttacks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: .ci/run runs it as root and fails when it is skipped")
	}
	nobody, ok := postfix.LookupAccount("nobody")
	if !ok || nobody.UID == 0 {
		t.Fatal("no unprivileged account nobody")
	}
	// A directory the user can reach (t.TempDir is root's, mode 0700).
	pub, err := os.MkdirTemp("", "larkpost-privs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pub) })
	os.Chmod(pub, 0o755)
	out := filepath.Join(pub, "out")
	os.Mkdir(out, 0o777)
	os.Chmod(out, 0o777)
	// Root's secrets, in a directory only root may enter.
	secret := t.TempDir()
	keys := filepath.Join(secret, "authorized_keys")
	shadow := filepath.Join(secret, "shadow")
	os.WriteFile(keys, []byte("ssh-ed25519 AAAA root@host\n"), 0o600)
	os.WriteFile(shadow, []byte("leaked-secret@evil.test\n"), 0o600)
	old, _ := os.Stat(keys)

	h := start(t, fmt.Sprintf("config(forward_path = %q, notify_classes = [])\n", filepath.Join(pub, "{user}.forward")))
	fwd := filepath.Join(pub, "nobody.forward")
	send := func(t *testing.T) {
		t.Helper()
		if _, err := send(t, h.addr, "outsider@example.org", []string{"nobody@mx.test"}, "Subject: x\r\n\r\nattack\r\n"); err != nil {
			t.Fatal(err)
		}
		h.settle()
	}
	own := func(path string) { os.Lchown(path, nobody.UID, nobody.GID) }

	t.Run("a .forward naming a root-only file", func(t *testing.T) {
		os.WriteFile(fwd, []byte(keys+"\n"), 0o644)
		own(fwd)
		defer os.Remove(fwd)
		send(t)
		now, _ := os.Stat(keys)
		b, _ := os.ReadFile(keys)
		if string(b) != "ssh-ed25519 AAAA root@host\n" || !now.ModTime().Equal(old.ModTime()) {
			t.Fatalf("the root-only file changed: %q", b)
		}
		if !h.log.WaitFor(`relay=file, .*status=deferred \(cannot `, 3*time.Second) {
			t.Errorf("no deferral for the file target:\n%s", h.log)
		}
	})
	t.Run("a .forward symlink to a root-only file", func(t *testing.T) {
		before := len(h.mailbox("nobody"))
		os.Symlink(shadow, fwd)
		own(fwd)
		defer os.Remove(fwd)
		send(t)
		if !h.log.WaitFor(`warning: .*nobody.forward: ignored: open .*: permission denied`, 3*time.Second) {
			t.Errorf("no warning for the unreadable .forward:\n%s", h.log)
		}
		if got := len(h.waitMailbox("nobody", before+1)); got != before+1 {
			t.Errorf("nobody's mailbox has %d messages, want %d: the .forward should be ignored", got, before+1)
		}
		if strings.Contains(h.log.String(), "leaked-secret") {
			t.Errorf("the root-only file's contents reached the log")
		}
	})
	t.Run("a .forward others may write", func(t *testing.T) {
		before := len(h.mailbox("nobody"))
		os.WriteFile(fwd, []byte("victim@example.org\n"), 0o666)
		os.Chmod(fwd, 0o666)
		own(fwd)
		defer os.Remove(fwd)
		send(t)
		if !h.log.WaitFor(`nobody.forward: ignored: writable by group or others`, 3*time.Second) {
			t.Errorf("no warning for the writable .forward")
		}
		if got := len(h.waitMailbox("nobody", before+1)); got != before+1 {
			t.Errorf("the writable .forward was followed")
		}
	})
	t.Run("a .forward pipe runs as the user", func(t *testing.T) {
		uidFile := filepath.Join(out, "uid")
		os.WriteFile(fwd, []byte("\"|id -u > "+uidFile+"\"\n"), 0o644)
		own(fwd)
		defer os.Remove(fwd)
		send(t)
		var b []byte
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if b, _ = os.ReadFile(uidFile); len(b) > 0 {
				break
			}
		}
		if got := string(bytes.TrimSpace(b)); got != fmt.Sprint(nobody.UID) {
			t.Errorf("the pipe ran as uid %q, want %d:\n%s", got, nobody.UID, h.log)
		}
	})
}

// TestHomeMailboxAsUser: as root, a mailbox in the user's home is written
// with the user's rights, so the user owns the message file (mode 0600)
// and the directories the delivery makes.
func TestHomeMailboxAsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: .ci/run runs it as root and fails when it is skipped")
	}
	nobody, ok := postfix.LookupAccount("nobody")
	if !ok || nobody.UID == 0 {
		t.Fatal("no unprivileged account nobody")
	}
	home, err := os.MkdirTemp("", "larkpost-home")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	os.Chmod(home, 0o755)
	os.Chown(home, nobody.UID, nobody.GID)
	la := &local.Agent{Settings: func() local.Settings { return local.Settings{} }}
	rt := &deliver.Route{Kind: deliver.Local, Mailbox: filepath.Join(home, "Maildir") + "/", Owner: "nobody"}
	res := la.Deliver(context.Background(), &deliver.Request{QueueID: "Q1", Sender: "a@example.org",
		Rcpts: []deliver.Rcpt{{Addr: "nobody@mx.test"}}, Body: queue.NewBody([]byte("Subject: x\r\n\r\nhi\r\n")), Route: rt})
	if !res[0].OK() {
		t.Fatalf("delivery: %+v", res[0])
	}
	files, _ := filepath.Glob(filepath.Join(home, "Maildir", "new", "*"))
	if len(files) != 1 {
		t.Fatalf("%d files in new/", len(files))
	}
	for _, p := range append(files, filepath.Join(home, "Maildir")) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if int(st.Uid) != nobody.UID {
			t.Errorf("%s is owned by uid %d, want %d", p, st.Uid, nobody.UID)
		}
		if !fi.IsDir() && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %#o, want 0600", p, fi.Mode().Perm())
		}
	}
}
