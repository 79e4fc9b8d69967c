//go:build unix

package queue

import "golang.org/x/sys/unix"

// devOf is the device number of the file system holding dir, 0 if unknown.
func devOf(dir string) uint64 {
	var st unix.Stat_t
	if unix.Stat(dir, &st) != nil {
		return 0
	}
	return uint64(st.Dev)
}
