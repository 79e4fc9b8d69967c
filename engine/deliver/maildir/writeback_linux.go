package maildir

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback has the kernel write f's pages now, without waiting: the
// file system allocates the blocks (delayed allocation on ext4 and XFS)
// here, in the journal transaction that is running, instead of inside
// the fsync. Without it a window's fsyncs each allocated on their own and
// split over as many commits as before; with it the group's allocations
// are in one transaction that the first fsync commits for all of them.
// Only a hint: an error is left for the fsync to report.
func startWriteback(f *os.File) {
	_ = unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}
