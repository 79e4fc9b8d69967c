package queue

import (
	"context"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestBeat: Next's channel closes when a commit that started after the
// call has finished, not when one under way at the call does; Busy says
// whether commits come often.
func TestBeat(t *testing.T) {
	t.Run("a commit under way does not count", func(t *testing.T) {
		var b Beat
		b.begin()
		ch := b.Next()
		b.end()
		if closed(ch) {
			t.Fatal("closed by the end of a commit that started before Next")
		}
		b.begin()
		if closed(ch) {
			t.Fatal("closed when the next commit started")
		}
		b.end()
		if !closed(ch) {
			t.Fatal("still open after a commit that started after Next finished")
		}
		if closed(b.Next()) {
			t.Fatal("Next after the commits returned a closed channel")
		}
	})
	t.Run("busy", func(t *testing.T) {
		var b Beat
		if b.Busy() {
			t.Fatal("busy before any commit")
		}
		b.begin()
		b.end()
		if b.Busy() {
			t.Fatal("busy after one commit")
		}
		// Two commits in a row, unless the machine stalled between them
		// for longer than busyGap: then again.
		for i := 0; ; i++ {
			t0 := time.Now()
			b.begin()
			b.end()
			busy := b.Busy()
			if time.Since(t0) < busyGap/2 {
				if !busy {
					t.Fatal("not busy after two commits in a row")
				}
				break
			}
			if i == 100 {
				t.Fatal("the machine never ran two commits within half of busyGap in 100 tries")
			}
		}
		time.Sleep(busyGap + time.Millisecond)
		if b.Busy() {
			t.Fatalf("busy %v after the last commit", busyGap)
		}
		b.begin()
		b.end()
		if b.Busy() {
			t.Fatalf("busy after commits %v apart", busyGap)
		}
	})
	t.Run("the queue's commits", func(t *testing.T) {
		dir := t.TempDir()
		q := openTest(t, dir)
		defer q.Close()
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); err != nil {
			t.Fatal(err)
		}
		if got := q.Beat().Dev(); got != uint64(st.Dev) {
			t.Errorf("Dev %d, want the queue directory's %d", got, st.Dev)
		}
		ch := q.Beat().Next()
		if closed(ch) {
			t.Fatal("closed before any commit")
		}
		if err := q.Enqueue(context.Background(), newRecord("BEAT1", time.Now()), []byte("x")); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatal("Next's channel still open after a commit")
		}
	})
}

// mirrored returns a Beat mirrored into a pipe, and the pipe's ends.
func mirrored(t *testing.T) (src *Beat, r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	src = &Beat{}
	if err := src.Mirror(w); err != nil {
		t.Fatal(err)
	}
	return src, r, w
}

// TestBeatMirror: a Beat mirrored into a pipe drives the Beat that
// follows the pipe's other end; bytes that are no beat change nothing,
// and a pipe nobody reads never holds the committer.
func TestBeatMirror(t *testing.T) {
	src, r, w := mirrored(t)
	dir := t.TempDir()
	b := Follow(r, dir)
	if want := devOf(dir); want == 0 || b.Dev() != want {
		t.Errorf("Dev %d, want the directory's %d", b.Dev(), want)
	}
	wait := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatal(what)
		}
	}
	ch := b.Next()
	src.begin()
	src.end()
	wait(ch, "the follower's Next still open after a mirrored commit")

	// Garbage does not end a commit; the next real beat does.
	ch = b.Next()
	if _, err := w.Write([]byte("xxeeeEB\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if closed(ch) {
		t.Fatal("closed by bytes that are no commit's start")
	}
	src.begin()
	src.end()
	wait(ch, "the follower's Next still open after the commit that followed garbage")
}

func TestBeatMirrorNeverBlocks(t *testing.T) {
	src, _, _ := mirrored(t)
	done := make(chan struct{})
	go func() {
		// A pipe holds 64 KiB: far more beats than that, nobody reading.
		for range 200_000 {
			src.begin()
			src.end()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the committer waits for a pipe nobody reads")
	}
}
