//go:build unix

package maildir

import (
	"os"

	"golang.org/x/sys/unix"
)

// devOf is the device number of the file system holding f, 0 if unknown.
func devOf(f *os.File) uint64 {
	var st unix.Stat_t
	c, err := f.SyscallConn()
	if err != nil {
		return 0
	}
	var serr error
	if err := c.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil || serr != nil {
		return 0
	}
	return uint64(st.Dev)
}
