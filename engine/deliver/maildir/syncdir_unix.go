//go:build unix

package maildir

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// syncDir fsyncs a directory through the system calls themselves: os.Open
// makes the descriptor non-blocking, offers it to the poller (which
// refuses a directory) and makes it blocking again, five system calls per
// delivery that do nothing.
func syncDir(dir string) error {
	fd, err := retry(func() (int, error) { return unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0) })
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	if _, err := retry(func() (int, error) { return 0, unix.Fsync(fd) }); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// retry repeats a system call that a signal interrupted, as package os does.
func retry(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if !errors.Is(err, unix.EINTR) {
			return n, err
		}
	}
}
