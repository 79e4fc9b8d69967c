package engine

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExpansionEndToEnd: an alias (with a bad member), a virtual catch-all,
// a +ext address and duplicates, in one message: each mailbox gets one
// copy, and the bounce for the bad member names the original recipient.
func TestExpansionEndToEnd(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "aliases"), []byte("staff: alice, bob, ghost\npostmaster: alice\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "virtual"), []byte("@virt.test carol\n"), 0o600)
	h := start(t, `config(
    alias_maps = ["`+filepath.Join(dir, "aliases")+`"],
    virtual_alias_domains = ["virt.test"],
    virtual_alias_maps = ["hash:`+filepath.Join(dir, "virtual")+`"],
    local_recipients = ["ann", "alice", "bob", "carol", "dave"],
    origin = "mx.test",
)`)
	rcpts := []string{"staff@mx.test", "info@virt.test", "dave+news@mx.test", "alice@mx.test", "Bob@mx.test"}
	if _, err := send(t, h.addr, "ann@mx.test", rcpts, "Subject: expansion\r\nMessage-ID: <exp@mx.test>\r\n\r\nhi\r\n"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		got := h.waitMailbox(u, 1)
		if len(got) != 1 {
			t.Errorf("%s got %d copies, want 1", u, len(got))
		}
	}
	dave := h.mailbox("dave")
	if len(dave) == 1 && !bytes.Contains(dave[0], []byte("Delivered-To: dave+news@mx.test\n")) {
		t.Errorf("dave's copy lacks Delivered-To with the extension:\n%s", dave[0])
	}
	carol := h.mailbox("carol")
	if len(carol) == 1 && !bytes.Contains(carol[0], []byte("X-Original-To: info@virt.test\n")) {
		t.Errorf("carol's copy lacks X-Original-To: info@virt.test:\n%s", carol[0])
	}
	bounce := h.waitMailbox("ann", 1)
	if len(bounce) != 1 {
		t.Fatalf("sender got %d bounces, want 1", len(bounce))
	}
	for _, want := range []string{"Final-Recipient: rfc822; ghost@mx.test", "Original-Recipient: rfc822; staff@mx.test", "Status: 5.1.1", "Action: failed"} {
		if !strings.Contains(string(bounce[0]), want) {
			t.Errorf("bounce lacks %q:\n%s", want, bounce[0])
		}
	}
	time.Sleep(100 * time.Millisecond)
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		if n := len(h.mailbox(u)); n != 1 {
			t.Errorf("%s has %d messages after settling, want 1", u, n)
		}
	}
}

func TestVirtualMailboxDomain(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "vmailbox"), []byte("bob@vm.test vm.test/bob/\nsue@vm.test vm.test/sue.mbox\nevil@vm.test ../../../tmp/x/\n"), 0o600)
	h := start(t, `config(virtual_mailbox_domains = ["vm.test"], virtual_mailbox_maps = ["hash:`+filepath.Join(dir, "vmailbox")+`"])`)
	if _, err := send(t, h.addr, "ann@example.org", []string{"bob@vm.test", "sue@vm.test"}, "Subject: v\r\n\r\nhi\r\n"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	var md []string
	var mbox []byte
	for time.Now().Before(deadline) && (len(md) == 0 || len(mbox) == 0) {
		md, _ = filepath.Glob(filepath.Join(h.data, "vmail", "vm.test", "bob", "new", "*"))
		mbox, _ = os.ReadFile(filepath.Join(h.data, "vmail", "vm.test", "sue.mbox"))
		time.Sleep(10 * time.Millisecond)
	}
	if len(md) != 1 || !bytes.HasPrefix(mbox, []byte("From ann@example.org ")) {
		t.Fatalf("virtual Maildir has %d messages, mbox %q", len(md), mbox)
	}
	for _, bad := range []string{"nobody@vm.test", "evil@vm.test"} {
		_, err := send(t, h.addr, "ann@example.org", []string{bad}, "Subject: v\r\n\r\nhi\r\n")
		if err == nil || !strings.Contains(err.Error(), "User unknown in virtual mailbox table") {
			t.Errorf("%s: %v, want 550 unknown in virtual mailbox table", bad, err)
		}
	}
}

// TestBrokenExpandHookDefers: a failing expand hook refuses the message
// with a temporary error and says where in the log; nothing is queued.
func TestBrokenExpandHookDefers(t *testing.T) {
	t.Parallel()
	h := start(t, "def expand(rcpt):\n    return {}[\"nope\"]\n")
	_, err := send(t, h.addr, "ann@example.org", []string{"bob@mx.test"}, "Subject: x\r\n\r\ny\r\n")
	if err == nil || !strings.Contains(err.Error(), "451") || !strings.Contains(err.Error(), "Server configuration problem") {
		t.Fatalf("err = %v, want 451 4.3.5", err)
	}
	if !h.log.WaitFor(`hook failed in cleanup: .*expand at .*larkpost\.star:3: key "nope" not in dict`, 2*time.Second) {
		t.Error("no log line naming the expand hook's line")
	}
}

// TestOneCopyPerMailbox: "team: alice, bob, alice@lark.test" names alice's
// mailbox twice (bare names get @origin); local(8) delivers one copy per
// mailbox, with alias_maps and with an expand hook alike.
func TestOneCopyPerMailbox(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "aliases"), []byte("team: alice, bob, alice@lark.test\n"), 0o600)
	for _, cfg := range []string{
		`config(destinations = ["mx.lark.test", "lark.test"], origin = "mx.lark.test", alias_maps = ["` + filepath.Join(dir, "aliases") + `"])`,
		`config(destinations = ["mx.lark.test", "lark.test"], origin = "mx.lark.test")
def expand(rcpt):
    if rcpt.user == "team":
        return ["alice", "bob", "alice@lark.test"]
`,
	} {
		h := start(t, cfg)
		if _, err := send(t, h.addr, "ann@example.org", []string{"team@lark.test"}, "Subject: team\r\n\r\nhi\r\n"); err != nil {
			t.Fatal(err)
		}
		h.waitMailbox("bob", 1)
		h.settle()
		if n := len(h.mailbox("alice")); n != 1 {
			t.Errorf("alice got %d copies, want 1 (config %s)", n, cfg)
		}
		if !h.log.WaitFor(`to=<alice@(mx\.)?lark\.test>, orig_to=<team@lark\.test>, relay=local, .*status=sent \(duplicate of <alice@`, 3*time.Second) {
			t.Errorf("no duplicate line in the log:\n%s", h.log.String())
		}
	}
}
