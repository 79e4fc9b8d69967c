package sched

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/deliver"
	"github.com/larkpost/larkpost/queue"
)

// meter is an agent's reply that notes when each delivery starts and
// ends, and how many run at once. hold, when set, runs inside each
// delivery.
type meter struct {
	mu        sync.Mutex
	calls     []call
	cur, peak int
	hold      func(m *meter)
}

type call struct {
	rcpt       string
	start, end time.Time
}

func (m *meter) reply(_ context.Context, _ *deliver.Request, rc deliver.Rcpt) deliver.Result {
	m.mu.Lock()
	m.cur++
	m.peak = max(m.peak, m.cur)
	start := time.Now()
	m.mu.Unlock()
	if m.hold != nil {
		m.hold(m)
	}
	m.mu.Lock()
	m.cur--
	m.calls = append(m.calls, call{rc.Addr, start, time.Now()})
	m.mu.Unlock()
	return deliver.Result{Status: deliver.Sent("250 ok")}
}

// sorted returns the deliveries in the order they started.
func (m *meter) sorted() []call {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := append([]call(nil), m.calls...)
	sort.Slice(out, func(i, j int) bool { return out[i].start.Before(out[j].start) })
	return out
}

func (m *meter) peakNow() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peak
}

// waitPeer holds a delivery until another runs beside it, or for 300ms.
func waitPeer(m *meter) {
	for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		m.mu.Lock()
		n := m.cur
		m.mu.Unlock()
		if n >= 2 {
			return
		}
	}
}

func relayTo(host string) deliver.Route {
	return deliver.Route{Kind: deliver.SMTP, Dest: "smtp:" + host, Remote: &deliver.Destination{Host: host}}
}

// waitParked waits until n rounds are parked.
func waitParked(t *testing.T, s *Scheduler, n int64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); s.parked.Load() != n; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d rounds parked, want %d", s.parked.Load(), n)
		}
	}
}

func TestDestRule(t *testing.T) {
	t.Parallel()
	maildir := deliver.Route{Kind: deliver.Local, Mailbox: "/home/a/Maildir/", Dest: "/home/a/Maildir/"}
	mbox := deliver.Route{Kind: deliver.Local, Mailbox: "/var/mail/a", Dest: "/var/mail/a"}
	lmtp := deliver.Route{Kind: deliver.LMTP, Dest: "lmtp:unix:/run/lmtp", Remote: &deliver.Destination{Unix: "/run/lmtp"}}
	pipe := deliver.Route{Kind: deliver.Pipe, Mailbox: "cat", Dest: "pipe"}
	rates := Config{RemoteConcurrency: 5, DestConcurrency: 2, SMTPRateDelay: time.Second, LMTPRateDelay: 2 * time.Second, LocalRateDelay: 3 * time.Second}
	tests := []struct {
		name      string
		cfg       Config
		rt        deliver.Route
		wantKey   string
		wantLimit int
		wantDelay time.Duration
	}{
		{"smtp", Config{RemoteConcurrency: 5}, relayTo("gmail.test"), "remote smtp:gmail.test", 5, 0},
		{"smtp default limit", Config{}, relayTo("gmail.test"), "remote smtp:gmail.test", 20, 0},
		{"smtp with a delay", rates, relayTo("gmail.test"), "remote smtp:gmail.test", 1, time.Second},
		{"lmtp with a delay", rates, lmtp, "remote lmtp:unix:/run/lmtp", 1, 2 * time.Second},
		{"mbox", Config{DestConcurrency: 2}, mbox, "/var/mail/a", 2, 0},
		{"mbox with a delay", rates, mbox, "/var/mail/a", 1, 3 * time.Second},
		{"Maildir has no limit", Config{DestConcurrency: 2}, maildir, "", 0, 0},
		{"Maildir with a delay", rates, maildir, "/home/a/Maildir/", 1, 3 * time.Second},
		{"pipe has none", rates, pipe, "", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := &Scheduler{}
			s.cfg.Store(&tt.cfg)
			key := s.limitKey(tt.rt)
			if key != tt.wantKey {
				t.Fatalf("limitKey = %q, want %q", key, tt.wantKey)
			}
			if key == "" {
				return
			}
			limit, delay := s.destRule(tt.rt.Kind)
			if limit != tt.wantLimit || delay != tt.wantDelay {
				t.Errorf("destRule = %d, %v; want %d, %v", limit, delay, tt.wantLimit, tt.wantDelay)
			}
		})
	}
}

