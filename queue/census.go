package queue

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Counting and paging a large queue. Decoding every record costs about
// 8 µs; at a million messages `status`, the metrics' gauges and
// `queue list` took seconds and built the whole list in memory. The
// schedule index (s/<due><id>) and the hold index (o/<id>) name every
// message that is not corrupt, and queue ids carry their creation time,
// so the census reads keys alone (0.3 s for a million here), and lists
// read records a page at a time in id order.

// indexNew writes a message's index entry: a schedule entry when it
// waits for delivery, a hold entry when it waits for the admin.
func indexNew(txn *badger.Txn, r *Record) error {
	switch r.State {
	case Active, Deferred:
		return txn.Set(scheduleKey(r.NextTry, r.ID), nil)
	case Hold:
		return txn.Set(holdKey(r.ID), nil)
	}
	return nil
}

// Census calls fn for every queued message, from the index keys alone:
// Active for a message due now or being delivered, Deferred for one
// waiting for a later try (as Postfix's active and deferred queues),
// Hold and Corrupt. A message whose try is due but not yet taken counts
// as active although its record may still say deferred.
func (q *Queue) Census(now time.Time, fn func(st State, id string)) error {
	cut := scheduleKey(now, "")
	return q.db.View(func(txn *badger.Txn) error {
		for _, p := range []struct {
			prefix []byte
			state  State
		}{{prefixSchedule, Active}, {prefixHold, Hold}, {prefixCorrupt, Corrupt}} {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: p.prefix})
			for it.Rewind(); it.Valid(); it.Next() {
				k := it.Item().Key()
				st := p.state
				if p.state == Active {
					if len(k) < 10 {
						continue
					}
					if bytes.Compare(k[:10], cut[:10]) > 0 {
						st = Deferred
					}
					fn(st, string(k[10:]))
					continue
				}
				fn(st, string(k[len(p.prefix):]))
			}
			it.Close()
		}
		return nil
	})
}

// Counts is the census by state.
func (q *Queue) Counts(now time.Time) (map[State]int, error) {
	out := map[State]int{}
	err := q.Census(now, func(st State, _ string) { out[st]++ })
	return out, err
}

// IDTime is the creation time a queue id carries (see NewID), or false
// for a string that is not one.
func IDTime(id string) (time.Time, bool) {
	if len(id) != 13 {
		return time.Time{}, false
	}
	var v uint64
	for i := 0; i < len(id); i++ {
		d := strings.IndexByte(idAlphabet, id[i])
		if d < 0 {
			return time.Time{}, false
		}
		v = v<<5 | uint64(d)
	}
	return time.UnixMicro(int64(v >> 10)), true
}

// WalkAfter calls fn for every record whose id sorts after after (all
// of them for ""), in id order, until fn returns false: a page of
// `queue list` reads only its own records. Corrupt records come in
// their place with State Corrupt and no recipients.
func (q *Queue) WalkAfter(after string, fn func(r *Record) bool) error {
	return q.WalkAfterRaw(after, nil, fn)
}

// WalkAfterRaw is WalkAfter with a look at each record's stored bytes
// first: a record for which maybe returns false is skipped without
// being decoded (decoding is most of a filtered walk's cost). maybe must
// return true for every record a caller's filter could select; see
// ContainsFold.
func (q *Queue) WalkAfterRaw(after string, maybe func(raw []byte) bool, fn func(r *Record) bool) error {
	return q.db.View(func(txn *badger.Txn) error {
		// Corrupt records are few: merged into the id order from a list.
		var corrupt []string
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixCorrupt})
		for it.Seek(seekAfter(prefixCorrupt, after)); it.Valid(); it.Next() {
			corrupt = append(corrupt, string(it.Item().Key()[len(prefixCorrupt):]))
		}
		it.Close()
		it = txn.NewIterator(badger.IteratorOptions{Prefix: prefixRecord, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Seek(seekAfter(prefixRecord, after)); it.Valid(); it.Next() {
			id := string(it.Item().Key()[len(prefixRecord):])
			for len(corrupt) > 0 && corrupt[0] < id {
				if !fn(&Record{ID: corrupt[0], State: Corrupt}) {
					return nil
				}
				corrupt = corrupt[1:]
			}
			var r *Record
			skip := false
			err := it.Item().Value(func(v []byte) error {
				if maybe != nil && !maybe(v) {
					skip = true
					return nil
				}
				var err error
				r, err = decodeRecord(id, v)
				return err
			})
			if skip {
				continue
			}
			if err != nil {
				r = &Record{ID: id, State: Corrupt}
			}
			if !fn(r) {
				return nil
			}
		}
		for _, id := range corrupt {
			if !fn(&Record{ID: id, State: Corrupt}) {
				return nil
			}
		}
		return nil
	})
}

