package queue

import (
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// State keys live beside the queue's records, in a key space of their
// own ("v/"), and expire by themselves: small facts the router keeps
// across restarts (MTA-STS policies). The prefix must not be the
// schedule's ("s/"): Due and NextDueWithin read every key under that as a
// due time and an id.

// StateGet reads a state value; ok is false when there is none (or it
// expired).
func (q *Queue) StateGet(key string) (value []byte, ok bool, err error) {
	err = q.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(stateKey(key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		value, err = item.ValueCopy(nil)
		ok = err == nil
		return err
	})
	return value, ok, err
}

// StatePut writes a state value that expires after ttl (0: never). It
// is not fsynced on its own: losing the last ones to a crash costs a
// lookup, never mail.
func (q *Queue) StatePut(key string, value []byte, ttl time.Duration) error {
	if q.space.Free() < Reserve/2 {
		return fmt.Errorf("state: %w", ErrNoSpace)
	}
	return q.db.Update(func(txn *badger.Txn) error {
		e := badger.NewEntry(stateKey(key), value)
		if ttl > 0 {
			e = e.WithTTL(ttl)
		}
		return txn.SetEntry(e)
	})
}

// stateUpdateTries bounds StateUpdate's retries after a conflict. The
// stripe locks below leave conflicts only with writers that do not take
// them (StatePut), so a few tries are plenty and 20 means something is
// writing the key in a loop.
const stateUpdateTries = 20

// stateLocks serialize StateUpdate calls on keys that hash alike. Without
// them, concurrent updates of one hot key (a rate-limit bucket) would
// mostly fail Badger's conflict check and retry, each retry costing a
// commit; with them, they queue and each commits once. They are shared
// by every Queue of the process: a server opens one, and a collision
// only makes two updates wait for each other.
var (
	stateLocks    [64]sync.Mutex
	stateLockSeed = maphash.MakeSeed()
)

// StateUpdate replaces the state value of key (see StateGet) with what
// fn makes of it, in one transaction: old is the current value (ok false
// when there is none or it expired), and fn returns the new value and its
// ttl (0: never expires). A nil newValue writes nothing, and an error
// from fn is StateUpdate's, with nothing written.
//
// fn may be called more than once (after a conflict with another writer):
// it must compute from old alone, and only the last call's result counts.
//
// Badger counts expiry in whole seconds of the wall clock, so the ttl is
// rounded up to whole seconds and one more: a value never vanishes before
// ttl has passed, and may outlive it by up to two seconds. Values that
// must expire more precisely, or by another clock, carry their own time.
//
// Like StatePut, a write is refused with ErrNoSpace when the file system
// is short of half the Reserve.
func (q *Queue) StateUpdate(key string, fn func(old []byte, ok bool) (newValue []byte, ttl time.Duration, err error)) error {
	mu := &stateLocks[maphash.String(stateLockSeed, key)%uint64(len(stateLocks))]
	mu.Lock()
	defer mu.Unlock()
	k := stateKey(key)
	var err error
	for try := 0; try < stateUpdateTries; try++ {
		err = q.db.Update(func(txn *badger.Txn) error {
			var old []byte
			item, err := txn.Get(k)
			found := err == nil
			switch {
			case found:
				if old, err = item.ValueCopy(nil); err != nil {
					return err
				}
			case !errors.Is(err, badger.ErrKeyNotFound):
				return err
			}
			value, ttl, err := fn(old, found)
			if err != nil || value == nil {
				return err
			}
			if q.space.Free() < Reserve/2 {
				return fmt.Errorf("state: %w", ErrNoSpace)
			}
			e := badger.NewEntry(k, value)
			if ttl > 0 {
				e = e.WithTTL((ttl + time.Second - 1).Truncate(time.Second) + time.Second)
			}
			return txn.SetEntry(e)
		})
		if !errors.Is(err, badger.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("state %q: %d conflicting updates in a row: %w", key, stateUpdateTries, err)
}
