package queue

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback has the kernel write f's pages now, without waiting, so
// that their blocks are allocated before the commit's fsync (see
// syncFiles). Only a hint: an error is left for the fsync to report.
func startWriteback(f *os.File) {
	_ = unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}