// seekAfter is the first key of prefix sorting after prefix+after.
func seekAfter(prefix []byte, after string) []byte {
	k := append(append([]byte(nil), prefix...), after...)
	if after != "" {
		k = append(k, 0)
	}
	return k
}

// holdIndexMark records that the hold index is complete: queues written
// before it existed get their held messages indexed once, at open.
var holdIndexMark = []byte("x/hold-index")

func (q *Queue) indexHolds() error {
	err := q.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(holdIndexMark)
		return err
	})
	if !errors.Is(err, badger.ErrKeyNotFound) {
		return err // nil: indexed already
	}
	var held [][]byte
	if err := q.Walk(func(r *Record) bool {
		if r.State == Hold {
			held = append(held, holdKey(r.ID))
		}
		return true
	}); err != nil {
		return err
	}
	for len(held) > 0 {
		n := min(len(held), 1000)
		part := held[:n]
		held = held[n:]
		if err := q.db.Update(func(txn *badger.Txn) error {
			for _, k := range part {
				if err := txn.Set(k, nil); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("indexing held messages: %w", err)
		}
	}
	return q.db.Update(func(txn *badger.Txn) error { return txn.Set(holdIndexMark, nil) })
}

// ContainsFold reports whether a stored record may hold needle in a
// string field, compared as strings.ToLower(field) containing
// strings.ToLower(needle) would: true when the record's bytes contain
// needle in ASCII case folding, and whenever that test could be wrong
// (a needle or record with bytes JSON escapes or non-ASCII letters,
// whose lowercase forms differ in length or reach ASCII: "K", U+212A,
// lowers to "k").
func ContainsFold(raw []byte, needle string) bool {
	if needle == "" {
		return true
	}
	for i := 0; i < len(needle); i++ {
		if c := needle[i]; c >= 0x80 || c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return true
		}
	}
	first := lowerASCII(needle[0])
	for i := 0; i+len(needle) <= len(raw); i++ {
		if raw[i] >= 0x80 {
			return true
		}
		if lowerASCII(raw[i]) != first {
			continue
		}
		j := 1
		for j < len(needle) && lowerASCII(raw[i+j]) == lowerASCII(needle[j]) {
			j++
		}
		if j == len(needle) {
			return true
		}
	}
	// No match in the ASCII part; a non-ASCII byte in the tail the loop
	// did not reach could still lower to one, and so could a character
	// written as a \u escape.
	for i := max(0, len(raw)-len(needle)+1); i < len(raw); i++ {
		if raw[i] >= 0x80 {
			return true
		}
	}
	return escapeMayHide(raw)
}

// escapeMayHide reports an escape in raw that stands for a character a
// needle could contain: encoding/json writes \u only for <, >, & and
// control characters (which ContainsFold's needles never hold), but a
// record need not have been written by it, and JSON also allows "\/".
func escapeMayHide(raw []byte) bool {
	if bytes.Contains(raw, []byte(`\/`)) {
		return true
	}
	for {
		i := bytes.Index(raw, []byte(`\u`))
		if i < 0 {
			return false
		}
		raw = raw[i+2:]
		if len(raw) < 4 {
			return true
		}
		switch h := string(raw[:4]); {
		case h == "003c", h == "003e", h == "0026", h == "003C", h == "003E", strings.HasPrefix(h, "000"), strings.HasPrefix(h, "001"):
		default:
			return true
		}
	}
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
