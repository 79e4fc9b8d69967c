package maildir

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// useWindow gives the test a window of its own, restored afterwards.
func useWindow(t *testing.T) *window {
	t.Helper()
	old := fileWindow
	fileWindow = newWindow()
	t.Cleanup(func() { fileWindow = old })
	return fileWindow
}

func TestSyncWindow(t *testing.T) {
	t.Run("deliveries one after another do not wait", func(t *testing.T) {
		// One worker filing a message into twenty mailboxes in turn.
		w := useWindow(t)
		root := t.TempDir()
		t0 := time.Now()
		for i := 0; i < 20; i++ {
			if _, err := Deliver(filepath.Join(root, strconv.Itoa(i)), strings.NewReader("x")); err != nil {
				t.Fatal(err)
			}
		}
		if n := w.opened.Load(); n != 0 {
			t.Errorf("20 deliveries in turn opened %d windows (%v), want 0", n, time.Since(t0))
		}
	})
	t.Run("concurrent deliveries sync together", func(t *testing.T) {
		w := useWindow(t)
		dir := t.TempDir()
		if _, err := Deliver(dir, strings.NewReader("first")); err != nil {
			t.Fatal(err)
		}
		const n = 16
		var wg, ready sync.WaitGroup
		start := make(chan struct{})
		for i := 0; i < n; i++ {
			wg.Add(1)
			ready.Add(1)
			go func() {
				defer wg.Done()
				ready.Done()
				<-start
				if _, err := Deliver(dir, strings.NewReader("x")); err != nil {
					t.Error(err)
				}
			}()
		}
		ready.Wait()
		close(start)
		wg.Wait()
		// Each alone would be n windows; none means nobody waited.
		if got := w.opened.Load(); got < 1 || got > n/4 {
			t.Errorf("%d deliveries at once opened %d windows, want 1 to %d", n, got, n/4)
		}
		ents, err := os.ReadDir(filepath.Join(dir, "new"))
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != n+1 {
			t.Errorf("%d files in new/, want %d", len(ents), n+1)
		}
	})
	t.Run("a window closes after its time", func(t *testing.T) {
		w := useWindow(t)
		w.others = func() bool { return true }
		t0 := time.Now()
		w.wait()
		if d := time.Since(t0); d < syncWindow*9/10 {
			t.Errorf("a lone member of a window waited %v, want about %v", d, syncWindow)
		}
	})
	t.Run("a full window closes at once", func(t *testing.T) {
		w := useWindow(t)
		defer func(d time.Duration) { syncWindow = d }(syncWindow)
		syncWindow = time.Hour // only the count can close it
		w.others = func() bool { return true }
		done := make(chan struct{})
		var wg sync.WaitGroup
		for i := 0; i < syncWindowMax; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); w.wait() }()
		}
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d members still wait for an hour-long window", syncWindowMax)
		}
		if got := w.opened.Load(); got != 1 {
			t.Errorf("%d members opened %d windows, want 1", syncWindowMax, got)
		}
	})
}

// TestDirSyncShared: a caller returns only after an fsync that started
// after it came has finished, and a caller with company waits for the
// others' links before starting it.
func TestDirSyncShared(t *testing.T) {
	defer func(d time.Duration) { dirLinger = d }(dirLinger)
	type span struct{ from, to time.Time }
	run := func(t *testing.T, company bool, linger, stagger time.Duration, n int) int {
		dirLinger = linger
		var mu sync.Mutex
		var fsyncs []span
		g := &groupSync{dirs: map[string]*dirState{}}
		g.fsync = func(string) error {
			s := span{from: time.Now()}
			time.Sleep(200 * time.Microsecond)
			s.to = time.Now()
			mu.Lock()
			fsyncs = append(fsyncs, s)
			mu.Unlock()
			return nil
		}
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var wait func()
				if company {
					wait = lingerDir
				}
				came := time.Now()
				if err := g.sync("new", wait); err != nil {
					t.Error(err)
				}
				left := time.Now()
				mu.Lock()
				defer mu.Unlock()
				for _, s := range fsyncs {
					if s.from.After(came) && !s.to.After(left) {
						return
					}
				}
				t.Errorf("caller %d returned without an fsync that started after it came", i)
			}()
			time.Sleep(stagger)
		}
		wg.Wait()
		return len(fsyncs)
	}
	t.Run("with company: staggered links share one fsync", func(t *testing.T) {
		if n := run(t, true, 300*time.Millisecond, 5*time.Millisecond, 8); n != 1 {
			t.Errorf("8 links 5 ms apart within the linger took %d fsyncs, want 1", n)
		}
	})
	t.Run("alone: no wait, one fsync each", func(t *testing.T) {
		t0 := time.Now()
		n := run(t, false, 10*time.Second, 5*time.Millisecond, 4)
		if d := time.Since(t0); d > 5*time.Second {
			t.Errorf("directory fsyncs without company waited: %v", d)
		}
		if n != 4 {
			t.Errorf("4 links 5 ms apart without company took %d fsyncs, want 4", n)
		}
	})
	t.Run("callers during an fsync wait for the next", func(t *testing.T) {
		if n := run(t, false, 0, 50*time.Microsecond, 32); n < 2 {
			t.Errorf("%d fsyncs for 32 callers over 1.6 ms of 200 µs fsyncs", n)
		}
	})
}
