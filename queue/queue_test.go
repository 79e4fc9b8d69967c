package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func openTest(t testing.TB, dir string) *Queue {
	t.Helper()
	q, err := Open(dir, slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func readBody(t testing.TB, q *Queue, r *Record) []byte {
	t.Helper()
	b, err := q.OpenBody(r)
	if err != nil {
		t.Fatalf("open body of %s: %v", r.ID, err)
	}
	defer b.Close()
	got, err := b.Bytes()
	if err != nil {
		t.Fatalf("read body of %s: %v", r.ID, err)
	}
	return got
}

func newRecord(id string, due time.Time) *Record {
	return &Record{ID: id, Sender: "ann@example.org", Arrival: due, State: Active, NextTry: due,
		Rcpts: []Rcpt{{Addr: "bob@example.com", State: Pending}}}
}

func TestEnqueueLoadUpdateRemove(t *testing.T) {
	dir := t.TempDir()
	q := openTest(t, dir)
	now := time.Now().Truncate(time.Microsecond)
	r := newRecord(NewID(), now)
	body := []byte("Subject: x\r\n\r\nhello\r\n")
	if err := q.Enqueue(context.Background(), r, body); err != nil {
		t.Fatal(err)
	}
	// Reopen: what Enqueue acknowledged is on disk.
	q.Close()
	q = openTest(t, dir)
	defer q.Close()

	due, err := q.Due(now, 10, nil)
	if err != nil || len(due) != 1 || due[0].ID != r.ID || !due[0].Due.Equal(now) {
		t.Fatalf("Due = %v, %v; want %s at %v", due, err, r.ID, now)
	}
	got, err := q.Load(r.ID, due[0].Due)
	if err != nil || got.Rcpts[0].Addr != "bob@example.com" {
		t.Fatalf("Load = %+v, %v", got, err)
	}
	if gotBody := readBody(t, q, got); !bytes.Equal(gotBody, body) {
		t.Fatalf("body = %q, want %q", gotBody, body)
	}

	// Defer it: the schedule entry moves.
	later := now.Add(5 * time.Minute)
	got.State, got.NextTry = Deferred, later
	got.Rcpts[0].AddAttempt(Attempt{Time: now, Status: "4.2.2", Reply: "mailbox full"})
	op, size, _ := UpdateOp(got, now)
	if err := q.Commit(context.Background(), size, op); err != nil {
		t.Fatal(err)
	}
	if d, _ := q.Due(now.Add(time.Minute), 10, nil); len(d) != 0 {
		t.Errorf("deferred message still due: %v", d)
	}
	if next, ok := q.NextDueWithin(now, time.Hour); !ok || !next.Equal(later) {
		t.Errorf("NextDueWithin = %v, %v; want %v", next, ok, later)
	}
	d, _ := q.Due(later, 10, nil)
	if len(d) != 1 {
		t.Fatalf("not due after its retry time")
	}
	if err := q.Commit(context.Background(), 64, RemoveOp(r, later)); err != nil {
		t.Fatal(err)
	}
	n := 0
	q.Walk(func(*Record) bool { n++; return true })
	if n != 0 {
		t.Errorf("%d records after remove", n)
	}
}

func TestHeldMessagesAreNotScheduled(t *testing.T) {
	q := openTest(t, t.TempDir())
	defer q.Close()
	r := newRecord(NewID(), time.Now())
	r.State, r.HoldReason = Hold, "admin"
	q.Enqueue(context.Background(), r, []byte("x"))
	if d, _ := q.Due(time.Now().Add(time.Hour), 10, nil); len(d) != 0 {
		t.Errorf("held message is due: %v", d)
	}
	var states []State
	q.Walk(func(r *Record) bool { states = append(states, r.State); return true })
	if len(states) != 1 || states[0] != Hold {
		t.Errorf("walk states %v", states)
	}
}

func TestCorruptRecordMovedAside(t *testing.T) {
	q := openTest(t, t.TempDir())
	defer q.Close()
	now := time.Now()
	good, bad := newRecord(NewID(), now), newRecord(NewID(), now)
	q.Enqueue(context.Background(), good, []byte("x"))
	q.Enqueue(context.Background(), bad, []byte("y"))
	q.RawSet(recordKey(bad.ID), []byte("{not json"))
	_, err := q.Load(bad.ID, now)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Load of a damaged record: %v, want ErrCorrupt", err)
	}
	due, _ := q.Due(now, 10, nil)
	if len(due) != 1 || due[0].ID != good.ID {
		t.Errorf("due after moving the corrupt record aside: %v", due)
	}
	if _, err := q.Load(good.ID, now); err != nil {
		t.Errorf("good record: %v", err)
	}
	var corrupt []string
	q.Walk(func(r *Record) bool {
		if r.State == Corrupt {
			corrupt = append(corrupt, r.ID)
		}
		return true
	})
	if len(corrupt) != 1 || corrupt[0] != bad.ID {
		t.Errorf("corrupt records %v, want [%s]", corrupt, bad.ID)
	}
}

func TestGroupCommitConcurrent(t *testing.T) {
	q := openTest(t, t.TempDir())
	defer q.Close()
	const n = 500
	var wg sync.WaitGroup
	now := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			body := []byte(strings.Repeat(fmt.Sprintf("%d ", i), 1000))
			if i%50 == 0 {
				body = bytes.Repeat([]byte("z"), InlineMax) // the largest inline body
			}
			if err := q.Enqueue(context.Background(), newRecord(NewID(), now), body); err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	due, _ := q.Due(now, 2*n, nil)
	if len(due) != n {
		t.Fatalf("%d due, want %d", len(due), n)
	}
	for _, d := range due {
		r, err := q.Load(d.ID, d.Due)
		if err != nil {
			t.Fatalf("load %s: %v", d.ID, err)
		}
		if body := readBody(t, q, r); len(body) == 0 {
			t.Fatalf("load %s: empty body", d.ID)
		}
	}
}

// BenchmarkEnqueue measures durable enqueues of 2 KB messages from many
// goroutines: group commit shares each fsync among the waiting writers.
func BenchmarkEnqueue(b *testing.B) {
	for _, par := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("writers=%d", par), func(b *testing.B) {
			q := openTest(b, b.TempDir())
			defer q.Close()
			body := bytes.Repeat([]byte("x"), 2048)
			b.SetParallelism(par)
			b.ReportAllocs()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := q.Enqueue(context.Background(), newRecord(NewID(), time.Now()), body); err != nil {
						b.Error(err)
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// TestStateKeysAreNotSchedule: state values live outside the schedule's
// key space: the scheduler never reads one as a due message (a short key
// there would have panicked it, a long one set its timer centuries ahead).
func TestStateKeysAreNotSchedule(t *testing.T) {
	q := openTest(t, t.TempDir())
	defer q.Close()
	for _, k := range []string{"x", "mta-sts/example.com", "\x00\x00\x00\x00\x00\x00\x00\x01short"} {
		if err := q.StatePut(k, []byte("v"), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if d, err := q.Due(time.Unix(0, 1<<63-1), 10, nil); err != nil || len(d) != 0 {
		t.Errorf("due with only state keys: %v, %v", d, err)
	}
	if next, found := q.NextDueWithin(time.Now(), 1<<62); found {
		t.Errorf("next due with only state keys: %v", next)
	}
	r := newRecord(NewID(), time.Now().Add(-time.Second))
	q.Enqueue(context.Background(), r, []byte("x"))
	if d, _ := q.Due(time.Now(), 10, nil); len(d) != 1 || d[0].ID != r.ID {
		t.Errorf("due: %v, want %s", d, r.ID)
	}
	if v, ok, err := q.StateGet("x"); err != nil || !ok || string(v) != "v" {
		t.Errorf("StateGet: %q %v %v", v, ok, err)
	}
}

// TestCloseGivesUpAndLosesNothing: with its directory taken away, Badger
// cannot write its memtable out at Close and retries forever; Close
// gives up after closeWait, and the queue as the disk holds it (copied
// aside, as a new start would find it) still has every message.
func TestCloseGivesUpAndLosesNothing(t *testing.T) {
	old := closeWait
	closeWait = time.Second
	defer func() { closeWait = old }()
	parent := t.TempDir()
	dir := filepath.Join(parent, "queue")
	q := openTest(t, dir)
	const n = 20
	var ids []string
	for range n {
		ids = append(ids, enqueueDeferred(t, q, time.Now().Add(time.Hour)).ID)
	}
	away := filepath.Join(parent, "away")
	if err := os.Rename(dir, away); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := q.Close()
	if !errors.Is(err, ErrCloseTimeout) {
		t.Fatalf("Close with the directory gone: %v, want ErrCloseTimeout", err)
	}
	if took := time.Since(start); took > closeWait+2*time.Second {
		t.Errorf("Close took %v, want about %v", took, closeWait)
	}
	copied := filepath.Join(parent, "copy")
	if err := os.CopyFS(copied, os.DirFS(away)); err != nil {
		t.Fatal(err)
	}
	// Let the abandoned Badger finish, so it stops retrying.
	if err := os.Rename(away, dir); err != nil {
		t.Fatal(err)
	}
	q2 := openTest(t, copied)
	defer q2.Close()
	counts, err := q2.Counts(time.Now())
	if err != nil || counts[Deferred] != n {
		t.Fatalf("after the abandoned close: %v, %v; want %d deferred", counts, err, n)
	}
	for _, id := range ids {
		if _, err := q2.Get(id); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
}

// TestUpdatesWaitForCompany: requests nobody waits for (the scheduler's
// updates after deliveries) share the commit of the next request that
// someone does wait for, within asyncLinger, instead of each taking an
// fsync; alone, they are committed once asyncLinger has passed.
func TestUpdatesWaitForCompany(t *testing.T) {
	type commitSeen struct{ requests int }
	seen := make(chan commitSeen, 100)
	q, err := OpenWith(t.TempDir(), Options{Log: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)),
		ObserveCommit: func(_ time.Duration, n int) { seen <- commitSeen{n} }})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	old := asyncLinger
	asyncLinger = 200 * time.Millisecond
	defer func() { asyncLinger = old }()

	landed := make(chan error, 10)
	update := func() Op {
		r := enqueueDeferred(t, q, time.Now().Add(time.Hour))
		<-seen // the enqueue's own commit
		op, _, err := UpdateOp(r, r.NextTry)
		if err != nil {
			t.Fatal(err)
		}
		return op
	}
	ops := []Op{update(), update(), update()}
	start := time.Now()
	for _, op := range ops {
		q.CommitAsync(64, func(err error) { landed <- err }, op)
	}
	time.Sleep(20 * time.Millisecond)
	if len(landed) != 0 {
		t.Fatal("an update nobody waits for was committed alone at once")
	}
	enqueueDeferred(t, q, time.Now().Add(time.Hour))
	if got := <-seen; got.requests != 4 {
		t.Errorf("the enqueue's commit carried %d requests, want the 3 updates and itself", got.requests)
	}
	for range ops {
		if err := <-landed; err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 150*time.Millisecond {
		t.Errorf("the updates landed after %v: they waited out the linger instead of joining the enqueue", d)
	}

	// Alone: committed when the linger ends.
	start = time.Now()
	q.CommitAsync(64, func(err error) { landed <- err }, update())
	if err := <-landed; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("a lone update landed after %v, before the linger (200ms) ended", d)
	}
}
