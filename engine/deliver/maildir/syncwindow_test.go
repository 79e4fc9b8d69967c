package maildir

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// useWindow gives the test a window of its own, restored afterwards.
func useWindow(t *testing.T) *window {
	t.Helper()
	old := fileWindow
	fileWindow = &window{}
	t.Cleanup(func() { fileWindow = old })
	return fileWindow
}

func TestSyncWindow(t *testing.T) {
	t.Run("idle server syncs at once", func(t *testing.T) {
		w := useWindow(t)
		if _, err := Deliver(t.TempDir(), strings.NewReader("x")); err != nil {
			t.Fatal(err)
		}
		if n := w.opened.Load(); n != 0 {
			t.Errorf("a lone delivery on an idle server opened %d windows, want 0", n)
		}
	})
	t.Run("busy server's deliveries sync together", func(t *testing.T) {
		w := useWindow(t)
		dir := t.TempDir()
		// The first delivery finds the server idle; the rest, busy.
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
		w.last.Store(time.Now().UnixNano()) // busy
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
		w.last.Store(time.Now().UnixNano())
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
