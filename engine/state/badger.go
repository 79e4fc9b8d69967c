package state

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/larkpost/larkpost/queue"
)

// The Badger backend keeps its records under the queue's state prefix
// (queue.StateUpdate), each in a few varints:
//
//	state/b/<key>                 bucket: varint full-at (unix ns)
//	state/w/<slot ns>/<key>       window: pairs of varint slot number, uvarint count
//	state/g/<triplet>             greylist triplet: byte passed, varint first, varint last pass (unix ns)
//	state/c/<client>              greylist client: uvarint passes, varint last pass (unix ns)
//
// Once uses the queue's own once-per-period records (queue.OnceWithin),
// with the key as it is, so that it finds the vacation records made
// before the store existed.
//
// Records carry their own times and are judged by the caller's now; the
// Badger TTL (wall clock) only removes them once they no longer matter.
type badgerStore struct{ q records }

// records is what the Badger backend needs of its database: the
// queue's, or a map in memory (NewMemory).
type records interface {
	StateUpdate(key string, fn func(old []byte, ok bool) ([]byte, time.Duration, error)) error
	OnceWithin(key string, ttl time.Duration) (bool, error)
}

var _ Store = badgerStore{}
var _ records = (*queue.Queue)(nil)

// NewBadger returns a store in q's database, for a single node.
func NewBadger(q *queue.Queue) Store { return badgerStore{q} }

// NewMemory returns a store in this process's memory, for rule tests
// and dry runs: the Badger backend's records in a map, forgotten at exit.
func NewMemory() Store { return badgerStore{&memRecords{m: map[string]memRecord{}}} }

type memRecord struct {
	value   []byte
	expires time.Time // zero: never
}

type memRecords struct {
	mu sync.Mutex
	m  map[string]memRecord
}

func (r *memRecords) get(key string, now time.Time) (memRecord, bool) {
	rec, ok := r.m[key]
	if ok && !rec.expires.IsZero() && !now.Before(rec.expires) {
		delete(r.m, key)
		return memRecord{}, false
	}
	return rec, ok
}

func (r *memRecords) StateUpdate(key string, fn func(old []byte, ok bool) ([]byte, time.Duration, error)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	rec, ok := r.get(key, now)
	v, ttl, err := fn(rec.value, ok)
	if err != nil || v == nil {
		return err
	}
	rec = memRecord{value: v}
	if ttl > 0 {
		rec.expires = now.Add(ttl)
	}
	r.m[key] = rec
	return nil
}

func (r *memRecords) OnceWithin(key string, ttl time.Duration) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if _, ok := r.get("once/"+key, now); ok {
		return false, nil
	}
	r.m["once/"+key] = memRecord{expires: now.Add(ttl)}
	return true, nil
}

// maxBadgerKey keeps a key well within Badger's limit of 65000 bytes.
const maxBadgerKey = 60000

