// Package queue is larkpost's durable message queue, on Badger.
//
// # Promise
//
// Enqueue returns only after the message's record, body and schedule entry
// are committed in one Badger transaction with SyncWrites on: the SMTP
// server answers 250 after that, so an acknowledged message survives kill -9
// and power loss. Concurrent sessions share fsyncs through group commit:
// one goroutine commits whatever requests are waiting as one transaction
// (one fsync), so throughput grows with concurrency while each request still
// returns only after its own data is synced. Badger's alternative of
// SyncWrites=false plus a coalesced db.Sync() was rejected: Sync covers only
// the current memtable's WAL, so an entry in a memtable that rotated just
// before the Sync is not durable until that memtable is flushed.
//
// # Key layout
//
//	m/<id>                      Record as JSON (envelope, per-recipient state, attempts, decision log)
//	b/<id>                      a message of at most InlineMax bytes, CRLF line endings, exactly as queued
//	h/<id>                      for a larger message: the lines the server added before the
//	                            client's (Received:, prepends, a rewritten header)
//	s/<due: 8 bytes BE unix ns><id>   schedule index: the message is due at that time
//	c/<id>                      a record that could not be decoded (moved aside, kept)
//
// A message is in the schedule index from enqueue until it is done or held;
// taking it into the active set writes nothing, so after a crash every
// message that was being delivered is simply due again (at-least-once
// delivery: a crash between a mailbox write and its queue update can give
// one duplicate, never a loss).
//
// A larger message's bytes are in a file of their own, bodies/<id>
// beside the Badger files: the message is h/<id> followed by that file
// from the record's BodySkip offset. The file is written as the message
// arrives and fsynced, with its directory, before the record commits;
// it is removed after the record. Badger then only ever holds records and
// small messages, in its write-ahead log and tables; its value log stays
// empty.
//
// # Disk space
//
// Badger writes through mmap'd files that it creates sparse, so a full
// file system kills the process with SIGBUS instead of returning an
// error. The queue therefore refuses, with ErrNoSpace, any commit or body
// write that would leave less than Reserve bytes free (updates and
// removals may go lower, to a half and a quarter of it, so that delivery
// can go on and free space).
package queue

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

var (
	prefixRecord   = []byte("m/")
	prefixSchedule = []byte("s/")
	prefixCorrupt  = []byte("c/")
	// prefixHold indexes held messages, which have no schedule entry, so
	// that counting the queue reads keys alone (see Census).
	prefixHold = []byte("o/")
)

// memTableSize is Badger's memtable (and write-ahead log file) size. It
// bounds how much a sparse log file can still demand from the disk (see
// Reserve), and with the caches below the queue's memory: records and
// small bodies need no more (issue 12 measured 70 MB of PSS at 50
// sessions with these, against 100 MB with 8 MiB and twice the caches).
// 2 MiB rather than 4: a memtable's flush builds its table in an
// allocator that doubles from 2 MiB, so a 4 MiB memtable held 14 MiB of
// heap in it (2+4+8) and a 2 MiB one holds 6; peak PSS at 50 sessions
// fell from 65-66 to 50-56 MiB at the same rate (issue 21).
const memTableSize = 2 << 20

// level0Tables is how many memtable flushes wait at level 0 before a
// compaction: four of 2 MiB hold as many bytes as two of 4 MiB did.
const level0Tables = 4

func recordKey(id string) []byte { return append([]byte("m/"), id...) }

// RecordKey is the key of a message's record, for tools and tests that
// inspect or damage the database directly.
func RecordKey(id string) []byte  { return recordKey(id) }
func bodyKey(id string) []byte    { return append([]byte("b/"), id...) }
func prefixKey(id string) []byte  { return append([]byte("h/"), id...) }
func corruptKey(id string) []byte { return append([]byte("c/"), id...) }
func holdKey(id string) []byte    { return append([]byte("o/"), id...) }
func stateKey(key string) []byte  { return append([]byte("v/"), key...) }

func scheduleKey(due time.Time, id string) []byte {
	k := make([]byte, 2+8+len(id))
	copy(k, prefixSchedule)
	binary.BigEndian.PutUint64(k[2:], uint64(due.UnixNano()))
	copy(k[10:], id)
	return k
}

