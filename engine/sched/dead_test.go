package sched

import (
	"bytes"
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/deliver"
	"github.com/larkpost/larkpost/engine/maillog"
	"github.com/larkpost/larkpost/queue"
)

const refused = "connect to relay.test[192.0.2.1]:25: Connection refused"

// siteAgent answers by the recipient's local part, as a remote agent
// would: "site" is a connection that failed, "rcpt" a recipient that
// was deferred on an established session, "perm" a session refused for
// good, anything else a delivery.
func siteAgent(_ context.Context, _ *deliver.Request, rc deliver.Rcpt) deliver.Result {
	local, _, _ := strings.Cut(rc.Addr, "@")
	switch local {
	case "site":
		return deliver.Result{Status: deliver.Temp("4.4.1", refused), Relay: "none", Site: true}
	case "rcpt":
		return deliver.Result{Status: deliver.Temp("4.2.1", "host relay.test[192.0.2.1] said: 450 4.2.1 try later (in reply to RCPT TO command)"),
			Relay: "relay.test[192.0.2.1]:25"}
	case "perm":
		return deliver.Result{Status: deliver.Perm("5.3.2", "host relay.test[192.0.2.1] refused to talk to me: 554 go away"),
			Relay: "relay.test[192.0.2.1]:25", Site: true}
	}
	return deliver.Result{Status: deliver.Sent("250 ok"), Relay: "relay.test[192.0.2.1]:25"}
}

// lockedBuffer collects log lines written by the workers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// deadRoutes sends a.test and b.test to their own relay, with every
// local part siteAgent knows.
func deadRoutes() map[string]deliver.Route {
	routes := map[string]deliver.Route{}
	for _, dom := range []string{"a.test", "b.test"} {
		for _, local := range []string{"site", "rcpt", "perm", "ok"} {
			routes[local+"@"+dom] = relayTo("[" + dom + "]")
		}
	}
	return routes
}

// deadHarness is a harness whose remote agent is siteAgent, one session
// at a time per destination (so no session starts before the previous
// one's outcome is counted) and whose log is kept.
func deadHarness(t *testing.T, minBackoff time.Duration) (*harness, *lockedBuffer) {
	t.Helper()
	h := newHarness(t, Config{MinBackoff: minBackoff, MaxBackoff: time.Hour, RemoteConcurrency: 1}, deadRoutes())
	h.remote.reply = siteAgent
	logs := new(lockedBuffer)
	// Nothing is queued yet, so no worker logs meanwhile; sending the
	// first message orders this before every worker's use of it.
	h.s.log = slog.New(maillog.New(logs, slog.LevelInfo))
	return h, logs
}

// try delivers one message to rcpt and reports whether the agent was
// asked; a message it was not asked for must carry the deferral of a
// dead destination.
func (h *harness) try(t *testing.T, rcpt string) (called bool) {
	t.Helper()
	before := len(h.remote.requests())
	id := h.send(t, time.Now(), rcpt)
	rec := h.settled(t, id)
	called = len(h.remote.requests()) > before
	if !called {
		checkSuspended(t, rec)
	}
	return called
}

func checkSuspended(t *testing.T, rec *queue.Record) {
	t.Helper()
	if rec == nil || rec.State != queue.Deferred {
		t.Fatalf("record %+v, want it deferred", rec)
	}
	last := rec.Rcpts[0].Last()
	if last.Relay != "none" || last.Status != "4.4.1" || last.Reply != "delivery temporarily suspended: "+refused {
		t.Fatalf("%s: last attempt %+v, want a suspended delivery", rec.ID, last)
	}
}

func repeat(rcpt string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = rcpt
	}
	return out
}

