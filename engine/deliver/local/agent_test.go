package local

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/larkpost/larkpost/engine/deliver"
	"github.com/larkpost/larkpost/engine/enginetest"
	"golang.org/x/sys/unix"
)

// TestAgentSharesCommits: the agent hands its Commits (the queue's) to
// the Maildir deliveries it makes, which wait for one commit before the
// file's fsync and one before the directory's.
func TestAgentSharesCommits(t *testing.T) {
	dir := t.TempDir()
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	c := &enginetest.BusyCommits{Device: uint64(st.Dev)}
	a := &Agent{Commits: c, Log: slog.New(slog.DiscardHandler), Settings: func() Settings { return Settings{Hostname: "mx.test"} }}
	box := filepath.Join(dir, "md") + "/"
	body := []byte("Subject: hi\r\n\r\nbody\r\n")
	res := a.Deliver(context.Background(), &deliver.Request{QueueID: "Q1", Sender: "ann@example.org",
		Rcpts: []deliver.Rcpt{{Addr: "bob@example.com", Orig: "bob@example.com"}}, Body: bytes.NewReader(body),
		Route: &deliver.Route{Kind: deliver.Local, Mailbox: box}})
	if !res[0].Status.OK() {
		t.Fatalf("delivery: %+v", res[0].Status)
	}
	if files, _ := filepath.Glob(filepath.Join(box, "new", "*")); len(files) != 1 {
		t.Fatalf("%d files in new/, want 1", len(files))
	}
	if n := c.Asked(); n != 2 {
		t.Errorf("the delivery asked for %d commits, want 2 (file, directory)", n)
	}
}
