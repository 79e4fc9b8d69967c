package engine

import (
	"testing"

	"github.com/larkpost/larkpost/engine/deliver"
	"github.com/larkpost/larkpost/engine/deliver/local"
	"github.com/larkpost/larkpost/engine/deliver/maildir"
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
