package privsep

import (
	"os/exec"
	"runtime"
	"sync"
)

// Linux sends a child its Pdeathsig when the *thread* that forked it
// exits, not the process; Go retires threads whenever a goroutine locked
// to one ends (every postfix.Account.Do does that), so a child forked on
// such a thread would be killed at random. Children with a Pdeathsig are
// therefore forked on one thread kept for that, which lives as long as
// the process.

type spawn struct {
	cmd  *exec.Cmd
	done chan error
}

var (
	spawnOnce sync.Once
	spawns    chan spawn
)

// StartPinned is cmd.Start on the process's spawning thread.
func StartPinned(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawns = make(chan spawn)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread stays
			for s := range spawns {
				s.done <- s.cmd.Start()
			}
		}()
	})
	s := spawn{cmd: cmd, done: make(chan error, 1)}
	spawns <- s
	return <-s.done
}
