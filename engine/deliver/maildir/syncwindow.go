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
	mu      sync.Mutex
	open    chan struct{} // closed when the window's members may sync
	members int
	opened  atomic.Uint64 // windows opened, for tests
	last    atomic.Int64  // UnixNano of the last release
}

var fileWindow = &window{}

// wait returns when the caller's file may be synced: at once when the
// server is idle, else when the window it joined closes.
func (w *window) wait() {
	now := time.Now().UnixNano()
	if now-w.last.Load() > int64(busyWithin) {
		w.last.Store(now)
		return
	}
	w.mu.Lock()
	if w.open == nil {
		ch := make(chan struct{})
		w.open, w.members = ch, 0
		w.opened.Add(1)
		time.AfterFunc(syncWindow, func() { w.close(ch) })
	}
	ch := w.open
	w.members++
	if w.members >= syncWindowMax {
		w.closeLocked(ch)
	}
	w.mu.Unlock()
	<-ch
}

func (w *window) close(ch chan struct{}) {
	w.mu.Lock()
	w.closeLocked(ch)
	w.mu.Unlock()
}

func (w *window) closeLocked(ch chan struct{}) {
	if w.open == ch {
		close(ch)
		w.open = nil
		w.last.Store(time.Now().UnixNano())
	}
}
