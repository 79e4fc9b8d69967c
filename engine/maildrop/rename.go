package maildrop

import (
	"errors"
	"io/fs"
	"os"
)

// checkedRename refuses to replace an existing file. The check and the
// rename are two steps; it is the fallback where no atomic way exists.
func checkedRename(from, to string) error {
	if _, err := os.Lstat(to); err == nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: fs.ErrExist}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.Rename(from, to)
}
