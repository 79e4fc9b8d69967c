package queue

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// commitOne writes one op durably or fails the test.
func commitOne(t *testing.T, q *Queue, op Op, size int, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Commit(context.Background(), size, op); err != nil {
		t.Fatal(err)
	}
}

func TestCensusFollowsEveryChange(t *testing.T) {
	q := openTest(t, t.TempDir())
	defer q.Close()
	now := time.Now()
	due := newRecord(NewID(), now.Add(-time.Second))
	later := newRecord(NewID(), now.Add(time.Hour))
	later.State = Deferred
	held := newRecord(NewID(), now)
	held.State = Hold
	gone := newRecord(NewID(), now)
	for _, r := range []*Record{due, later, held, gone} {
		if err := q.Enqueue(context.Background(), r, []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	bad := newRecord(NewID(), now)
	q.Enqueue(context.Background(), bad, []byte("x\r\n"))

	// Changes the way the scheduler and the admin make them.
	oldDue := due.NextTry
	due.State, due.HoldReason = Hold, "held by the admin"
	op, n, err := UpdateOp(due, oldDue)
	commitOne(t, q, op, n, err)
	held.State, held.NextTry = Active, now.Add(-time.Minute)
	op, n, err = UpdateOp(held, held.NextTry)
	commitOne(t, q, op, n, err)
	commitOne(t, q, RemoveOp(gone.ID, gone.NextTry), 64, nil)
	op, err = MarkCorruptOp(bad, bad.NextTry)
	commitOne(t, q, op, 64, err)

	got, err := q.Counts(now)
	if err != nil {
		t.Fatal(err)
	}
	want := map[State]int{Hold: 1, Active: 1, Deferred: 1, Corrupt: 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("census = %v, want %v", got, want)
	}
	// The census agrees with the records themselves.
	walked := map[State]int{}
	q.Walk(func(r *Record) bool {
		st := r.State
		if st == Active || st == Deferred {
			st = Active
			if r.NextTry.After(now) {
				st = Deferred
			}
		}
		walked[st]++
		return true
	})
	if fmt.Sprint(walked) != fmt.Sprint(want) {
		t.Fatalf("walk = %v, census %v", walked, got)
	}
	var ids []string
	q.Census(now, func(st State, id string) {
		if st == Hold {
			ids = append(ids, id)
		}
	})
	if len(ids) != 1 || ids[0] != due.ID {
		t.Fatalf("held ids = %v, want [%s]", ids, due.ID)
	}
}

func TestWalkAfterPages(t *testing.T) {
	q := openTest(t, t.TempDir())
	defer q.Close()
	now := time.Now()
	var ids []string
	for i := 0; i < 25; i++ {
		r := newRecord(NewID(), now)
		ids = append(ids, r.ID)
		if err := q.Enqueue(context.Background(), r, []byte("x\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	// One record that does not decode, in the middle.
	q.RawSet(recordKey(ids[12]), []byte("{not json"))
	var got []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		var page []*Record
		q.WalkAfter(after, func(r *Record) bool {
			page = append(page, r)
			return len(page) < 10
		})
		for _, r := range page {
			got = append(got, r.ID)
		}
		if len(page) < 10 {
			break
		}
		after = page[len(page)-1].ID
	}
	if fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Fatalf("pages gave %v\nwant %v", got, ids)
	}
}

func TestIDTime(t *testing.T) {
	before := time.Now().Truncate(time.Microsecond)
	id := NewID()
	got, ok := IDTime(id)
	if !ok || got.Before(before) || got.After(time.Now()) {
		t.Fatalf("IDTime(%s) = %v, %v; want about %v", id, got, ok, before)
	}
	for _, bad := range []string{"", "short", "IIIIIIIIIIIII", "0123456789ABCD"} {
		if _, ok := IDTime(bad); ok {
			t.Errorf("IDTime(%q) accepted", bad)
		}
	}
}

// A queue written before the hold index had its held messages indexed
// when it is opened.
func TestHoldIndexBuiltForOldQueue(t *testing.T) {
	dir := t.TempDir()
	q := openTest(t, dir)
	r := newRecord(NewID(), time.Now())
	r.State = Hold
	if err := q.Enqueue(context.Background(), r, []byte("x\r\n")); err != nil {
		t.Fatal(err)
	}
	// Undo what a new queue writes: the index entry and its mark.
	if err := q.db.Update(func(txn *badger.Txn) error {
		if err := txn.Delete(holdKey(r.ID)); err != nil {
			return err
		}
		return txn.Delete(holdIndexMark)
	}); err != nil {
		t.Fatal(err)
	}
	if c, _ := q.Counts(time.Now()); c[Hold] != 0 {
		t.Fatalf("setup: hold count %d", c[Hold])
	}
	q.Close()
	q = openTest(t, dir)
	defer q.Close()
	if c, _ := q.Counts(time.Now()); c[Hold] != 1 {
		t.Fatalf("after reopen: census %v, want 1 held", c)
	}
}