// TestRateDelaySpacing: with a rate delay, deliveries to a destination
// never overlap and each starts at least the delay after the previous
// one ended (Postfix's measure).
func TestRateDelaySpacing(t *testing.T) {
	t.Parallel()
	const delay = 200 * time.Millisecond
	tests := []struct {
		name  string
		cfg   Config
		route deliver.Route
		local bool // the local agent delivers
	}{
		{"smtp nexthop", Config{SMTPRateDelay: delay, RemoteConcurrency: 10}, relayTo("gmail.test"), false},
		{"local Maildir", Config{LocalRateDelay: delay}, deliver.Route{Kind: deliver.Local, Mailbox: "/home/bob/Maildir/", Dest: "/home/bob/Maildir/"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			routes := map[string]deliver.Route{}
			for i := range 5 {
				routes[fmt.Sprintf("u%d@gmail.test", i)] = tt.route
			}
			h := newHarness(t, tt.cfg, routes)
			m := &meter{hold: func(*meter) { time.Sleep(20 * time.Millisecond) }}
			if tt.local {
				h.local.reply = m.reply
			} else {
				h.remote.reply = m.reply
			}
			var ids []string
			for i := range 5 {
				ids = append(ids, h.send(t, time.Now(), fmt.Sprintf("u%d@gmail.test", i)))
			}
			for _, id := range ids {
				if rec := h.settled(t, id); rec != nil {
					t.Fatalf("%s not delivered: %+v", id, rec)
				}
			}
			calls := m.sorted()
			if len(calls) != 5 || m.peakNow() != 1 {
				t.Fatalf("%d deliveries, %d at once; want 5, one at a time", len(calls), m.peakNow())
			}
			for i := 1; i < len(calls); i++ {
				if gap := calls[i].start.Sub(calls[i-1].end); gap < delay {
					t.Errorf("delivery %d started %v after the previous one ended, want at least %v", i, gap, delay)
				}
			}
		})
	}
}

// TestRateDelayConcurrency: a rate delay makes a destination's
// concurrency 1; without one its concurrency limit holds as before.
func TestRateDelayConcurrency(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		cfg      Config
		wantPeak int
	}{
		{"no delay", Config{RemoteConcurrency: 2}, 2},
		{"delay", Config{RemoteConcurrency: 2, SMTPRateDelay: 50 * time.Millisecond}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			relay := relayTo("gmail.test")
			h := newHarness(t, tt.cfg, map[string]deliver.Route{"a@gmail.test": relay, "b@gmail.test": relay, "c@gmail.test": relay})
			m := &meter{hold: waitPeer}
			h.remote.reply = m.reply
			ids := []string{h.send(t, time.Now(), "a@gmail.test"), h.send(t, time.Now(), "b@gmail.test"), h.send(t, time.Now(), "c@gmail.test")}
			for _, id := range ids {
				if rec := h.settled(t, id); rec != nil {
					t.Fatalf("%s not delivered: %+v", id, rec)
				}
			}
			if peak := m.peakNow(); peak != tt.wantPeak {
				t.Errorf("%d deliveries at once, want %d", peak, tt.wantPeak)
			}
		})
	}
}

// TestRateDelayPerDestination: two destinations do not delay each
// other, and a destination is forgotten once its pause is over.
func TestRateDelayPerDestination(t *testing.T) {
	t.Parallel()
	const delay = 300 * time.Millisecond
	h := newHarness(t, Config{SMTPRateDelay: delay}, map[string]deliver.Route{
		"a1@a.test": relayTo("a.test"), "a2@a.test": relayTo("a.test"),
		"b1@b.test": relayTo("b.test"), "b2@b.test": relayTo("b.test"),
	})
	m := &meter{}
	h.remote.reply = m.reply
	var ids []string
	for _, r := range []string{"a1@a.test", "a2@a.test", "b1@b.test", "b2@b.test"} {
		ids = append(ids, h.send(t, time.Now(), r))
	}
	for _, id := range ids {
		if rec := h.settled(t, id); rec != nil {
			t.Fatalf("%s not delivered: %+v", id, rec)
		}
	}
	byDest := map[string][]call{} // in the order they started
	for _, c := range m.sorted() {
		_, dest, _ := strings.Cut(c.rcpt, "@")
		byDest[dest] = append(byDest[dest], c)
	}
	a, b := byDest["a.test"], byDest["b.test"]
	if len(a) != 2 || len(b) != 2 {
		t.Fatalf("deliveries %v, want two per destination", byDest)
	}
	if d := b[0].start.Sub(a[0].start).Abs(); d >= delay/2 {
		t.Errorf("the first deliveries to a.test and b.test started %v apart, want them together", d)
	}
	for dest, calls := range byDest {
		if gap := calls[1].start.Sub(calls[0].end); gap < delay {
			t.Errorf("%s: second delivery %v after the first, want at least %v", dest, gap, delay)
		}
	}
	// Generous: the pause is 300 ms, but a loaded machine runs timers late.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		h.s.mu.Lock()
		n := len(h.s.dests)
		h.s.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d destinations still known after their pause", n)
		}
	}
}

