package sched

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/larkpost/larkpost/engine/bounce"
	"github.com/larkpost/larkpost/engine/deliver"
	"github.com/larkpost/larkpost/engine/maillog"
	"github.com/larkpost/larkpost/queue"
)

// round is one delivery attempt of one message: every pending recipient
// routed, handed to its agent, and the outcome collected for the commit.
type round struct {
	s    *Scheduler
	j    *job
	rec  *queue.Record
	msg  *Message // nil when the queue file cannot be read
	now  time.Time
	held string // the transport that put the message on hold, why
	out  bounce.Outcome

	todo    []*batch // batches not yet run, in order
	granted string   // the destination slot a release handed to this parked round
	parked  bool     // counted in Scheduler.parked until a worker resumes it
	cut     bool     // Stop came while it waited for a rate delay: commit what is done
	events  []Event  // for Config.Events once the commit lands
}

// batch is recipients that share a route and go to their agent in one
// request: one SMTP transaction per destination, one copy per mailbox.
type batch struct {
	rt  deliver.Route
	idx []int
}

// remoteTimeout bounds one remote transaction, whatever the peer does.
const remoteTimeout = 30 * time.Minute

// deliver runs one delivery round for a message and commits its outcome.
func (s *Scheduler) deliver(j *job) {
	if !s.canRecord() {
		s.deactivate(j.rec.ID) // the scanner takes it again when there is room
		return
	}
	msg, ok := s.open(j)
	if !ok {
		return
	}
	r := &round{s: s, j: j, rec: j.rec, msg: msg, now: time.Now()}
	r.todo = r.plan()
	s.step(r)
}

// step runs a round's batches in order until one must wait for a busy
// destination, or for its rate delay: the round is then parked, the
// worker goes on with other messages, and whoever frees a slot there (or
// the rate delay's timer) resumes it, holding the slot. After the last
// batch, or when Stop cut the round short, the round is committed.
func (s *Scheduler) step(r *round) {
	if r.parked {
		r.parked = false
		s.parked.Add(-1)
	}
	for len(r.todo) > 0 && !r.cut {
		b := r.todo[0]
		key := r.granted // the slot it was parked for, even if a reload changed the key since
		if key == "" {
			key = s.limitKey(b.rt)
		}
		switch {
		case key == "":
			r.run(b)
		case r.granted == "" && r.deferDead(b, time.Now()):
			// A dead destination's mail is deferred at once, without
			// waiting for a slot or a rate delay it would not use.
		case r.granted != "" || s.acquire(key, b.rt.Kind, r):
			r.granted = ""
			r.run(b)
			s.release(key)
		default:
			return // parked: r belongs to whoever resumes it now
		}
		r.todo = r.todo[1:]
	}
	if !r.cut {
		r.expire()
	}
	s.commit(r)
	if r.msg != nil {
		r.msg.body.Close()
	}
}

// open reads the message's content. A record whose content is gone is
// moved aside for the admin and never retried (ok is false); content that
// cannot be read now gives a nil Message, and the round defers.
func (s *Scheduler) open(j *job) (msg *Message, ok bool) {
	rec := j.rec
	body, err := s.q.OpenBody(rec)
	switch {
	case err == nil:
		return &Message{ID: rec.ID, body: body}, true
	case errors.Is(err, queue.ErrNotFound):
		s.log.Error(rec.ID + ": queue file is damaged, moved aside: " + err.Error())
		if op, err := queue.MarkCorruptOp(rec, j.due); err == nil {
			s.q.CommitAsync(64, func(error) { s.deactivate(rec.ID) }, op)
			return nil, false
		}
		s.deactivate(rec.ID)
		return nil, false
	}
	s.log.Warn(rec.ID + ": cannot read queue file: " + err.Error())
	return nil, true
}

// plan routes every pending recipient and groups them into batches, in
// the order their routes first appear.
func (r *round) plan() []*batch {
	var batches []*batch
	byKey := map[string]*batch{}
	for _, i := range r.rec.Pending() {
		if r.msg == nil {
			r.record(i, deliver.Defer, "none", r.now, deliver.Temp("4.3.0", "cannot read the queue file"))
			continue
		}
		rt := r.s.route(&r.rec.Rcpts[i], r.msg)
		if rt.Kind == deliver.Hold {
			r.held = rt.Text
			continue
		}
		key := batchKey(rt, i)
		b := byKey[key]
		if b == nil {
			b = &batch{rt: rt}
			byKey[key] = b
			batches = append(batches, b)
		}
		b.idx = append(b.idx, i)
	}
	return batches
}

