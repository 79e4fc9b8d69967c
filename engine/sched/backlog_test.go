package sched

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/deliver"
	"github.com/larkpost/larkpost/queue"
)

// TestBacklogBeyondActiveLimitDrains: a deferred backlog larger than the
// active limit, made due at once (queue flush), drains as fast as the
// deliveries go, not one active set per scanner wake-up (a minute).
func TestBacklogBeyondActiveLimitDrains(t *testing.T) {
	var up atomic.Bool
	h := newHarness(t, Config{ActiveLimit: 4, MinBackoff: time.Hour, MaxBackoff: time.Hour},
		map[string]deliver.Route{"r@down.example": relayTo("down.example")})
	h.remote.reply = func(_ context.Context, _ *deliver.Request, _ deliver.Rcpt) deliver.Result {
		if up.Load() {
			return deliver.Result{Status: deliver.Sent("250 ok")}
		}
		return deliver.Result{Status: deliver.Temp("4.4.1", "421 down")}
	}
	const n = 30
	ids := make([]string, n)
	for i := range ids {
		ids[i] = h.send(t, time.Now(), "r@down.example")
	}
	for _, id := range ids {
		if rec := h.settled(t, id); rec == nil || rec.State != queue.Deferred {
			t.Fatalf("%s: want deferred, got %+v", id, rec)
		}
	}
	// The destination is back; the admin flushes every message.
	up.Store(true)
	now := time.Now()
	var ops []queue.Op
	for _, id := range ids {
		ops = append(ops, dueOp(t, h, id, now))
	}
	if err := h.q.Commit(context.Background(), 1<<20, ops...); err != nil {
		t.Fatal(err)
	}
	h.s.Wake()
	waitEmpty(t, h, n)
}

// dueOp is the update that makes a queued message due at at, as a flush
// or a release writes it.
func dueOp(t *testing.T, h *harness, id string, at time.Time) queue.Op {
	t.Helper()
	rec, err := h.q.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	old := rec.NextTry
	rec.NextTry = at
	op, _, err := queue.UpdateOp(rec, old)
	if err != nil {
		t.Fatal(err)
	}
	return op
}

// waitEmpty waits up to 10 s for the queue's n messages to be delivered.
func waitEmpty(t *testing.T, h *harness, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := 0
		h.q.Walk(func(*queue.Record) bool { left++; return true })
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages still queued after 10 s", left, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestResumedScanFindsEarlierEntries: while a backlog drains through a
// full active set, the scanner resumes its walks where they stopped; a
// message made due with an earlier time than that point (a release or a
// second flush) is still found and delivered.
func TestResumedScanFindsEarlierEntries(t *testing.T) {
	var up atomic.Bool
	var sent atomic.Int32
	h := newHarness(t, Config{ActiveLimit: 3, MinBackoff: time.Hour, MaxBackoff: time.Hour},
		map[string]deliver.Route{"r@down.example": relayTo("down.example")})
	h.remote.reply = func(_ context.Context, _ *deliver.Request, _ deliver.Rcpt) deliver.Result {
		if up.Load() {
			time.Sleep(5 * time.Millisecond)
			sent.Add(1)
			return deliver.Result{Status: deliver.Sent("250 ok")}
		}
		return deliver.Result{Status: deliver.Temp("4.4.1", "421 down")}
	}
	const n = 40
	ids := make([]string, n+1)
	for i := range ids {
		ids[i] = h.send(t, time.Now(), "r@down.example")
	}
	for _, id := range ids {
		if rec := h.settled(t, id); rec == nil || rec.State != queue.Deferred {
			t.Fatalf("%s: want deferred, got %+v", id, rec)
		}
	}
	due := func(id string, at time.Time) {
		if err := h.q.Commit(context.Background(), 1<<20, dueOp(t, h, id, at)); err != nil {
			t.Fatal(err)
		}
		h.s.Wake()
	}
	up.Store(true)
	now := time.Now()
	for _, id := range ids[:n] {
		due(id, now)
	}
	// Once the drain is under way, the last message becomes due an hour
	// before the others: before any point the scanner resumes from.
	for sent.Load() < 5 {
		time.Sleep(time.Millisecond)
	}
	due(ids[n], now.Add(-time.Hour))
	waitEmpty(t, h, n+1)
}
