package maildrop

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// renameNoReplace renames without replacing an existing file, in one
// step, so two writers given the same id cannot overwrite each other.
func renameNoReplace(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// The filesystem (NFS, some FUSE) cannot do it in one step.
		return checkedRename(from, to)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}
