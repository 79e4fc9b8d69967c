package maildir

import (
	"os"
	"time"
)

// Commits is another writer's stream of durable commits on a file system:
// the queue's group commit (queue.Beat). On a journaled file system (ext4,
// XFS) an fsync commits the whole running journal transaction, so a
// delivery whose file and link were written before one of the queue's
// commits started finds them committed when it fsyncs after that commit,
// and its fsync costs no journal commit of its own. While the queue
// commits often (it takes SMTP traffic), a delivery on its file system
// waits for its next commit before each of its two fsyncs instead of
// syncing when it is ready; when the queue is quiet the deliveries sync
// among themselves (syncwindow.go). Only the delivery waits; its file is
// still fsynced before the link and new/ after, whatever the file system
// does.
type Commits interface {
	// Dev is the device number of the file system the commits sync (0
	// unknown: nothing is shared).
	Dev() uint64
	// Busy reports whether a commit is due within a few milliseconds.
	Busy() bool
	// Next returns a channel closed when a commit that starts after the
	// call has finished.
	Next() <-chan struct{}
}

// Options are the less common parts of a delivery.
type Options struct {
	// Commits, when set, are the queue's: see Commits.
	Commits Commits
}

// commitWait bounds the wait for the next commit: a queue that was busy
// may stop committing just then.
var commitWait = 10 * time.Millisecond // a variable for tests

// shareMax: a bigger file syncs on its own. In ext4's ordered mode a
// journal commit first writes the data of the blocks its transaction
// allocated, so a big file's data would ride in the queue's commit, which
// 250 replies wait for (100 KB messages at 10 sessions: 352-422 msgs/s
// delivered against 359-475 without sharing). The queue's own threshold
// for a body file of its own.
const shareMax = 64 << 10

// sharing returns c when the size bytes in f are on the file system c
// syncs and few enough to share its commit, else nil.
func sharing(f *os.File, size int64, c Commits) Commits {
	if c == nil || size > shareMax || c.Dev() == 0 || devOf(f) != c.Dev() {
		return nil
	}
	return c
}

// waitCommit waits until a commit of c that starts now or later has
// finished, or commitWait has passed.
func waitCommit(c Commits) {
	t := time.NewTimer(commitWait)
	defer t.Stop()
	select {
	case <-c.Next():
	case <-t.C:
	}
}
