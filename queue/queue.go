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
//	b/<id>                      the message body, CRLF line endings, exactly as queued
//	s/<due: 8 bytes BE unix ns><id>   schedule index: the message is due at that time
//	c/<id>                      a record that could not be decoded (moved aside, kept)
//
// A message is in the schedule index from enqueue until it is done or held;
// taking it into the active set writes nothing, so after a crash every
// message that was being delivered is simply due again (at-least-once
// delivery: a crash between a mailbox write and its queue update can give
// one duplicate, never a loss).
//
// Bodies above 64 KiB go to Badger's value log; ValueLogGC runs every ten
// minutes to reclaim the space of delivered messages.
package queue

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/dgraph-io/badger/v4"
)

var (
	prefixRecord   = []byte("m/")
	prefixBody     = []byte("b/")
	prefixSchedule = []byte("s/")
	prefixCorrupt  = []byte("c/")
)

func recordKey(id string) []byte { return append([]byte("m/"), id...) }

// RecordKey is the key of a message's record, for tools and tests that
// inspect or damage the database directly.
func RecordKey(id string) []byte  { return recordKey(id) }
func bodyKey(id string) []byte    { return append([]byte("b/"), id...) }
func corruptKey(id string) []byte { return append([]byte("c/"), id...) }

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
	db      *badger.DB
	log     *slog.Logger
	reqs    chan *commit
	done    chan struct{}
	stopped chan struct{}
}

// Op is one change inside a commit.
type Op func(txn *badger.Txn) error

type commit struct {
	ops  []Op
	size int
	done func(error)
}

// maxBatchBytes keeps a group commit well under Badger's transaction limit
// (15% of the 16 MiB memtable); values above the 64 KiB value threshold
// count only as pointers.
const maxBatchBytes = 1 << 20

// Open opens (creating) the queue in dir.
func Open(dir string, log *slog.Logger) (*Queue, error) {
	if log == nil {
		log = slog.Default()
	}
	opts := badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithLogger(badgerLogger{log}).
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(4 << 20).
		WithValueThreshold(64 << 10).
		WithValueLogFileSize(64 << 20).
		WithNumCompactors(2).
		WithNumGoroutines(2)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open queue %s: %w", dir, err)
	}
	q := &Queue{db: db, log: log, reqs: make(chan *commit, 1024), done: make(chan struct{}), stopped: make(chan struct{})}
	go q.committer()
	go q.gcLoop()
	return q, nil
}

// Close finishes pending commits and closes the database.
func (q *Queue) Close() error {
	close(q.done)
	<-q.stopped
	return q.db.Close()
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
	gather:
		for size < maxBatchBytes {
			select {
			case c := <-q.reqs:
				batch = append(batch, c)
				size += c.size
			default:
				break gather
			}
		}
		q.commitBatch(batch)
	}
}

func (q *Queue) commitBatch(batch []*commit) {
	err := q.apply(batch)
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

func (q *Queue) apply(batch []*commit) error {
	txn := q.db.NewTransaction(true)
	defer txn.Discard()
	for _, c := range batch {
		for _, op := range c.ops {
			if err := op(txn); err != nil {
				return err
			}
		}
	}
	return txn.Commit()
}

// Commit applies ops atomically and durably; it returns after the fsync.
// size estimates the bytes written, for batching.
func (q *Queue) Commit(ctx context.Context, size int, ops ...Op) error {
	errc := make(chan error, 1)
	c := &commit{ops: ops, size: size, done: func(err error) { errc <- err }}
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
	rec, err := encodeRecord(r)
	if err != nil {
		return nil, 0, err
	}
	size := len(rec) + 64
	if len(body) < 64<<10 {
		size += len(body)
	}
	return func(txn *badger.Txn) error {
		if err := txn.Set(recordKey(r.ID), rec); err != nil {
			return err
		}
		if err := txn.Set(bodyKey(r.ID), body); err != nil {
			return err
		}
		if r.State == Active || r.State == Deferred {
			return txn.Set(scheduleKey(r.NextTry, r.ID), nil)
		}
		return nil
	}, size, nil
}

// UpdateOp rewrites a record after a delivery round and moves its
// schedule entry from oldDue to r.NextTry (none when held).
func UpdateOp(r *Record, oldDue time.Time) (Op, int, error) {
	rec, err := encodeRecord(r)
	if err != nil {
		return nil, 0, err
	}
	return func(txn *badger.Txn) error {
		if err := txn.Set(recordKey(r.ID), rec); err != nil {
			return err
		}
		if err := txn.Delete(scheduleKey(oldDue, r.ID)); err != nil {
			return err
		}
		if r.State == Active || r.State == Deferred {
			return txn.Set(scheduleKey(r.NextTry, r.ID), nil)
		}
		return nil
	}, len(rec) + 64, nil
}

// RemoveOp deletes a finished message.
func RemoveOp(id string, due time.Time) Op {
	return func(txn *badger.Txn) error {
		for _, k := range [][]byte{recordKey(id), bodyKey(id), scheduleKey(due, id)} {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		return nil
	}
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
	var out []DueEntry
	err := q.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixSchedule})
		defer it.Close()
		for it.Rewind(); it.Valid() && len(out) < limit; it.Next() {
			due, id := parseScheduleKey(it.Item().Key())
			if due.After(now) {
				break
			}
			if skip != nil && skip(id) {
				continue
			}
			out = append(out, DueEntry{ID: id, Due: due})
		}
		return nil
	})
	return out, err
}

