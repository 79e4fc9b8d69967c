package sched

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
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
	// The destination is back; the admin flushes every message, as
	// `larkpost queue flush` does: the schedule entries move, the
	// records stay.
	up.Store(true)
	var ops []queue.Op
	for _, id := range ids {
		rec := h.settled(t, id)
		ops = append(ops, queue.FlushOp(id, rec.NextTry))
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

// TestFlushedThenDeferredAgain: a flushed message whose destination is
// still down goes back to its backoff with one schedule entry, at its
// new next try; the entry the flush wrote is gone, and a listing of it
// taken before the round moved it is not delivered again.
func TestFlushedThenDeferredAgain(t *testing.T) {
	var tries atomic.Int32
	h := newHarness(t, Config{MinBackoff: time.Hour, MaxBackoff: time.Hour},
		map[string]deliver.Route{"r@down.example": relayTo("down.example")})
	h.remote.reply = func(_ context.Context, _ *deliver.Request, _ deliver.Rcpt) deliver.Result {
		tries.Add(1)
		return deliver.Result{Status: deliver.Temp("4.4.1", "421 down")}
	}
	id := h.send(t, time.Now(), "r@down.example")
	rec := h.settled(t, id)
	if rec == nil || rec.State != queue.Deferred || tries.Load() != 1 {
		t.Fatalf("want deferred after one try, got %+v after %d", rec, tries.Load())
	}
	first := rec.NextTry
	h.s.ReviveDestinations()
	if err := h.q.Commit(context.Background(), 64, queue.FlushOp(id, first)); err != nil {
		t.Fatal(err)
	}
	flushedAt := queue.FlushedDue(id)
	h.s.Wake()
	deadline := time.Now().Add(5 * time.Second)
	for tries.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the flushed message was not tried again")
		}
		time.Sleep(5 * time.Millisecond)
	}
	rec = h.settled(t, id)
	if rec == nil || rec.State != queue.Deferred || !rec.NextTry.After(time.Now()) {
		t.Fatalf("after the second try: %+v, want deferred to a later time", rec)
	}
	due, err := h.q.Due(time.Now().Add(2*time.Hour), 10, nil)
	if err != nil || len(due) != 1 || !due[0].Due.Equal(rec.NextTry) {
		t.Fatalf("schedule index %v (%v): want one entry at %v", due, err, rec.NextTry)
	}
	// A listing of the flushed entry from before that round is stale.
	if _, listed, err := h.q.LoadListed(id, flushedAt); err != nil || listed {
		t.Fatalf("the flushed entry is still listed (%v, %v)", listed, err)
	}
	if n, ok := h.s.take([]queue.DueEntry{{ID: id, Due: flushedAt}}); !ok || n != 1 {
		t.Fatalf("take = %d, %v", n, ok)
	}
	time.Sleep(50 * time.Millisecond)
	if tries.Load() != 2 {
		t.Fatalf("a stale listing was tried: %d tries", tries.Load())
	}
}

// TestFlushesAndMovesWhileDraining: admin changes (flushes, and moves
// of a message's entry to an earlier or a later time, as release and
// requeue make) land at random while a flaky destination defers and
// accepts; once it accepts everything, every message is delivered
// exactly once and the schedule index is empty. A message whose entry
// the scanner never walks again, or that has two entries, fails it.
func TestFlushesAndMovesWhileDraining(t *testing.T) {
	var up atomic.Bool
	var calls atomic.Int64
	var mu sync.Mutex
	sent := map[string]int{}
	h := newHarness(t, Config{ActiveLimit: 5, MinBackoff: 30 * time.Millisecond, MaxBackoff: 60 * time.Millisecond},
		map[string]deliver.Route{"r@flaky.example": relayTo("flaky.example")})
	h.remote.reply = func(_ context.Context, req *deliver.Request, _ deliver.Rcpt) deliver.Result {
		if !up.Load() && calls.Add(1)%10 != 0 {
			return deliver.Result{Status: deliver.Temp("4.4.1", "421 busy")}
		}
		mu.Lock()
		sent[req.QueueID]++
		mu.Unlock()
		return deliver.Result{Status: deliver.Sent("250 ok")}
	}
	const n = 80
	ids := make([]string, n)
	for i := range ids {
		ids[i] = h.send(t, time.Now(), "r@flaky.example")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	changes, indexFlushes := 0, 0
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if rng.IntN(8) == 0 {
			// `queue flush --all`: a mark, walked while rounds move
			// entries and other flushes move them too.
			indexFlushes++
			if _, err := h.q.MarkFlush(context.Background()); err != nil {
				t.Fatal(err)
			}
			changes++
			h.s.Wake()
			// Every write of an entry deletes the message's old one in
			// the same commit: no message is ever listed twice.
			seen := map[string]bool{}
			for _, d := range allEntries(t, h.q) {
				if seen[d.ID] {
					t.Fatalf("%s has two schedule entries after an index flush", d.ID)
				}
				seen[d.ID] = true
			}
			continue
		}
		id := ids[rng.IntN(n)]
		if !h.s.Reserve(id) {
			continue
		}
		rec, err := h.q.Get(id)
		if err != nil || (rec.State != queue.Active && rec.State != queue.Deferred) {
			h.s.Unreserve(id)
			continue
		}
		var op queue.Op
		if rng.IntN(2) == 0 {
			op = queue.FlushOp(id, rec.NextTry)
		} else {
			old := rec.NextTry
			rec.NextTry = time.Now().Add(time.Duration(rng.Int64N(int64(time.Hour+40*time.Millisecond))) - time.Hour)
			if op, _, err = queue.UpdateOp(rec, old); err != nil {
				t.Fatal(err)
			}
		}
		if err := h.q.Commit(context.Background(), 1024, op); err != nil {
			t.Fatal(err)
		}
		h.s.Unreserve(id)
		h.s.Wake()
		changes++
	}
	up.Store(true)
	h.s.ReviveDestinations()
	h.s.Wake()
	waitEmpty(t, h, n)
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		if sent[id] != 1 {
			t.Errorf("%s delivered %d times", id, sent[id])
		}
	}
	if due, err := h.q.Due(time.Now().Add(24*time.Hour), 10, nil); err != nil || len(due) != 0 {
		t.Errorf("schedule index after the drain: %v, %v", due, err)
	}
	if changes < 50 {
		t.Errorf("only %d admin changes landed; the test did not test much", changes)
	}
	t.Logf("%d admin changes (%d flushes of the whole index), %d calls to the destination", changes, indexFlushes, calls.Load())
}