func parseScheduleKey(k []byte) (time.Time, string) {
	return time.Unix(0, int64(binary.BigEndian.Uint64(k[2:10]))), string(k[10:])
}

// Queue is an open queue directory. Badger allows one process per
// directory; the CLI talks to the running server instead of opening it.
type Queue struct {
	dir     string
	db      *badger.DB
	log     *slog.Logger
	bodyDir string
	space   *space
	reqs    chan *commit
	done    chan struct{}
	stopped chan struct{}

	closeOnce sync.Once
	closeErr  error

	observeCommit func(time.Duration, int)

	// lowDue is the earliest due time (unix ns) of the schedule entries
	// committed since the scanner last asked (TakeLowDue); noDue when
	// none was.
	lowDue atomic.Int64

	flushMark atomic.Uint64 // see FlushMark

	beat Beat
}

const noDue = math.MaxInt64

// Op is one change inside a commit.
type Op struct {
	apply   func(txn *badger.Txn) error
	newFile bool     // a body file was created: fsync bodies/ before committing
	sync    *os.File // a body file whose data the commit must fsync first
	unlink  string   // a body file to remove once the commit is durable
	floor   int64    // free space that must remain (see Reserve)
	// The schedule entry the op writes, for lowDue: the record's at its
	// NextTry when it is waiting (read after the commit, as indexNew
	// read it), or a flush's.
	indexes *Record
	flushed time.Time
}

// IsZero reports an Op that was never made.
func (o Op) IsZero() bool { return o.apply == nil }

type commit struct {
	ops  []Op
	size int
	done func(error)
	// waited: someone is blocked on the outcome (Commit); CommitAsync's
	// requests can wait a little for company.
	waited bool
}

// floor is the most free space any of the commit's ops demands.
func (c *commit) floor() int64 {
	var f int64
	for _, op := range c.ops {
		f = max(f, op.floor)
	}
	return f
}

// maxBatchBytes keeps a group commit under Badger's transaction limit
// (15% of the memtable, 307 KiB); values above the value threshold count
// only as pointers.
const maxBatchBytes = 256 << 10

// Options are the less common settings of Open.
type Options struct {
	Log *slog.Logger
	// Statfs reports free space; nil is the real statfs(2). Tests use it
	// to simulate a full disk.
	Statfs Statfs
	// ObserveCommit, when set, is told each durable commit: how long the
	// write and its fsyncs took and how many requests it carried (group
	// commit). It runs on the committer: it must be quick.
	ObserveCommit func(d time.Duration, requests int)
}

// Open opens (creating) the queue in dir.
func Open(dir string, log *slog.Logger) (*Queue, error) {
	return OpenWith(dir, Options{Log: log})
}

// MinOpenSpace is the free space Badger needs to open at all: recovery
// starts a new memtable and a new value log file, and writes their first
// page through mmap.
const MinOpenSpace = 1 << 20

// OpenWith opens (creating) the queue in dir with options.
func OpenWith(dir string, o Options) (*Queue, error) {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	statfs := o.Statfs
	if statfs == nil {
		statfs = realStatfs
	}
	bodyDir := filepath.Join(dir, "bodies")
	if err := os.MkdirAll(bodyDir, 0o700); err != nil {
		return nil, fmt.Errorf("open queue %s: %w", dir, err)
	}
	sp := &space{dir: dir, statfs: statfs}
	releaseBallast(dir, sp, log)
	if free := sp.Free(); free < MinOpenSpace {
		return nil, fmt.Errorf("open queue %s: %w: %d bytes free, Badger needs %d to open", dir, ErrNoSpace, free, MinOpenSpace)
	}
	opts := badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithLogger(badgerLogger{log}).
		WithMemTableSize(memTableSize).
		WithNumMemtables(2).
		WithNumLevelZeroTables(level0Tables).
		WithNumLevelZeroTablesStall(4 * level0Tables).
		WithBlockCacheSize(4 << 20).
		WithIndexCacheSize(2 << 20).
		// Values under 256 KiB (every record and inline body) stay in the
		// LSM tree, so the sparse value log is never written. Badger
		// refuses a threshold above its transaction limit.
		WithValueThreshold(256 << 10).
		WithValueLogFileSize(64 << 20).
		WithNumCompactors(2).
		// Small tables at every level: each table a compaction builds
		// takes an allocator of about twice its size, and Badger keeps
		// up to eight of them between compactions. With the default
		// 2 MiB doubling per level, writing 200,000 messages held 570 MB
		// of heap in them (1 MiB flat: 200 MB, released when idle).
		WithBaseTableSize(1 << 20).
		WithNumGoroutines(2)
	opts.TableSizeMultiplier = 1
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open queue %s: %w", dir, err)
	}
	q := &Queue{dir: dir, db: db, log: log, bodyDir: bodyDir, space: sp, reqs: make(chan *commit, 1024), done: make(chan struct{}), stopped: make(chan struct{}), observeCommit: o.ObserveCommit}
	q.lowDue.Store(noDue)
	q.beat.dev = devOf(dir)
	if err := q.loadFlushMark(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open queue %s: %w", dir, err)
	}
	if err := q.indexHolds(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open queue %s: %w", dir, err)
	}
	if err := q.sweepBodies(); err != nil {
		log.Warn("queue: sweeping body files: " + err.Error())
	}
	q.keepBallast()
	go q.committer()
	go q.gcLoop()
	return q, nil
}

