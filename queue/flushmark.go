package queue

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// A flush of the whole queue writes nothing per message: it stores a mark,
// the Badger version of the moment it was asked, and every schedule entry
// at or below it (written before the flush) counts as due until the
// scheduler's walk of the index has passed it. A message tried since has
// a newer entry, or none, so it is not flushed twice; one that arrives
// after the flush is not flushed at all. Moving each entry, as a flush by
// id still does, took 31 s at a million messages, wrote two index keys
// per message for the compactions to merge, and held deliveries at 40%
// of their pace meanwhile.
//
// The mark is stored, so a flush the server had not finished when it
// stopped goes on after the restart (from the index's head: the walk's
// place is not stored, and what it had passed was tried already).
var flushMarkKey = []byte("x/flush-mark")

// FlushMark is the mark of the whole-queue flush in progress, 0 when none.
func (q *Queue) FlushMark() uint64 { return q.flushMark.Load() }

func (q *Queue) loadFlushMark() error {
	return q.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(flushMarkKey)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if len(v) != 8 {
				// Not worth refusing the queue for: the flush is lost,
				// the messages wait for their retry times.
				q.log.Warn(fmt.Sprintf("queue: flush mark of %d bytes (want 8) ignored", len(v)))
				return nil
			}
			q.flushMark.Store(binary.BigEndian.Uint64(v))
			return nil
		})
	})
}

// MarkFlush makes every message waiting in the schedule index now due,
// durably, and returns the mark. A later mark replaces an earlier one
// (it covers everything the earlier one did).
func (q *Queue) MarkFlush(ctx context.Context) (uint64, error) {
	var mark uint64
	// A reader's timestamp is one that every commit before it is at or
	// below and every later commit above.
	txn := q.db.NewTransaction(false)
	mark = txn.ReadTs()
	txn.Discard()
	err := q.Commit(ctx, 64, Op{floor: Reserve / 2, apply: func(txn *badger.Txn) error {
		if old, err := storedMark(txn); err != nil || old >= mark {
			return err
		}
		return txn.Set(flushMarkKey, binary.BigEndian.AppendUint64(nil, mark))
	}})
	if err != nil {
		return 0, fmt.Errorf("flush mark: %w", err)
	}
	for {
		old := q.flushMark.Load()
		if old >= mark || q.flushMark.CompareAndSwap(old, mark) {
			return mark, nil
		}
	}
}

// ClearFlushMark ends the flush of mark, once the scheduler has walked
// the whole index under it; a newer flush's mark stays.
func (q *Queue) ClearFlushMark(mark uint64) error {
	err := q.Commit(context.Background(), 64, Op{apply: func(txn *badger.Txn) error {
		if old, err := storedMark(txn); err != nil || old != mark {
			return err
		}
		return txn.Delete(flushMarkKey)
	}})
	if err != nil {
		return fmt.Errorf("flush mark: %w", err)
	}
	q.flushMark.CompareAndSwap(mark, 0)
	return nil
}

func storedMark(txn *badger.Txn) (uint64, error) {
	item, err := txn.Get(flushMarkKey)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var mark uint64
	err = item.Value(func(v []byte) error {
		if len(v) == 8 {
			mark = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return mark, err
}

// Marked walks the schedule index after the entry from (from the head
// when nil) for entries written at or before mark, skipping those for
// which skip returns true (being delivered: their round writes their
// next entry). It stops at limit entries or after looking at budget keys, and
// returns the last entry it looked at, where the next call goes on; done
// is true when it reached the index's end.
func (q *Queue) Marked(from *DueEntry, mark uint64, limit, budget int, skip func(id string) bool) (out []DueEntry, last *DueEntry, done bool, err error) {
	seek, exclude := prefixSchedule, []byte(nil)
	if from != nil {
		seek = scheduleKey(from.Due, from.ID)
		exclude = seek
	}
	last = from
	err = q.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixSchedule})
		defer it.Close()
		looked := 0
		for it.Seek(seek); ; it.Next() {
			if !it.Valid() {
				done = true
				return nil
			}
			if len(out) >= limit || looked >= budget {
				return nil
			}
			item := it.Item()
			if exclude != nil && bytes.Equal(item.Key(), exclude) {
				continue
			}
			looked++
			d, id := parseScheduleKey(item.Key())
			last = &DueEntry{ID: id, Due: d}
			if item.Version() > mark || skip != nil && skip(id) {
				continue
			}
			out = append(out, *last)
		}
	})
	return out, last, done, err
}

// CountMarked counts the schedule entries written at or before mark, and
// lists those for which busy returns true, for the flush's reply.
func (q *Queue) CountMarked(mark uint64, busy func(id string) bool) (n int, busyIDs []string, err error) {
	err = q.db.View(func(txn *badger.Txn) error {
		if mark == 0 {
			mark = txn.ReadTs()
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixSchedule})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			if item.Version() > mark {
				continue
			}
			if _, id := parseScheduleKey(item.Key()); busy != nil && busy(id) {
				busyIDs = append(busyIDs, id)
				continue
			}
			n++
		}
		return nil
	})
	return n, busyIDs, err
}

// markedFlushed reports whether r waits under the flush mark: its entry
// at NextTry was written at or before it.
func (q *Queue) markedFlushed(txn *badger.Txn, r *Record) bool {
	mark := q.flushMark.Load()
	if mark == 0 || r.State != Active && r.State != Deferred {
		return false
	}
	item, err := txn.Get(scheduleKey(r.NextTry, r.ID))
	return err == nil && item.Version() <= mark
}
