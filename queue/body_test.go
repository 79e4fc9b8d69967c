package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"
)

func writeBody(t *testing.T, q *Queue, id string, data []byte) *BodyWriter {
	t.Helper()
	w, err := q.CreateBody(id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	return w
}

func TestFileBodyRoundTrip(t *testing.T) {
	dir := t.TempDir()
	q := openTest(t, dir)
	now := time.Now()
	client := []byte("Subject: old\r\nFrom: a@b\r\n\r\n" + string(bytes.Repeat([]byte("0123456789\r\n"), 20000)))
	headerLen := int64(bytes.Index(client, []byte("\r\n\r\n")) + 2)
	prefix := []byte("Received: by us\r\nSubject: new\r\nFrom: a@b\r\n")
	r := newRecord(NewID(), now)
	w := writeBody(t, q, r.ID, client[:1000])
	// The receiver reads the header back between writes: ReadAt must not
	// move where the next Write goes.
	head := make([]byte, headerLen)
	if n, err := w.ReadAt(head, 0); err != nil || !bytes.Equal(head[:n], client[:headerLen]) {
		t.Fatalf("BodyWriter.ReadAt = %q, %v; want %q", head[:n], err, client[:headerLen])
	}
	if _, err := w.Write(client[1000:]); err != nil {
		t.Fatal(err)
	}
	if err := q.EnqueueFile(context.Background(), r, prefix, w, headerLen); err != nil {
		t.Fatal(err)
	}
	q.Close()
	q = openTest(t, dir) // the sweep must keep a body its record names
	defer q.Close()
	got, err := q.Load(r.ID, now)
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte{}, prefix...), client[headerLen:]...)
	b, err := q.OpenBody(got)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Size() != int64(len(want)) {
		t.Errorf("Size = %d, want %d", b.Size(), len(want))
	}
	// Every offset and length reads the same bytes as the whole message.
	if err := iotest.TestReader(b.Reader(), want); err != nil {
		t.Error(err)
	}
	for _, off := range []int64{0, int64(len(prefix)) - 1, int64(len(prefix)), int64(len(prefix)) + 1, int64(len(want)) - 3} {
		p := make([]byte, 7)
		n, err := b.ReadAt(p, off)
		end := min(off+7, int64(len(want)))
		if !bytes.Equal(p[:n], want[off:end]) || (end-off == 7 && err != nil) || (end-off < 7 && err != io.EOF) {
			t.Errorf("ReadAt(7, %d) = %q, %v; want %q", off, p[:n], err, want[off:end])
		}
	}
	// Removing the message removes its file after the commit.
	if err := q.Commit(context.Background(), 64, RemoveOp(r, now)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bodies", r.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("body file left after remove: %v", err)
	}
}

func TestOrphanBodiesAreSwept(t *testing.T) {
	dir := t.TempDir()
	q := openTest(t, dir)
	orphan := NewID()
	writeBody(t, q, orphan, []byte("half a message")) // a crash before the record
	kept := newRecord(NewID(), time.Now())
	w := writeBody(t, q, kept.ID, []byte("a message\r\n"))
	if err := q.EnqueueFile(context.Background(), kept, nil, w, 0); err != nil {
		t.Fatal(err)
	}
	q.Close()
	q = openTest(t, dir)
	defer q.Close()
	if _, err := os.Stat(filepath.Join(dir, "bodies", orphan)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("orphan body survived the sweep: %v", err)
	}
	if got := readBody(t, q, kept); string(got) != "a message\r\n" {
		t.Errorf("queued body = %q", got)
	}
}

func TestLostBodyFileIsAnError(t *testing.T) {
	dir := t.TempDir()
	q := openTest(t, dir)
	defer q.Close()
	r := newRecord(NewID(), time.Now())
	w := writeBody(t, q, r.ID, []byte("x\r\n"))
	if err := q.EnqueueFile(context.Background(), r, nil, w, 0); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "bodies", r.ID))
	if _, err := q.OpenBody(r); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenBody of a lost file: %v, want ErrNotFound", err)
	}
}

// TestBodiesSyncedTogether: body files enqueued at once share a commit
// and its fsyncs, and a file whose fsync fails fails its own message
// only: the others in the batch are stored, it is not.
func TestBodiesSyncedTogether(t *testing.T) {
	dir := t.TempDir()
	q := openTest(t, dir)
	now := time.Now()
	const n = 8
	recs := make([]*Record, n)
	errs := make(chan error, n)
	for i := range recs {
		recs[i] = newRecord(NewID(), now)
		w := writeBody(t, q, recs[i].ID, []byte(fmt.Sprintf("message %d\r\n", i)))
		go func() { errs <- q.EnqueueFile(context.Background(), recs[i], nil, w, 0) }()
	}
	for range recs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}

	// One batch of more bodies than are synced at once, one of them
	// failing (its file closed).
	const m, bad = 40, 23
	batchRecs := make([]*Record, m)
	batchErrs := make([]error, m)
	var batch []*commit
	for i := range batchRecs {
		r := newRecord(NewID(), now)
		batchRecs[i] = r
		w := writeBody(t, q, r.ID, []byte("x\r\n"))
		op, _, err := PutFileOp(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		op.sync = w.f
		if i == bad {
			w.f.Close()
		}
		batch = append(batch, &commit{ops: []Op{op}, size: 64, done: func(err error) { batchErrs[i] = err }})
	}
	q.commitBatch(batch)
	for i, err := range batchErrs {
		if (err != nil) != (i == bad) {
			t.Errorf("commit %d of a batch whose body %d cannot sync: %v", i, bad, err)
		}
	}
	q.Close()
	q = openTest(t, dir)
	defer q.Close()
	for i, r := range recs {
		got, err := q.Load(r.ID, now)
		if err != nil {
			t.Fatal(err)
		}
		if b := readBody(t, q, got); string(b) != fmt.Sprintf("message %d\r\n", i) {
			t.Errorf("body %d = %q", i, b)
		}
	}
	for i, r := range batchRecs {
		_, err := q.Load(r.ID, now)
		if i == bad && !errors.Is(err, ErrNotFound) {
			t.Errorf("the message whose body did not sync: %v, want ErrNotFound", err)
		}
		if i != bad && err != nil {
			t.Errorf("message %d beside the failed one: %v", i, err)
		}
	}
}

