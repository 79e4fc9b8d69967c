package postfix

import (
	"fmt"
	"runtime"
	"syscall"
	"unsafe"
)

// Do runs fn with the file-system identity of a: its fsuid, fsgid and
// supplementary groups, so every open, create and permission check in fn
// is the user's (and files fn creates are the user's). It runs on an OS
// thread of its own that is thrown away afterwards: no other goroutine
// ever runs with those rights, and nothing has to be restored. Linux
// keeps these per thread (setfsuid(2); setgroups(2) as a raw system call,
// which, unlike Go's syscall.Setgroups, does not change every thread).
// Without root, fn runs as the process.
func (a Account) Do(fn func() error) error {
	if !privileged() {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread exits with this goroutine.
		runtime.LockOSThread()
		if err := a.enter(); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func (a Account) enter() error {
	gids := make([]uint32, 0, len(a.Groups)+1)
	gids = append(gids, uint32(a.GID))
	for _, g := range a.Groups {
		gids = append(gids, uint32(g))
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_SETGROUPS, uintptr(len(gids)), uintptr(unsafe.Pointer(&gids[0])), 0); e != 0 {
		return fmt.Errorf("setgroups for %s: %w", a.Name, e)
	}
	// setfsuid and setfsgid return the previous value and never fail
	// loudly: setting twice tells whether the first one took.
	syscall.RawSyscall(syscall.SYS_SETFSGID, uintptr(a.GID), 0, 0)
	if g, _, _ := syscall.RawSyscall(syscall.SYS_SETFSGID, uintptr(a.GID), 0, 0); int(g) != a.GID {
		return fmt.Errorf("setfsgid %d for %s failed", a.GID, a.Name)
	}
	syscall.RawSyscall(syscall.SYS_SETFSUID, uintptr(a.UID), 0, 0)
	if u, _, _ := syscall.RawSyscall(syscall.SYS_SETFSUID, uintptr(a.UID), 0, 0); int(u) != a.UID {
		return fmt.Errorf("setfsuid %d for %s failed", a.UID, a.Name)
	}
	return nil
}
