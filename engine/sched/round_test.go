package sched

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/cleanup"
	"github.com/larkpost/larkpost/engine/deliver"
	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
)

// stubAgent records the requests it gets and answers with reply.
type stubAgent struct {
	mu    sync.Mutex
	reqs  []*deliver.Request
	reply func(ctx context.Context, req *deliver.Request, rc deliver.Rcpt) deliver.Result
}

func (a *stubAgent) Deliver(ctx context.Context, req *deliver.Request) []deliver.Result {
	a.mu.Lock()
	a.reqs = append(a.reqs, req)
	a.mu.Unlock()
	out := make([]deliver.Result, len(req.Rcpts))
	for i, rc := range req.Rcpts {
		out[i] = a.reply(ctx, req, rc)
	}
	return out
}

func (a *stubAgent) requests() []*deliver.Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*deliver.Request(nil), a.reqs...)
}

func answer(st deliver.Status) func(context.Context, *deliver.Request, deliver.Rcpt) deliver.Result {
	return func(context.Context, *deliver.Request, deliver.Rcpt) deliver.Result {
		return deliver.Result{Status: st}
	}
}

// harness is a scheduler on a real queue with stub agents; routes come
// from a table by recipient address.
type harness struct {
	s      *Scheduler
	q      *queue.Queue
	c      *cleanup.Cleanup
	local  *stubAgent
	remote *stubAgent
}

func newHarness(t *testing.T, cfg Config, routes map[string]deliver.Route) *harness {
	t.Helper()
	q, err := queue.Open(t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	p, err := rules.Load("test.star", []byte(`config(hostname = "mx.test")`))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{q: q, local: &stubAgent{reply: answer(deliver.Sent("ok"))}, remote: &stubAgent{reply: answer(deliver.Sent("250 ok"))}}
	var s *Scheduler
	h.c = cleanup.New(func() *rules.Policy { return p }, q, func(r *queue.Record) { s.Submit(r) }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	h.c.Claim, h.c.Unclaim = func(id string) { s.Claim(id) }, func(id string) { s.Unreserve(id) }
	cfg.Hostname, cfg.Workers, cfg.Cleanup = "mx.test", 2, h.c
	cfg.Agents = map[deliver.Kind]deliver.Agent{deliver.Local: h.local, deliver.SMTP: h.remote, deliver.Pipe: h.local}
	route := func(r *queue.Rcpt, _ *Message) deliver.Route {
		if rt, ok := routes[r.Addr]; ok {
			return rt
		}
		return deliver.Route{Kind: deliver.Defer, Status: deliver.Temp("4.3.5", "no route in the test")}
	}
	s = New(q, cfg, route, slog.New(slog.NewTextHandler(io.Discard, nil)))
	h.s = s
	s.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Stop(ctx)
		q.Close()
	})
	return h
}

