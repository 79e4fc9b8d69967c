package queue

import (
	"encoding/binary"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// incr is an update that adds one to a uvarint counter.
func incr(old []byte, ok bool) ([]byte, time.Duration, error) {
	var n uint64
	if ok {
		n, _ = binary.Uvarint(old)
	}
	return binary.AppendUvarint(nil, n+1), time.Hour, nil
}

func counter(t *testing.T, q *Queue, key string) uint64 {
	t.Helper()
	v, ok, err := q.StateGet(key)
	if err != nil || !ok {
		t.Fatalf("StateGet(%q): %v %v", key, ok, err)
	}
	n, _ := binary.Uvarint(v)
	return n
}

// TestStateUpdateConcurrent: concurrent increments of one hot key and of
// a few others lose nothing.
func TestStateUpdateConcurrent(t *testing.T) {
	t.Parallel()
	q := openTest(t, t.TempDir())
	defer q.Close()
	const workers, each = 50, 10
	keys := []string{"hot", "a", "b", "c"}
	var wg sync.WaitGroup
	errs := make(chan error, workers*each*2)
	for w := range workers {
		wg.Go(func() {
			for range each {
				errs <- q.StateUpdate("hot", incr)
				errs <- q.StateUpdate(keys[1+w%3], incr)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := counter(t, q, "hot"); n != workers*each {
		t.Errorf("hot = %d, want %d", n, workers*each)
	}
	var sum uint64
	for _, k := range keys[1:] {
		sum += counter(t, q, k)
	}
	if sum != workers*each {
		t.Errorf("a+b+c = %d, want %d", sum, workers*each)
	}
}

// TestStateUpdateConflict: a write by another transaction between the
// read and the commit makes StateUpdate start over from the new value.
func TestStateUpdateConflict(t *testing.T) {
	t.Parallel()
	q := openTest(t, t.TempDir())
	defer q.Close()
	calls := 0
	err := q.StateUpdate("k", func(old []byte, ok bool) ([]byte, time.Duration, error) {
		calls++
		if calls == 1 {
			if err := q.StatePut("k", []byte("other"), 0); err != nil {
				t.Fatal(err)
			}
			return []byte("first"), 0, nil
		}
		return append(old, "+second"...), 0, nil
	})
	if err != nil || calls != 2 {
		t.Fatalf("StateUpdate: %v after %d calls, want nil after 2", err, calls)
	}
	if v, _, _ := q.StateGet("k"); string(v) != "other+second" {
		t.Errorf("value %q, want %q", v, "other+second")
	}

	// A writer that always gets there first: bounded, then an error.
	calls = 0
	err = q.StateUpdate("k", func([]byte, bool) ([]byte, time.Duration, error) {
		calls++
		q.StatePut("k", []byte(strconv.Itoa(calls)), 0)
		return []byte("mine"), 0, nil
	})
	if !errors.Is(err, badger.ErrConflict) || calls != stateUpdateTries {
		t.Errorf("StateUpdate: %v after %d calls, want ErrConflict after %d", err, calls, stateUpdateTries)
	}
}

func TestStateUpdateNoWrite(t *testing.T) {
	t.Parallel()
	q := openTest(t, t.TempDir())
	defer q.Close()
	if err := q.StatePut("k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	tests := []struct {
		name string
		fn   func([]byte, bool) ([]byte, time.Duration, error)
		err  error
	}{
		{"nil value", func(old []byte, ok bool) ([]byte, time.Duration, error) {
			if !ok || string(old) != "v" {
				t.Errorf("old %q %v, want \"v\" true", old, ok)
			}
			return nil, 0, nil
		}, nil},
		{"error", func([]byte, bool) ([]byte, time.Duration, error) { return []byte("x"), 0, boom }, boom},
	}
	for _, tt := range tests {
		if err := q.StateUpdate("k", tt.fn); !errors.Is(err, tt.err) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.err)
		}
		if v, ok, _ := q.StateGet("k"); !ok || string(v) != "v" {
			t.Errorf("%s: value %q %v, want it unchanged", tt.name, v, ok)
		}
	}
	err := q.StateUpdate("absent", func(old []byte, ok bool) ([]byte, time.Duration, error) {
		if ok || old != nil {
			t.Errorf("absent key: old %q %v", old, ok)
		}
		return nil, 0, nil
	})
	if _, ok, _ := q.StateGet("absent"); err != nil || ok {
		t.Errorf("absent key: %v, stored %v", err, ok)
	}
}

// TestStateUpdateTTL: Badger's whole-second expiry never cuts a ttl short.
func TestStateUpdateTTL(t *testing.T) {
	t.Parallel()
	q := openTest(t, t.TempDir())
	defer q.Close()
	for _, ttl := range []time.Duration{0, time.Millisecond, 1500 * time.Millisecond, time.Hour} {
		key := "ttl/" + ttl.String()
		before := time.Now()
		if err := q.StateUpdate(key, func([]byte, bool) ([]byte, time.Duration, error) { return []byte("v"), ttl, nil }); err != nil {
			t.Fatal(err)
		}
		var exp uint64
		q.db.View(func(txn *badger.Txn) error {
			item, err := txn.Get(stateKey(key))
			if err == nil {
				exp = item.ExpiresAt()
			}
			return err
		})
		switch {
		case ttl == 0 && exp != 0:
			t.Errorf("ttl 0: expires at %d, want never", exp)
		case ttl > 0 && time.Unix(int64(exp), 0).Before(before.Add(ttl)):
			t.Errorf("ttl %s: expires at %s, before %s", ttl, time.Unix(int64(exp), 0), before.Add(ttl))
		case ttl > 0 && time.Unix(int64(exp), 0).After(before.Add(ttl+3*time.Second)):
			t.Errorf("ttl %s: expires at %s, too late", ttl, time.Unix(int64(exp), 0))
		}
	}
}

// TestStateUpdateNoSpace: writes are refused short of space, reads go on.
func TestStateUpdateNoSpace(t *testing.T) {
	t.Parallel()
	var free atomic.Int64
	free.Store(1 << 40)
	q, err := OpenWith(t.TempDir(), Options{Statfs: func(string) (int64, error) { return free.Load(), nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if err := q.StateUpdate("k", incr); err != nil {
		t.Fatal(err)
	}
	free.Store(Reserve/2 - 1)
	time.Sleep(2 * statfsCache)
	if err := q.StateUpdate("k", incr); !errors.Is(err, ErrNoSpace) {
		t.Errorf("update short of space: %v, want ErrNoSpace", err)
	}
	read := func(old []byte, ok bool) ([]byte, time.Duration, error) { return nil, 0, nil }
	if err := q.StateUpdate("k", read); err != nil {
		t.Errorf("read short of space: %v", err)
	}
	if n := counter(t, q, "k"); n != 1 {
		t.Errorf("counter %d, want 1", n)
	}
}
