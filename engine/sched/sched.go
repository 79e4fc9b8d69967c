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
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/larkpost/larkpost/engine/cleanup"
	"github.com/larkpost/larkpost/engine/deliver"
	"github.com/larkpost/larkpost/queue"
)

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
	SoftBounce        bool
	RemoteConcurrency int      // default_destination_concurrency_limit
	NotifyClasses     []string // notify_classes
	NotifyRecipient   string   // notify_recipient
	// The rate delays (Postfix's transport_destination_rate_delay, one
	// per transport as in master.cf; 0 is off): with a delay d > 0 a
	// destination takes one delivery at a time, and the next starts d
	// after the previous one ended, as in Postfix's qmgr. A destination
	// is a nexthop for smtp and lmtp (as with Postfix's recipient limit
	// above 1) and a mailbox or file for local (Postfix's local recipient
	// limit of 1). Pipe commands have none.
	SMTPRateDelay  time.Duration // smtp_destination_rate_delay (relay: routes are smtp)
	LMTPRateDelay  time.Duration // lmtp_destination_rate_delay
	LocalRateDelay time.Duration // local_destination_rate_delay: mbox, Maildir and file deliveries
	// Agents deliver, by transport; a transport without one defers.
	Agents map[deliver.Kind]deliver.Agent
	// Cleanup queues the messages delivery makes: bounces, DSNs,
	// forwards and vacation replies.
	Cleanup *cleanup.Cleanup
	// QueueDir is where the queue lives: a local delivery to a mailbox on
	// the same file system waits while that is short of space, so that
	// mailboxes cannot take the room the queue keeps for itself.
	QueueDir string
	// Events, when set, gets each round's delivery results once they are
	// on disk. It must not block: delivery waits for it.
	Events func([]Event)
	// Observe, when set, is told each recipient's delivery result as it
	// is recorded (metrics, the web page's feed). It must be quick and
	// must not block.
	Observe func(Observed)
}

// config is the current configuration (see SetConfig).
func (s *Scheduler) config() *Config { return s.cfg.Load() }

// SetConfig applies a reloaded configuration to deliveries from now on.
// Workers and ActiveLimit keep their values from the start (they size
// goroutines and channels), and so do Agents, Cleanup and QueueDir when
// cfg leaves them unset. Changed limits and rate delays apply to the
// rounds already waiting for a destination too: a delay set to 0
// resumes them at once. Dead destinations are revived.
func (s *Scheduler) SetConfig(cfg Config) {
	old := s.config()
	cfg.Workers, cfg.ActiveLimit = s.start.Workers, s.start.ActiveLimit
	if cfg.Agents == nil {
		cfg.Agents = old.Agents
	}
	if cfg.Cleanup == nil {
		cfg.Cleanup = old.Cleanup
	}
	if cfg.Events == nil {
		cfg.Events = old.Events
	}
	if cfg.Observe == nil {
		cfg.Observe = old.Observe
	}
	if cfg.QueueDir == "" {
		cfg.QueueDir = old.QueueDir
	}
	if cfg.DestConcurrency <= 0 {
		cfg.DestConcurrency = old.DestConcurrency
	}
	s.cfg.Store(&cfg)
	s.recheckDests()
	// A reload is the admin's "try again now", as with Postfix's: the
	// fix may well be in the new configuration.
	s.ReviveDestinations()
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
	q      *queue.Queue
	cfg    atomic.Pointer[Config] // replaced on reload (SetConfig)
	start  Config                 // Workers and ActiveLimit: fixed at start
	refill int                    // room in the active set that wakes the scanner (see deactivate)
	route  func(r *queue.Rcpt, m *Message) deliver.Route
	log    *slog.Logger

	mu       sync.Mutex
	active   map[string]bool
	reserved map[string]bool // records the admin is changing: not to be delivered meanwhile
	dests    map[string]*destSem
	resume   chan *round  // rounds whose destination slot was freed for them
	parked   atomic.Int64 // rounds waiting for a slot or in resume
	halted   bool         // Stop was called: no more rate-delayed deliveries
	overflow bool         // a message waits in the queue for room in the active set
	paused   atomic.Bool  // the queue file system is too full to record results
	dead     deadCache    // destinations not to be tried for a while, with their own lock

	queueDevOnce sync.Once
	queueDev     uint64
	queueDevOK   bool
	rate         [60]struct {
		sec int64
		n   int
	} // deliveries per second, a ring over the last minute

	jobs     chan *job
	wake     chan struct{}
	stop     chan struct{}
	stopOnce sync.Once
	stopped  sync.WaitGroup
	ctx      context.Context
	cancel   context.CancelFunc
}