// batchKey says which recipients share a request: a remote destination
// takes them in one transaction; a mailbox and folder gets one copy
// (local(8)'s duplicate elimination); everything else goes one by one.
func batchKey(rt deliver.Route, i int) string {
	switch {
	case rt.Kind.Remote():
		return rt.Kind.String() + "\x00" + rt.Dest
	case rt.Kind == deliver.Local && rt.Filing.Plain():
		folder := ""
		if rt.Filing != nil {
			folder = rt.Filing.Folder
		}
		return "local\x00" + rt.Dest + "\x00" + folder
	}
	return "\x00" + strconv.Itoa(i)
}

// run hands one batch to its agent and records each recipient's result.
func (r *round) run(b *batch) {
	start := time.Now()
	kind := b.rt.Kind
	agent := r.s.config().Agents[kind]
	switch kind {
	case deliver.Error, deliver.Defer, deliver.Discard:
		agent = deliver.Decide
	}
	if agent == nil {
		r.recordAll(b, kind.String(), start, deliver.Temp("4.3.5", "no agent for transport "+kind.String()))
		return
	}
	if kind == deliver.Local || kind == deliver.File {
		if st, ok := r.s.roomFor(b.rt.Mailbox, r.msg.Size()); !ok {
			r.recordAll(b, kind.String(), start, st)
			return
		}
	}
	if r.deferDead(b, start) {
		return // it died while this round waited for a slot
	}
	req := r.request(b)
	ctx, cancel := context.WithTimeout(r.s.ctx, remoteTimeout)
	results := agent.Deliver(ctx, req)
	cancel()
	r.judge(b, results)
	if kind.Remote() && len(results) > 0 && results[0].Relay != "" && results[0].Relay != "none" {
		// Postfix logs the TLS state of each connection; here once per
		// transaction, so an admin can grep for unverified peers.
		r.s.log.Info(r.rec.ID+": "+kind.String()+" to "+results[0].Relay+": TLS "+orDefault(results[0].TLS, "none"), maillog.Program(kind.String()))
	}
	for n, i := range b.idx {
		res := deliver.Result{Status: deliver.Temp("4.3.0", "no result from the "+kind.String()+" agent")}
		if n < len(results) {
			res = results[n]
		}
		if res.Relayed {
			r.out.Relayed = append(r.out.Relayed, i)
		}
		if kind == deliver.SMTP && res.OK() {
			r.out.HandedOn = append(r.out.HandedOn, i)
		}
		r.record(i, kind, orDefault(res.Relay, kind.String()), start, res.Status)
	}
}

// request is the agent's view of a batch.
func (r *round) request(b *batch) *deliver.Request {
	rec := r.rec
	req := &deliver.Request{QueueID: rec.ID, Sender: rec.Sender, Body: r.msg.body, SMTPUTF8: rec.SMTPUTF8,
		EnvID: rec.EnvID, RetFull: rec.RetFull, Route: &b.rt}
	for _, i := range b.idx {
		qr := rec.Rcpts[i]
		req.Rcpts = append(req.Rcpts, deliver.Rcpt{Addr: qr.Addr, Orig: qr.Orig, Notify: qr.Notify})
	}
	return req
}

func (r *round) recordAll(b *batch, relay string, start time.Time, st deliver.Status) {
	for _, i := range b.idx {
		r.record(i, b.rt.Kind, relay, start, st)
	}
}

