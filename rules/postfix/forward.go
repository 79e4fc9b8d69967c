package postfix

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// maxForward bounds a .forward file: a user's list of targets, not a
// place to make the server read a big file.
const maxForward = 64 << 10

// readForward reads user's .forward as local(8) does. Running as root, it
// is opened with the user's rights when the user has a system account, so
// a .forward that is a symlink to a file the user cannot read fails as it
// would for the user; and it is ignored unless it is a regular file owned
// by the user or root and writable by no one else, so nobody can make
// another user's mail go where they choose.
func readForward(user, path string) ([]byte, error) {
	acct, hasAccount := LookupAccount(user)
	owners := map[int]bool{0: true, os.Geteuid(): true}
	if hasAccount {
		owners = map[int]bool{0: true, acct.UID: true}
	}
	var data []byte
	read := func() error {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		switch {
		case !fi.Mode().IsRegular():
			return fmt.Errorf("not a regular file")
		case st == nil || !owners[int(st.Uid)]:
			return fmt.Errorf("not owned by %s or root", user)
		case fi.Mode().Perm()&0o022 != 0:
			return fmt.Errorf("writable by group or others (mode %#o)", fi.Mode().Perm())
		}
		data, err = io.ReadAll(io.LimitReader(f, maxForward+1))
		if err == nil && len(data) > maxForward {
			err = fmt.Errorf("larger than %d bytes", maxForward)
		}
		return err
	}
	var err error
	if hasAccount {
		err = acct.Do(read)
	} else {
		err = read()
	}
	return data, err
}

// ReadForward reads user's .forward as local(8) does, with the checks of
// readForward: what a split server's root parent runs when its
// unprivileged daemon asks (engine/privsep).
func ReadForward(user, path string) ([]byte, error) { return readForward(user, path) }
