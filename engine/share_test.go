package engine

import (
	"bytes"
	"os"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/deliver"
	"github.com/larkpost/larkpost/engine/deliver/local"
	"github.com/larkpost/larkpost/engine/deliver/maildir"
	"github.com/larkpost/larkpost/engine/enginetest"
)

// TestLocalAgentHasQueueCommits: the local agent gets the queue's
// commits, so that its Maildir deliveries on the queue's file system sync
// in them (maildir.Commits).
func TestLocalAgentHasQueueCommits(t *testing.T) {
	h := start(t, "")
	agents := h.e.agents(h.e.policy.Load().Settings, h.e.log)
	la, ok := agents[deliver.Local].(*local.Agent)
	if !ok {
		t.Fatalf("local agent is %T", agents[deliver.Local])
	}
	if la.Commits != maildir.Commits(h.e.queue.Beat()) {
		t.Errorf("local agent's Commits %v, want the queue's Beat", la.Commits)
	}
}

// TestQueueBeatMirrored: with Options.Beat (a split server's daemon), the
// queue's commits are told over the pipe, for the root parent's Maildir
// deliveries.
func TestQueueBeatMirrored(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	h := startWith(t, "", Options{Beat: w})
	if reply, err := enginetest.Send(h.addr, "ann@example.org", []string{"bob@mx.test"}, "Subject: beat\r\n\r\nhi\r\n"); err != nil {
		t.Fatalf("send: %v (%s)", err, reply)
	}
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []byte
	buf := make([]byte, 16)
	for !bytes.Contains(got, []byte("be")) {
		n, err := r.Read(buf)
		if err != nil {
			t.Fatalf("read the beat after %q: %v", got, err)
		}
		got = append(got, buf[:n]...)
	}
}
