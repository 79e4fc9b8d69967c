// Package maildir writes messages into Maildir directories the way qmail's
// maildir(5) specifies and Dovecot expects: the file is written and fsynced
// (unnamed, where Linux allows, or under tmp/), then linked into new/, and
// new/ itself is fsynced, so a message that Deliver reported is on disk even
// if the machine loses power next.
package maildir

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	seq      atomic.Uint64
	hostname = func() string {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		// maildir(5): "/" and ":" cannot appear in the host part.
		return strings.NewReplacer("/", `\057`, ":", `\072`).Replace(h)
	}()
	pid = strconv.Itoa(os.Getpid())
)

// Create makes dir a Maildir (tmp, new and cur), creating parents as needed.
func Create(dir string) error {
	// tmp last: a concurrent delivery that finds tmp/ then renames into
	// new/, which must exist by then.
	for _, sub := range []string{"new", "cur", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return fmt.Errorf("create maildir: %w", err)
		}
	}
	return nil
}

// uniqueName follows the modern maildir(5) form
// "<sec>.M<usec>P<pid>Q<seq>.<host>": unique per process through the
// sequence number, across processes through the pid, across reboots through time.
func uniqueName(now time.Time) string {
	return strconv.FormatInt(now.Unix(), 10) + ".M" + strconv.Itoa(now.Nanosecond()/1000) +
		"P" + pid + "Q" + strconv.FormatUint(seq.Add(1), 10) + "." + hostname
}

// Deliver writes the message read from r into dir/new and returns the
// file's path. The file name carries ",S=<size>" so IMAP servers need not
// stat it. The Maildir is created if missing. On any error nothing is left
// in new/ and nothing in tmp/.
//
// Where the system allows (Linux, a local file system) the file is written
// without a name and linked into new/ once it is on disk; elsewhere it is
// written as tmp/<name> and renamed into new/.
func Deliver(dir string, r io.Reader) (string, error) {
	return DeliverWith(dir, r, Options{})
}

// DeliverWith is Deliver with options.
func DeliverWith(dir string, r io.Reader, o Options) (string, error) {
	inflight.Add(1)
	defer inflight.Add(-1)
	name := uniqueName(time.Now())
	tmpDir := filepath.Join(dir, "tmp")
	f, err := openAnon(tmpDir)
	if errors.Is(err, os.ErrNotExist) {
		if err = Create(dir); err == nil {
			f, err = openAnon(tmpDir)
		}
	}
	switch {
	case errors.Is(err, errNoAnon):
		return deliverNamed(dir, name, r, o)
	case err != nil:
		return "", fmt.Errorf("maildir deliver: %w", err)
	}
	defer f.Close()
	size, err := io.Copy(f, r)
	c := sharing(f, size, o.Commits)
	together := 1
	if err == nil {
		together, err = syncFile(f, c)
	}
	if err != nil {
		return "", fmt.Errorf("maildir deliver: write unnamed file in %s: %w", tmpDir, err)
	}
	final := filepath.Join(dir, "new", name+",S="+strconv.FormatInt(size, 10))
	err = link(f, final)
	if errors.Is(err, os.ErrNotExist) {
		// new/ removed under us: make it, once.
		if err = Create(dir); err == nil {
			err = link(f, final)
		}
	}
	if err != nil && !maildirTrouble(err) {
		// The link itself is refused here (a security module, a file
		// system that hands out unnamed files but cannot name them):
		// write this message by name from the unnamed copy, and every
		// later one by name from the start.
		anonBroken.Store(true)
		if _, serr := f.Seek(0, io.SeekStart); serr != nil {
			return "", fmt.Errorf("maildir deliver: %w", err)
		}
		return deliverNamed(dir, name, f, o)
	}
	if err != nil {
		return "", fmt.Errorf("maildir deliver: link into new: %w", err)
	}
	return syncNew(dir, final, together, c)
}

// link is linkAnon; tests replace it to see a refused link worked around.
var link = linkAnon

// errNoAnon says this system cannot write a file without a name.
var errNoAnon = errors.New("no unnamed files here")

