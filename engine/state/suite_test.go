package state

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a backend's clock as the suite sees it: a fake one that
// Advance moves at once, or the real one that Advance sleeps on.
type clock interface {
	Now() time.Time
	Advance(d time.Duration)
}

// fakeClock is a clock that only moves when told; onMove tells a fake
// server too.
type fakeClock struct {
	mu     sync.Mutex
	t      time.Time
	onMove func(time.Time)
}

func newFakeClock(onMove func(time.Time)) *fakeClock {
	c := &fakeClock{t: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC), onMove: onMove}
	if onMove != nil {
		onMove(c.t)
	}
	return c
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	if c.onMove != nil {
		c.onMove(c.t)
	}
}

type realClock struct{}

func (realClock) Now() time.Time          { return time.Now() }
func (realClock) Advance(d time.Duration) { time.Sleep(d) }

// backend makes empty stores for the suite.
type backend struct {
	name string
	// unit is the suite's time scale: a minute on a fake clock, short on
	// a real one.
	unit time.Duration
	// tol is how far a reported duration may be off: 0 on a fake clock.
	tol time.Duration
	// onceClock says whether Once's ttl runs on the clock (Badger's runs
	// on the wall clock in whole seconds).
	onceClock bool
	// open returns nodes stores on one shared, empty data set.
	open func(t testing.TB, nodes int) ([]Store, clock)
}

// runSuite runs every behaviour test against b.
func runSuite(t *testing.T, b backend) {
	t.Run("Take", func(t *testing.T) { t.Parallel(); testTake(t, b) })
	t.Run("TakeConcurrent", func(t *testing.T) { t.Parallel(); testTakeConcurrent(t, b) })
	t.Run("Count", func(t *testing.T) { t.Parallel(); testCount(t, b) })
	t.Run("CountConcurrent", func(t *testing.T) { t.Parallel(); testCountConcurrent(t, b) })
	t.Run("Greylist", func(t *testing.T) { t.Parallel(); testGreylist(t, b) })
	t.Run("GreylistConcurrent", func(t *testing.T) { t.Parallel(); testGreylistConcurrent(t, b) })
	t.Run("AutoWhitelist", func(t *testing.T) { t.Parallel(); testAutoWhitelist(t, b) })
	t.Run("Once", func(t *testing.T) { t.Parallel(); testOnce(t, b) })
	t.Run("Errors", func(t *testing.T) { t.Parallel(); testErrors(t, b) })
}

func near(got, want, tol time.Duration) bool { return got >= want-tol && got <= want+tol }

func testTake(t *testing.T, b backend) {
	stores, clk := b.open(t, 1)
	s, u, ctx := stores[0], b.unit, t.Context()
	r := Rate{N: 1, Per: 10 * u} // 1 token per 10 units
	type step struct {
		advance   time.Duration
		key       string
		burst     int
		cost      int
		allowed   bool
		remaining int
		retry     time.Duration
	}
	steps := []step{
		// starts full, burst 3
		{0, "a", 3, 1, true, 2, 0},
		{0, "a", 3, 1, true, 1, 0},
		{0, "a", 3, 1, true, 0, 0},
		{0, "a", 3, 1, false, 0, 10 * u},
		{0, "a", 3, 0, true, 0, 0}, // cost 0 only looks
		// another key is another bucket
		{0, "b", 3, 3, true, 0, 0},
		{0, "b", 3, 2, false, 0, 20 * u},
		// half a token later: still refused, sooner
		{5 * u, "a", 3, 1, false, 0, 5 * u},
		// one token refilled
		{5 * u, "a", 3, 1, true, 0, 0},
		{0, "a", 3, 1, false, 0, 10 * u},
		// refills up to burst and no further
		{100 * u, "a", 3, 1, true, 2, 0},
		{0, "a", 3, 2, true, 0, 0},
		{15 * u, "a", 3, 2, false, 1, 5 * u},
		{5 * u, "a", 3, 2, true, 0, 0},
	}
	for i, st := range steps {
		if st.advance > 0 {
			clk.Advance(st.advance)
		}
		got, err := s.Take(ctx, st.key, r, st.burst, st.cost, clk.Now())
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got.Allowed != st.allowed || got.Remaining != st.remaining || !near(got.RetryAfter, st.retry, b.tol) {
			t.Errorf("step %d: Take(%q, burst %d, cost %d) = %+v, want allowed %v remaining %d retry after %s",
				i, st.key, st.burst, st.cost, got, st.allowed, st.remaining, st.retry)
		}
	}
}

