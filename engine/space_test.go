package engine

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/larkpost/larkpost/queue"
)

// TestFullDiskShim is the full-disk logic with a fake statfs, for machines
// where the test cannot mount a small file system (cmd/larkpost's
// TestFullDisk does, as root, and also proves Badger never meets a full
// disk). It covers: 452 4.3.1 at MAIL once the queue file system has less
// than its reserve plus 1.5 times message_size_limit; delivery paused
// while results could not be recorded, and resumed, with nothing lost,
// when space comes back.
func TestFullDiskShim(t *testing.T) {
	t.Parallel()
	var free atomic.Int64
	free.Store(1 << 30)
	h := startWith(t, `config(message_size_limit = "1MB", minimal_backoff = "1s", maximal_backoff = "1s")`, Options{Statfs: func(string) (int64, error) { return free.Load(), nil }})
	if _, err := send(t, h.addr, "a@example.org", []string{"bob@mx.test"}, "Subject: 1\r\n\r\nroom\r\n"); err != nil {
		t.Fatal(err)
	}
	if n := len(h.waitMailbox("bob", 1)); n != 1 {
		t.Fatalf("bob has %d messages, want 1", n)
	}

	// Short of room for a message: MAIL is refused, and the log says why.
	free.Store(queue.Reserve + 1<<20)
	time.Sleep(100 * time.Millisecond)
	if _, err := send(t, h.addr, "a@example.org", []string{"bob@mx.test"}, "Subject: 2\r\n\r\nno room\r\n"); err == nil || !strings.Contains(err.Error(), "452") {
		t.Fatalf("send with the disk short: %v, want 452 4.3.1", err)
	}
	if !h.log.WaitFor(`NOQUEUE: reject: MAIL from .*: 452 4\.3\.1 Insufficient system storage`, 3*time.Second) {
		t.Error("no reject line for the full disk")
	}

	// Room to accept, not to deliver to a mailbox on the same file
	// system: accepted, and kept in the queue.
	free.Store(queue.Reserve + 1600<<10)
	time.Sleep(100 * time.Millisecond)
	big := "Subject: 3\r\n\r\n" + strings.Repeat(strings.Repeat("q", 998)+"\r\n", 900)
	if _, err := send(t, h.addr, "a@example.org", []string{"bob@mx.test"}, big); err != nil {
		t.Fatalf("send with room for the queue only: %v", err)
	}
	if !h.log.WaitFor(`to=<bob@mx.test>, relay=local, .*dsn=4\.3\.1, status=deferred \(insufficient system storage`, 5*time.Second) {
		t.Error("local delivery was not deferred for the queue's sake")
	}
	free.Store(queue.Reserve / 4)
	if !h.log.WaitFor(`delivery paused`, 10*time.Second) {
		t.Error("delivery did not pause with the queue file system full")
	}
	if n := len(h.mailbox("bob")); n != 1 {
		t.Errorf("bob has %d messages while the disk is full, want 1", n)
	}

	// Room again: delivery resumes, nothing was lost.
	free.Store(1 << 30)
	if !h.log.WaitFor(`delivery resumes`, 10*time.Second) {
		t.Error("delivery did not resume")
	}
	deadline := time.Now().Add(15 * time.Second)
	for len(h.mailbox("bob")) < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := len(h.mailbox("bob")); n != 2 {
		t.Errorf("bob has %d messages after space came back, want 2", n)
	}
}