// job is a message in the active set: its record only. The body is opened
// when a worker delivers it, so the active set costs metadata, not mail.
type job struct {
	rec       *queue.Record
	due       time.Time // the schedule entry to replace
	activated time.Time
}

// New returns a scheduler for q. route decides each recipient's transport.
func New(q *queue.Queue, cfg Config, route func(r *queue.Rcpt, m *Message) deliver.Route, log *slog.Logger) *Scheduler {
	if cfg.Workers <= 0 {
		cfg.Workers = 20
	}
	if cfg.ActiveLimit <= 0 {
		cfg.ActiveLimit = 20000
	}
	if cfg.DestConcurrency <= 0 {
		cfg.DestConcurrency = 2
	}
	s := &Scheduler{q: q, start: cfg, route: route, log: log, active: map[string]bool{}, reserved: map[string]bool{}, dests: map[string]*destSem{},
		resume: make(chan *round, cfg.ActiveLimit),
		jobs:   make(chan *job, cfg.ActiveLimit), wake: make(chan struct{}, 1), stop: make(chan struct{})}
	s.refill = max(1, min(512, cfg.ActiveLimit/16))
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
// started stay due in the queue and are not counted as attempts, and so
// do the recipients of messages waiting for a destination's rate delay
// (see halt). A second Stop only waits.
func (s *Scheduler) Stop(ctx context.Context) {
	s.stopOnce.Do(func() {
		close(s.stop)
		s.halt()
	})
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
	if !s.activateClaimed(rec.ID) {
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

// activateClaimed ends the claim made before the write (Claim) and
// activates id, under one lock: this runs once per queued message.
func (s *Scheduler) activateClaimed(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.reserved, id)
	if s.active[id] || len(s.active) >= s.start.ActiveLimit {
		return false
	}
	s.active[id] = true
	return true
}

func (s *Scheduler) activate(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active[id] || s.reserved[id] || len(s.active) >= s.start.ActiveLimit {
		return false
	}
	s.active[id] = true
	return true
}

// deactivate ends a message's time in the active set. The scanner is
// woken only when messages wait for room, and only once refill messages
// have left: a scan for each one that left cost two walks of the index
// per message (the due entries and a flush's), and at a million queued
// messages the drain ran at 77% of an empty queue's pace. The active set
// still holds the rest, ActiveLimit - refill messages, for the workers.
func (s *Scheduler) deactivate(id string) {
	s.mu.Lock()
	delete(s.active, id)
	wake := s.overflow && s.start.ActiveLimit-len(s.active) >= s.refill
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

// delivering reports a message in the active set (not one merely
// reserved): a flush's walk passes over it, since its round writes its
// next entry, but waits for a reserved one.
func (s *Scheduler) delivering(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active[id]
}

// isReserved reports a message held by Reserve or Claim (never also in
// the active set: each refuses the other).
func (s *Scheduler) isReserved(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reserved[id]
}

func (s *Scheduler) isActive(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active[id] || s.reserved[id]
}

// Reserve keeps id out of delivery while the admin's change to its record
// is on its way to disk; false when it is being delivered right now (the
// change would race with the delivery's own update).
func (s *Scheduler) Reserve(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active[id] || s.reserved[id] {
		return false
	}
	s.reserved[id] = true
	return true
}

// Claim keeps the scanner off a message about to be written and then
// handed over with Submit, which ends the claim (Unreserve ends it when
// the write fails): a scan between the write and the hand-over would
// otherwise deliver the message, and the hand-over deliver it again.
func (s *Scheduler) Claim(id string) {
	s.mu.Lock()
	s.reserved[id] = true
	s.mu.Unlock()
}

// Unreserve gives the ids back to delivery, and wakes a scanner that
// stopped at one of them.
func (s *Scheduler) Unreserve(ids ...string) {
	s.mu.Lock()
	for _, id := range ids {
		delete(s.reserved, id)
	}
	wake := s.overflow && len(ids) > 0
	s.mu.Unlock()
	if wake {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// scanner loads due messages into the active set, then sleeps until the
// next due time or until room frees up.
func (s *Scheduler) scanner() {
	defer s.stopped.Done()
	// While messages wait for room, each delivery that ends wakes the
	// scanner for one more; a scan from the start would walk over every
	// message in the active set (and the deleted entries of delivered
	// ones) to find it: with 20,000 active, a draining million-message
	// queue spent its time there. So a scan that stopped at its limit is
	// resumed where it stopped, and the index is walked from the start
	// again when a resumed scan runs out or a second has passed: entries
	// written meanwhile with an earlier due time (a flush, a release) are
	// found then.
	var resume *queue.DueEntry
	var fullScan time.Time
	// A walk "from the start" begins at floor, the first entry the last
	// one met, or earlier where the queue saw an entry written since
	// (TakeLowDue): the deleted entries of delivered messages lie before
	// it, and after a large flush a walk from the index's head stepped
	// over hundreds of thousands of them every second.
	var floor time.Time
	haveFloor := false
	// A flush of the whole queue (queue.FlushMark) is a walk of its own
	// over the index, from markFrom on, taking what was waiting when the
	// flush was asked; it ends at the index's end.
	var mark uint64
	var markFrom *queue.DueEntry
	var markHeld []queue.DueEntry // passed while an admin held them
	for {
		s.mu.Lock()
		room := s.start.ActiveLimit - len(s.active)
		s.overflow = room <= 0 // full: the next message to leave makes room
		s.mu.Unlock()
		if !s.canRecord() {
			room = 0 // no delivery that could not be recorded: it would be repeated
		}
		if room > 0 {
			now := time.Now()
			if resume != nil && now.Sub(fullScan) >= rescanEvery {
				resume = nil
			}
			if resume == nil {
				fullScan = now
			}
			resumed := resume != nil
			var due []queue.DueEntry
			var err error
			if resumed {
				due, err = s.q.DueAfter(now, room, s.isActive, resume)
			} else {
				start := time.Unix(0, 0)
				if haveFloor {
					start = floor
				}
				if low, ok := s.q.TakeLowDue(); ok && low.Before(start) {
					start = low
				}
				due, floor, err = s.q.DueFrom(start, now, room, s.isActive)
				haveFloor = err == nil
			}
			if err != nil {
				s.log.Error("queue scan: " + err.Error())
			}
			resume = nil
			if len(due) >= room {
				resume = &due[len(due)-1]
				// The scan stopped at the active limit: more may be due
				// now, which NextDueWithin (due after now) does not see. Scan
				// again as soon as a message leaves the active set, not a
				// minute later (a flushed backlog drained 20,000 a minute).
				s.setOverflow()
			}
			if taken, ok := s.take(due); !ok {
				return
			} else if taken < len(due) {
				// The rest of this scan was not taken: resume before it.
				resume = nil
				if taken > 0 {
					resume = &due[taken-1]
				}
			} else if resumed && len(due) < room && err == nil {
				// The resumed walk ran out: walk from the start before
				// sleeping, for what it passed over (the wake-up for it
				// was spent on the resumed walk).
				continue
			}
			if m := s.q.FlushMark(); m != mark {
				mark, markFrom, markHeld = m, nil, nil // a new flush: from the head
			}
			if mark != 0 && len(due) < room {
				more, ok := s.takeMarked(mark, &markFrom, &markHeld, room-len(due))
				if !ok {
					return
				}
				if more {
					continue
				}
			}
		}
		wait := time.Minute
		s.mu.Lock()
		full := s.overflow && len(s.active) >= s.start.ActiveLimit
		s.mu.Unlock()
		// With the active set full nothing can be taken before a message
		// leaves it, which wakes the scanner (overflow is set): the next
		// due time does not matter then.
		if !full {
			if next, ok := s.q.NextDueWithin(time.Now(), time.Minute); ok {
				wait = max(time.Until(next), 0)
			}
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

// take activates the due messages and hands them to the workers, up to
// the first that cannot be activated (the active set is full, or the
// message is reserved); it returns how many it went through, and false
// when the scheduler is stopping.
func (s *Scheduler) take(due []queue.DueEntry) (int, bool) {
	for i, d := range due {
		if !s.activate(d.ID) {
			s.setOverflow()
			return i, true
		}
		rec, listed, err := s.q.LoadListed(d.ID, d.Due)
		if err != nil {
			s.log.Warn("queue: " + err.Error())
			s.deactivate(d.ID)
			continue
		}
		if stale(rec, d.Due, listed) {
			// Listed before a round that was in flight moved its
			// entry: the record's own entry comes up in its time.
			// Taking it now would ignore the backoff and leave
			// that entry behind.
			s.deactivate(d.ID)
			continue
		}
		// A flush moves the entry and not the record: the round
		// reschedules from the entry it was taken at.
		rec.NextTry = d.Due
		select {
		case s.jobs <- &job{rec: rec, due: d.Due, activated: time.Now()}:
		case <-s.stop:
			s.deactivate(d.ID)
			return i, false
		}
	}
	return len(due), true
}

// takeMarked takes up to room messages that the flush of mark made due,
// walking on from *from; it reports whether the walk should go on at once
// (it stopped at its budget of keys with room left), and false for ok
// when the scheduler is stopping. Messages an admin holds for a change
// (Reserve) are passed and kept in *held, to be taken when the walk has
// reached the index's end and they are let go: only then is the flush
// over.
func (s *Scheduler) takeMarked(mark uint64, from **queue.DueEntry, held *[]queue.DueEntry, room int) (more, ok bool) {
	due, last, done, err := s.q.Marked(*from, mark, room, markBudget, s.delivering)
	if err != nil {
		s.log.Error("queue scan: " + err.Error())
		return false, true
	}
	full := len(due) >= room
	if done && !full {
		// The end: the held ones come last, those let go by now.
		var still []queue.DueEntry
		for _, d := range *held {
			switch {
			case s.isReserved(d.ID):
				still = append(still, d)
			case s.delivering(d.ID):
				// Taken since by a walk for due entries: its round
				// writes its next entry (or removes it).
			default:
				due = append(due, d)
			}
		}
		*held = still
	}
	free := due[:0:0]
	for _, d := range due {
		if s.isReserved(d.ID) {
			*held = append(*held, d)
			continue
		}
		free = append(free, d)
	}
	taken, ok := s.take(free)
	if !ok {
		return false, false
	}
	*from = last
	switch {
	case taken < len(free):
		// The active set filled up meanwhile: the rest waits with the
		// held ones.
		*held = append(*held, free[taken:]...)
		s.setOverflow()
		return false, true
	case full:
		s.setOverflow() // more may wait: scan as soon as room frees up
		return false, true
	case !done:
		return true, true
	case len(*held) > 0:
		s.setOverflow() // Unreserve wakes the scanner for them
		return false, true
	}
	if err := s.q.ClearFlushMark(mark); err != nil {
		s.log.Error("queue: " + err.Error())
		return false, true
	}
	s.log.Info("queue: flush done")
	return false, true
}

// markBudget bounds the keys one walk under a flush mark looks at, so
// that a walk over entries written since the flush (not to be taken)
// does not hold the scanner.
const markBudget = 10000

// rescanEvery bounds how long the scanner resumes its walks of the
// schedule index before it starts one from the beginning again.
const rescanEvery = time.Second

// stale reports a schedule entry that no longer belongs to the record:
// gone from the index, or at neither of the record's two places (its
// NextTry, or where a flush puts it).
func stale(rec *queue.Record, due time.Time, listed bool) bool {
	scheduled := rec.State == queue.Active || rec.State == queue.Deferred
	mine := rec.NextTry.Equal(due) || queue.FlushedDue(rec.ID).Equal(due)
	return !scheduled || !listed || !mine
}

func (s *Scheduler) worker() {
	defer s.stopped.Done()
	for {
		// A round whose destination has room again comes first: its
		// message is half delivered.
		select {
		case r := <-s.resume:
			s.step(r)
			continue
		default:
		}
		select {
		case <-s.stop:
			// Parked rounds are deliveries in progress: finish them.
			if s.parked.Load() == 0 {
				return
			}
			select {
			case r := <-s.resume:
				s.step(r)
			case <-time.After(10 * time.Millisecond):
			}
		case r := <-s.resume:
			s.step(r)
		case j := <-s.jobs:
			s.deliver(j)
		}
	}
}