// allEntries lists the whole schedule index.
func allEntries(t *testing.T, q *queue.Queue) []queue.DueEntry {
	t.Helper()
	all, _, _, err := q.Marked(nil, math.MaxUint64, 100000, 1<<30, nil)
	if err != nil {
		t.Fatal(err)
	}
	return all
}

// tryLog counts each message's tries at a destination that is down.
type tryLog struct {
	mu sync.Mutex
	n  map[string]int
}

func (l *tryLog) of(id string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n[id]
}

// counts is every try, and how many messages were tried how often.
func (l *tryLog) counts() (total int, each map[int]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	each = map[int]int{}
	for _, n := range l.n {
		total += n
		each[n]++
	}
	return total, each
}

func (l *tryLog) total() int64 {
	n, _ := l.counts()
	return int64(n)
}

// downHarness is a harness with an active set of 4 whose one destination,
// r@down.example, defers every try for an hour.
func downHarness(t *testing.T) (*harness, *tryLog) {
	t.Helper()
	l := &tryLog{n: map[string]int{}}
	h := newHarness(t, Config{ActiveLimit: 4, MinBackoff: time.Hour, MaxBackoff: time.Hour},
		map[string]deliver.Route{"r@down.example": relayTo("down.example")})
	h.remote.reply = func(_ context.Context, req *deliver.Request, _ deliver.Rcpt) deliver.Result {
		l.mu.Lock()
		l.n[req.QueueID]++
		l.mu.Unlock()
		return deliver.Result{Status: deliver.Temp("4.4.1", "421 down")}
	}
	return h, l
}

// TestMarkFlushTriesEachOnce: `queue flush --all` (a flush mark) has
// every message that was waiting tried once more, through an active set
// far smaller than the backlog, however the rounds defer them again
// meanwhile; messages that arrive after it are tried on arrival only;
// then the mark is gone and every message keeps one entry.
func TestMarkFlushTriesEachOnce(t *testing.T) {
	h, tries := downHarness(t)
	triesOf := tries.counts
	waitTries := func(want int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			total, _ := triesOf()
			if total == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d tries, want %d", total, want)
			}
		}
	}
	const n = 60
	for range n {
		h.send(t, time.Now(), "r@down.example")
	}
	waitTries(n)
	for deadline := time.Now().Add(5 * time.Second); len(allEntries(t, h.q)) != n || h.s.activeCount() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d entries, %d active: the first tries did not settle", len(allEntries(t, h.q)), h.s.activeCount())
		}
	}
	h.s.ReviveDestinations()
	if _, err := h.q.MarkFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.s.Wake()
	// Arrivals during the flush: tried once, on arrival.
	for range 5 {
		h.send(t, time.Now(), "r@down.example")
	}
	waitTries(2*n + 5)
	for deadline := time.Now().Add(5 * time.Second); h.q.FlushMark() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the flush mark is still there after every message was tried")
		}
	}
	time.Sleep(100 * time.Millisecond)
	if total, each := triesOf(); total != 2*n+5 || each[2] != n || each[1] != 5 {
		t.Fatalf("%d tries, messages by tries %v: want %d tried twice and 5 once", total, each, n)
	}
	seen := map[string]bool{}
	for _, d := range allEntries(t, h.q) {
		if seen[d.ID] {
			t.Fatalf("%s has two schedule entries", d.ID)
		}
		seen[d.ID] = true
		if time.Until(d.Due) < 50*time.Minute {
			t.Errorf("%s due at %v, want an hour out", d.ID, d.Due)
		}
	}
	if len(seen) != n+5 {
		t.Fatalf("%d entries, want %d", len(seen), n+5)
	}
}

