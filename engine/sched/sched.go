// Package sched is larkpost's queue manager (Postfix's qmgr): it takes due
// messages from the queue into a bounded active set, hands each recipient
// to its delivery agent, and writes the outcome back: done, deferred with
// exponential backoff, bounced with a DSN to the sender, or held.
//
// Deferred messages are rows in the queue's schedule index, not sleeping
// goroutines: one scanner wakes at the earliest due time.
package sched

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/larkpost/larkpost/engine/bounce"
	"github.com/larkpost/larkpost/engine/cleanup"
	"github.com/larkpost/larkpost/engine/deliver/local"
	smtpc "github.com/larkpost/larkpost/engine/deliver/smtp"
	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
)

// Route says how to deliver one recipient.
type Route struct {
	Transport string            // "local", "file", "pipe", "smtp", "lmtp", "hold", "error", "defer", "discard"
	Mailbox   string            // local: Maildir ("/" at the end) or mbox path; file: path; pipe: shell command
	Argv      []string          // pipe transport: the command words, run without a shell, macros not yet filled in
	Vars      map[string]string // pipe transport: the macro values from the recipient (${sender} comes from the envelope)
	// AllowMinUser lets addresses starting with "-" reach a pipe command
	// (allow_min_user, read from the policy at each delivery).
	AllowMinUser bool
	Remote       *smtpc.Destination
	Filing       *rules.Filing // local: what the file step decided (nil: the inbox)
	Dest         string        // concurrency and grouping key: the mailbox, or transport:nexthop
	Status       string        // error and defer: the enhanced status
	Text         string        // error, defer and hold: why
	Source       string        // what chose the transport: a script line, a table entry, "default policy"
}

// Config holds the scheduler's settings (Postfix's names in comments).
type Config struct {
	Hostname          string
	MinBackoff        time.Duration // minimal_backoff_time
	MaxBackoff        time.Duration // maximal_backoff_time
	MaxLifetime       time.Duration // maximal_queue_lifetime
	BounceLifetime    time.Duration // bounce_queue_lifetime
	DelayWarning      time.Duration // delay_warning_time, 0 = off
	Workers           int           // concurrent deliveries
	ActiveLimit       int           // qmgr_message_active_limit
	DestConcurrency   int           // local_destination_concurrency_limit
	MailboxSizeLimit  int64
	SoftBounce        bool
	CommandTimeLimit  time.Duration // command_time_limit for alias pipes
	DefaultPrivs      string        // user alias pipes run as when root
	RemoteConcurrency int           // default_destination_concurrency_limit
	NotifyClasses     []string      // notify_classes
	NotifyRecipient   string        // notify_recipient
	Remote            *smtpc.Client // the smtp and lmtp agents
	// Cleanup queues the messages delivery makes: bounces, DSNs,
	// forwards and vacation replies.
	Cleanup *cleanup.Cleanup
	// QueueDir is where the queue lives: a local delivery to a mailbox on
	// the same file system waits while that is short of space, so that
	// mailboxes cannot take the room the queue keeps for itself.
	QueueDir string
}

// config is the current configuration (see SetConfig).
func (s *Scheduler) config() *Config { return s.cfg.Load() }

// SetConfig applies a reloaded configuration to deliveries from now on.
// Workers and ActiveLimit keep their values from the start (they size
// goroutines and channels), and so do Remote and QueueDir when cfg leaves
// them unset.
func (s *Scheduler) SetConfig(cfg Config) {
	old := s.config()
	cfg.Workers, cfg.ActiveLimit = s.start.Workers, s.start.ActiveLimit
	if cfg.Remote == nil {
		cfg.Remote = old.Remote
	}
	if cfg.Cleanup == nil {
		cfg.Cleanup = old.Cleanup
	}
	if cfg.QueueDir == "" {
		cfg.QueueDir = old.QueueDir
	}
	if cfg.DestConcurrency <= 0 {
		cfg.DestConcurrency = old.DestConcurrency
	}
	s.cfg.Store(&cfg)
}

// Message is the content of the message being delivered, read lazily: a
// route or file hook needs its head, an agent streams the whole of it.
type Message struct {
	ID   string // the queue id; "" for a message that is not queued (trace)
	body *queue.Body
	head []byte
}

