package maildir

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeCommits is a queue whose commits the test finishes by hand.
type fakeCommits struct {
	dev   uint64
	busy  bool
	mu    sync.Mutex
	next  []chan struct{} // one per Next call
	asked chan int        // told the number of each Next call
}

func (c *fakeCommits) Dev() uint64 { return c.dev }
func (c *fakeCommits) Busy() bool  { return c.busy }
func (c *fakeCommits) Next() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan struct{})
	c.next = append(c.next, ch)
	if c.asked != nil {
		c.asked <- len(c.next)
	}
	return ch
}

func (c *fakeCommits) calls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.next)
}

// finish ends the commit the nth Next call waits for.
func (c *fakeCommits) finish(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	close(c.next[n-1])
}

func devOfDir(t *testing.T, dir string) uint64 {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	dev := devOf(d)
	if dev == 0 {
		t.Skip("no device numbers here")
	}
	return dev
}

func newMaildir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "md")
	if err := Create(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func countIn(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestDeliverSharesCommits: while the queue commits often, a delivery on
// its file system links its file only after a commit that started once
// the file was written, and returns only after another that started once
// it was linked; otherwise it waits for none.
func TestDeliverSharesCommits(t *testing.T) {
	defer func(d time.Duration) { commitWait = d }(commitWait)
	for _, named := range []bool{false, true} {
		name := map[bool]string{false: "unnamed file", true: "named file"}[named]
		t.Run("busy queue, "+name, func(t *testing.T) {
			was := anonBroken.Load()
			defer anonBroken.Store(was)
			anonBroken.Store(named || was)
			useWindow(t)
			commitWait = time.Hour
			dir := newMaildir(t)
			c := &fakeCommits{dev: devOfDir(t, dir), busy: true, asked: make(chan int, 4)}
			done := make(chan error, 1)
			go func() {
				_, err := DeliverWith(dir, strings.NewReader("Subject: x\r\n\r\nbody\r\n"), Options{Commits: c})
				done <- err
			}()
			ask := func(want int) {
				t.Helper()
				select {
				case n := <-c.asked:
					if n != want {
						t.Fatalf("Next call %d, want %d", n, want)
					}
				case err := <-done:
					t.Fatalf("Deliver returned (%v) without waiting for commit %d", err, want)
				case <-time.After(10 * time.Second):
					t.Fatalf("no Next call %d", want)
				}
			}
			ask(1)
			time.Sleep(20 * time.Millisecond)
			if n := countIn(t, filepath.Join(dir, "new")); n != 0 {
				t.Fatalf("the file was linked before the commit it waited for finished (%d in new/)", n)
			}
			c.finish(1)
			ask(2)
			if n := countIn(t, filepath.Join(dir, "new")); n != 1 {
				t.Fatalf("waiting for the directory's commit with %d files in new/, want 1", n)
			}
			select {
			case err := <-done:
				t.Fatalf("Deliver returned (%v) before the commit after its link finished", err)
			case <-time.After(20 * time.Millisecond):
			}
			c.finish(2)
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Deliver did not return after both commits")
			}
			if n := c.calls(); n != 2 {
				t.Errorf("%d Next calls, want 2", n)
			}
			if n := countIn(t, filepath.Join(dir, "tmp")); n != 0 {
				t.Errorf("tmp/ holds %d files", n)
			}
		})
	}
	for _, tt := range []struct {
		name   string
		busy   bool
		devAdd uint64
		size   int
	}{
		{"quiet queue", false, 0, 100},
		{"another file system", true, 1, 100},
		{"a file over shareMax", true, 0, shareMax + 1},
	} {
		t.Run(tt.name+": no wait", func(t *testing.T) {
			useWindow(t)
			commitWait = 2 * time.Second
			dir := newMaildir(t)
			c := &fakeCommits{dev: devOfDir(t, dir) + tt.devAdd, busy: tt.busy}
			if _, err := DeliverWith(dir, strings.NewReader(strings.Repeat("x", tt.size)), Options{Commits: c}); err != nil {
				t.Fatal(err)
			}
			if n := c.calls(); n != 0 {
				t.Errorf("%d Next calls, want 0", n)
			}
		})
	}
	t.Run("a commit that never comes", func(t *testing.T) {
		useWindow(t)
		commitWait = 30 * time.Millisecond
		dir := newMaildir(t)
		c := &fakeCommits{dev: devOfDir(t, dir), busy: true}
		t0 := time.Now()
		done := make(chan error, 1)
		go func() {
			_, err := DeliverWith(dir, strings.NewReader("x"), Options{Commits: c})
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Deliver still waits for a commit that never comes")
		}
		if d := time.Since(t0); d < 2*commitWait {
			t.Errorf("delivered in %v, want the two waits of %v", d, commitWait)
		}
		if n := countIn(t, filepath.Join(dir, "new")); n != 1 {
			t.Errorf("%d files in new/, want 1", n)
		}
	})
}
