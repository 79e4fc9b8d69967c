package postfix

import (
	"os"
	"os/user"
	"strconv"
)

// Account is a system user whose rights a delivery takes: local(8) reads
// a user's .forward and writes the files it names as that user, never as
// root.
type Account struct {
	Name     string
	UID, GID int
	Groups   []int
	Home     string
}

// LookupAccount finds the system account called name.
func LookupAccount(name string) (Account, bool) {
	u, err := user.Lookup(name)
	if err != nil {
		return Account{}, false
	}
	return accountOf(u)
}

// LookupAccountID finds the system account with uid id.
func LookupAccountID(id int) (Account, bool) {
	u, err := user.LookupId(strconv.Itoa(id))
	if err != nil {
		return Account{}, false
	}
	return accountOf(u)
}

func accountOf(u *user.User) (Account, bool) {
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return Account{}, false
	}
	a := Account{Name: u.Username, UID: uid, GID: gid, Home: u.HomeDir}
	if ids, err := u.GroupIds(); err == nil {
		for _, s := range ids {
			if g, err := strconv.Atoi(s); err == nil {
				a.Groups = append(a.Groups, g)
			}
		}
	}
	return a, true
}

// privileged reports whether this process can take other users' rights.
func privileged() bool { return os.Geteuid() == 0 }