// closeWait bounds how long Close waits for Badger. Badger's Close
// writes the memtable out as a table and retries that forever, once a
// second, when it cannot: a disk that fails or fills, or a queue
// directory taken away under it, left `larkpost serve` deaf to SIGTERM
// (CI found servers still retrying 40 minutes after their test had
// removed the directory). Giving up is safe: every commit was synced to
// the memtable's write-ahead log, which the next Open replays, as after
// a crash.
var closeWait = 30 * time.Second

// ErrCloseTimeout is Close's error when Badger did not finish closing.
var ErrCloseTimeout = errors.New("the database did not finish closing")

// Close finishes pending commits and closes the database, waiting at
// most closeWait for Badger. Close is safe to call more than once.
func (q *Queue) Close() error {
	q.closeOnce.Do(func() {
		close(q.done)
		<-q.stopped
		closed := make(chan error, 1)
		go func() { closed <- q.db.Close() }()
		select {
		case q.closeErr = <-closed:
		case <-time.After(closeWait):
			q.closeErr = fmt.Errorf("close queue %s: %w within %v (see the errors before this); every accepted message is in its synced log, replayed at the next start", q.dir, ErrCloseTimeout, closeWait)
		}
	})
	return q.closeErr
}

// committer is the group commit: it takes every waiting request, up to
// maxBatchBytes, into one synced transaction.
func (q *Queue) committer() {
	defer close(q.stopped)
	for {
		var first *commit
		select {
		case first = <-q.reqs:
		case <-q.done:
			// Drain what was queued before Close.
			for {
				select {
				case c := <-q.reqs:
					q.commitBatch([]*commit{c})
				default:
					return
				}
			}
		}
		batch := []*commit{first}
		size := first.size
		waited := first.waited
	gather:
		for size < maxBatchBytes {
			select {
			case c := <-q.reqs:
				batch = append(batch, c)
				size += c.size
				waited = waited || c.waited
			default:
				break gather
			}
		}
		if !waited && asyncLinger > 0 {
			batch, _ = q.linger(batch, size)
		}
		q.commitBatch(batch)
	}
}

// linger holds a batch that nobody waits for (the scheduler's updates
// after deliveries) for up to asyncLinger, until a request that someone
// waits for arrives or the batch is full, so that the updates share that
// request's fsync instead of each taking one of their own: at one SMTP
// session every delivery's update was a commit between two messages'.
// Only the update is late; the delivery has happened, and a crash
// before the commit repeats it, as it would a moment earlier.
func (q *Queue) linger(batch []*commit, size int) ([]*commit, int) {
	t := time.NewTimer(asyncLinger)
	defer t.Stop()
	for size < maxBatchBytes {
		select {
		case c := <-q.reqs:
			batch = append(batch, c)
			size += c.size
			if c.waited {
				return batch, size
			}
		case <-t.C:
			return batch, size
		case <-q.done:
			return batch, size
		}
	}
	return batch, size
}

// asyncLinger is how long linger holds a batch nobody waits for.
var asyncLinger = 4 * time.Millisecond