func (s badgerStore) update(ctx context.Context, key string, fn func(old []byte, ok bool) ([]byte, time.Duration, error)) error {
	if len(key) > maxBadgerKey {
		return fmt.Errorf("state key of %d bytes: longer than %d", len(key), maxBadgerKey)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.q.StateUpdate(key, fn)
}

func (s badgerStore) Take(ctx context.Context, key string, r Rate, burst, cost int, now time.Time) (TakeResult, error) {
	if err := r.check(burst, cost); err != nil {
		return TakeResult{}, err
	}
	t := now.UnixNano()
	var res TakeResult
	err := s.update(ctx, "state/b/"+key, func(old []byte, ok bool) ([]byte, time.Duration, error) {
		var tat int64
		if ok {
			tat, _ = binary.Varint(old)
		}
		var full int64
		res, full = gcra(tat, t, r, burst, cost)
		if !res.Allowed || cost == 0 {
			return nil, 0, nil
		}
		return binary.AppendVarint(nil, full), time.Duration(full - t), nil
	})
	if err != nil {
		return TakeResult{}, fmt.Errorf("take %q: %w", key, err)
	}
	return res, nil
}

// gcra takes cost tokens at now from the bucket that is full at tat; it
// returns the decision and the bucket's new full-at time.
func gcra(tat, now int64, r Rate, burst, cost int) (TakeResult, int64) {
	tat = max(tat, now)
	span := r.interval(burst)
	next := tat + r.interval(cost)
	allowAt := next - span
	tokens := func(d int64) int {
		return int(min(max(mulDivFloor(uint64(max(d, 0)), uint64(r.N), uint64(r.Per)), 0), int64(burst)))
	}
	if now < allowAt {
		return TakeResult{Remaining: tokens(now - (tat - span)), RetryAfter: time.Duration(allowAt - now)}, tat
	}
	return TakeResult{Allowed: true, Remaining: tokens(now - allowAt)}, next
}

func (s badgerStore) Count(ctx context.Context, key string, window time.Duration, add int, now time.Time) (int64, error) {
	if err := checkWindow(window, add); err != nil {
		return 0, err
	}
	slot := int64(window / countSlots)
	cur := now.UnixNano() / slot
	var total int64
	k := "state/w/" + strconv.FormatInt(slot, 10) + "/" + key
	err := s.update(ctx, k, func(old []byte, ok bool) ([]byte, time.Duration, error) {
		total = 0
		var out []byte
		found := false
		for len(old) > 0 {
			sl, n := binary.Varint(old)
			if n <= 0 {
				break
			}
			c, m := binary.Uvarint(old[n:])
			if m <= 0 {
				break
			}
			old = old[n+m:]
			if sl <= cur-countSlots {
				continue // out of the window
			}
			if sl == cur {
				c += uint64(add)
				found = true
			}
			total += int64(c)
			out = binary.AppendUvarint(binary.AppendVarint(out, sl), c)
		}
		if add == 0 {
			return nil, 0, nil
		}
		if !found {
			total += int64(add)
			out = binary.AppendUvarint(binary.AppendVarint(out, cur), uint64(add))
		}
		return out, window + time.Duration(slot), nil
	})
	if err != nil {
		return 0, fmt.Errorf("count %q: %w", key, err)
	}
	return total, nil
}

// triplet is a greylist triplet's record.
type triplet struct {
	passed      bool
	first, last int64 // unix ns
}

func (r triplet) encode() []byte {
	b := []byte{0}
	if r.passed {
		b[0] = 1
	}
	return binary.AppendVarint(binary.AppendVarint(b, r.first), r.last)
}

func decodeTriplet(b []byte) (triplet, bool) {
	if len(b) < 1 {
		return triplet{}, false
	}
	r := triplet{passed: b[0] == 1}
	var n, m int
	r.first, n = binary.Varint(b[1:])
	if n > 0 {
		r.last, m = binary.Varint(b[1+n:])
	}
	return r, n > 0 && m > 0
}

// client is a greylist client's record of passes.
type client struct {
	passes uint64
	last   int64 // unix ns
}

func (c client) encode() []byte {
	return binary.AppendVarint(binary.AppendUvarint(nil, c.passes), c.last)
}

func decodeClient(b []byte) (client, bool) {
	var c client
	var n, m int
	c.passes, n = binary.Uvarint(b)
	if n > 0 {
		c.last, m = binary.Varint(b[n:])
	}
	return c, n > 0 && m > 0
}

// Greylist is three transactions, each atomic: the client's whitelist
// check, the triplet's decision and the client's count of passes. Two
// attempts that interleave can only count a pass a moment late.
func (s badgerStore) Greylist(ctx context.Context, tripletKey, clientKey string, p GreyParams, now time.Time) (GreyResult, error) {
	p, err := p.withDefaults()
	if err != nil {
		return GreyResult{}, err
	}
	t := now.UnixNano()
	ck := "state/c/" + clientKey
	if p.AutoWhitelist > 0 {
		whitelisted := false
		err := s.update(ctx, ck, func(old []byte, _ bool) ([]byte, time.Duration, error) {
			c, ok := decodeClient(old)
			whitelisted = ok && c.passes >= uint64(p.AutoWhitelist) && t-c.last <= int64(p.Expire)
			if !whitelisted {
				return nil, 0, nil
			}
			c.last = t
			return c.encode(), p.Expire, nil
		})
		if err != nil {
			return GreyResult{}, fmt.Errorf("greylist client %q: %w", clientKey, err)
		}
		if whitelisted {
			return GreyResult{Pass: true, Whitelisted: true}, nil
		}
	}
	var res GreyResult
	err = s.update(ctx, "state/g/"+tripletKey, func(old []byte, _ bool) ([]byte, time.Duration, error) {
		r, ok := decodeTriplet(old)
		switch {
		case ok && r.passed && t-r.last <= int64(p.Expire):
		case ok && !r.passed && t-r.first >= 0 && t-r.first < int64(p.Delay):
			res = GreyResult{Wait: time.Duration(r.first + int64(p.Delay) - t), FirstSeen: time.Unix(0, r.first)}
			return nil, 0, nil
		case ok && !r.passed && t-r.first >= 0 && t-r.first <= int64(p.RetryWindow):
		default:
			// New, or retried too late or after it expired: start over.
			res = GreyResult{New: true, Wait: p.Delay, FirstSeen: now}
			return triplet{first: t, last: t}.encode(), p.RetryWindow, nil
		}
		res = GreyResult{Pass: true, FirstSeen: time.Unix(0, r.first)}
		r.passed, r.last = true, t
		return r.encode(), p.Expire, nil
	})
	if err != nil {
		return GreyResult{}, fmt.Errorf("greylist triplet %q: %w", tripletKey, err)
	}
	if !res.Pass || p.AutoWhitelist == 0 {
		return res, nil
	}
	err = s.update(ctx, ck, func(old []byte, _ bool) ([]byte, time.Duration, error) {
		c, ok := decodeClient(old)
		if !ok || t-c.last > int64(p.Expire) {
			c = client{}
		}
		c.passes++
		c.last = t
		return c.encode(), p.Expire, nil
	})
	if err != nil {
		return GreyResult{}, fmt.Errorf("greylist client %q: %w", clientKey, err)
	}
	return res, nil
}

func (s badgerStore) Once(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	if ttl <= 0 {
		return false, errors.New("once: ttl must be positive")
	}
	if len(key) > maxBadgerKey {
		return false, fmt.Errorf("once: key of %d bytes: longer than %d", len(key), maxBadgerKey)
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	first, err := s.q.OnceWithin(key, ttl)
	if err != nil {
		return false, fmt.Errorf("once %q: %w", key, err)
	}
	return first, nil
}

// Close leaves the queue open: it belongs to the engine.
func (badgerStore) Close() error { return nil }