// NewMessage wraps bytes held in memory (for trace and tests).
func NewMessage(b []byte) *Message { return &Message{body: queue.NewBody(b)} }

// Size is the message size.
func (m *Message) Size() int64 { return m.body.Size() }

// Head returns the first n bytes (or fewer): the header and the start of
// the body that hooks see. It is read once per delivery round.
func (m *Message) Head(n int64) []byte {
	n = min(n, m.body.Size())
	if int64(len(m.head)) < n {
		m.head, _ = m.body.Head(n)
	}
	return m.head[:min(n, int64(len(m.head)))]
}

// Scheduler delivers what is in the queue.
type Scheduler struct {
	q     *queue.Queue
	cfg   atomic.Pointer[Config] // replaced on reload (SetConfig)
	start Config                 // Workers and ActiveLimit: fixed at start
	route func(r *queue.Rcpt, m *Message) Route
	log   *slog.Logger

	mu       sync.Mutex
	active   map[string]bool
	dests    map[string]*destSem
	overflow bool        // a message waits in the queue for room in the active set
	paused   atomic.Bool // the queue file system is too full to record results

	queueDevOnce sync.Once
	queueDev     uint64
	queueDevOK   bool
	rate         [60]struct {
		sec int64
		n   int
	} // deliveries per second, a ring over the last minute

	jobs    chan *job
	wake    chan struct{}
	stop    chan struct{}
	stopped sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc
}

// job is a message in the active set: its record only. The body is opened
// when a worker delivers it, so the active set costs metadata, not mail.
type job struct {
	rec       *queue.Record
	due       time.Time // the schedule entry to replace
	activated time.Time
}

// New returns a scheduler for q. route decides each recipient's transport.
func New(q *queue.Queue, cfg Config, route func(r *queue.Rcpt, m *Message) Route, log *slog.Logger) *Scheduler {
	if cfg.Workers <= 0 {
		cfg.Workers = 20
	}
	if cfg.ActiveLimit <= 0 {
		cfg.ActiveLimit = 20000
	}
	if cfg.DestConcurrency <= 0 {
		cfg.DestConcurrency = 2
	}
	s := &Scheduler{q: q, start: cfg, route: route, log: log, active: map[string]bool{}, dests: map[string]*destSem{},
		jobs: make(chan *job, cfg.ActiveLimit), wake: make(chan struct{}, 1), stop: make(chan struct{})}
	s.cfg.Store(&cfg)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// Start runs the scanner and the delivery workers. Everything in the queue
// that is due, including what was active when the process died, is
// picked up by the first scan.
func (s *Scheduler) Start() {
	s.stopped.Add(1 + s.start.Workers)
	go s.scanner()
	for i := 0; i < s.start.Workers; i++ {
		go s.worker()
	}
}

// Stop lets deliveries in progress finish, then returns; messages not yet
// started stay due in the queue and are not counted as attempts.
func (s *Scheduler) Stop(ctx context.Context) {
	close(s.stop)
	done := make(chan struct{})
	go func() { s.stopped.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.cancel()
		<-done
	}
}

// Submit hands a just-enqueued message to the active set without reading
// its record back from disk. When the active set is full it stays in the
// queue for the scanner.
func (s *Scheduler) Submit(rec *queue.Record) {
	if !s.activate(rec.ID) {
		s.setOverflow()
		return
	}
	select {
	case s.jobs <- &job{rec: rec, due: rec.NextTry, activated: time.Now()}:
	default:
		s.deactivate(rec.ID)
		s.setOverflow()
	}
}

// Wake makes the scanner look at the queue now: after a deferral moved a
// message's due time, or when something outside the scheduler queued mail.
func (s *Scheduler) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Scheduler) setOverflow() {
	s.mu.Lock()
	s.overflow = true
	s.mu.Unlock()
}

func (s *Scheduler) activate(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active[id] || len(s.active) >= s.start.ActiveLimit {
		return false
	}
	s.active[id] = true
	return true
}

