//go:build unix

package queue

import (
	"os"

	"golang.org/x/sys/unix"
)

// devOf is the device number of the file system holding dir, 0 if unknown.
func devOf(dir string) uint64 {
	var st unix.Stat_t
	if unix.Stat(dir, &st) != nil {
		return 0
	}
	return uint64(st.Dev)
}

func setNonblock(f *os.File) error {
	c, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := c.Control(func(fd uintptr) { serr = unix.SetNonblock(int(fd), true) }); err != nil {
		return err
	}
	return serr
}

// writeNonblock writes c to f unless that would wait: the committer calls
// it, and a pipe nobody reads must not stop commits. Go's own Write would
// park the goroutine until the pipe has room.
func writeNonblock(f *os.File, c byte) {
	sc, err := f.SyscallConn()
	if err != nil {
		return
	}
	sc.Control(func(fd uintptr) { unix.Write(int(fd), []byte{c}) })
}
