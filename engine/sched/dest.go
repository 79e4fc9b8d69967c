package sched

import (
	"strconv"
	"time"

	"github.com/larkpost/larkpost/engine/deliver"
)

// destSem is one destination's delivery limits: the slots in use under
// its concurrency limit, the rounds parked until one frees, and its rate
// delay's pause. It lives while anyone holds or waits for it, or while
// its pause lasts, so the map does not grow with every destination ever
// seen (Postfix's qmgr_queue_resume frees an idle queue the same way).
type destSem struct {
	kind     deliver.Kind // picks the limit and the delay from the current Config
	inUse    int
	waiters  []*round
	lastDone time.Time   // when the last delivery here ended
	timer    *time.Timer // the pause's end, at most one: resumes the next round or forgets the destination
}

// destRule is the concurrency limit and rate delay that apply now to a
// destination of transport kind. A rate delay makes the limit 1, as
// Postfix's qmgr does: the delay is between deliveries, not beside them.
func (s *Scheduler) destRule(kind deliver.Kind) (limit int, delay time.Duration) {
	c := s.config()
	switch kind {
	case deliver.SMTP, deliver.LMTP:
		limit, delay = c.RemoteConcurrency, c.SMTPRateDelay
		if kind == deliver.LMTP {
			delay = c.LMTPRateDelay
		}
		if limit <= 0 {
			limit = 20
		}
	default: // Local, File
		limit, delay = c.DestConcurrency, c.LocalRateDelay
	}
	if delay > 0 {
		return 1, delay
	}
	return max(limit, 1), 0
}

// acquire takes a slot of key for r, or parks r to be resumed, holding
// the slot, when one frees and the rate delay has passed; a worker never
// waits on a destination. Once acquire returns false, r belongs to
// whoever resumes it: the caller must not touch it.
func (s *Scheduler) acquire(key string, kind deliver.Kind, r *round) bool {
	s.mu.Lock()
	d := s.dests[key]
	if d == nil {
		d = &destSem{kind: kind}
		s.dests[key] = d
	}
	limit, delay := s.destRule(d.kind)
	now := time.Now()
	if len(d.waiters) == 0 && d.inUse < limit && (delay == 0 || !s.halted && !now.Before(d.lastDone.Add(delay))) {
		d.inUse++
		s.mu.Unlock()
		return true
	}
	r.parked = true
	s.parked.Add(1)
	d.waiters = append(d.waiters, r)
	next := s.settle(key, d, now)
	s.mu.Unlock()
	s.resumeAll(next)
	return false
}

// release ends a delivery to key, which starts the destination's rate
// delay, and hands the slot to the first parked round if it may go now.
func (s *Scheduler) release(key string) {
	s.mu.Lock()
	d := s.dests[key]
	d.inUse--
	// Postfix measures the delay from the end of a delivery
	// (qmgr_entry_done suspends the queue for it), so deliveries to a
	// rate-limited destination never overlap, however long each takes.
	now := time.Now()
	d.lastDone = now
	next := s.settle(key, d, now)
	s.mu.Unlock()
	s.resumeAll(next)
}

// settle brings destination d up to date, with s.mu held: free slots go
// to parked rounds in order while the rate delay allows; a round held
// back only by the delay gets d's timer. An idle destination is forgotten
// once its pause is over. After Stop, rounds waiting for a rate delay are
// cut instead. It returns the rounds to resume, to be sent once s.mu is
// released.
func (s *Scheduler) settle(key string, d *destSem, now time.Time) []*round {
	limit, delay := s.destRule(d.kind)
	var out []*round
	if s.halted && delay > 0 {
		for _, r := range d.waiters {
			r.cut = true
		}
		out = append(out, d.waiters...)
		d.waiters = nil
	}
	for len(d.waiters) > 0 && d.inUse < limit {
		if wait := d.lastDone.Add(delay).Sub(now); delay > 0 && wait > 0 {
			s.arm(key, d, wait)
			return out
		}
		r := d.waiters[0]
		d.waiters[0] = nil
		d.waiters = d.waiters[1:]
		d.inUse++
		r.granted = key
		out = append(out, r)
	}
	if d.inUse > 0 || len(d.waiters) > 0 || d.timer != nil {
		return out
	}
	if wait := d.lastDone.Add(delay).Sub(now); delay > 0 && wait > 0 && !s.halted {
		s.arm(key, d, wait) // the next delivery must still wait: keep the pause, then forget it
		return out
	}
	delete(s.dests, key)
	return out
}

// arm starts d's timer, unless one runs already: that one fires no later
// than needed (the end of the last delivery only moves later) and
// settles again. A reload stops it first, since a shorter delay may be
// due sooner.
func (s *Scheduler) arm(key string, d *destSem, wait time.Duration) {
	if d.timer != nil || s.halted {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(wait, func() {
		s.mu.Lock()
		if d.timer != t { // stopped by a reload or by Stop meanwhile
			s.mu.Unlock()
			return
		}
		d.timer = nil
		next := s.settle(key, d, time.Now())
		s.mu.Unlock()
		s.resumeAll(next)
	})
	d.timer = t
}

// recheckDests applies a reloaded configuration to the destinations in
// use: their timers are stopped and each is settled again under the new
// limits and delays.
func (s *Scheduler) recheckDests() {
	s.mu.Lock()
	now := time.Now()
	var next []*round
	for key, d := range s.dests {
		if d.timer != nil {
			d.timer.Stop() // a timer that fires anyway finds itself replaced and does nothing
			d.timer = nil
		}
		next = append(next, s.settle(key, d, now)...)
	}
	s.mu.Unlock()
	s.resumeAll(next)
}

// halt is Stop's part here: no timer fires after it, and rounds waiting
// for a rate delay are cut, committed with what they delivered and the
// rest left due for the next start. Waiting out the pauses would make
// Stop take the delay times the messages queued for the destination
// (Postfix's delay timers do not survive "postfix stop" either).
func (s *Scheduler) halt() {
	s.mu.Lock()
	s.halted = true
	now := time.Now()
	var next []*round
	for key, d := range s.dests {
		if d.timer != nil {
			d.timer.Stop()
			d.timer = nil
		}
		next = append(next, s.settle(key, d, now)...)
	}
	s.mu.Unlock()
	cut := 0
	for _, r := range next {
		if r.cut {
			cut++
		}
	}
	if cut > 0 {
		s.log.Info("stop: " + strconv.Itoa(cut) + " messages waiting for a destination rate delay stay queued for the next start")
	}
	s.resumeAll(next)
}

// resumeAll hands parked rounds to the workers. The channel is buffered
// for the whole active set, so this never blocks.
func (s *Scheduler) resumeAll(rs []*round) {
	for _, r := range rs {
		s.resume <- r
	}
}
