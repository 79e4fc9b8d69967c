package queue

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
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
	commitOne(t, q, RemoveOp(gone, gone.NextTry), 64, nil)
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

// TestWalkAfterRawSkipsUndecoded: records the byte test refuses are
// neither decoded nor passed on; the rest come in id order.
func TestWalkAfterRawSkipsUndecoded(t *testing.T) {
	q := openTest(t, t.TempDir())
	defer q.Close()
	now := time.Now()
	var want []string
	for i := 0; i < 20; i++ {
		r := newRecord(NewID(), now)
		r.Sender = fmt.Sprintf("s%d@x.test", i)
		if i%5 == 0 {
			r.Sender = fmt.Sprintf("Wanted%d@x.test", i)
			want = append(want, r.ID)
		}
		if err := q.Enqueue(context.Background(), r, []byte("x\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	looked := 0
	var got []string
	err := q.WalkAfterRaw("", func(raw []byte) bool { looked++; return ContainsFold(raw, "wanted") }, func(r *Record) bool {
		got = append(got, r.ID)
		return true
	})
	if err != nil || looked != 20 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("looked at %d, got %v (%v), want %v", looked, got, err, want)
	}
}

func TestContainsFold(t *testing.T) {
	for _, tc := range []struct {
		raw, needle string
		want        bool
	}{
		{`{"sender":"Ann@X.test"}`, "ann@x", true},
		{`{"sender":"ann@x.test"}`, "ANN@X.TEST", true},
		{`{"sender":"ann@x.test"}`, "bob", false},
		{`{"sender":"ann@x.test"}`, "", true},
		{`{"sender":"ann"}`, "ann@x.test.longer.than.raw.itself", false},
		{`{"sender":"\u212aelvin"}`, "kelvin", true}, // non-ASCII in the record: decode to be sure
		{"{\"sender\":\"ab\xe2\x84\xaa\"}", "zz", true},
		{`{"sender":"a\u003cb"}`, "a<b", true}, // the needle has a byte JSON escapes
		{`{"sender":"plain"}`, "é", true},
		{`{"sender":"a\u003cb@x","log":"\u0026 \u003e"}`, "bob", false}, // escapes encoding/json writes hide no letters
		{`{"sender":"\u0062ob"}`, "bob", true},                          // other escapes might
		{`{"sender":"x\u00`, "bob", true},
		{`{"sender":"a\/b"}`, "a/b", true}, // a JSON escape for "/", which encoding/json never writes
	} {
		if got := ContainsFold([]byte(tc.raw), tc.needle); got != tc.want {
			t.Errorf("ContainsFold(%q, %q) = %v, want %v", tc.raw, tc.needle, got, tc.want)
		}
	}
}

// BenchmarkWalkFiltered: one pass over 20,000 deferred records looking
// for one recipient, decoding every record (WalkAfter) or only those
// whose bytes name it (WalkAfterRaw with ContainsFold).
func BenchmarkWalkFiltered(b *testing.B) {
	q := openTest(b, b.TempDir())
	defer q.Close()
	now := time.Now()
	for i := 0; i < 20000; i++ {
		r := newRecord(NewID(), now)
		r.Rcpts[0].Addr = fmt.Sprintf("user%d@example.com", i)
		r.Rcpts[0].Attempts = []Attempt{{Time: now, Relay: "mx.example.com[192.0.2.1]:25", Status: "4.4.1", Reply: "connect to mx.example.com[192.0.2.1]:25: connection refused"}}
		if err := q.Enqueue(context.Background(), r, []byte("x\r\n")); err != nil {
			b.Fatal(err)
		}
	}
	match := func(r *Record) bool { return strings.Contains(strings.ToLower(r.Rcpts[0].Addr), "user777@") }
	b.Run("decode-all", func(b *testing.B) {
		for b.Loop() {
			n := 0
			q.WalkAfter("", func(r *Record) bool {
				if match(r) {
					n++
				}
				return true
			})
			if n != 1 {
				b.Fatalf("found %d", n)
			}
		}
	})
	b.Run("bytes-first", func(b *testing.B) {
		for b.Loop() {
			n := 0
			q.WalkAfterRaw("", func(raw []byte) bool { return ContainsFold(raw, "user777@") }, func(r *Record) bool {
				if match(r) {
					n++
				}
				return true
			})
			if n != 1 {
				b.Fatalf("found %d", n)
			}
		}
	})
}

// TestDueAfterResumes: a scan resumed after an entry starts past it, and
// still stops at now and at the limit.
func TestDueAfterResumes(t *testing.T) {
	q := openTest(t, t.TempDir())
	defer q.Close()
	base := time.Now().Add(-time.Hour).Truncate(time.Microsecond)
	var all []DueEntry
	for i := 0; i < 10; i++ {
		r := newRecord(NewID(), base.Add(time.Duration(i)*time.Minute))
		if err := q.Enqueue(context.Background(), r, []byte("x\r\n")); err != nil {
			t.Fatal(err)
		}
		all = append(all, DueEntry{ID: r.ID, Due: r.NextTry})
	}
	ids := func(es []DueEntry) string {
		var s []string
		for _, e := range es {
			s = append(s, e.ID)
		}
		return strings.Join(s, " ")
	}
	first, err := q.DueAfter(base.Add(5*time.Minute), 3, nil, nil)
	if err != nil || ids(first) != ids(all[:3]) {
		t.Fatalf("first scan %v (%v), want %v", ids(first), err, ids(all[:3]))
	}
	next, _ := q.DueAfter(base.Add(5*time.Minute), 3, nil, &first[2])
	if ids(next) != ids(all[3:6]) {
		t.Fatalf("resumed scan %v, want %v (after the cursor, up to now)", ids(next), ids(all[3:6]))
	}
	last, _ := q.DueAfter(base.Add(5*time.Minute), 3, nil, &next[2])
	if len(last) != 0 {
		t.Fatalf("scan past now gave %v", ids(last))
	}
}

// TestNextDueWithin: deleted entries (a flushed backlog's old times) are
// passed over, entries past the horizon are not reported, and a key
// written, deleted and written again counts by its newest version.
func TestNextDueWithin(t *testing.T) {
	q := openTest(t, t.TempDir())
	defer q.Close()
	now := time.Now().Truncate(time.Microsecond)
	var recs []*Record
	for i := 0; i < 50; i++ {
		r := newRecord(NewID(), now.Add(10*time.Second+time.Duration(i)*time.Millisecond))
		r.State = Deferred
		if err := q.Enqueue(context.Background(), r, []byte("x\r\n")); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	if next, ok := q.NextDueWithin(now, time.Minute); !ok || !next.Equal(recs[0].NextTry) {
		t.Fatalf("NextDueWithin = %v, %v; want %v", next, ok, recs[0].NextTry)
	}
	// Flush all but the last: their entries move to now, tombstones stay
	// behind at their old times.
	for _, r := range recs[:49] {
		old := r.NextTry
		r.NextTry = now.Add(-time.Second)
		op, size, err := UpdateOp(r, old)
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Commit(context.Background(), size, op); err != nil {
			t.Fatal(err)
		}
	}
	if next, ok := q.NextDueWithin(now, time.Minute); !ok || !next.Equal(recs[49].NextTry) {
		t.Fatalf("after the flush NextDueWithin = %v, %v; want %v", next, ok, recs[49].NextTry)
	}
	if next, ok := q.NextDueWithin(now, 5*time.Second); ok {
		t.Fatalf("an entry due in 10 s reported within 5 s: %v", next)
	}
	// Back to its old time: the key's newest version is live again.
	r := recs[0]
	old := r.NextTry
	r.NextTry = now.Add(10 * time.Second)
	op, size, _ := UpdateOp(r, old)
	if err := q.Commit(context.Background(), size, op); err != nil {
		t.Fatal(err)
	}
	if next, ok := q.NextDueWithin(now, time.Minute); !ok || !next.Equal(r.NextTry) {
		t.Fatalf("rewritten key: NextDueWithin = %v, %v; want %v", next, ok, r.NextTry)
	}
}

// scheduleEntries lists the schedule index as due time per id.
func scheduleEntries(t *testing.T, q *Queue) map[string][]time.Time {
	t.Helper()
	out := map[string][]time.Time{}
	err := q.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixSchedule})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			due, id := parseScheduleKey(it.Item().Key())
			out[id] = append(out[id], due)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestFlushMovesOnlyTheEntry: a flush moves a waiting message's schedule
// entry to its id's time and leaves the record's bytes alone; the record
// read for the admin or the scheduler says where the entry is, and every
// later change (a reschedule, a hold, a removal) moves that entry, so a
// message never has two.
func TestFlushMovesOnlyTheEntry(t *testing.T) {
	q := openTest(t, t.TempDir())
	defer q.Close()
	now := time.Now()
	later := now.Add(time.Hour).Truncate(time.Microsecond)
	var recs []*Record
	for range 4 {
		r := newRecord(NewID(), later)
		r.State = Deferred
		if err := q.Enqueue(context.Background(), r, []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	raw := func(id string) string {
		var v []byte
		q.db.View(func(txn *badger.Txn) error {
			item, err := txn.Get(recordKey(id))
			if err == nil {
				v, err = item.ValueCopy(nil)
			}
			return err
		})
		return string(v)
	}
	before := raw(recs[0].ID)
	for _, r := range recs {
		commitOne(t, q, FlushOp(r.ID, r.NextTry), 64, nil)
	}
	if got := raw(recs[0].ID); got != before {
		t.Fatalf("flush rewrote the record:\n%s\nwas\n%s", got, before)
	}
	due, err := q.Due(time.Now(), 10, nil)
	if err != nil || len(due) != 4 {
		t.Fatalf("due after the flush: %v, %v; want all 4", due, err)
	}
	for _, d := range due {
		if !d.Due.Equal(FlushedDue(d.ID)) {
			t.Errorf("%s listed at %v, want its id's time %v", d.ID, d.Due, FlushedDue(d.ID))
		}
		if _, listed, err := q.LoadListed(d.ID, d.Due); err != nil || !listed {
			t.Errorf("%s: LoadListed at the flushed time: listed %v, %v", d.ID, listed, err)
		}
		if _, listed, _ := q.LoadListed(d.ID, later); listed {
			t.Errorf("%s: still listed at its old time", d.ID)
		}
	}
	// The admin's view: Get and Resolve give the entry's time.
	g, err := q.Get(recs[0].ID)
	if err != nil || !g.NextTry.Equal(FlushedDue(g.ID)) {
		t.Fatalf("Get after the flush: next try %v, %v; want %v", g.NextTry, err, FlushedDue(g.ID))
	}
	var walked []*Record
	q.Walk(func(r *Record) bool { walked = append(walked, r); return true })
	if err := q.Resolve(walked); err != nil {
		t.Fatal(err)
	}
	for _, r := range walked {
		if !r.NextTry.Equal(FlushedDue(r.ID)) {
			t.Errorf("%s resolved to %v, want %v", r.ID, r.NextTry, FlushedDue(r.ID))
		}
	}
	// A second flush writes nothing new and leaves one entry.
	commitOne(t, q, FlushOp(walked[0].ID, walked[0].NextTry), 64, nil)

	// Changes from the resolved records move the flushed entry.
	resched, held, removed := walked[0], walked[1], walked[2]
	old := resched.NextTry
	resched.NextTry = now.Add(2 * time.Hour)
	op, n, err := UpdateOp(resched, old)
	commitOne(t, q, op, n, err)
	held.State = Hold
	op, n, err = UpdateOp(held, held.NextTry)
	commitOne(t, q, op, n, err)
	commitOne(t, q, RemoveOp(removed, removed.NextTry), 64, nil)
	// A flush from where the entry no longer is (read before a round
	// moved it) moves nothing.
	commitOne(t, q, FlushOp(resched.ID, later), 64, nil)

	entries := scheduleEntries(t, q)
	want := map[string]int{resched.ID: 1, walked[3].ID: 1}
	for id, dues := range entries {
		if len(dues) != want[id] {
			t.Errorf("%s has schedule entries %v, want %d", id, dues, want[id])
		}
	}
	if len(entries) != 2 || !entries[resched.ID][0].Equal(resched.NextTry) {
		t.Errorf("schedule index %v: want %s at %v and %s flushed", entries, resched.ID, resched.NextTry, walked[3].ID)
	}
	got, _ := q.Counts(time.Now())
	if fmt.Sprint(got) != fmt.Sprint(map[State]int{Active: 1, Deferred: 1, Hold: 1}) {
		t.Errorf("census after the changes: %v", got)
	}
}

// TestLowDueAndDueFrom: every committed schedule entry lowers the mark
// the scanner takes (and nothing else does), and a walk from a later
// start reports the first entry it met as the next walk's start.
func TestLowDueAndDueFrom(t *testing.T) {
	q := openTest(t, t.TempDir())
	defer q.Close()
	if _, ok := q.TakeLowDue(); ok {
		t.Fatal("a fresh queue reports a written entry")
	}
	now := time.Now().Truncate(time.Microsecond)
	early, late := newRecord(NewID(), now.Add(-time.Minute)), newRecord(NewID(), now.Add(time.Hour))
	late.State = Deferred
	for _, r := range []*Record{late, early} {
		if err := q.Enqueue(context.Background(), r, []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	if low, ok := q.TakeLowDue(); !ok || !low.Equal(early.NextTry) {
		t.Fatalf("TakeLowDue = %v, %v; want %v", low, ok, early.NextTry)
	}
	if _, ok := q.TakeLowDue(); ok {
		t.Fatal("TakeLowDue did not reset")
	}
	// A hold writes no schedule entry; a flush writes one at the id's time.
	old := late.NextTry
	late.State = Hold
	op, n, err := UpdateOp(late, old)
	commitOne(t, q, op, n, err)
	if low, ok := q.TakeLowDue(); ok {
		t.Fatalf("a hold lowered the mark to %v", low)
	}
	late.State, late.NextTry = Deferred, now.Add(2*time.Hour)
	op, n, err = UpdateOp(late, time.Time{})
	commitOne(t, q, op, n, err)
	if low, ok := q.TakeLowDue(); !ok || !low.Equal(late.NextTry) {
		t.Fatalf("release: TakeLowDue = %v, %v; want %v", low, ok, late.NextTry)
	}
	commitOne(t, q, FlushOp(late.ID, late.NextTry), 64, nil)
	if low, ok := q.TakeLowDue(); !ok || !low.Equal(FlushedDue(late.ID)) {
		t.Fatalf("flush: TakeLowDue = %v, %v; want %v", low, ok, FlushedDue(late.ID))
	}

	future := newRecord(NewID(), now.Add(3*time.Hour))
	future.State = Deferred
	if err := q.Enqueue(context.Background(), future, []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	scanNow := time.Now()
	tests := []struct {
		start     time.Time
		wantIDs   int
		wantFirst time.Time
	}{
		{time.Unix(0, 0), 2, early.NextTry},
		{early.NextTry, 2, early.NextTry},
		{early.NextTry.Add(time.Nanosecond), 1, FlushedDue(late.ID)},
		// Nothing due after the flushed entry: the first entry met, not
		// due yet, is where the next walk starts.
		{FlushedDue(late.ID).Add(time.Nanosecond), 0, future.NextTry},
		{future.NextTry.Add(time.Nanosecond), 0, scanNow},
	}
	for _, tt := range tests {
		due, first, err := q.DueFrom(tt.start, scanNow, 10, nil)
		if err != nil || len(due) != tt.wantIDs || !first.Equal(tt.wantFirst) {
			t.Errorf("DueFrom(%v) = %v, first %v, %v; want %d entries, first %v", tt.start, due, first, err, tt.wantIDs, tt.wantFirst)
		}
	}
}

// TestFlushMark: under a flush mark the walk lists each entry written
// before it once, in index order, across calls bounded by limit and
// budget, and none written after (a message deferred again meanwhile, a
// new one); Get and Resolve say which records it makes due, the flag is
// never stored, the mark outlives a restart, and only its own walk's
// end clears it.
func TestFlushMark(t *testing.T) {
	dir := t.TempDir()
	q := openTest(t, dir)
	later := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	var recs []*Record
	for i := range 7 {
		recs = append(recs, enqueueDeferred(t, q, later.Add(time.Duration(i)*time.Minute)))
	}
	if q.FlushMark() != 0 {
		t.Fatal("a mark before any flush")
	}
	mark, err := q.MarkFlush(context.Background())
	if err != nil || mark == 0 || q.FlushMark() != mark {
		t.Fatalf("MarkFlush = %d, %v; FlushMark %d", mark, err, q.FlushMark())
	}
	// Since the flush: the first message is tried and deferred to the
	// end of the index, a new message arrives, and the third is held.
	first := recs[0]
	old := first.NextTry
	first.NextTry = later.Add(time.Hour)
	op, n, err := UpdateOp(first, old)
	commitOne(t, q, op, n, err)
	fresh := enqueueDeferred(t, q, later.Add(2*time.Hour))
	recs[2].State = Hold
	op, n, err = UpdateOp(recs[2], recs[2].NextTry)
	commitOne(t, q, op, n, err)

	for _, tc := range []struct {
		id      string
		flushed bool
	}{{recs[0].ID, false}, {recs[1].ID, true}, {recs[2].ID, false}, {recs[6].ID, true}, {fresh.ID, false}} {
		r, err := q.Get(tc.id)
		if err != nil || r.Flushed != tc.flushed {
			t.Errorf("Get(%s).Flushed = %v (%v), want %v", tc.id, r != nil && r.Flushed, err, tc.flushed)
		}
	}
	resolved := []*Record{}
	for _, r := range []*Record{recs[1], fresh} {
		c := *r
		resolved = append(resolved, &c)
	}
	if err := q.Resolve(resolved); err != nil || !resolved[0].Flushed || resolved[1].Flushed {
		t.Errorf("Resolve: flushed %v, %v (%v); want true, false", resolved[0].Flushed, resolved[1].Flushed, err)
	}
	// A record read with the flag and written back does not keep it.
	r, _ := q.Get(recs[1].ID)
	op, n, err = UpdateOp(r, r.NextTry)
	commitOne(t, q, op, n, err)
	q.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(recordKey(recs[1].ID))
		if err != nil {
			t.Fatal(err)
		}
		return item.Value(func(raw []byte) error {
			if bytes.Contains(raw, []byte("flushed")) {
				t.Errorf("the flag was stored: %s", raw)
			}
			return nil
		})
	})

	// Closed and opened again: the mark is still there.
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = openTest(t, dir)
	defer q.Close()
	if q.FlushMark() != mark {
		t.Fatalf("after a restart the mark is %d, want %d", q.FlushMark(), mark)
	}
	var seen []string
	var from *DueEntry
	for calls := 0; ; calls++ {
		if calls > 20 {
			t.Fatal("the walk does not end")
		}
		due, last, done, err := q.Marked(from, mark, 2, 3, func(id string) bool { return id == recs[6].ID })
		if err != nil {
			t.Fatal(err)
		}
		if len(due) > 2 {
			t.Fatalf("%d entries past the limit of 2", len(due))
		}
		for _, d := range due {
			seen = append(seen, d.ID)
		}
		if done {
			break
		}
		from = last
	}
	// recs[1] was rewritten after the mark (the flag test above): its
	// entry is newer now, like a message tried since.
	want := []string{recs[3].ID, recs[4].ID, recs[5].ID}
	if !slices.Equal(seen, want) {
		t.Errorf("the walk under the mark saw %v, want %v (in index order, the skipped one left out)", seen, want)
	}
	// A damaged mark does not stop the queue from opening; it is ignored.
	if err := q.RawSet(flushMarkKey, []byte("junk")); err != nil {
		t.Fatal(err)
	}
	q.Close()
	q = openTest(t, dir)
	defer q.Close()
	if q.FlushMark() != 0 {
		t.Fatalf("a damaged mark read as %d", q.FlushMark())
	}
	if _, err := q.MarkFlush(context.Background()); err != nil {
		t.Fatalf("a flush over a damaged mark: %v", err)
	}
	mark = q.FlushMark()
	if err := q.ClearFlushMark(mark - 1); err != nil || q.FlushMark() != mark {
		t.Fatalf("clearing an older mark: %v, mark now %d", err, q.FlushMark())
	}
	if err := q.ClearFlushMark(mark); err != nil || q.FlushMark() != 0 {
		t.Fatalf("clearing the mark: %v, mark now %d", err, q.FlushMark())
	}
	if r, _ := q.Get(recs[3].ID); r.Flushed {
		t.Error("flushed after the mark was cleared")
	}
}

// enqueueDeferred queues a deferred message due at due.
func enqueueDeferred(t *testing.T, q *Queue, due time.Time) *Record {
	t.Helper()
	r := newRecord(NewID(), due)
	r.State = Deferred
	if err := q.Enqueue(context.Background(), r, []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	return r
}