// deactivate ends a message's time in the active set. The scanner is
// woken only when messages wait for room: rescanning after every delivery
// would cost a walk over the schedule index per message.
func (s *Scheduler) deactivate(id string) {
	s.mu.Lock()
	delete(s.active, id)
	wake := s.overflow
	s.mu.Unlock()
	if wake {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// IsActive reports whether a message is being delivered right now; the
// control commands leave such messages alone.
func (s *Scheduler) IsActive(id string) bool { return s.isActive(id) }

// Rate returns deliveries (sent, bounced or deferred recipients) per
// second over the last minute.
func (s *Scheduler) Rate() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now().Unix()
	n := 0
	for _, b := range s.rate {
		if now-b.sec < 60 {
			n += b.n
		}
	}
	return float64(n) / 60
}

func (s *Scheduler) countDelivery() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now().Unix()
	b := &s.rate[now%60]
	if b.sec != now {
		b.sec, b.n = now, 0
	}
	b.n++
}

func (s *Scheduler) isActive(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active[id]
}

// scanner loads due messages into the active set, then sleeps until the
// next due time or until room frees up.
func (s *Scheduler) scanner() {
	defer s.stopped.Done()
	for {
		s.mu.Lock()
		room := s.start.ActiveLimit - len(s.active)
		s.overflow = false
		s.mu.Unlock()
		if !s.canRecord() {
			room = 0 // no delivery that could not be recorded: it would be repeated
		}
		if room > 0 {
			due, err := s.q.Due(time.Now(), room, s.isActive)
			if err != nil {
				s.log.Error("queue scan: " + err.Error())
			}
			for _, d := range due {
				if !s.activate(d.ID) {
					s.setOverflow()
					break
				}
				rec, err := s.q.Load(d.ID, d.Due)
				if err != nil {
					s.log.Warn("queue: " + err.Error())
					s.deactivate(d.ID)
					continue
				}
				select {
				case s.jobs <- &job{rec: rec, due: d.Due, activated: time.Now()}:
				case <-s.stop:
					s.deactivate(d.ID)
					return
				}
			}
		}
		wait := time.Minute
		if next, ok := s.q.NextDue(time.Now()); ok {
			wait = min(max(time.Until(next), 0), time.Minute)
		}
		if !s.canRecord() {
			wait = min(wait, 5*time.Second)
		}
		t := time.NewTimer(wait)
		select {
		case <-s.stop:
			t.Stop()
			return
		case <-s.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

func (s *Scheduler) worker() {
	defer s.stopped.Done()
	for {
		select {
		case <-s.stop:
			return
		case j := <-s.jobs:
			s.deliver(j)
		}
	}
}

// destSlot bounds concurrent deliveries to one destination (a mailbox):
// two writers on one mbox only wait for each other's lock. It blocks until
// a slot is free and returns the function that frees it.
func (s *Scheduler) destSlot(dest string) func() { return s.slot(dest, s.config().DestConcurrency) }

// slot takes one of n slots of key. A key's semaphore lives while anyone
// holds or waits for it, so the map does not grow with every destination
// ever seen.
func (s *Scheduler) slot(key string, n int) func() {
	s.mu.Lock()
	d, ok := s.dests[key]
	if !ok {
		d = &destSem{c: make(chan struct{}, n)}
		s.dests[key] = d
	}
	d.users++
	s.mu.Unlock()
	d.c <- struct{}{}
	return func() {
		<-d.c
		s.mu.Lock()
		if d.users--; d.users == 0 {
			delete(s.dests, key)
		}
		s.mu.Unlock()
	}
}

// destSem is one destination's concurrency limit.
type destSem struct {
	c     chan struct{}
	users int // holding or waiting
}

// deliver runs one delivery round for a message and commits its outcome.
func (s *Scheduler) deliver(j *job) {
	rec := j.rec
	now := time.Now()
	if !s.canRecord() {
		s.deactivate(rec.ID) // the scanner takes it again when there is room
		return
	}
	body, err := s.q.OpenBody(rec)
	if errors.Is(err, queue.ErrNotFound) {
		// The record names content that is gone: keep the record for the
		// admin, never retry it.
		s.log.Error(rec.ID + ": queue file is damaged, moved aside: " + err.Error())
		if op, err := queue.MarkCorruptOp(rec, j.due); err == nil {
			s.q.CommitAsync(64, func(error) { s.deactivate(rec.ID) }, op)
			return
		}
		s.deactivate(rec.ID)
		return
	}
	var msg *Message
	if err == nil {
		defer body.Close()
		msg = &Message{ID: rec.ID, body: body}
	} else {
		s.log.Warn(rec.ID + ": cannot read queue file: " + err.Error())
	}
	var bounced, delivered, relayed []int
	held := ""
	type group struct {
		rt  Route
		idx []int
	}
	var groups []*group
	byDest := map[string]*group{}
	boxes := map[string]string{} // mailbox (and folder) -> the recipient delivered there this round
	record := func(i int, relay string, start time.Time, res local.Result) {
		r := &rec.Rcpts[i]
		if !res.OK() && !res.Temporary() && s.config().SoftBounce {
			res.Status = "4" + res.Status[1:]
			res.Text += " (soft_bounce)"
		}
		end := time.Now()
		r.AddAttempt(queue.Attempt{Time: end, Relay: relay, Status: res.Status, Reply: res.Text})
		state := "deferred"
		switch {
		case res.OK():
			r.State, state = queue.Sent, "sent"
			delivered = append(delivered, i)
		case !res.Temporary():
			r.State, state = queue.Bounced, "bounced"
			bounced = append(bounced, i)
		}
		s.logDelivery(rec, r, relay, j, start, end, res, state)
	}
	for _, i := range rec.Pending() {
		r := &rec.Rcpts[i]
		start := time.Now()
		if msg == nil {
			record(i, "none", start, local.Result{Status: "4.3.0", Text: "cannot read the queue file"})
			continue
		}
		rt := s.route(r, msg)
		var res local.Result
		relay := rt.Transport
		switch rt.Transport {
		case "hold":
			held = rt.Text
			continue
		case "smtp", "lmtp":
			// One transaction per destination: collect, deliver below.
			g := byDest[rt.Dest]
			if g == nil {
				g = &group{rt: rt}
				byDest[rt.Dest] = g
				groups = append(groups, g)
			}
			g.idx = append(g.idx, i)
			continue
		case "defer":
			res = local.Result{Status: orDefault(rt.Status, "4.3.5"), Text: rt.Text}
		case "discard":
			res = local.Result{Status: "2.0.0", Text: "discarded"}
		case "error":
			res = local.Result{Status: rt.Status, Text: rt.Text}
		case "local":
			if res, ok := s.roomFor(rt.Mailbox, msg.Size()); !ok {
				record(i, "local", start, res)
				continue
			}
			req := &local.Request{QueueID: rec.ID, Sender: rec.Sender, Rcpt: r.Addr, OrigRcpt: r.Orig,
				Mailbox: rt.Mailbox, Body: msg.body, SizeLimit: s.config().MailboxSizeLimit}
			if f := rt.Filing; f != nil {
				if f.Err != nil {
					s.log.Warn(rec.ID + ": to=<" + r.Addr + ">: filter failed, filed to INBOX: " + f.Err.Error())
				}
				switch {
				case f.Discard:
					record(i, "local", start, local.Result{Status: "2.0.0", Text: "discarded by " + f.Source})
					continue
				case f.Forward != "":
					record(i, "local", start, s.forward(rec, r, f.Forward, msg.body, f.Source))
					continue
				}
				req.Folder = f.Folder
			}
			// local(8) delivers one copy per mailbox: "alice" and
			// alice@other-local-domain in one alias list are one person.
			box := rt.Mailbox + "\x00" + req.Folder
			if first, ok := boxes[box]; ok {
				record(i, "local", start, local.Result{Status: "2.0.0", Text: "duplicate of <" + first + ">, delivered once"})
				continue
			}
			if strings.HasSuffix(rt.Mailbox, "/") {
				// Maildir needs no lock: deliveries to one user run in
				// parallel, bounded only by the worker count.
				res = local.Deliver(req)
			} else {
				release := s.destSlot(rt.Dest)
				res = local.Deliver(req)
				release()
			}
			if res.OK() {
				boxes[box] = r.Addr
			}
		case "file":
			// An alias to a file: appended in mbox format, one writer at a time.
			if res, ok := s.roomFor(rt.Mailbox, msg.Size()); !ok {
				record(i, "file", start, res)
				continue
			}
			release := s.destSlot(rt.Mailbox)
			res = local.Deliver(&local.Request{QueueID: rec.ID, Sender: rec.Sender, Rcpt: r.Orig, OrigRcpt: r.Orig,
				Mailbox: rt.Mailbox, Body: msg.body, SizeLimit: s.config().MailboxSizeLimit})
			release()
		case "pipe":
			rcpt := r.Orig
			if len(rt.Argv) > 0 {
				rcpt = r.Addr
			}
			req, bad, ok := s.pipeRequest(rt, rec.Sender, rcpt, r.Orig)
			if !ok {
				res = bad
				break
			}
			req.Body = msg.body
			res = local.DeliverPipe(req)
		default:
			res = local.Result{Status: "4.3.5", Text: "unknown transport " + rt.Transport}
		}
		record(i, relay, start, res)
		if rt.Filing != nil && rt.Filing.Vacation != nil && res.OK() {
			s.vacation(rec, r, rt.Filing.Vacation, msg)
		}
	}
	var handedOn []int // sent to another smtp server: it owes any success DSN
	for _, g := range groups {
		s.deliverRemote(j, msg, g.rt, g.idx, record, &relayed)
		if g.rt.Transport == "smtp" {
			handedOn = append(handedOn, g.idx...)
		}
	}

	// Expiry: what is still pending after the queue lifetime bounces.
	lifetime := s.config().MaxLifetime
	if rec.Sender == "" {
		lifetime = s.config().BounceLifetime
	}
	pending := rec.Pending()
	if held == "" && len(pending) > 0 && lifetime > 0 && now.Sub(rec.Arrival) >= lifetime {
		for _, i := range pending {
			r := &rec.Rcpts[i]
			last := r.Last()
			r.State = queue.Bounced
			r.AddAttempt(queue.Attempt{Time: now, Status: "5" + strings.TrimPrefix(orDefault(last.Status, "4.4.7"), "4"),
				Reply: "message expired after " + lifetime.String() + ": " + orDefault(last.Reply, "no delivery attempt succeeded")})
			bounced = append(bounced, i)
			if rec.Sender == "" {
				s.log.Info(rec.ID + ": to=<" + r.Addr + ">, status=expired, bounce discarded")
			} else {
				s.log.Info(rec.ID + ": to=<" + r.Addr + ">, status=expired, returned to sender")
			}
		}
		pending = nil
	}

	var ops []queue.Op
	size := 0
	o := bounce.Outcome{Bounced: bounced, Delivered: delivered, HandedOn: handedOn, Relayed: relayed}
	old := j.due
	switch {
	case len(pending) == 0:
		ops = append(ops, queue.RemoveOp(rec.ID, old))
	case held != "":
		rec.State, rec.HoldReason = queue.Hold, held
		s.log.Info(rec.ID + ": hold: " + held)
	default:
		rec.Tries++
		rec.State = queue.Deferred
		rec.NextTry = now.Add(s.backoff(rec.Tries))
		if s.config().DelayWarning > 0 && !rec.DelayWarned && now.Sub(rec.Arrival) >= s.config().DelayWarning {
			rec.DelayWarned = true
			o.Delayed = pending
		}
	}
	var reports []bounce.Report
	if msg != nil {
		reports = bounce.Reports(s.bounceConfig(), s.config().Cleanup, s.log, rec, msg, o, now)
	} else {
		reports = bounce.Reports(s.bounceConfig(), s.config().Cleanup, s.log, rec, nil, o, now)
	}
	for _, r := range reports {
		ops = append(ops, r.Op)
		size += r.Size
	}
	if len(pending) > 0 {
		op, n, err := queue.UpdateOp(rec, old)
		if err != nil {
			s.log.Error(rec.ID + ": " + err.Error())
			s.deactivate(rec.ID)
			return
		}
		ops = append(ops, op)
		size += n
	}
	// The update is committed in the background: nobody waits on it, and
	// the message stays in the active set until it lands, so the scanner
	// cannot pick it up again meanwhile. If the process dies first the
	// message is simply delivered again (at-least-once).
	retry := len(pending) > 0 && held == ""
	s.q.CommitAsync(size, func(err error) {
		if err != nil {
			s.log.Error(rec.ID + ": cannot update queue: " + err.Error())
		} else {
			for _, r := range reports {
				s.log.Info(rec.ID + ": " + r.What + ": " + r.Rec.ID)
				s.config().Cleanup.Queued(r.Prepared)
			}
			if len(pending) == 0 {
				s.log.Info(rec.ID + ": removed")
			}
		}
		s.deactivate(rec.ID)
		if retry {
			s.Wake() // the scanner's timer may be later than this retry
		}
	}, ops...)
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
func (s *Scheduler) logDelivery(rec *queue.Record, r *queue.Rcpt, relay string, j *job, start, end time.Time, res local.Result, state string) {
	var b strings.Builder
	b.WriteString(rec.ID + ": to=<" + r.Addr + ">")
	if r.Orig != "" && r.Orig != r.Addr {
		b.WriteString(", orig_to=<" + r.Orig + ">")
	}
	f := func(d time.Duration) string { return strconv.FormatFloat(max(d.Seconds(), 0), 'f', 2, 64) }
	b.WriteString(", relay=" + relay + ", delay=" + f(end.Sub(rec.Arrival)) +
		", delays=" + f(j.activated.Sub(rec.Arrival)) + "/" + f(start.Sub(j.activated)) + "/0/" + f(end.Sub(start)) +
		", dsn=" + res.Status + ", status=" + state + " (" + res.Text + ")")
	s.log.Info(b.String())
	s.countDelivery()
}

// deliverRemote sends one message to one smtp or lmtp destination for a
// group of recipients, as one transaction.
func (s *Scheduler) deliverRemote(j *job, msg *Message, rt Route, idx []int, record func(int, string, time.Time, local.Result), relayed *[]int) {
	rec := j.rec
	start := time.Now()
	if s.config().Remote == nil || rt.Remote == nil {
		for _, i := range idx {
			record(i, rt.Transport, start, local.Result{Status: "4.3.5", Text: "no " + rt.Transport + " client configured"})
		}
		return
	}
	defer s.remoteSlot(rt.Dest)()
	req := &smtpc.Request{QueueID: rec.ID, Sender: rec.Sender, Body: msg.body, SMTPUTF8: rec.SMTPUTF8, EnvID: rec.EnvID, RetFull: rec.RetFull}
	for _, i := range idx {
		r := rec.Rcpts[i]
		req.Rcpts = append(req.Rcpts, smtpc.Rcpt{Addr: r.Addr, Notify: r.Notify, ORcpt: r.Orig})
	}
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Minute)
	defer cancel()
	results := s.config().Remote.Deliver(ctx, *rt.Remote, req)
	if len(results) > 0 && results[0].Relay != "" && results[0].Relay != "none" {
		// Postfix logs the TLS state of each connection; here once per
		// transaction, so an admin can grep for unverified peers.
		s.log.Info(rec.ID + ": " + rt.Transport + " to " + results[0].Relay + ": TLS " + orDefault(results[0].TLS, "none"))
	}
	for n, i := range idx {
		res := smtpc.Result{Status: "4.3.0", Reply: "no result from the " + rt.Transport + " agent"}
		if n < len(results) {
			res = results[n]
		}
		relay := orDefault(res.Relay, rt.Transport)
		if res.Relayed {
			*relayed = append(*relayed, i)
		}
		record(i, relay, start, local.Result{Status: res.Status, Text: res.Reply})
	}
}

// remoteSlot bounds concurrent deliveries to one remote destination.
func (s *Scheduler) remoteSlot(dest string) func() {
	n := s.config().RemoteConcurrency
	if n <= 0 {
		n = 20
	}
	return s.slot("remote "+dest, n)
}

// bounceConfig is the reports' part of the configuration.
func (s *Scheduler) bounceConfig() *bounce.Config {
	c := s.config()
	return &bounce.Config{Hostname: c.Hostname, MaxLifetime: c.MaxLifetime, NotifyClasses: c.NotifyClasses, NotifyRecipient: c.NotifyRecipient}
}