func (q *Queue) commitBatch(batch []*commit) {
	// Refuse what would leave Badger without room (see Reserve); the rest
	// of the batch goes on.
	free, need := q.space.Free(), 0
	ok := batch[:0:0]
	for _, c := range batch {
		if free-int64(need+c.size) < c.floor() {
			c.done(fmt.Errorf("%w: %d bytes free on the queue file system", ErrNoSpace, free))
			continue
		}
		need += c.size
		ok = append(ok, c)
	}
	if len(ok) == 0 {
		return
	}
	start := time.Now()
	q.beat.begin()
	defer q.beat.end()
	if batch = q.syncBodies(ok); len(batch) == 0 {
		return
	}
	err := q.apply(batch)
	if q.observeCommit != nil && err == nil {
		q.observeCommit(time.Since(start), len(batch))
	}
	if errors.Is(err, badger.ErrTxnTooBig) && len(batch) > 1 {
		// The size estimate was off: commit one by one instead.
		for _, c := range batch {
			c.done(q.apply([]*commit{c}))
		}
		return
	}
	if err != nil && len(batch) > 1 {
		// One bad request must not fail the others: retry them alone.
		for _, c := range batch {
			c.done(q.apply([]*commit{c}))
		}
		return
	}
	for _, c := range batch {
		c.done(err)
	}
}

// Beat is the rhythm of the queue's commits, for writers that can share
// their journal commits (engine/deliver/maildir).
func (q *Queue) Beat() *Beat { return &q.beat }

