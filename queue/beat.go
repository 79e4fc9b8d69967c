package queue

import (
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Beat tells other writers on the queue's file system when the group
// commit syncs. On a journaled file system an fsync commits the whole
// running journal transaction, with every other file's changes in it, and
// commits run one at a time: a Maildir delivery whose file and link are
// in the transaction the queue's commit syncs costs no commit of its own
// when it fsyncs afterwards. At 10 SMTP sessions deliveries that synced
// on their own took half the journal commits, and each stood in front of
// a queue commit that 250 replies waited for (docs/guide/performance.md,
// "Deliveries synced in the queue's commits").
type Beat struct {
	dev  uint64
	mu   sync.Mutex
	next chan struct{} // closed when the next commit to start has finished
	cur  chan struct{} // closed when the commit under way has finished
	// Start times of the last two commits, unix ns.
	last, prev atomic.Int64
	mirror     atomic.Pointer[os.File] // see Mirror
}

// busyGap: the queue commits often when its last two commits started
// within busyGap of each other and the last within busyGap of now. A
// delivery that waits for the next commit then waits a few milliseconds;
// on a quiet queue it would wait for nothing.
const busyGap = 5 * time.Millisecond

// Dev is the device number of the queue's file system (0 where unknown):
// a commit there syncs nothing on another.
func (b *Beat) Dev() uint64 { return b.dev }

// Busy reports whether the queue commits often now.
func (b *Beat) Busy() bool {
	last := b.last.Load()
	return time.Now().UnixNano()-last < int64(busyGap) && last-b.prev.Load() < int64(busyGap)
}

// Next returns a channel closed when a commit that starts after the call
// has finished: everything written before the call is then in a synced
// journal transaction, if the file system journals that way.
func (b *Beat) Next() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.next == nil {
		b.next = make(chan struct{})
	}
	return b.next
}

// begin and end bracket one commit's syncs; the committer calls them,
// one commit at a time.
func (b *Beat) begin() {
	b.tell('b')
	now := time.Now().UnixNano()
	b.prev.Store(b.last.Load())
	b.last.Store(now)
	b.mu.Lock()
	b.cur, b.next = b.next, nil
	b.mu.Unlock()
}

func (b *Beat) end() {
	b.mu.Lock()
	if b.cur != nil {
		close(b.cur)
		b.cur = nil
	}
	b.mu.Unlock()
	b.tell('e')
}

// Mirror sends the beat to another process over w, the write end of a
// pipe whose read end that process gives to Follow: a split server's
// root parent writes users' Maildirs, on the queue's file system, in a
// process without the queue. A byte a beat; when the pipe is full
// (nobody reads) beats are dropped: the committer never waits for it.
func (b *Beat) Mirror(w *os.File) error {
	if err := setNonblock(w); err != nil {
		return err
	}
	b.mirror.Store(w)
	return nil
}

func (b *Beat) tell(c byte) {
	if w := b.mirror.Load(); w != nil {
		writeNonblock(w, c)
	}
}

// Follow returns a Beat that another process's Mirror drives through r,
// for writers on the file system holding dir (the queue's, or the
// data_dir above it): 'b' a commit
// started, 'e' it finished. Anything else is ignored; a lying writer can
// only make those who wait for the beat wait (each at most its own
// bound) or sync on their own. The beat stops at the end of r.
func Follow(r io.Reader, dir string) *Beat {
	b := &Beat{dev: devOf(dir)}
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := r.Read(buf)
			for _, c := range buf[:n] {
				switch c {
				case 'b':
					b.begin()
				case 'e':
					b.end()
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return b
}