// TestRateDelayReload: a reload that turns the delay off resumes the
// rounds waiting for it at once.
func TestRateDelayReload(t *testing.T) {
	t.Parallel()
	relay := relayTo("gmail.test")
	h := newHarness(t, Config{SMTPRateDelay: time.Hour}, map[string]deliver.Route{"a@gmail.test": relay, "b@gmail.test": relay})
	first := h.send(t, time.Now(), "a@gmail.test")
	if rec := h.settled(t, first); rec != nil {
		t.Fatalf("first message not delivered: %+v", rec)
	}
	second := h.send(t, time.Now(), "b@gmail.test")
	waitParked(t, h.s, 1)
	if n := len(h.remote.requests()); n != 1 {
		t.Fatalf("%d deliveries during the delay, want 1", n)
	}
	begin := time.Now()
	h.s.SetConfig(Config{Hostname: "mx.test"})
	if rec := h.settled(t, second); rec != nil {
		t.Fatalf("second message not delivered after the reload: %+v", rec)
	}
	if d := time.Since(begin); d > time.Second {
		t.Errorf("second message delivered %v after the reload, want at once", d)
	}
}

// TestStopCutsRateDelay: Stop does not wait out rate delays: the rounds
// waiting for one are committed with what they delivered, the rest stays
// due with no try counted, nothing is delivered after Stop, and no timer
// is left.
func TestStopCutsRateDelay(t *testing.T) {
	t.Parallel()
	relay := relayTo("gmail.test")
	box := deliver.Route{Kind: deliver.Local, Mailbox: "/home/carol/Maildir/", Dest: "/home/carol/Maildir/"}
	h := newHarness(t, Config{SMTPRateDelay: time.Hour, MinBackoff: time.Hour, MaxBackoff: time.Hour}, map[string]deliver.Route{
		"a@gmail.test": relay, "b@gmail.test": relay, "c@gmail.test": relay, "carol@mx.test": box,
	})
	first := h.send(t, time.Now(), "a@gmail.test")
	if rec := h.settled(t, first); rec != nil {
		t.Fatalf("first message not delivered: %+v", rec)
	}
	half := h.send(t, time.Now(), "carol@mx.test", "b@gmail.test") // carol's Maildir first, then the wait
	waiting := h.send(t, time.Now(), "c@gmail.test")
	waitParked(t, h.s, 2)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	begin := time.Now()
	h.s.Stop(ctx)
	if d := time.Since(begin); d > time.Second {
		t.Errorf("Stop took %v", d)
	}
	h.s.mu.Lock()
	n := len(h.s.dests)
	h.s.mu.Unlock()
	if n != 0 {
		t.Errorf("%d destinations left after Stop, want none (and no timers)", n)
	}
	for deadline := time.Now().Add(5 * time.Second); h.s.IsActive(half) || h.s.IsActive(waiting); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the cut rounds were not committed")
		}
	}
	time.Sleep(50 * time.Millisecond)
	if r, l := len(h.remote.requests()), len(h.local.requests()); r != 1 || l != 1 {
		t.Errorf("%d remote and %d local deliveries, want 1 and 1 (none after Stop)", r, l)
	}
	want := map[string]map[string]queue.RcptState{
		half:    {"carol@mx.test": queue.Sent, "b@gmail.test": queue.Pending},
		waiting: {"c@gmail.test": queue.Pending},
	}
	for id, rcpts := range want {
		rec, err := h.q.Get(id)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if rec.Tries != 0 || rec.NextTry.After(time.Now()) {
			t.Errorf("%s: tries %d, next try in %v; want no try counted and due now", id, rec.Tries, time.Until(rec.NextTry))
		}
		for _, r := range rec.Rcpts {
			if r.State != rcpts[r.Addr] {
				t.Errorf("%s: %s is %s, want %s", id, r.Addr, r.State, rcpts[r.Addr])
			}
		}
	}
}
