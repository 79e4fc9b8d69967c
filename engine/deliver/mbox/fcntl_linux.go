package mbox

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// tryFcntl takes an open file description lock: it conflicts with the
// classic fcntl locks other mail programs take, and, being owned by the open
// file rather than the process, also with another goroutine's lock and is
// not dropped when some other descriptor for the file is closed.
func tryFcntl(f *os.File) (busy bool, err error) {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: int16(io.SeekStart)}
	err = unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
	if err == unix.EINVAL {
		// Kernels before 3.15 have no OFD locks.
		lk = unix.Flock_t{Type: unix.F_WRLCK, Whence: int16(io.SeekStart)}
		err = unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk)
	}
	if err == unix.EAGAIN || err == unix.EACCES {
		return true, nil
	}
	return false, err
}