// DueEntry is one schedule index entry.
type DueEntry struct {
	ID  string
	Due time.Time
}

// NextDue returns the earliest due time after now, for the scheduler's
// timer. Entries due before now are found by Due.
func (q *Queue) NextDue(now time.Time) (time.Time, bool) {
	var t time.Time
	found := false
	q.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixSchedule})
		defer it.Close()
		it.Seek(scheduleKey(now.Add(time.Nanosecond), ""))
		if it.Valid() {
			t, _ = parseScheduleKey(it.Item().Key())
			found = true
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

// Load reads a message's record and body. A record that does not decode
// is moved to c/<id> with its schedule entry removed, so it is never tried
// again and never stops the server.
func (q *Queue) Load(id string, due time.Time) (*Record, []byte, error) {
	var raw, body []byte
	err := q.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(recordKey(id))
		if err != nil {
			return err
		}
		if raw, err = item.ValueCopy(nil); err != nil {
			return err
		}
		item, err = txn.Get(bodyKey(id))
		if err != nil {
			return err
		}
		body, err = item.ValueCopy(nil)
		return err
	})
	switch {
	case raw == nil && errors.Is(err, badger.ErrKeyNotFound):
		// A schedule entry without a record: drop the entry.
		q.Commit(context.Background(), 64, func(txn *badger.Txn) error { return txn.Delete(scheduleKey(due, id)) })
		return nil, nil, fmt.Errorf("load %s: %w", id, ErrNotFound)
	case raw == nil:
		return nil, nil, fmt.Errorf("load %s: %w", id, err)
	case err == nil:
		r, derr := decodeRecord(id, raw)
		if derr == nil {
			return r, body, nil
		}
		err = derr
	}
	q.log.Error(id + ": queue record is corrupt, moved aside: " + err.Error())
	cerr := q.Commit(context.Background(), len(raw)+64, func(txn *badger.Txn) error {
		if err := txn.Set(corruptKey(id), raw); err != nil {
			return err
		}
		if err := txn.Delete(recordKey(id)); err != nil {
			return err
		}
		return txn.Delete(scheduleKey(due, id))
	})
	return nil, nil, errors.Join(fmt.Errorf("load %s: %w: %v", id, ErrCorrupt, err), cerr)
}

// Walk calls fn for every record in id order (the CLI's queue list).
// Corrupt records are reported with State Corrupt and no recipients.
func (q *Queue) Walk(fn func(r *Record) bool) error {
	return q.db.View(func(txn *badger.Txn) error {
		for _, prefix := range [][]byte{prefixRecord, prefixCorrupt} {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
			for it.Rewind(); it.Valid(); it.Next() {
				id := string(it.Item().Key()[2:])
				var r *Record
				err := it.Item().Value(func(v []byte) error {
					var err error
					r, err = decodeRecord(id, v)
					return err
				})
				if err != nil || bytes.Equal(prefix, prefixCorrupt) {
					r = &Record{ID: id, State: Corrupt}
				}
				if !fn(r) {
					it.Close()
					return nil
				}
			}
			it.Close()
		}
		return nil
	})
}

// RawSet writes a raw key, for tests that need to damage a record.
func (q *Queue) RawSet(key, value []byte) error {
	return q.Commit(context.Background(), len(key)+len(value), func(txn *badger.Txn) error { return txn.Set(key, value) })
}

func (q *Queue) gcLoop() {
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-q.done:
			return
		case <-t.C:
			for q.db.RunValueLogGC(0.5) == nil {
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
	var raw []byte
	err := q.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(recordKey(id))
		if err != nil {
			return err
		}
		raw, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return decodeRecord(id, raw)
}

// Body reads one message's body.
func (q *Queue) Body(id string) ([]byte, error) {
	var body []byte
	err := q.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(bodyKey(id))
		if err != nil {
			return err
		}
		body, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	return body, err
}
