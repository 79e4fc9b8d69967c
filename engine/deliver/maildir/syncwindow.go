package maildir

import (
	"sync"
	"sync/atomic"
	"time"
)

// On a journaled file system the fsync of a newly written file waits for
// a journal commit, and commits run one at a time. Deliveries that finish
// writing a few milliseconds apart each got a commit of their own, and
// those commits stood in front of the queue's, which the 250 replies wait
// for: at 10 sessions about 1.4 commits a message, a third of the rate
// (docs/guide/performance.md, "Maildir files synced together"). So a
// delivery whose file is written waits up to syncWindow for others when
// the server is busy, and they fsync together: one commit for the group,
// and their links then share one fsync of new/ (groupSync). Only the
// delivery is later; each file is still synced before it is linked and
// new/ after, so nothing of the promise changes.
var syncWindow = 2 * time.Millisecond // a variable for tests

const (
	// A window closes early once this many have joined it.
	syncWindowMax = 32
	// busyWithin: a delivery waits for company only if another one synced
	// this recently; an idle server's delivery syncs at once.
	busyWithin = 20 * time.Millisecond
)

type window struct {
	mu     sync.Mutex
	open   *windowGroup  // the window callers join now, if any
	opened atomic.Uint64 // windows opened, for tests
	last   atomic.Int64  // UnixNano of the last release
}

type windowGroup struct {
	done    chan struct{} // closed when the members may sync
	members int           // final once done is closed
}

var fileWindow = &window{}

// wait returns when the caller's file may be synced: at once when the
// server is idle, else when the window it joined closes. It returns how
// many synced together (1 when alone), so that the first of them to reach
// new/ knows whether to wait for the others' links (groupSync).
func (w *window) wait() int {
	if !w.busy() {
		w.last.Store(time.Now().UnixNano())
		return 1
	}
	w.mu.Lock()
	g := w.open
	if g == nil {
		g = &windowGroup{done: make(chan struct{})}
		w.open = g
		w.opened.Add(1)
		time.AfterFunc(syncWindow, func() { w.close(g) })
	}
	g.members++
	if g.members >= syncWindowMax {
		w.closeLocked(g)
	}
	w.mu.Unlock()
	<-g.done
	return g.members
}

func (w *window) close(g *windowGroup) {
	w.mu.Lock()
	w.closeLocked(g)
	w.mu.Unlock()
}

func (w *window) closeLocked(g *windowGroup) {
	if w.open == g {
		close(g.done)
		w.open = nil
		w.last.Store(time.Now().UnixNano())
	}
}

// busy reports whether a delivery synced in the last busyWithin.
func (w *window) busy() bool {
	return time.Now().UnixNano()-w.last.Load() <= int64(busyWithin)
}