func (q *Queue) apply(batch []*commit) error {
	var unlink []string
	newFile := false
	for _, c := range batch {
		for _, op := range c.ops {
			newFile = newFile || op.newFile
			if op.unlink != "" {
				unlink = append(unlink, op.unlink)
			}
		}
	}
	// A record must never name a body whose directory entry a crash
	// could lose: one directory fsync covers every body in the batch.
	if newFile {
		if err := syncDir(q.bodyDir); err != nil {
			return err
		}
	}
	txn := q.db.NewTransaction(true)
	defer txn.Discard()
	for _, c := range batch {
		for _, op := range c.ops {
			if err := op.apply(txn); err != nil {
				return err
			}
		}
	}
	if err := txn.Commit(); err != nil {
		q.space.refresh()
		return err
	}
	// Visible to scans now: tell the scanner before anyone waits on it.
	for _, c := range batch {
		for _, op := range c.ops {
			if r := op.indexes; r != nil && (r.State == Active || r.State == Deferred) {
				q.noteDue(r.NextTry)
			}
			if !op.flushed.IsZero() {
				q.noteDue(op.flushed)
			}
		}
	}
	// The records are gone for good: their body files can go. A crash
	// before this leaves orphans, which the next Open sweeps.
	for _, id := range unlink {
		if err := os.Remove(q.bodyPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
			q.log.Warn("queue: remove body " + id + ": " + err.Error())
		}
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// Commit applies ops atomically and durably; it returns after the fsync.
// size estimates the bytes written, for batching.
func (q *Queue) Commit(ctx context.Context, size int, ops ...Op) error {
	errc := make(chan error, 1)
	c := &commit{ops: ops, size: size, done: func(err error) { errc <- err }, waited: true}
	select {
	case q.reqs <- c:
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once handed over, wait for the outcome even if ctx ends: the
	// caller must know whether the message is on disk.
	return <-errc
}

// CommitAsync queues ops for the next group commit and calls done with
// the outcome (from the committer goroutine: done must not block). The
// scheduler uses it for updates after delivery, so a delivery worker does
// not wait for an fsync that nobody is waiting on.
func (q *Queue) CommitAsync(size int, done func(error), ops ...Op) {
	q.reqs <- &commit{ops: ops, size: size, done: done}
}

// PutOp stores a new message: record, body and its schedule entry.
func PutOp(r *Record, body []byte) (Op, int, error) {
	r.BodyFile = false
	rec, err := encodeRecord(r)
	if err != nil {
		return Op{}, 0, err
	}
	return Op{floor: Reserve, apply: func(txn *badger.Txn) error {
		if err := txn.Set(recordKey(r.ID), rec); err != nil {
			return err
		}
		if err := txn.Set(bodyKey(r.ID), body); err != nil {
			return err
		}
		return indexNew(txn, r)
	}, indexes: r}, len(rec) + len(body) + 64, nil
}

// UpdateOp rewrites a record after a delivery round and moves its
// schedule entry from oldDue to r.NextTry (none when held).
func UpdateOp(r *Record, oldDue time.Time) (Op, int, error) {
	rec, err := encodeRecord(r)
	if err != nil {
		return Op{}, 0, err
	}
	return Op{floor: Reserve / 2, apply: func(txn *badger.Txn) error {
		if err := txn.Set(recordKey(r.ID), rec); err != nil {
			return err
		}
		if err := txn.Delete(scheduleKey(oldDue, r.ID)); err != nil {
			return err
		}
		if r.State != Hold {
			// Usually a key that is not there: a few bytes, cheaper
			// than reading the old record to know.
			if err := txn.Delete(holdKey(r.ID)); err != nil {
				return err
			}
		}
		return indexNew(txn, r)
	}, indexes: r}, len(rec) + 64, nil
}

// noteDue lowers lowDue to t.
func (q *Queue) noteDue(t time.Time) {
	n := t.UnixNano()
	for {
		old := q.lowDue.Load()
		if n >= old || q.lowDue.CompareAndSwap(old, n) {
			return
		}
	}
}

// TakeLowDue returns the earliest due time of the schedule entries
// committed since the last call, and false when there were none. The
// scanner starts its walks of the index at the first entry it found
// last time, or earlier if this says so: the index's head is where
// delivered messages leave their deleted entries, which Badger keeps
// until a compaction reaches the last level and a walk from the start
// steps over one by one (hundreds of thousands after a large flush).
func (q *Queue) TakeLowDue() (time.Time, bool) {
	n := q.lowDue.Swap(noDue)
	if n == noDue {
		return time.Time{}, false
	}
	return time.Unix(0, n), true
}

// FlushedDue is where a flush puts a waiting message's schedule entry:
// the time its id carries, always past, so the entry is due at once. It
// is fixed by the id, so whoever holds the record can find the entry
// without walking the index (Resolve, LoadListed).
func FlushedDue(id string) time.Time {
	t, ok := IDTime(id)
	if !ok {
		return time.Unix(0, 0)
	}
	return t
}

// FlushOp makes a waiting message due at once by moving its schedule
// entry from from (where it is) to FlushedDue, leaving the record as it
// is: a flush by id or by filter writes index keys, about 30 bytes each,
// not records (about 800). The record's NextTry then names the try the
// flush brought forward; Resolve and LoadListed give the entry's time.
// A flush of everything writes nothing per message (MarkFlush).
func FlushOp(id string, from time.Time) Op {
	to := FlushedDue(id)
	return Op{floor: Reserve / 2, apply: func(txn *badger.Txn) error {
		if from.Equal(to) {
			return nil
		}
		// Only an entry that is there moves: one that a delivery round
		// moved meanwhile is that round's, and a second entry would
		// have the message tried twice.
		switch _, err := txn.Get(scheduleKey(from, id)); {
		case errors.Is(err, badger.ErrKeyNotFound):
			return nil
		case err != nil:
			return err
		}
		if err := txn.Delete(scheduleKey(from, id)); err != nil {
			return err
		}
		return txn.Set(scheduleKey(to, id), nil)
	}, flushed: to}
}

// flushed reports whether the record's schedule entry is where a flush
// puts it rather than at its NextTry.
func flushed(txn *badger.Txn, r *Record) bool {
	if r.State != Active && r.State != Deferred {
		return false
	}
	to := FlushedDue(r.ID)
	if r.NextTry.Equal(to) {
		return false
	}
	_, err := txn.Get(scheduleKey(to, r.ID))
	return err == nil
}

// Resolve gives each waiting record that a flush made due the time of
// its schedule entry as NextTry, so that the records an admin lists or
// changes say when they will be tried and where their entry is.
func (q *Queue) Resolve(recs []*Record) error {
	return q.db.View(func(txn *badger.Txn) error {
		for _, r := range recs {
			if r != nil && flushed(txn, r) {
				r.NextTry = FlushedDue(r.ID)
			}
			if r != nil && q.markedFlushed(txn, r) {
				r.Flushed = true
			}
		}
		return nil
	})
}

// RemoveOp deletes a finished message r, and its body file once that is
// committed. A message kept inside Badger has no file to remove: trying
// cost two failing system calls per message (unlink, then rmdir).
func RemoveOp(r *Record, due time.Time) Op {
	id := r.ID
	unlink := ""
	if r.BodyFile {
		unlink = id
	}
	return Op{floor: Reserve / 4, unlink: unlink, apply: func(txn *badger.Txn) error {
		for _, k := range [][]byte{recordKey(id), bodyKey(id), prefixKey(id), scheduleKey(due, id), holdKey(id)} {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		return nil
	}}
}

// MarkCorruptOp moves a message whose body is lost or unreadable aside,
// like a record that does not decode: kept for the admin, never retried.
func MarkCorruptOp(r *Record, due time.Time) (Op, error) {
	rec, err := encodeRecord(r)
	if err != nil {
		return Op{}, err
	}
	return Op{floor: Reserve / 4, apply: func(txn *badger.Txn) error {
		if err := txn.Set(corruptKey(r.ID), rec); err != nil {
			return err
		}
		if err := txn.Delete(recordKey(r.ID)); err != nil {
			return err
		}
		if err := txn.Delete(holdKey(r.ID)); err != nil {
			return err
		}
		return txn.Delete(scheduleKey(due, r.ID))
	}}, nil
}

// Enqueue stores a new message durably.
func (q *Queue) Enqueue(ctx context.Context, r *Record, body []byte) error {
	op, size, err := PutOp(r, body)
	if err != nil {
		return err
	}
	if err := q.Commit(ctx, size, op); err != nil {
		return fmt.Errorf("enqueue %s: %w", r.ID, err)
	}
	return nil
}

// Due lists up to limit messages due at now, oldest due first, skipping
// those for which skip returns true (already active).
func (q *Queue) Due(now time.Time, limit int, skip func(id string) bool) ([]DueEntry, error) {
	return q.DueAfter(now, limit, skip, nil)
}

// DueAfter is Due starting after the entry from (from the start when nil):
// a scan that stopped at its limit resumes there instead of walking again
// over the entries it took, which are still in the index while they are
// delivered, and over the deleted ones before them.
func (q *Queue) DueAfter(now time.Time, limit int, skip func(id string) bool, from *DueEntry) ([]DueEntry, error) {
	if from == nil {
		due, _, err := q.walkDue(prefixSchedule, nil, now, limit, skip)
		return due, err
	}
	k := scheduleKey(from.Due, from.ID)
	due, _, err := q.walkDue(k, k, now, limit, skip)
	return due, err
}

// DueFrom is Due walking the index from start instead of its head. first
// is the due time of the first entry it met (waiting or being
// delivered, due or not), or now when it met none: no entry before it
// was there when the walk began. It is the next walk's start even when
// it lies ahead: the entries a flush's walk takes in index order leave
// their deleted keys before it, and a walk from now stepped over all of
// them at each wake-up (a 200,000-message flush drained at 64% of its
// pace).
func (q *Queue) DueFrom(start, now time.Time, limit int, skip func(id string) bool) ([]DueEntry, time.Time, error) {
	return q.walkDue(scheduleKey(start, ""), nil, now, limit, skip)
}

// walkDue lists the due entries from the key seek on, but for the key
// exclude, and the time of the first entry met (at most now).
func (q *Queue) walkDue(seek, exclude []byte, now time.Time, limit int, skip func(id string) bool) (due []DueEntry, first time.Time, err error) {
	first = now
	seen := false
	err = q.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixSchedule})
		defer it.Close()
		for it.Seek(seek); it.Valid() && len(due) < limit; it.Next() {
			if exclude != nil && bytes.Equal(it.Item().Key(), exclude) {
				continue
			}
			d, id := parseScheduleKey(it.Item().Key())
			if !seen {
				seen, first = true, d
			}
			if d.After(now) {
				break
			}
			if skip != nil && skip(id) {
				continue
			}
			due = append(due, DueEntry{ID: id, Due: d})
		}
		return nil
	})
	return due, first, err
}

