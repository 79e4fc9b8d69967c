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
// other deliveries are under way, and they fsync together: one commit for
// the group, and their links then share one fsync of new/ (groupSync).
// Only the delivery is later; each file is still synced before it is
// linked and new/ after, so nothing of the promise changes. A delivery
// with none beside it (a quiet server, or one worker filing a message
// into fifty mailboxes one after another) does not wait.
var syncWindow = 2 * time.Millisecond // a variable for tests

// A window closes early once this many have joined it.
const syncWindowMax = 32

// inflight counts the deliveries between their start and their return.
var inflight atomic.Int64

type window struct {
	mu     sync.Mutex
	open   *windowGroup  // the window callers join now, if any
	opened atomic.Uint64 // windows opened, for tests
	// others reports whether other deliveries are under way.
	others func() bool
}

type windowGroup struct {
	done    chan struct{} // closed when the members may sync
	members int           // final once done is closed
}

var fileWindow = newWindow()

func newWindow() *window {
	return &window{others: func() bool { return inflight.Load() > 1 }}
}

// wait returns when the caller's file may be synced: at once when no
// other delivery is under way, else when the window it joined closes. It
// returns how many synced together (1 when alone), so that the first of
// them to reach new/ knows whether to wait for the others' links
// (groupSync).
func (w *window) wait() int {
	if !w.others() { // a window open means another delivery waits in it
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
	}
}
