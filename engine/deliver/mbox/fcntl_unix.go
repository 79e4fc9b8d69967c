//go:build unix && !linux

package mbox

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// tryFcntl takes a classic fcntl lock; goroutines of this process are kept
// apart by the gate instead.
func tryFcntl(f *os.File) (busy bool, err error) {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: int16(io.SeekStart)}
	err = unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk)
	if err == unix.EAGAIN || err == unix.EACCES {
		return true, nil
	}
	return false, err
}