// DueEntry is one schedule index entry.
type DueEntry struct {
	ID  string
	Due time.Time
}

// NextDueWithin returns the earliest due time after now and no later
// than now+horizon, for the scheduler's timer (entries due before now
// are found by Due), at a cost bounded by the entries in that window.
// Deleted entries count there too, which matters: a flush or a mass
// deferral deletes entries due later, and Badger keeps their tombstones
// until a compaction reaches the last level; an ordinary seek past them
// walks every one, and the scanner asks after each wake-up (a third of
// the server's CPU while a flushed 200,000-message queue drained).
func (q *Queue) NextDueWithin(now time.Time, horizon time.Duration) (time.Time, bool) {
	var t time.Time
	found := false
	limit := now.Add(horizon)
	q.db.View(func(txn *badger.Txn) error {
		// AllVersions hands over deleted entries instead of skipping them
		// out of sight; each key's newest version comes first and decides.
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixSchedule, AllVersions: true})
		defer it.Close()
		var last []byte
		for it.Seek(scheduleKey(now.Add(time.Nanosecond), "")); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			if last != nil && bytes.Equal(k, last) {
				continue // an older version of a key already decided
			}
			last = append(last[:0], k...)
			due, _ := parseScheduleKey(k)
			if due.After(limit) {
				return nil
			}
			if item.IsDeletedOrExpired() {
				continue
			}
			t, found = due, true
			return nil
		}
		return nil
	})
	return t, found
}