// maildirTrouble reports a failure that the Maildir itself would cause
// for a named file too (no room, no rights, gone): it is reported, not
// worked around.
func maildirTrouble(err error) bool {
	for _, e := range []error{os.ErrNotExist, os.ErrExist, syscall.EACCES, syscall.ENOSPC, syscall.EDQUOT, syscall.EROFS, syscall.EMLINK, syscall.ENOTDIR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// deliverNamed is Deliver through a named file in tmp/.
func deliverNamed(dir, name string, r io.Reader, o Options) (string, error) {
	tmp := filepath.Join(dir, "tmp", name)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrNotExist) {
		if err = Create(dir); err == nil {
			f, err = os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		}
	}
	if err != nil {
		return "", fmt.Errorf("maildir deliver: %w", err)
	}
	size, err := io.Copy(f, r)
	c := sharing(f, size, o.Commits)
	together := 1
	if err == nil {
		together, err = syncFile(f, c)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("maildir deliver: write %s: %w", tmp, err)
	}
	final := filepath.Join(dir, "new", name+",S="+strconv.FormatInt(size, 10))
	// Rename, as Dovecot does, rather than maildir(5)'s link+unlink: the
	// name is unique to this process, so nothing can be replaced, and one
	// metadata operation is cheaper than two.
	err = os.Rename(tmp, final)
	if errors.Is(err, os.ErrNotExist) {
		// new/ removed under us (or a Maildir made by something else
		// with tmp/ first): make it, once.
		if err = Create(dir); err == nil {
			err = os.Rename(tmp, final)
		}
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("maildir deliver: rename into new: %w", err)
	}
	return syncNew(dir, final, together, c)
}

// syncFile fsyncs a written message file, in the next of c's commits
// while c commits often (share.go), else together with those of other
// deliveries under way (syncwindow.go), and returns how many synced
// together. The writeback starts before the wait so that the blocks are
// allocated in the journal transaction the others commit.
func syncFile(f *os.File, c Commits) (together int, err error) {
	startWriteback(f)
	if c != nil && c.Busy() {
		waitCommit(c)
		return 1, f.Sync()
	}
	together = fileWindow.wait()
	return together, f.Sync()
}

// syncNew makes the new name in new/ durable and returns final; when that
// fails the file is taken back out, so that a delivery reported failed
// leaves nothing. together: how many synced their files with this one
// and are about to link theirs.
func syncNew(dir, final string, together int, c Commits) (string, error) {
	var wait func()
	switch {
	case c != nil && c.Busy():
		wait = func() { waitCommit(c) }
	case together > 1:
		wait = lingerDir
	}
	if err := dirSyncer.sync(filepath.Join(dir, "new"), wait); err != nil {
		os.Remove(final)
		return "", fmt.Errorf("maildir deliver: %w", err)
	}
	return final, nil
}

// groupSync shares directory fsyncs among concurrent deliveries: a caller
// waits for an fsync of the directory that started after its link, and
// one fsync covers every link before it. A caller whose file was synced
// together with others' (syncwindow.go) and finds no fsync under way
// waits dirLinger before starting one: the others come back from the
// same file fsync and link a few hundred microseconds later, and without
// the wait the first one's directory fsync started before they had
// linked, so they needed another: 2.7 directory fsyncs a window at 10
// sessions.
type groupSync struct {
	mu    sync.Mutex
	dirs  map[string]*dirState
	fsync func(dir string) error
}

type dirState struct {
	cond      *sync.Cond
	running   bool
	pending   bool   // the next fsync is waiting out dirLinger; it has not started
	started   uint64 // generation of the fsync in progress or last started
	completed uint64 // generation of the last finished fsync
	err       error
	callers   int // in sync now; the entry goes when the last one leaves
}

// dirLinger is how long a caller with company waits for the others'
// links before the directory fsync starts.
var dirLinger = time.Millisecond

func lingerDir() { time.Sleep(dirLinger) }

var dirSyncer = &groupSync{dirs: map[string]*dirState{}, fsync: syncDir}

// sync fsyncs dir, or waits for an fsync of it that covers the caller.
// wait, when not nil, is run before an fsync the caller starts itself:
// the others' links, or a commit that syncs them, come meanwhile.
func (g *groupSync) sync(dir string, wait func()) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	st, ok := g.dirs[dir]
	if !ok {
		st = &dirState{cond: sync.NewCond(&g.mu)}
		g.dirs[dir] = st
	}
	st.callers++
	defer func() {
		// Called with g.mu held (every return below holds it).
		if st.callers--; st.callers == 0 {
			delete(g.dirs, dir)
		}
	}()
	// The fsync that covers our link must start after now: the next one,
	// which is the pending one if it waits still.
	need := st.started + 1
	for st.completed < need {
		if !st.running && !st.pending {
			if wait != nil {
				st.pending = true
				g.mu.Unlock()
				wait()
				g.mu.Lock()
				st.pending = false
			}
			st.running = true
			st.started++
			gen := st.started
			g.mu.Unlock()
			err := g.fsync(dir)
			g.mu.Lock()
			st.running = false
			st.completed, st.err = gen, err
			st.cond.Broadcast()
			if gen >= need {
				return err
			}
			continue
		}
		st.cond.Wait()
	}
	return st.err
}