// TestDeadDestinationCohort: which sequences of sessions make a
// destination dead, one message at a time. Each step names the
// recipient and whether the agent is asked for it.
func TestDeadDestinationCohort(t *testing.T) {
	t.Parallel()
	type step struct {
		rcpts  []string
		called bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{name: "five site failures in a row kill it", steps: []step{
			{repeat("site@a.test", 5), true}, {repeat("site@a.test", 2), false}, {[]string{"ok@a.test", "rcpt@a.test"}, false}}},
		{name: "recipient failures never do", steps: []step{
			{repeat("rcpt@a.test", 8), true}}},
		{name: "a success resets the count", steps: []step{
			{repeat("site@a.test", 4), true}, {[]string{"ok@a.test"}, true}, {repeat("site@a.test", 5), true}, {[]string{"site@a.test"}, false}}},
		{name: "a recipient failure resets the count", steps: []step{
			{repeat("site@a.test", 4), true}, {[]string{"rcpt@a.test"}, true}, {repeat("site@a.test", 4), true}}},
		{name: "a permanent refusal is not counted", steps: []step{
			{repeat("site@a.test", 4), true}, {[]string{"perm@a.test"}, true}, {repeat("site@a.test", 4), true}}},
		{name: "another destination is unaffected", steps: []step{
			{repeat("site@a.test", 5), true}, {repeat("site@b.test", 4), true}, {[]string{"ok@b.test"}, true},
			{[]string{"site@a.test"}, false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, _ := deadHarness(t, time.Hour)
			n := 0
			for _, st := range tt.steps {
				for _, rcpt := range st.rcpts {
					n++
					if called := h.try(t, rcpt); called != st.called {
						t.Fatalf("message %d to %s: agent called %v, want %v", n, rcpt, called, st.called)
					}
				}
			}
		})
	}
}

// TestDeadDestinationBacklog: a queue of mail for a down relay costs
// deadCohort connection attempts, not one per message; the rest is
// deferred with the reason, and the death logged once.
func TestDeadDestinationBacklog(t *testing.T) {
	t.Parallel()
	h, logs := deadHarness(t, time.Hour)
	const n = 20
	ids := make([]string, n)
	for i := range ids {
		ids[i] = h.send(t, time.Now(), "site@a.test")
	}
	suspended := 0
	for _, id := range ids {
		rec := h.settled(t, id)
		if rec == nil || rec.State != queue.Deferred {
			t.Fatalf("%s: %+v, want it deferred", id, rec)
		}
		if rec.Rcpts[0].Last().Reply != refused {
			checkSuspended(t, rec)
			suspended++
		}
	}
	if calls := len(h.remote.requests()); calls != deadCohort || suspended != n-deadCohort {
		t.Errorf("agent called %d times and %d messages suspended, want %d and %d", calls, suspended, deadCohort, n-deadCohort)
	}
	want := ": smtp to [a.test]: destination marked dead for 1h0m0s: " + refused
	if got := strings.Count(logs.String(), want); got != 1 {
		t.Errorf("%d lines with %q, want 1:\n%s", got, want, logs)
	}
	if !strings.Contains(logs.String(), "larkpost/smtp[") {
		t.Errorf("the dead line is not logged as smtp's:\n%s", logs)
	}
}

// TestDeadDestinationRevives: a dead destination is tried again once
// minimal_backoff_time has passed, or at once after a flush or a reload.
func TestDeadDestinationRevives(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		minBackoff time.Duration
		revive     func(t *testing.T, h *harness)
	}{
		{name: "the dead time passes", minBackoff: 200 * time.Millisecond, revive: func(t *testing.T, h *harness) {
			time.Sleep(250 * time.Millisecond)
		}},
		{name: "flush", minBackoff: time.Hour, revive: func(t *testing.T, h *harness) {
			if n := h.s.ReviveDestinations(); n != 1 {
				t.Errorf("ReviveDestinations = %d, want 1", n)
			}
			if n := h.s.ReviveDestinations(); n != 0 {
				t.Errorf("ReviveDestinations again = %d, want 0", n)
			}
		}},
		{name: "reload", minBackoff: time.Hour, revive: func(t *testing.T, h *harness) {
			h.s.SetConfig(Config{Hostname: "mx.test", MinBackoff: time.Hour, MaxBackoff: time.Hour, RemoteConcurrency: 1})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, _ := deadHarness(t, tt.minBackoff)
			// The deferred messages come back after minBackoff; the
			// destination being up by then keeps them from killing it
			// again while the probe is on its way.
			var up atomic.Bool
			h.remote.reply = func(ctx context.Context, req *deliver.Request, rc deliver.Rcpt) deliver.Result {
				if up.Load() {
					return siteAgent(ctx, req, deliver.Rcpt{Addr: "ok@a.test"})
				}
				return siteAgent(ctx, req, rc)
			}
			for i := range deadCohort {
				if !h.try(t, "site@a.test") {
					t.Fatalf("message %d: agent not called", i+1)
				}
			}
			if h.try(t, "site@a.test") {
				t.Fatalf("agent called for a dead destination")
			}
			up.Store(true)
			tt.revive(t, h)
			if !h.try(t, "site@a.test") {
				t.Fatalf("agent not called after the destination was revived")
			}
		})
	}
}

// TestDeadCacheBounded: failures of ever new domains do not grow the
// map without bound; entries that still matter survive the pruning.
func TestDeadCacheBounded(t *testing.T) {
	t.Parallel()
	var c deadCache
	st := deliver.Temp("4.4.1", refused)
	start := time.Now()
	for i := range deadCohort {
		c.failed("remote smtp:down.test", st, start.Add(time.Duration(i)), time.Hour, time.Hour)
	}
	for i := range 5 * deadPruneAt {
		now := start.Add(time.Duration(i) * time.Millisecond)
		c.failed("remote smtp:d"+strconv.Itoa(i)+".test", st, now, time.Hour, time.Second)
	}
	if n := len(c.m); n > 2*deadPruneAt {
		t.Errorf("%d entries after %d failing domains", n, 5*deadPruneAt)
	}
	if _, dead := c.check("remote smtp:down.test", start.Add(time.Minute)); !dead {
		t.Errorf("a dead destination was pruned before its time")
	}
	if _, dead := c.check("remote smtp:down.test", start.Add(2*time.Hour)); dead {
		t.Errorf("a dead destination is still dead after its time")
	}
	if _, ok := c.m["remote smtp:down.test"]; ok {
		t.Errorf("an expired entry is kept after it was looked at")
	}
}
