package queue

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openFile opens a body file or the body directory through the system
// call itself. os.OpenFile makes a new descriptor non-blocking, offers it
// to the poller (which refuses regular files and directories on Linux)
// and makes it blocking again: five system calls that do nothing, three
// times for every message with a body file (create, read back for
// delivery, the directory's fsync). os.NewFile only asks whether the
// descriptor is non-blocking, which it is not.
func openFile(path string, flag int, perm uint32) (*os.File, error) {
	fd, err := retry(func() (int, error) { return unix.Open(path, flag|unix.O_CLOEXEC, perm) })
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

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
