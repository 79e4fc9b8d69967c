package postfix

import (
	"os/user"
	"strconv"
	"sync"
	"time"
)

// homeCacheTTL is how long LookupHome trusts an answer. Every local
// delivery asks whose home a mailbox is in; through cgo's getpwnam that
// was 18% of the server's CPU under load. An account created or removed
// is seen within this time; the delivery itself runs with the rights the
// root parent looks up afresh.
const homeCacheTTL = 10 * time.Second

// homeCacheMax bounds the cache: past it, it starts over.
const homeCacheMax = 4096

type homeEntry struct {
	acct    Account
	ok      bool
	expires time.Time
}

var homeCache = struct {
	sync.Mutex
	m map[string]homeEntry
}{m: map[string]homeEntry{}}

// LookupHome finds the system account called name without its groups
// (Name, UID, GID, Home), from a cache of at most homeCacheTTL.
func LookupHome(name string) (Account, bool) {
	now := time.Now()
	homeCache.Lock()
	e, hit := homeCache.m[name]
	homeCache.Unlock()
	if hit && now.Before(e.expires) {
		return e.acct, e.ok
	}
	e = homeEntry{expires: now.Add(homeCacheTTL)}
	if u, err := user.Lookup(name); err == nil {
		uid, err1 := strconv.Atoi(u.Uid)
		gid, err2 := strconv.Atoi(u.Gid)
		if err1 == nil && err2 == nil {
			e.acct, e.ok = Account{Name: u.Username, UID: uid, GID: gid, Home: u.HomeDir}, true
		}
	} else if _, unknown := err.(user.UnknownUserError); !unknown {
		// A failing NSS source is not "no such user": ask again next time.
		e.expires = now
	}
	homeCache.Lock()
	if len(homeCache.m) >= homeCacheMax {
		homeCache.m = map[string]homeEntry{}
	}
	homeCache.m[name] = e
	homeCache.Unlock()
	return e.acct, e.ok
}