// ErrNotFound is returned for an id the queue does not hold.
var ErrNotFound = errors.New("no such message")

// ErrCorrupt is wrapped when a record cannot be decoded; Load has then
// moved it aside to the corrupt state.
var ErrCorrupt = errors.New("corrupt queue record")

// Load reads a message's record. A record that does not decode is moved
// to c/<id> with its schedule entry removed, so it is never tried again
// and never stops the server. The body is read with OpenBody.
func (q *Queue) Load(id string, due time.Time) (*Record, error) {
	r, _, err := q.LoadListed(id, due)
	return r, err
}

// LoadListed is Load for the scheduler, which found the message at due in
// the schedule index: it also reports whether that entry is still there,
// read in the same view as the record. An entry gone means a delivery
// round moved it after the index was read; the record's own entry comes
// up in its time.
func (q *Queue) LoadListed(id string, due time.Time) (*Record, bool, error) {
	var raw []byte
	listed := false
	err := q.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(recordKey(id))
		if err != nil {
			return err
		}
		if raw, err = item.ValueCopy(nil); err != nil {
			return err
		}
		_, err = txn.Get(scheduleKey(due, id))
		switch {
		case err == nil:
			listed = true
		case !errors.Is(err, badger.ErrKeyNotFound):
			return err
		}
		return nil
	})
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		// A schedule entry without a record: drop the entry.
		q.Commit(context.Background(), 64, Op{apply: func(txn *badger.Txn) error { return txn.Delete(scheduleKey(due, id)) }})
		return nil, false, fmt.Errorf("load %s: %w", id, ErrNotFound)
	case err != nil:
		return nil, false, fmt.Errorf("load %s: %w", id, err)
	}
	r, derr := decodeRecord(id, raw)
	if derr == nil {
		return r, listed, nil
	}
	q.log.Error(id + ": queue record is corrupt, moved aside: " + derr.Error())
	cerr := q.Commit(context.Background(), len(raw)+64, Op{apply: func(txn *badger.Txn) error {
		if err := txn.Set(corruptKey(id), raw); err != nil {
			return err
		}
		if err := txn.Delete(recordKey(id)); err != nil {
			return err
		}
		if err := txn.Delete(holdKey(id)); err != nil {
			return err
		}
		return txn.Delete(scheduleKey(due, id))
	}})
	return nil, false, errors.Join(fmt.Errorf("load %s: %w: %v", id, ErrCorrupt, derr), cerr)
}

// Walk calls fn for every record in id order (see WalkAfter).
func (q *Queue) Walk(fn func(r *Record) bool) error { return q.WalkAfter("", fn) }

// RawSet writes a raw key, for tests that need to damage a record.
func (q *Queue) RawSet(key, value []byte) error {
	op := Op{apply: func(txn *badger.Txn) error { return txn.Set(key, value) }}
	if bytes.HasPrefix(key, prefixSchedule) && len(key) >= 10 {
		op.flushed, _ = parseScheduleKey(key)
	}
	return q.Commit(context.Background(), len(key)+len(value), op)
}

func (q *Queue) gcLoop() {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-q.done:
			return
		case <-t.C:
			q.keepBallast()
			if n%10 == 0 {
				for q.db.RunValueLogGC(0.5) == nil {
				}
			}
		}
	}
}

