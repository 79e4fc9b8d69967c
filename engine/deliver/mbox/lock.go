package mbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// gates serialises this process's deliveries to one mailbox. Where fcntl
// locks are per process they do not keep goroutines apart, and a goroutine
// waiting here is woken as soon as the holder is done, where polling the
// dotlock would sleep up to lockRetry each time.
var (
	gatesMu sync.Mutex
	gates   = map[string]*gate{}
)

type gate struct {
	slot chan struct{}
	refs int
}

// enterGate waits until no other goroutine delivers to path, or until the
// deadline. Paths are compared after filepath.Abs, so two spellings of one
// file through a symlinked directory are not caught here; the dotlock and, on
// Linux, the fcntl lock still keep them apart.
func enterGate(path string, deadline time.Time) (release func(), err error) {
	key, err := filepath.Abs(path)
	if err != nil {
		key = filepath.Clean(path)
	}
	gatesMu.Lock()
	g := gates[key]
	if g == nil {
		g = &gate{slot: make(chan struct{}, 1)}
		gates[key] = g
	}
	g.refs++
	gatesMu.Unlock()
	drop := func() {
		gatesMu.Lock()
		if g.refs--; g.refs == 0 {
			delete(gates, key)
		}
		gatesMu.Unlock()
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case g.slot <- struct{}{}:
		return func() { <-g.slot; drop() }, nil
	case <-t.C:
		drop()
		return nil, fmt.Errorf("another delivery in this process holds it: %w", ErrLocked)
	}
}

// dotlock creates lock with O_EXCL, which is atomic even on the NFS servers
// that matter today, retrying until the deadline and breaking a lock older
// than staleAge. Breaking is racy in the way it is for Postfix: two waiters
// can both judge one lock stale, and the slower then removes the lock the
// faster just made. The fcntl lock covers that window.
func dotlock(lock string, deadline time.Time, staleAge time.Duration) (unlock func(), err error) {
	brokeStale := false
	for {
		f, err := os.OpenFile(lock, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			fi, err := f.Stat()
			f.Close()
			if err != nil {
				os.Remove(lock)
				return nil, fmt.Errorf("stat dotlock: %w", err)
			}
			return func() { removeOwn(lock, fi) }, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("create dotlock: %w", err)
		}
		fi, err := os.Lstat(lock)
		if err == nil && fi.Mode().IsRegular() && time.Since(fi.ModTime()) > staleAge {
			if err := os.Remove(lock); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("remove stale dotlock: %w", err)
			}
			// Retry at once, but only once: with a clock that makes
			// every new lock look stale, this would otherwise spin.
			if !brokeStale {
				brokeStale = true
				continue
			}
		}
		if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("dotlock %s: %w", lock, ErrLocked)
		}
		sleepRetry(deadline)
	}
}

// removeOwn removes the dotlock only if it is still the file this delivery
// created: if it was broken as stale and taken by someone else meanwhile,
// removing it would let a third party in beside them.
func removeOwn(lock string, own os.FileInfo) {
	if fi, err := os.Lstat(lock); err == nil && os.SameFile(fi, own) {
		os.Remove(lock)
	}
}

// fcntlLock takes a write lock on the whole of f. It polls with a
// non-blocking F_SETLK because F_SETLKW cannot be given a deadline.
func fcntlLock(f *os.File, deadline time.Time) error {
	for {
		busy, err := tryFcntl(f)
		if err != nil {
			return fmt.Errorf("fcntl lock: %w", err)
		}
		if !busy {
			return nil
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("fcntl lock: %w", ErrLocked)
		}
		sleepRetry(deadline)
	}
}

func sleepRetry(deadline time.Time) {
	time.Sleep(min(lockRetry, time.Until(deadline)))
}