func (s *Scheduler) activeCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.active)
}

// TestMarkFlushAfterRestart: a flush the scheduler had not begun when
// it stopped is carried out by the next one (the mark is in the queue),
// each waiting message tried once, and then ended.
func TestMarkFlushAfterRestart(t *testing.T) {
	h, log := downHarness(t)
	tries := log.total
	const n = 20
	for range n {
		h.send(t, time.Now(), "r@down.example")
	}
	for deadline := time.Now().Add(5 * time.Second); tries() != n || len(allEntries(t, h.q)) != n || h.s.activeCount() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d tries, %d entries: the first tries did not settle", tries(), len(allEntries(t, h.q)))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h.s.Stop(ctx)
	mark, err := h.q.MarkFlush(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if tries() != n {
		t.Fatalf("a stopped scheduler tried %d", tries()-n)
	}
	s := New(h.q, *h.s.config(), h.s.route, h.s.log)
	s.Start()
	defer s.Stop(context.Background())
	for deadline := time.Now().Add(5 * time.Second); h.q.FlushMark() == mark; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the new scheduler did not finish the flush: %d tries", tries())
		}
	}
	for deadline := time.Now().Add(5 * time.Second); s.activeCount() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the flushed messages did not settle")
		}
	}
	if got := tries(); got != 2*n {
		t.Fatalf("%d tries, want %d: each message once more", got, 2*n)
	}
	if got := len(allEntries(t, h.q)); got != n {
		t.Fatalf("%d schedule entries, want %d", got, n)
	}
}

// TestMarkFlushWaitsForReserved: a message an admin holds for a change
// while a flush's walk reaches it is not passed over: the walk waits,
// and takes it once the admin lets go without changing it (a dry run).
func TestMarkFlushWaitsForReserved(t *testing.T) {
	h, tries := downHarness(t)
	triesOf := tries.of
	const n = 10
	var ids []string
	for range n {
		ids = append(ids, h.send(t, time.Now(), "r@down.example"))
	}
	for deadline := time.Now().Add(5 * time.Second); len(allEntries(t, h.q)) != n || h.s.activeCount() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first tries did not settle")
		}
	}
	held := allEntries(t, h.q)[n/2].ID
	if !h.s.Reserve(held) {
		t.Fatal("reserve failed")
	}
	h.s.ReviveDestinations()
	mark, err := h.q.MarkFlush(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	h.s.Wake()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		all := 0
		for _, id := range ids {
			if id != held && triesOf(id) == 2 {
				all++
			}
		}
		if all == n-1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the %d others tried again", all, n-1)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if triesOf(held) != 1 || h.q.FlushMark() != mark {
		t.Fatalf("while reserved: %d tries, mark %d (want 1 try and the mark %d kept)", triesOf(held), h.q.FlushMark(), mark)
	}
	h.s.Unreserve(held)
	for deadline := time.Now().Add(5 * time.Second); triesOf(held) != 2 || h.q.FlushMark() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after the reservation ended: %d tries, mark %d", triesOf(held), h.q.FlushMark())
		}
	}
}

// TestRefillInSteps: with the active set full and messages waiting for
// room, the scanner is woken once refill messages have left it, not for
// each one (each wake-up walks the index); with room to spare nobody
// wakes it.
func TestRefillInSteps(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	h.s.Stop(context.Background())
	for _, tc := range []struct{ limit, refill int }{{4, 1}, {64, 4}, {20000, 512}} {
		s := New(h.q, Config{ActiveLimit: tc.limit}, h.s.route, h.s.log)
		if s.refill != tc.refill {
			t.Errorf("refill %d for an active limit of %d, want %d", s.refill, tc.limit, tc.refill)
		}
		for i := range tc.limit {
			if !s.activate(fmt.Sprint(i)) {
				t.Fatalf("activate %d of %d failed", i, tc.limit)
			}
		}
		s.setOverflow()
		woken := func() bool {
			select {
			case <-s.wake:
				return true
			default:
				return false
			}
		}
		for i := range tc.refill - 1 {
			s.deactivate(fmt.Sprint(i))
			if woken() {
				t.Fatalf("limit %d: woken after %d left, want %d", tc.limit, i+1, tc.refill)
			}
		}
		s.deactivate(fmt.Sprint(tc.refill - 1))
		if !woken() {
			t.Fatalf("limit %d: not woken after %d left", tc.limit, tc.refill)
		}
		s.mu.Lock()
		s.overflow = false
		s.mu.Unlock()
		for i := tc.refill; i < tc.refill+3 && i < tc.limit; i++ {
			s.deactivate(fmt.Sprint(i))
		}
		if woken() {
			t.Fatalf("limit %d: woken with nothing waiting for room", tc.limit)
		}
	}
}