// testTakeConcurrent: 50 callers on all the nodes take from a bucket of
// 10 at once; exactly 10 get a token.
func testTakeConcurrent(t *testing.T, b backend) {
	stores, clk := b.open(t, 2)
	r := Rate{N: 1, Per: 1000 * b.unit}
	var allowed atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 50 {
		s := stores[i%len(stores)]
		wg.Go(func() {
			<-start
			res, err := s.Take(t.Context(), "shared", r, 10, 1, clk.Now())
			if err != nil {
				t.Error(err)
			}
			if res.Allowed {
				allowed.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	if n := allowed.Load(); n != 10 {
		t.Errorf("%d takes allowed, want 10", n)
	}
}

func testCount(t *testing.T, b backend) {
	stores, clk := b.open(t, 1)
	s, u, ctx := stores[0], b.unit, t.Context()
	w := 60 * u // 60 slots of one unit
	steps := []struct {
		advance time.Duration
		key     string
		window  time.Duration
		add     int
		want    int64
	}{
		{0, "k", w, 0, 0},
		{0, "k", w, 1, 1},
		{0, "k", w, 1, 2},
		{0, "other", w, 1, 1},
		{0, "k", 2 * w, 5, 5}, // another window, another counter
		{30 * u, "k", w, 3, 5},
		{28 * u, "k", w, 0, 5}, // 58 units after the first additions: still in
		{3 * u, "k", w, 0, 3},  // 61: the first are out
		{0, "k", 2 * w, 0, 5},  // but not out of the longer window
		{30 * u, "k", w, 0, 0}, // 91: all out
		{30 * u, "k", 2 * w, 0, 0},
	}
	for i, st := range steps {
		if st.advance > 0 {
			clk.Advance(st.advance)
		}
		got, err := s.Count(ctx, st.key, st.window, st.add, clk.Now())
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got != st.want {
			t.Errorf("step %d: Count(%q, %s, %d) = %d, want %d", i, st.key, st.window, st.add, got, st.want)
		}
	}
}

func testCountConcurrent(t *testing.T, b backend) {
	stores, clk := b.open(t, 2)
	var wg sync.WaitGroup
	for i := range 50 {
		s := stores[i%len(stores)]
		wg.Go(func() {
			if _, err := s.Count(t.Context(), "c", time.Hour, 2, clk.Now()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n, err := stores[0].Count(t.Context(), "c", time.Hour, 0, clk.Now()); err != nil || n != 100 {
		t.Errorf("count after 50 concurrent adds of 2: %d, %v; want 100", n, err)
	}
}

type greyStep struct {
	advance     time.Duration
	triplet     string
	client      string
	pass        bool
	new         bool
	wait        time.Duration
	whitelisted bool
	first       time.Duration // FirstSeen, from the test's start; -1: zero
}

func runGreySteps(t *testing.T, b backend, p GreyParams, steps []greyStep) {
	t.Helper()
	stores, clk := b.open(t, 1)
	s := stores[0]
	start := clk.Now()
	for i, st := range steps {
		if st.advance > 0 {
			clk.Advance(st.advance)
		}
		got, err := s.Greylist(t.Context(), st.triplet, st.client, p, clk.Now())
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		firstOK := got.FirstSeen.IsZero()
		if st.first >= 0 {
			firstOK = near(got.FirstSeen.Sub(start), st.first, b.tol+time.Millisecond)
		}
		if got.Pass != st.pass || got.New != st.new || !near(got.Wait, st.wait, b.tol) || got.Whitelisted != st.whitelisted || !firstOK {
			t.Errorf("step %d: Greylist(%q, %q) = %+v (first seen %s after start), want pass %v new %v wait %s whitelisted %v first seen %s",
				i, st.triplet, st.client, got, got.FirstSeen.Sub(start), st.pass, st.new, st.wait, st.whitelisted, st.first)
		}
	}
}

func testGreylist(t *testing.T, b backend) {
	u := b.unit
	p := GreyParams{Delay: 2 * u, RetryWindow: 10 * u, Expire: 20 * u}
	runGreySteps(t, b, p, []greyStep{
		// first attempt: recorded and refused
		{0, "A", "net1", false, true, 2 * u, false, 0},
		// an early retry: refused, with the time left
		{u, "A", "net1", false, false, u, false, 0},
		// after the delay: passes
		{2 * u, "A", "net1", true, false, 0, false, 0},
		// passed: passes at once
		{0, "A", "net1", true, false, 0, false, 0},
		// other triplets of the client are not passed by A's pass
		{0, "B", "net1", false, true, 2 * u, false, 3 * u},
		{0, "C", "net2", false, true, 2 * u, false, 3 * u},
		// B retried after the retry window (3u + 11u): starts over
		{11 * u, "B", "net1", false, true, 2 * u, false, 14 * u},
		// A passed at 3u, so is remembered until 23u
		{0, "A", "net1", true, false, 0, false, 0},
		{8 * u, "A", "net1", true, false, 0, false, 0}, // 22u, refreshed to 42u
		{19 * u, "A", "net1", true, false, 0, false, 0},
		// 21u without a pass: forgotten
		{21 * u, "A", "net1", false, true, 2 * u, false, 62 * u},
	})
}

// testGreylistConcurrent: one first attempt, made by many at once, is
// recorded once.
func testGreylistConcurrent(t *testing.T, b backend) {
	stores, clk := b.open(t, 2)
	p := GreyParams{Delay: 2 * b.unit, RetryWindow: 10 * b.unit, Expire: 20 * b.unit}
	var news atomic.Int64
	var wg sync.WaitGroup
	for i := range 50 {
		s := stores[i%len(stores)]
		wg.Go(func() {
			res, err := s.Greylist(t.Context(), "T", "net", p, clk.Now())
			if err != nil || res.Pass {
				t.Errorf("Greylist: %+v, %v", res, err)
			}
			if res.New {
				news.Add(1)
			}
		})
	}
	wg.Wait()
	if n := news.Load(); n != 1 {
		t.Errorf("%d attempts recorded as new, want 1", n)
	}
}

func testAutoWhitelist(t *testing.T, b backend) {
	u := b.unit
	p := GreyParams{Delay: 2 * u, RetryWindow: 10 * u, Expire: 20 * u, AutoWhitelist: 3}
	runGreySteps(t, b, p, []greyStep{
		{0, "A", "net1", false, true, 2 * u, false, 0},
		{0, "B", "net1", false, true, 2 * u, false, 0},
		{0, "X", "net2", false, true, 2 * u, false, 0},
		{3 * u, "A", "net1", true, false, 0, false, 0}, // pass 1
		{0, "B", "net1", true, false, 0, false, 0},     // pass 2
		{0, "X", "net2", true, false, 0, false, 0},     // another client's
		{0, "C", "net1", false, true, 2 * u, false, 3 * u},
		{0, "A", "net1", true, false, 0, false, 0}, // pass 3: whitelisted from now on
		{0, "C", "net1", true, false, 0, true, -1},
		{0, "D", "net1", true, false, 0, true, -1},
		// a whitelisted client passes without records: none for D
		// the other client is not whitelisted
		{0, "Y", "net2", false, true, 2 * u, false, 3 * u},
		// a whitelist not used for Expire lapses
		{21 * u, "D", "net1", false, true, 2 * u, false, 24 * u},
	})
	// 0 turns it off
	p.AutoWhitelist = 0
	steps := []greyStep{}
	for i := range 5 {
		tr := "T" + strconv.Itoa(i)
		steps = append(steps, greyStep{0, tr, "net1", false, true, 2 * u, false, time.Duration(i) * 3 * u},
			greyStep{3 * u, tr, "net1", true, false, 0, false, time.Duration(i) * 3 * u})
	}
	steps = append(steps, greyStep{0, "U", "net1", false, true, 2 * u, false, 15 * u})
	runGreySteps(t, b, p, steps)
}

func testOnce(t *testing.T, b backend) {
	stores, clk := b.open(t, 2)
	ctx, ttl := t.Context(), 10*b.unit
	steps := []struct {
		advance time.Duration
		node    int
		key     string
		want    bool
	}{
		{0, 0, "alice\x00bob@example.org", true},
		{0, 0, "alice\x00bob@example.org", false},
		{0, 1, "alice\x00bob@example.org", false}, // the other node knows
		{0, 1, "alice\x00carol@example.org", true},
	}
	if b.onceClock {
		steps = append(steps,
			struct {
				advance time.Duration
				node    int
				key     string
				want    bool
			}{9 * b.unit, 0, "alice\x00bob@example.org", false},
			struct {
				advance time.Duration
				node    int
				key     string
				want    bool
			}{2 * b.unit, 0, "alice\x00bob@example.org", true})
	}
	for i, st := range steps {
		if st.advance > 0 {
			clk.Advance(st.advance)
		}
		got, err := stores[st.node].Once(ctx, st.key, ttl)
		if err != nil || got != st.want {
			t.Errorf("step %d: Once(%q) = %v, %v; want %v", i, st.key, got, err, st.want)
		}
	}
}

// testErrors: arguments no bucket or window could serve are errors,
// not answers.
func testErrors(t *testing.T, b backend) {
	stores, clk := b.open(t, 1)
	s, ctx, now := stores[0], context.Background(), clk.Now()
	hour := Rate{N: 10, Per: time.Hour}
	checks := []struct {
		name string
		err  error
	}{
		{"cost above burst", func() error { _, err := s.Take(ctx, "k", hour, 2, 3, now); return err }()},
		{"burst 0", func() error { _, err := s.Take(ctx, "k", hour, 0, 0, now); return err }()},
		{"negative cost", func() error { _, err := s.Take(ctx, "k", hour, 2, -1, now); return err }()},
		{"zero rate", func() error { _, err := s.Take(ctx, "k", Rate{}, 2, 1, now); return err }()},
		{"negative add", func() error { _, err := s.Count(ctx, "k", time.Hour, -1, now); return err }()},
		{"zero window", func() error { _, err := s.Count(ctx, "k", 0, 1, now); return err }()},
		{"retry window within delay", func() error {
			_, err := s.Greylist(ctx, "t", "c", GreyParams{Delay: time.Hour, RetryWindow: time.Minute}, now)
			return err
		}()},
		{"once without ttl", func() error { _, err := s.Once(ctx, "k", 0); return err }()},
	}
	for _, c := range checks {
		if c.err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
}