// record notes one recipient's result: soft_bounce first, then the
// attempt, the new state and the log line.
func (r *round) record(i int, kind deliver.Kind, relay string, start time.Time, st deliver.Status) {
	if st.Permanent() && r.s.config().SoftBounce {
		st = st.Soften()
	}
	q := &r.rec.Rcpts[i]
	end := time.Now()
	q.AddAttempt(queue.Attempt{Time: end, Relay: relay, Status: st.Enhanced, Reply: st.Text})
	state := "deferred"
	switch {
	case st.OK():
		q.State, state = queue.Sent, "sent"
		r.out.Delivered = append(r.out.Delivered, i)
	case st.Permanent():
		q.State, state = queue.Bounced, "bounced"
		r.out.Bounced = append(r.out.Bounced, i)
	}
	r.s.logDelivery(r.rec, q, kind, relay, r.j, start, end, st, state)
	r.event(i, relay, state, st)
	if obs := r.s.config().Observe; obs != nil {
		obs(Observed{ID: r.rec.ID, Sender: r.rec.Sender, Rcpt: q.Addr, Kind: kind, Relay: relay, State: state, Status: st,
			QueueDelay: start.Sub(r.rec.Arrival), Transmission: end.Sub(start)})
	}
}

// expire bounces what is still pending after the queue lifetime
// (bounce_queue_lifetime for a bounce), unless the message is held.
func (r *round) expire() {
	rec := r.rec
	lifetime := r.s.config().MaxLifetime
	if rec.Sender == "" {
		lifetime = r.s.config().BounceLifetime
	}
	pending := rec.Pending()
	if r.held != "" || len(pending) == 0 || lifetime <= 0 || r.now.Sub(rec.Arrival) < lifetime {
		return
	}
	for _, i := range pending {
		q := &rec.Rcpts[i]
		last := q.Last()
		st := deliver.Status{Enhanced: orDefault(last.Status, "4.4.7")}.Harden(
			"message expired after " + lifetime.String() + ": " + orDefault(last.Reply, "no delivery attempt succeeded"))
		q.State = queue.Bounced
		q.AddAttempt(queue.Attempt{Time: r.now, Status: st.Enhanced, Reply: st.Text})
		r.out.Bounced = append(r.out.Bounced, i)
		r.event(i, "none", "bounced", st)
		if obs := r.s.config().Observe; obs != nil {
			obs(Observed{ID: rec.ID, Sender: rec.Sender, Rcpt: q.Addr, Kind: deliver.Defer, Relay: "none", State: "expired", Status: st,
				QueueDelay: r.now.Sub(rec.Arrival)})
		}
		if rec.Sender == "" {
			r.s.log.Info(rec.ID + ": to=<" + q.Addr + ">, status=expired, bounce discarded")
		} else {
			r.s.log.Info(rec.ID + ": to=<" + q.Addr + ">, status=expired, returned to sender")
		}
	}
}

// commit writes the round's outcome: the message's new state (removed,
// held or deferred with backoff) and the reports it owes, in one queue
// commit, so a crash cannot lose a bounce or send one twice. It is
// committed in the background: the message stays in the active set until
// it lands, so the scanner cannot pick it up again meanwhile. If the
// process dies first the message is simply delivered again
// (at-least-once).
func (s *Scheduler) commit(r *round) {
	rec := r.rec
	pending := rec.Pending()
	var ops []queue.Op
	size := 0
	switch {
	case len(pending) == 0:
		ops = append(ops, queue.RemoveOp(rec, r.j.due))
	case r.held != "":
		rec.State, rec.HoldReason = queue.Hold, r.held
		s.log.Info(rec.ID + ": hold: " + r.held)
	case r.cut:
		// Stopped while the rest waited for a rate delay: that rest was
		// not tried, so the message stays due as it was and no try is
		// counted; what this round did deliver is recorded.
	default:
		rec.Tries++
		rec.State = queue.Deferred
		rec.NextTry = r.now.Add(s.backoff(rec.Tries))
		if w := s.config().DelayWarning; w > 0 && !rec.DelayWarned && r.now.Sub(rec.Arrival) >= w {
			rec.DelayWarned = true
			r.out.Delayed = pending
		}
	}
	var orig bounce.Original
	if r.msg != nil {
		orig = r.msg
	}
	reports := bounce.Reports(s.bounceConfig(), s.config().Cleanup, s.log.With(maillog.Program("bounce")), rec, orig, r.out, r.now)
	for _, rep := range reports {
		ops = append(ops, rep.Op)
		size += rep.Size
	}
	if len(pending) > 0 {
		op, n, err := queue.UpdateOp(rec, r.j.due)
		if err != nil {
			s.log.Error(rec.ID + ": " + err.Error())
			for _, rep := range reports {
				s.config().Cleanup.Abandon(rep.Prepared)
			}
			s.deactivate(rec.ID)
			return
		}
		ops = append(ops, op)
		size += n
	}
	retry := len(pending) > 0 && r.held == ""
	events := r.events
	s.q.CommitAsync(size, func(err error) {
		s.committed(rec, reports, len(pending) == 0, retry, err)
		if fn := s.config().Events; err == nil && fn != nil && len(events) > 0 {
			fn(events)
		}
	}, ops...)
}

