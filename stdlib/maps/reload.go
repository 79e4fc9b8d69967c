package maps

import (
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// defaultCoolDown is how long a changed file must stay unchanged before it
// is reloaded. Editors and scripts that truncate a file and then write it
// leave it empty or half-written for a moment; loading that would drop
// entries until the next check. Postfix waits the same way before it
// reads a texthash file.
const defaultCoolDown = time.Second

// reloadOptions are the timings of one reloading table. They are per
// table so that a test can shorten them without changing them for the
// other tests running in parallel.
type reloadOptions struct {
	interval time.Duration // how long after a check the files are stat'ed again
	coolDown time.Duration // see defaultCoolDown
}

// reloadEpoch gives the reload schedule a monotonic clock that fits in an
// atomic int64.
var reloadEpoch = time.Now()

// fileStamp identifies the version of a file that a load read; info is
// nil when the file could not be opened.
type fileStamp struct {
	path string
	info fs.FileInfo
}

// reloader is what file tables and aliases share about reloading: when to
// look at the files again, whether they changed, and whether what a load
// read is safe to replace the version in use. The owner does the reading
// and parsing and reports the outcome with took or rejected.
type reloader struct {
	opts reloadOptions
	next atomic.Int64 // time.Since(reloadEpoch) at which to check again

	// mu is held while the owner checks its files; it guards the fields
	// below and whatever else the owner only touches while checking.
	mu         sync.Mutex
	loaded     []fileStamp // the version in use
	failed     []fileStamp // a version that did not load, already logged
	emptySince map[string]time.Time
}

// schedule puts off the next check by the interval; owners call it once
// their first load is done, so that a slow load does not eat into it.
func (r *reloader) schedule() {
	r.next.Store(int64(time.Since(reloadEpoch) + r.opts.interval))
}

// poll runs check if the files are due to be looked at. Lookups never wait
// for a reload: while one caller checks, the others carry on with the
// version they have instead of queueing behind the disk.
func (r *reloader) poll(check func()) {
	if int64(time.Since(reloadEpoch)) < r.next.Load() || !r.mu.TryLock() {
		return
	}
	defer r.mu.Unlock()
	if int64(time.Since(reloadEpoch)) >= r.next.Load() {
		check()
		r.schedule()
	}
}

// paths lists the files of the version in use and of the last failed one,
// the ones whose change may call for a load.
func (r *reloader) paths() []string {
	var ps []string
	seen := map[string]bool{}
	for _, version := range [][]fileStamp{r.loaded, r.failed} {
		for _, s := range version {
			if !seen[s.path] {
				seen[s.path] = true
				ps = append(ps, s.path)
			}
		}
	}
	return ps
}

// statFiles stamps the files as they are now.
func statFiles(paths []string) []fileStamp {
	cur := make([]fileStamp, len(paths))
	for i, p := range paths {
		cur[i].path = p
		if fi, err := os.Stat(p); err == nil {
			cur[i].info = fi
		}
	}
	return cur
}

// stale reports whether a load is worth trying, given cur, the files of
// paths as they are now: they differ from both the version in use and
// the one that last failed, and none of them is still being written.
// r.mu must be held.
func (r *reloader) stale(cur []fileStamp, now time.Time) bool {
	byPath := make(map[string]fs.FileInfo, len(cur))
	for _, c := range cur {
		byPath[c.path] = c.info
		if c.info != nil && c.info.Size() != 0 {
			delete(r.emptySince, c.path)
		}
	}
	if matches(r.loaded, byPath) || matches(r.failed, byPath) {
		return false
	}
	for _, c := range cur {
		if c.info != nil && r.hot(c.info, now) {
			return false
		}
	}
	return true
}

// matches reports whether every file of a version is as it was.
func matches(version []fileStamp, cur map[string]fs.FileInfo) bool {
	if len(version) == 0 {
		return false
	}
	for _, s := range version {
		fi, ok := cur[s.path]
		if !ok || !sameStamp(s.info, fi) {
			return false
		}
	}
	return true
}

// sameStamp is sameVersion for stamps, where a file that is still
// missing is no news.
func sameStamp(a, b fs.FileInfo) bool {
	return a == nil && b == nil || sameVersion(a, b)
}

// sameVersion reports whether two stats describe the same contents, as far
// as mtime, size and inode can tell. SameFile catches an editor's rename
// into place even when size and the coarse mtime of some file systems
// happen to match.
func sameVersion(a, b fs.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size()
}

// unchanged reports whether the files are still as a load read them; a
// file that changed under the load may have been read half-written.
func unchanged(read []fileStamp) bool {
	for _, s := range read {
		fi, err := os.Stat(s.path)
		if err != nil {
			fi = nil
		}
		if !sameStamp(s.info, fi) {
			return false
		}
	}
	return true
}

// settled reports whether what a load read may replace the version in
// use. The checks apply to the stamps of what was read, since the files
// may have changed after stale looked at them; stable says whether they
// held still while they were read. r.mu must be held.
func (r *reloader) settled(read []fileStamp, stable bool, now time.Time) bool {
	if !stable {
		return false
	}
	for _, s := range read {
		if s.info != nil && r.hot(s.info, now) {
			return false
		}
	}
	ok := true
	for _, s := range read {
		// Every file is looked at, so that each one's wait starts now.
		if s.info != nil && r.justEmptied(s.path, s.info, now) {
			ok = false
		}
	}
	return ok
}

// hot reports whether fi was modified too recently to be trusted. A
// modification time in the future does not count: it may be set on
// purpose, and waiting for it could take forever.
func (r *reloader) hot(fi fs.FileInfo, now time.Time) bool {
	m := fi.ModTime()
	return !m.After(now) && now.Sub(m) < r.opts.coolDown
}

// justEmptied reports whether an empty file should not replace a
// non-empty version yet. Truncating a file does not always update its
// modification time right away (ext4 on Linux shows the old one until the
// first write), so a file being rewritten can look like an old, valid,
// empty table. An empty file is accepted once it has stayed empty for
// the cool-down.
func (r *reloader) justEmptied(path string, fi fs.FileInfo, now time.Time) bool {
	var was fs.FileInfo
	if fi.Size() == 0 {
		for _, s := range r.loaded {
			if s.path == path {
				was = s.info
				break
			}
		}
	}
	if fi.Size() != 0 || was == nil || was.Size() == 0 {
		delete(r.emptySince, path)
		return false
	}
	since, ok := r.emptySince[path]
	if !ok {
		if r.emptySince == nil {
			r.emptySince = map[string]time.Time{}
		}
		since = now
		r.emptySince[path] = since
	}
	return now.Sub(since) < r.opts.coolDown
}

// took records the files of the version now in use. r.mu must be held,
// except before the owner is shared.
func (r *reloader) took(read []fileStamp) {
	r.loaded, r.failed = read, nil
}

// rejected records the files of a version that did not load, so that it
// is not tried, and its problems logged, again until a file changes.
// r.mu must be held.
func (r *reloader) rejected(read []fileStamp) {
	r.failed = read
}
