package sched

import (
	"strings"
	"sync"
	"time"

	"github.com/larkpost/larkpost/engine/deliver"
	"github.com/larkpost/larkpost/engine/maillog"
)

// deadCohort is how many sessions in a row must fail at the site level
// before a destination is declared dead. Postfix's
// destination_concurrency_failed_cohort_limit is 1 cohort, and a cohort
// at the initial_destination_concurrency of 5 is five sessions: five
// failed sessions with no success between them.
const deadCohort = 5

// defaultDeadTime stands in for an unset minimal_backoff_time, so that a
// dead destination is still tried again now and then.
const defaultDeadTime = 5 * time.Minute

// deadPruneAt is the size from which recording a failure walks the map
// for entries no longer worth keeping: a stream of distinct failing
// domains must not grow it without bound.
const deadPruneAt = 10000

// deadDest is one destination with recent site failures and no success
// since.
type deadDest struct {
	fails  int
	last   time.Time      // the latest site failure
	until  time.Time      // dead until then; zero while only counting
	status deliver.Status // the failure that made it dead, for the deferrals
}

// deadCache is Postfix qmgr's dead destination state: after deadCohort
// site failures in a row, the destination's mail is deferred for a
// while without connecting, so that a down relay costs one deferral per
// message instead of one connection attempt. It has its own mutex, held
// for one map operation: it is asked before every remote delivery, which
// must not wait for s.mu, and no lock order with s.mu can arise.
type deadCache struct {
	mu      sync.Mutex
	m       map[string]*deadDest // only destinations with fails > 0
	pruneAt int                  // the size that walks the map next; 0 means deadPruneAt
}

// check returns the deferral for a destination that is dead at now. An
// entry whose dead time is over is forgotten: the next session is the
// probe, and it takes another cohort of failures to kill it again.
func (c *deadCache) check(key string, now time.Time) (deliver.Status, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.m[key]
	switch {
	case d == nil || d.until.IsZero():
		return deliver.Status{}, false
	case !now.Before(d.until):
		delete(c.m, key)
		return deliver.Status{}, false
	}
	return d.status, true
}

// failed counts a site failure of key with status st. It reports whether
// this failure made the destination dead (for the duration dead), so
// that the transition is logged once. forget is how long an entry that is not
// dead is worth keeping when the map is pruned.
func (c *deadCache) failed(key string, st deliver.Status, now time.Time, dead, forget time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.m[key]
	if d != nil && !d.until.IsZero() && !now.Before(d.until) {
		d = nil // its dead time is over: counting starts again
	}
	if d == nil {
		if c.m == nil {
			c.m = map[string]*deadDest{}
		}
		c.prune(now, forget)
		d = &deadDest{}
		c.m[key] = d
	}
	d.fails++
	d.last = now
	// Sessions that were already under way when it died fail too; they
	// neither extend the dead time nor log again.
	if d.fails < deadCohort || !d.until.IsZero() {
		return false
	}
	d.until = now.Add(dead)
	d.status = suspended(st)
	return true
}

// alive forgets key's failures: a session got through, or the failure
// was a recipient's or a message's, so the destination answers.
func (c *deadCache) alive(key string) {
	c.mu.Lock()
	delete(c.m, key)
	c.mu.Unlock()
}

// revive forgets every destination and returns how many were dead.
func (c *deadCache) revive(now time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, d := range c.m {
		if !d.until.IsZero() && now.Before(d.until) {
			n++
		}
	}
	c.m = nil
	c.pruneAt = 0
	return n
}

// prune drops, once the map is large, what no longer needs keeping: dead
// times that are over and counts whose last failure is older than
// forget. The next walk waits until the map has doubled, so a map full
// of fresh entries is not walked on every new failure.
func (c *deadCache) prune(now time.Time, forget time.Duration) {
	if len(c.m) < max(c.pruneAt, deadPruneAt) {
		return
	}
	for key, d := range c.m {
		if d.until.IsZero() && now.Sub(d.last) > forget || !d.until.IsZero() && !now.Before(d.until) {
			delete(c.m, key)
		}
	}
	c.pruneAt = 2 * len(c.m)
}

// suspended is the deferral of mail for a dead destination: the failure
// that killed it, as a temporary status whatever class it had.
func suspended(st deliver.Status) deliver.Status {
	enh := st.Enhanced
	if !strings.HasPrefix(enh, "4.") {
		enh = "4.4.1"
	}
	return deliver.Temp(enh, "delivery temporarily suspended: "+st.Text)
}

// siteFailure reports a session that failed for the destination's sake
// for every recipient: only that counts towards declaring it dead.
func siteFailure(results []deliver.Result) bool {
	for _, res := range results {
		if !res.Site || !res.Temporary() {
			return false
		}
	}
	return len(results) > 0
}

// ReviveDestinations forgets every dead destination, so that their mail
// is tried at once (queue flush, reload: Postfix's "postqueue -f" and
// "postfix reload" do the same). It returns how many were dead.
func (s *Scheduler) ReviveDestinations() int {
	return s.dead.revive(time.Now())
}

// deferDead records b as deferred without calling its agent when its
// destination is dead, and reports whether it did.
func (r *round) deferDead(b *batch, start time.Time) bool {
	if !b.rt.Kind.Remote() {
		return false
	}
	st, ok := r.s.dead.check(r.s.limitKey(b.rt), start)
	if ok {
		r.recordAll(b, "none", start, st)
	}
	return ok
}

// judge counts the outcome of a session with b's destination towards
// declaring it dead, or clears its failures.
func (r *round) judge(b *batch, results []deliver.Result) {
	kind := b.rt.Kind
	if !kind.Remote() || len(results) == 0 {
		return
	}
	key := r.s.limitKey(b.rt)
	if !siteFailure(results) {
		r.s.dead.alive(key)
		return
	}
	cfg := r.s.config()
	dead := positive(cfg.MinBackoff, defaultDeadTime)
	if !r.s.dead.failed(key, results[0].Status, time.Now(), dead, positive(cfg.MaxBackoff, time.Hour)) {
		return
	}
	r.s.log.Info(r.rec.ID+": "+kind.String()+" to "+strings.TrimPrefix(b.rt.Dest, kind.String()+":")+
		": destination marked dead for "+dead.String()+": "+results[0].Text, maillog.Program(kind.String()))
}

func positive(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