// committed runs once a round's commit has landed (or failed).
func (s *Scheduler) committed(rec *queue.Record, reports []bounce.Report, removed, retry bool, err error) {
	switch {
	case err != nil:
		s.log.Error(rec.ID + ": cannot update queue: " + err.Error())
		for _, rep := range reports {
			s.config().Cleanup.Abandon(rep.Prepared)
		}
	default:
		for _, rep := range reports {
			s.log.Info(rec.ID+": "+rep.What+": "+rep.Rec.ID, maillog.Program("bounce"))
			s.config().Cleanup.Queued(rep.Prepared)
		}
		if removed {
			s.log.Info(rec.ID + ": removed")
		}
	}
	s.deactivate(rec.ID)
	if retry {
		s.Wake() // the scanner's timer may be later than this retry
	}
}

// limitKey names the destination a batch goes to, whose concurrency
// limit and rate delay it is under (destRule): an mbox or file, a remote
// nexthop; "" is no limit (Maildir needs no lock unless
// local_destination_rate_delay is set, commands and pseudo-transports
// none).
func (s *Scheduler) limitKey(rt deliver.Route) string {
	switch {
	case rt.Kind == deliver.Local && strings.HasSuffix(rt.Mailbox, "/"):
		if s.config().LocalRateDelay > 0 {
			return rt.Dest
		}
		return ""
	case rt.Kind == deliver.Local || rt.Kind == deliver.File:
		return rt.Dest
	case rt.Kind.Remote():
		return "remote " + rt.Dest
	}
	return ""
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// backoff is Postfix's: the wait doubles per try from minimal to maximal
// backoff, with up to 10% jitter so messages deferred together spread out.
func (s *Scheduler) backoff(tries int) time.Duration {
	d := s.config().MinBackoff
	for i := 1; i < tries && d < s.config().MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, s.config().MaxBackoff)
	if d > 0 {
		d += time.Duration(rand.Int64N(int64(d)/10 + 1))
	}
	return d
}

// logDelivery writes Postfix's delivery line:
// ID: to=<..>, orig_to=<..>, relay=local, delay=0.12, delays=a/b/c/d, dsn=2.0.0, status=sent (...)
func (s *Scheduler) logDelivery(rec *queue.Record, r *queue.Rcpt, kind deliver.Kind, relay string, j *job, start, end time.Time, st deliver.Status, state string) {
	var b strings.Builder
	b.WriteString(rec.ID + ": to=<" + r.Addr + ">")
	if r.Orig != "" && r.Orig != r.Addr {
		b.WriteString(", orig_to=<" + r.Orig + ">")
	}
	f := func(d time.Duration) string { return strconv.FormatFloat(max(d.Seconds(), 0), 'f', 2, 64) }
	b.WriteString(", relay=" + relay + ", delay=" + f(end.Sub(rec.Arrival)) +
		", delays=" + f(j.activated.Sub(rec.Arrival)) + "/" + f(start.Sub(j.activated)) + "/0/" + f(end.Sub(start)) +
		", dsn=" + st.Enhanced + ", status=" + state + " (" + st.Text + ")")
	s.log.Info(b.String(), maillog.Delivery(kind.String()))
	s.countDelivery()
}

// bounceConfig is the reports' part of the configuration.
func (s *Scheduler) bounceConfig() *bounce.Config {
	c := s.config()
	return &bounce.Config{Hostname: c.Hostname, MaxLifetime: c.MaxLifetime, NotifyClasses: c.NotifyClasses, NotifyRecipient: c.NotifyRecipient}
}