// badgerLogger sends Badger's warnings and errors to slog; its info and
// debug chatter is dropped.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Error("badger: " + trim(fmt.Sprintf(f, a...))) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn("badger: " + trim(fmt.Sprintf(f, a...))) }
func (b badgerLogger) Infof(string, ...any)        {}
func (b badgerLogger) Debugf(string, ...any)       {}

func trim(s string) string { return string(bytes.TrimRight([]byte(s), "\n")) }

// OnceWithin records key for ttl and reports whether it was new: the
// first call true, later calls false until ttl passes. Vacation replies
// use it to answer a sender once per period; the state expires by itself
// (Badger TTL).
func (q *Queue) OnceWithin(key string, ttl time.Duration) (bool, error) {
	k := append([]byte("t/"), key...)
	if q.space.Free() < Reserve/2 {
		return false, fmt.Errorf("vacation state: %w", ErrNoSpace)
	}
	first := false
	err := q.db.Update(func(txn *badger.Txn) error {
		if _, err := txn.Get(k); err == nil {
			return nil
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		first = true
		return txn.SetEntry(badger.NewEntry(k, nil).WithTTL(ttl))
	})
	if errors.Is(err, badger.ErrConflict) {
		return false, nil // a concurrent call won
	}
	return first, err
}

// Get reads one message's record (without its body).
func (q *Queue) Get(id string) (*Record, error) {
	var r *Record
	err := q.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(recordKey(id))
		if err != nil {
			return err
		}
		if err := item.Value(func(v []byte) error {
			r, err = decodeRecord(id, v)
			return err
		}); err != nil {
			return err
		}
		if flushed(txn, r) {
			r.NextTry = FlushedDue(id)
		}
		r.Flushed = q.markedFlushed(txn, r)
		return nil
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return r, nil
}

// Body reads one message's whole content (for `larkpost queue show`).
func (q *Queue) Body(id string) ([]byte, error) {
	r, err := q.Get(id)
	if err != nil {
		return nil, err
	}
	b, err := q.OpenBody(r)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	return b.Bytes()
}

// Sizes are the database's sizes on disk: the LSM tree (records,
// schedule, state) and the value log.
func (q *Queue) Sizes() (lsm, vlog int64) { return q.db.Size() }

// maxParallelSyncs bounds the fsyncs syncBodies runs at once.
const maxParallelSyncs = 16

// syncBodies fsyncs the batch's new body files at the same time and
// fails the commits whose file did not sync, returning the others. Each
// file's writeback started when its DATA ended (EnqueueFile), so its
// blocks are allocated in the journal transaction that is running and
// the first fsync's commit carries them all; the others find it under
// way and wait for it. Synced in their sessions, as before, they came a
// little apart and each took a journal commit of its own. A failed fsync
// is final: Linux reports a lost write once per descriptor, so a second
// fsync would succeed without the data.
func (q *Queue) syncBodies(batch []*commit) []*commit {
	var files []*os.File
	var owner []int
	for i, c := range batch {
		for _, op := range c.ops {
			if op.sync != nil {
				files = append(files, op.sync)
				owner = append(owner, i)
			}
		}
	}
	if len(files) == 0 {
		return batch
	}
	errs := make([]error, len(files))
	if len(files) == 1 {
		errs[0] = files[0].Sync()
	} else {
		// A blocked fsync holds a thread: a batch of hundreds of bodies
		// (a flood of big messages) shares the commit with a few.
		var wg sync.WaitGroup
		var next atomic.Int64
		for range min(len(files), maxParallelSyncs) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int(next.Add(1) - 1); i < len(files); i = int(next.Add(1) - 1) {
					errs[i] = files[i].Sync()
				}
			}()
		}
		wg.Wait()
	}
	failed := make([]error, len(batch))
	for i, err := range errs {
		if err != nil && failed[owner[i]] == nil {
			failed[owner[i]] = fmt.Errorf("sync body %s: %w", files[i].Name(), err)
		}
	}
	ok := batch[:0:0]
	for i, c := range batch {
		if failed[i] != nil {
			q.space.refresh()
			c.done(failed[i])
			continue
		}
		ok = append(ok, c)
	}
	return ok
}