// TestSpaceFloor fakes statfs: below Reserve nothing new is written, while
// updates and removals still go through so delivery can free space.
func TestSpaceFloor(t *testing.T) {
	var free atomic.Int64
	free.Store(1 << 30)
	dir := t.TempDir()
	q, err := OpenWith(dir, Options{Statfs: func(string) (int64, error) { return free.Load(), nil }})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	r := newRecord(NewID(), now)
	if err := q.Enqueue(context.Background(), r, []byte("x")); err != nil {
		t.Fatal(err)
	}
	free.Store(Reserve - 1)
	time.Sleep(2 * statfsCache)
	if err := q.Enqueue(context.Background(), newRecord(NewID(), now), []byte("y")); !errors.Is(err, ErrNoSpace) {
		t.Errorf("enqueue below the reserve: %v, want ErrNoSpace", err)
	}
	if _, err := q.CreateBody(NewID()); !errors.Is(err, ErrNoSpace) {
		t.Errorf("CreateBody below the reserve: %v, want ErrNoSpace", err)
	}
	if q.HasRoom(0, 0) {
		t.Error("HasRoom below the reserve")
	}
	r.State, r.NextTry = Deferred, now.Add(time.Minute)
	op, size, _ := UpdateOp(r, now)
	if err := q.Commit(context.Background(), size, op); err != nil {
		t.Errorf("update below the reserve: %v", err)
	}
	if err := q.Commit(context.Background(), 64, RemoveOp(r, r.NextTry)); err != nil {
		t.Errorf("remove below the reserve: %v", err)
	}
	free.Store(Reserve / 8)
	time.Sleep(2 * statfsCache)
	op, size, _ = UpdateOp(newRecord(NewID(), now), now)
	if err := q.Commit(context.Background(), size, op); !errors.Is(err, ErrNoSpace) {
		t.Errorf("update far below the reserve: %v, want ErrNoSpace", err)
	}
	q.Close()
	// Badger itself cannot open on an entirely full file system.
	free.Store(MinOpenSpace - 1)
	if _, err := OpenWith(dir, Options{Statfs: func(string) (int64, error) { return free.Load(), nil }}); !errors.Is(err, ErrNoSpace) {
		t.Errorf("open on a full file system: %v, want ErrNoSpace", err)
	}
}

// TestBodyWriterReserves checks writers reserve space ahead of writing, so
// that many concurrent bodies cannot all pass one free-space check.
func TestBodyWriterReserves(t *testing.T) {
	var free atomic.Int64
	free.Store(Reserve + 3*spoolStep)
	q, err := OpenWith(t.TempDir(), Options{Statfs: func(string) (int64, error) { return free.Load(), nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	a, err := q.CreateBody(NewID())
	if err != nil {
		t.Fatal(err)
	}
	b, err := q.CreateBody(NewID())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Write(make([]byte, spoolStep+1)); err != nil {
		t.Fatalf("first writer's second megabyte: %v", err)
	}
	if _, err := b.Write(make([]byte, spoolStep+1)); !errors.Is(err, ErrNoSpace) {
		t.Errorf("second writer past the free space: %v, want ErrNoSpace", err)
	}
	a.Discard()
	b.Discard()
	if p := q.space.pending.Load(); p != 0 {
		t.Errorf("%d bytes still reserved after Discard", p)
	}
}

// TestBallastLetsAFullQueueOpen: with another program's files filling the
// disk, the ballast is removed so that Badger can open, and made again
// when there is room.
func TestBallastLetsAFullQueueOpen(t *testing.T) {
	dir := t.TempDir()
	var full atomic.Bool
	statfs := func(string) (int64, error) {
		if full.Load() {
			if _, err := os.Stat(filepath.Join(dir, "ballast")); err == nil {
				return 0, nil
			}
			return ballastSize, nil
		}
		return 1 << 30, nil
	}
	q, err := OpenWith(dir, Options{Statfs: statfs})
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "ballast")); err != nil || fi.Size() != ballastSize {
		t.Fatalf("no ballast after open: %v", err)
	}
	r := newRecord(NewID(), time.Now())
	q.Enqueue(context.Background(), r, []byte("kept\r\n"))
	q.Close()
	full.Store(true)
	q, err = OpenWith(dir, Options{Statfs: statfs})
	if err != nil {
		t.Fatalf("open on a full disk with a ballast: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ballast")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the ballast was not released: %v", err)
	}
	if got := readBody(t, q, r); string(got) != "kept\r\n" {
		t.Errorf("queued body after opening full: %q", got)
	}
	full.Store(false)
	q.space.refresh()
	q.keepBallast()
	if _, err := os.Stat(filepath.Join(dir, "ballast")); err != nil {
		t.Errorf("the ballast was not made again when there was room: %v", err)
	}
	q.Close()
}
