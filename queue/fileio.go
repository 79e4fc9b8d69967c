package queue

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// openFile opens a body file through the system call itself. os.OpenFile
// makes a new descriptor non-blocking, offers it to the poller (which
// refuses regular files on Linux) and makes it blocking again: five
// system calls that do nothing, twice for every message with a body file
// (its creation, and its opening for delivery). os.NewFile only asks
// whether the descriptor is non-blocking, which it is not.
func openFile(path string, flag int, perm uint32) (*os.File, error) {
	for {
		fd, err := unix.Open(path, flag|unix.O_CLOEXEC, perm)
		switch {
		case err == nil:
			return os.NewFile(uintptr(fd), path), nil
		case !errors.Is(err, unix.EINTR): // interrupted by a signal: again, as package os does
			return nil, &os.PathError{Op: "open", Path: path, Err: err}
		}
	}
}