// send queues a message from ann to the recipients and returns its id.
func (h *harness) send(t *testing.T, arrival time.Time, rcpts ...string) string {
	t.Helper()
	sub := &cleanup.Submission{Origin: cleanup.Internal, Sender: "ann@example.org", Arrival: arrival,
		Content: cleanup.Whole([]byte("Subject: t\r\n\r\nbody\r\n"))}
	for _, r := range rcpts {
		sub.Rcpts = append(sub.Rcpts, cleanup.Rcpt{Addr: r})
	}
	id, err := h.c.Inject(context.Background(), sub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// settled waits until the message has left the active set and returns
// its record (nil once removed).
func (h *harness) settled(t *testing.T, id string) *queue.Record {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		rec, err := h.q.Get(id)
		switch {
		case errors.Is(err, queue.ErrNotFound):
			return nil
		case err == nil && rec.State != queue.Active && !h.s.IsActive(id):
			return rec
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s did not settle", id)
	return nil
}

// reports lists the messages from <> in the queue, by recipient.
func (h *harness) reports(t *testing.T) []string {
	t.Helper()
	var out []string
	h.q.Walk(func(r *queue.Record) bool {
		if r.Sender == "" {
			out = append(out, r.Rcpts[0].Addr+" "+r.Log[0].Stage+" "+r.Log[0].Decision)
		}
		return true
	})
	return out
}

func TestRoundOutcomes(t *testing.T) {
	t.Parallel()
	mbox := deliver.Route{Kind: deliver.Local, Mailbox: "/var/mail/bob", Dest: "/var/mail/bob"}
	tests := []struct {
		name       string
		cfg        Config
		arrival    time.Duration // before now
		reply      deliver.Status
		route      deliver.Route
		wantState  queue.State // "" = removed
		wantRcpt   queue.RcptState
		wantStatus string
		wantReport string // "" = none
	}{
		{name: "delivered", reply: deliver.Sent("ok"), route: mbox, wantRcpt: queue.Sent, wantStatus: "2.0.0"},
		{name: "deferred", reply: deliver.Temp("4.2.0", "locked"), route: mbox,
			wantState: queue.Deferred, wantRcpt: queue.Pending, wantStatus: "4.2.0"},
		{name: "bounced", reply: deliver.Perm("5.2.2", "over quota"), route: mbox, wantRcpt: queue.Bounced,
			wantStatus: "5.2.2", wantReport: "ann@example.org bounce Undelivered Mail Returned to Sender"},
		{name: "soft_bounce defers", cfg: Config{SoftBounce: true}, reply: deliver.Perm("5.2.2", "over quota"), route: mbox,
			wantState: queue.Deferred, wantRcpt: queue.Pending, wantStatus: "4.2.2"},
		{name: "expired", cfg: Config{MaxLifetime: time.Hour}, arrival: 2 * time.Hour, reply: deliver.Temp("4.4.1", "no answer"), route: mbox,
			wantRcpt: queue.Bounced, wantStatus: "5.4.1", wantReport: "ann@example.org bounce Undelivered Mail Returned to Sender"},
		{name: "error transport", route: deliver.Route{Kind: deliver.Error, Status: deliver.Perm("5.1.1", "unknown user")},
			wantRcpt: queue.Bounced, wantStatus: "5.1.1", wantReport: "ann@example.org bounce Undelivered Mail Returned to Sender"},
		{name: "discard transport", route: deliver.Route{Kind: deliver.Discard}, wantRcpt: queue.Sent, wantStatus: "2.0.0"},
		{name: "hold transport", route: deliver.Route{Kind: deliver.Hold, Text: "quarantine"}, wantState: queue.Hold, wantRcpt: queue.Pending},
		{name: "no agent for the transport", route: deliver.Route{Kind: deliver.LMTP, Dest: "lmtp:x"},
			wantState: queue.Deferred, wantRcpt: queue.Pending, wantStatus: "4.3.5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.cfg.MinBackoff, tt.cfg.MaxBackoff = time.Hour, time.Hour
			h := newHarness(t, tt.cfg, map[string]deliver.Route{"bob@mx.test": tt.route})
			h.local.reply = answer(tt.reply)
			id := h.send(t, time.Now().Add(-tt.arrival), "bob@mx.test")
			rec := h.settled(t, id)
			if tt.wantState == "" {
				if rec != nil {
					t.Fatalf("message stays in the queue as %s, want it removed", rec.State)
				}
			} else {
				if rec == nil || rec.State != tt.wantState {
					t.Fatalf("record %+v, want state %s", rec, tt.wantState)
				}
				r := rec.Rcpts[0]
				if r.State != tt.wantRcpt || r.Last().Status != tt.wantStatus {
					t.Errorf("recipient %s with %q, want %s with %q", r.State, r.Last().Status, tt.wantRcpt, tt.wantStatus)
				}
				if tt.wantState == queue.Deferred && (rec.Tries != 1 || time.Until(rec.NextTry) < 50*time.Minute) {
					t.Errorf("deferred with tries=%d, next try in %v; want 1 and the backoff", rec.Tries, time.Until(rec.NextTry))
				}
			}
			got := strings.Join(h.reports(t), "; ")
			if got != tt.wantReport {
				t.Errorf("reports %q, want %q", got, tt.wantReport)
			}
		})
	}
}

// TestRoundBatches: a remote destination gets one transaction for all
// its recipients, a mailbox one request (one copy), a pipe one request
// per recipient.
func TestRoundBatches(t *testing.T) {
	t.Parallel()
	relay := deliver.Route{Kind: deliver.SMTP, Dest: "smtp:[relay.test]", Remote: &deliver.Destination{Host: "relay.test"}}
	box := deliver.Route{Kind: deliver.Local, Mailbox: "/home/alice/Maildir/", Dest: "/home/alice/Maildir/"}
	pipe := deliver.Route{Kind: deliver.Pipe, Mailbox: "cat", Dest: "pipe"}
	h := newHarness(t, Config{}, map[string]deliver.Route{
		"x@remote.test": relay, "y@remote.test": relay,
		"alice@mx.test": box, "alice@other.test": box,
		"p1@mx.test": pipe, "p2@mx.test": pipe,
	})
	id := h.send(t, time.Now(), "x@remote.test", "alice@mx.test", "p1@mx.test", "y@remote.test", "alice@other.test", "p2@mx.test")
	if rec := h.settled(t, id); rec != nil {
		t.Fatalf("message not removed: %+v", rec)
	}
	addrs := func(reqs []*deliver.Request) []string {
		var out []string
		for _, r := range reqs {
			var a []string
			for _, rc := range r.Rcpts {
				a = append(a, rc.Addr)
			}
			out = append(out, r.Route.Kind.String()+":"+strings.Join(a, ","))
		}
		return out
	}
	if got := strings.Join(addrs(h.remote.requests()), " "); got != "smtp:x@remote.test,y@remote.test" {
		t.Errorf("remote requests %s", got)
	}
	if got := strings.Join(addrs(h.local.requests()), " "); got != "local:alice@mx.test,alice@other.test pipe:p1@mx.test pipe:p2@mx.test" {
		t.Errorf("local requests %s", got)
	}
}

// TestStopCancelsDeliveries: a delivery that hangs is abandoned when the
// stop deadline passes; its recipient stays pending for the next start.
func TestStopCancelsDeliveries(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{MinBackoff: time.Hour, MaxBackoff: time.Hour},
		map[string]deliver.Route{"slow@mx.test": {Kind: deliver.Pipe, Mailbox: "sleep 600", Dest: "pipe"}})
	started := make(chan struct{})
	h.local.reply = func(ctx context.Context, _ *deliver.Request, _ deliver.Rcpt) deliver.Result {
		close(started)
		<-ctx.Done()
		return deliver.Result{Status: deliver.Temp("4.3.0", "delivery interrupted")}
	}
	id := h.send(t, time.Now(), "slow@mx.test")
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	begin := time.Now()
	h.s.Stop(ctx)
	if d := time.Since(begin); d > 3*time.Second {
		t.Fatalf("Stop took %v", d)
	}
	rec := h.settled(t, id)
	if rec == nil || rec.Rcpts[0].State != queue.Pending {
		t.Fatalf("record %+v, want the recipient still pending", rec)
	}
}

// TestBusyDestinationParks: a message whose destination is at its
// concurrency limit waits without holding a worker; other mail goes on,
// and the parked message resumes when the slot frees.
func TestBusyDestinationParks(t *testing.T) {
	t.Parallel()
	relay := deliver.Route{Kind: deliver.SMTP, Dest: "smtp:[relay.test]", Remote: &deliver.Destination{Host: "relay.test"}}
	box := deliver.Route{Kind: deliver.Local, Mailbox: "/home/carol/Maildir/", Dest: "/home/carol/Maildir/"}
	h := newHarness(t, Config{RemoteConcurrency: 1}, map[string]deliver.Route{
		"a@remote.test": relay, "b@remote.test": relay, "carol@mx.test": box, "dave@mx.test": box,
	})
	unblock := make(chan struct{})
	busy := make(chan struct{}, 1)
	h.remote.reply = func(ctx context.Context, req *deliver.Request, rc deliver.Rcpt) deliver.Result {
		if rc.Addr == "a@remote.test" {
			busy <- struct{}{}
			<-unblock
		}
		return deliver.Result{Status: deliver.Sent("250 ok")}
	}
	a := h.send(t, time.Now(), "a@remote.test")
	<-busy // a holds relay.test's only slot and one of the two workers
	b := h.send(t, time.Now(), "b@remote.test", "dave@mx.test")
	c := h.send(t, time.Now(), "carol@mx.test")
	if rec := h.settled(t, c); rec != nil {
		t.Fatalf("c: %+v", rec)
	}
	if !h.s.IsActive(b) {
		t.Fatalf("b left the active set while its destination was busy")
	}
	close(unblock)
	for _, id := range []string{a, b} {
		if rec := h.settled(t, id); rec != nil {
			t.Fatalf("%s not delivered: %+v", id, rec)
		}
	}
	if n := h.s.parked.Load(); n != 0 {
		t.Errorf("%d rounds still parked", n)
	}
}

// A scan woken by other deliveries must not take a message between its
// write and its hand-over (cleanup claims it first): before the claim,
// about one run in ten delivered one of these messages twice.
func TestHandoverDeliversOnce(t *testing.T) {
	routes := map[string]deliver.Route{}
	for i := 0; i < 40; i++ {
		routes["u"+strconv.Itoa(i)+"@remote.test"] = relayTo("[remote.test]")
	}
	h := newHarness(t, Config{MinBackoff: time.Hour, MaxBackoff: time.Hour}, routes)
	h.remote.reply = func(context.Context, *deliver.Request, deliver.Rcpt) deliver.Result {
		// Each deferral wakes the scanner: the race's trigger.
		return deliver.Result{Status: deliver.Temp("4.2.1", "450 try later"), Relay: "remote.test[192.0.2.1]:25"}
	}
	var ids []string
	for i := 0; i < 40; i++ {
		ids = append(ids, h.send(t, time.Now(), "u"+strconv.Itoa(i)+"@remote.test"))
	}
	for _, id := range ids {
		h.settled(t, id)
	}
	h.remote.mu.Lock()
	defer h.remote.mu.Unlock()
	seen := map[string]int{}
	for _, r := range h.remote.reqs {
		seen[r.QueueID]++
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("%s went to the agent %d times, want once", id, seen[id])
		}
	}
}
