package queue

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNoSpace is returned (wrapped) when a write would eat into the space
// the queue keeps free for itself: the caller answers 452 4.3.1 or defers.
var ErrNoSpace = errors.New("insufficient system storage")

// Reserve is the free space the queue's file system must keep for Badger
// itself. Badger writes its write-ahead log, its level-0 tables and its
// compactions through mmap'd files that are created sparse: writing into
// such a file on a full file system is not an error return but a SIGBUS
// that kills the process, before and during recovery alike. So no write
// of new mail, body or record is started unless this much stays free:
// the current memtable's log (memTableSize) plus its flush (about as
// much) plus a compaction of the level-0 tables (level0Tables of them),
// plus slack: 32 MiB in all, as the guide says.
const Reserve = (2+level0Tables)*memTableSize + 20<<20

// Statfs reports the bytes available to the server on the file system
// holding dir. Tests replace it to simulate a full disk.
type Statfs func(dir string) (int64, error)

// realStatfs counts blocks available to unprivileged users: a server
// running as root must not count on the root reserve either.
func realStatfs(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// space tracks the free space of the queue's file system. Statfs is
// cached briefly (it is called per commit and per spooled megabyte); bytes
// that body writers have reserved but the file system may not show yet
// are subtracted, so concurrent writers cannot all pass the same check.
type space struct {
	dir    string
	statfs Statfs

	mu      sync.Mutex
	free    int64
	at      time.Time
	err     error
	pending atomic.Int64
}

const statfsCache = 50 * time.Millisecond

// Free returns the bytes free for new data: available blocks minus
// reservations in progress. A statfs error reads as no space at all.
func (s *space) Free() int64 {
	s.mu.Lock()
	if time.Since(s.at) > statfsCache {
		s.free, s.err = s.statfs(s.dir)
		s.at = time.Now()
	}
	free, err := s.free, s.err
	s.mu.Unlock()
	if err != nil {
		return 0
	}
	return free - s.pending.Load()
}

// refresh forgets the cached figure, after a write error.
func (s *space) refresh() {
	s.mu.Lock()
	s.at = time.Time{}
	s.mu.Unlock()
}

// reserve promises n bytes to a writer if floor bytes still stay free.
func (s *space) reserve(n, floor int64) bool {
	if s.Free()-n < floor {
		return false
	}
	s.pending.Add(n)
	return true
}

func (s *space) release(n int64) { s.pending.Add(-n) }

// Free returns the bytes available on the queue's file system for new
// data, minus what body writers have reserved.
func (q *Queue) Free() int64 { return q.space.Free() }

// HasRoom reports whether n more bytes can be taken on the queue's file
// system with Reserve and floor still free afterwards. The SMTP server
// asks it at MAIL FROM (Postfix's queue_minfree check) and local delivery
// before writing to a mailbox on the same file system.
func (q *Queue) HasRoom(n, floor int64) bool { return q.space.Free()-n >= Reserve+floor }

// ballastSize is a file kept allocated beside the Badger files. When
// something else fills the file system, the queue can still open: the
// ballast is removed to make room for Badger's recovery, which writes the
// first page of a new memtable and value log through mmap (a SIGBUS on a
// full disk), and it is made again once there is room.
const ballastSize = 4 << 20

func ballastPath(dir string) string { return filepath.Join(dir, "ballast") }

// releaseBallast frees the ballast's space when the file system is too
// full for Badger to open.
func releaseBallast(dir string, sp *space, log *slog.Logger) {
	if sp.Free() >= MinOpenSpace {
		return
	}
	if err := os.Remove(ballastPath(dir)); err == nil {
		log.Warn("warning: queue file system is full: ballast released so the queue can open")
		sp.refresh()
	}
}

// keepBallast makes the ballast when it is missing and there is room for
// it on top of the queue's reserve.
func (q *Queue) keepBallast() {
	path := ballastPath(q.dir)
	if _, err := os.Stat(path); err == nil || q.space.Free() < Reserve+2*ballastSize {
		return
	}
	f, err := os.OpenFile(path+".tmp", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return
	}
	err = unix.Fallocate(int(f.Fd()), 0, 0, ballastSize)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		_, err = f.Write(make([]byte, ballastSize)) // a file system without fallocate
	}
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	if err == nil {
		err = os.Rename(path+".tmp", path)
	}
	if err != nil {
		os.Remove(path + ".tmp")
		q.log.Warn("queue: cannot make the ballast file: " + err.Error())
	}
	q.space.refresh()
}
