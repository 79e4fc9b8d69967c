package maps

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ReloadInterval bounds how often a file table stats its file to see
// whether it changed. Open copies it into the table, so tests that want
// every Get to check can set it to 0 before opening.
var ReloadInterval = time.Second

// fileEpoch gives the reload schedule a monotonic clock that fits in an
// atomic int64.
var fileEpoch = time.Now()

// fileTable is a table read from a file, swapped for a new version when
// the file changes. Lookups never wait for a reload: one caller of Get
// checks the file while the others keep using the current version.
type fileTable struct {
	name     string
	file     string // the path as written, for diagnostics
	path     string // the path resolved against baseDir
	kind     tableKind
	logf     func(string)
	interval time.Duration

	cur  atomic.Pointer[fileVersion]
	next atomic.Int64 // time.Since(fileEpoch) at which to check again

	mu         sync.Mutex  // held while checking; guards the fields below
	loaded     fs.FileInfo // the version in cur
	failed     fs.FileInfo // a version that did not parse, already logged
	failMsg    string      // the last stat or read error, already logged
	emptySince time.Time   // when the file was first seen empty, see justEmptied
}

type fileVersion struct {
	t Table
}

func openFile(name, file, path string, kind tableKind, logf func(string)) (Table, error) {
	t := &fileTable{name: name, file: file, path: path, kind: kind, logf: logf, interval: ReloadInterval}
	// At startup there is no previous version to fall back on, so a
	// recently changed file is read anyway.
	tab, fi, warns, err := t.load(false)
	if err != nil {
		if _, ok := err.(ParseError); ok {
			return nil, err
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	t.cur.Store(&fileVersion{tab})
	t.loaded = fi
	t.logDiags(warns)
	t.next.Store(int64(time.Since(fileEpoch) + t.interval))
	return t, nil
}

// sameVersion reports whether two stats describe the same contents, as far
// as mtime, size and inode can tell.
func sameVersion(a, b fs.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size()
}

// coolDown is how long a changed file must stay unchanged before it is
// reloaded. Editors and scripts that truncate a file and then write it
// leave it empty or half-written for a moment; loading that would drop
// entries until the next check. Postfix waits the same way before it
// reads a texthash file.
var coolDown = time.Second

// isHot reports whether fi was modified too recently to be trusted. A
// modification time in the future does not count: it may be set on
// purpose, and waiting for it could take forever.
func isHot(fi fs.FileInfo, now time.Time) bool {
	m := fi.ModTime()
	return !m.After(now) && now.Sub(m) < coolDown
}

// justEmptied reports whether an empty file should not replace a
// non-empty version yet. Truncating a file does not always update its
// modification time right away (ext4 on Linux shows the old one until the
// first write), so a file being rewritten can look like an old, valid,
// empty table. An empty file is accepted once it has stayed empty for
// coolDown.
func (t *fileTable) justEmptied(fi fs.FileInfo, now time.Time) bool {
	if fi.Size() != 0 || t.loaded == nil || t.loaded.Size() == 0 {
		t.emptySince = time.Time{}
		return false
	}
	if t.emptySince.IsZero() {
		t.emptySince = now
	}
	return now.Sub(t.emptySince) < coolDown
}

// readStable reads the file and returns the stat of what it read. A file
// that changes while it is read is read again, a few times; stable is
// false if it never held still.
func readStable(path string) (data string, fi fs.FileInfo, stable bool, err error) {
	for try := 0; ; try++ {
		data, fi, err := readFile(path)
		if err != nil {
			return "", nil, false, err
		}
		after, err := os.Stat(path)
		if err == nil && sameVersion(fi, after) || try == 2 {
			return data, fi, err == nil && sameVersion(fi, after), nil
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readFile reads into a strings.Builder so that the text is not copied
// again to become a string: keys and values are slices of it, and for a
// big table the copy would double the peak memory of a load.
func readFile(path string) (string, fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", nil, err
	}
	if fi.IsDir() {
		return "", nil, &fs.PathError{Op: "read", Path: path, Err: errors.New("is a directory")}
	}
	var b strings.Builder
	b.Grow(int(fi.Size()) + 1)
	if _, err := io.Copy(&b, f); err != nil {
		return "", nil, err
	}
	return b.String(), fi, nil
}

// errBusy says a file was still being written when it was to be reloaded.
var errBusy = errors.New("file is being written")

// load reads and parses the file. With settled set, it fails with
// errBusy rather than parse a file that may be half-written; the checks
// apply to the stat of what was read, since the file may have changed
// since check looked at it. settled requires t.mu.
func (t *fileTable) load(settled bool) (Table, fs.FileInfo, []Diagnostic, error) {
	data, fi, stable, err := readStable(t.path)
	if err != nil {
		return nil, nil, nil, err
	}
	if now := time.Now(); settled && (!stable || isHot(fi, now) || t.justEmptied(fi, now)) {
		return nil, nil, nil, errBusy
	}
	tab, warns, err := parseText(t.kind, t.name, t.file, data)
	return tab, fi, warns, err
}

func (t *fileTable) logDiags(ds []Diagnostic) {
	if t.logf == nil {
		return
	}
	for _, d := range ds {
		t.logf(d.String())
	}
}

// current returns the version to use, first checking the file if it is
// due.
func (t *fileTable) current() Table {
	now := int64(time.Since(fileEpoch))
	if now >= t.next.Load() && t.mu.TryLock() {
		if now >= t.next.Load() {
			t.check()
			t.next.Store(int64(time.Since(fileEpoch) + t.interval))
		}
		t.mu.Unlock()
	}
	return t.cur.Load().t
}

// check reloads the file if it changed. t.mu must be held.
func (t *fileTable) check() {
	fi, err := os.Stat(t.path)
	if err != nil {
		t.logFailure(err)
		return
	}
	t.failMsg = ""
	if fi.Size() != 0 {
		t.emptySince = time.Time{}
	}
	now := time.Now()
	if sameVersion(fi, t.loaded) || sameVersion(fi, t.failed) || isHot(fi, now) {
		return
	}
	tab, fi, warns, err := t.load(true)
	if err == errBusy {
		return
	}
	if err != nil {
		var pe ParseError
		if !errors.As(err, &pe) {
			t.logFailure(err)
			return
		}
		t.failed = fi
		t.logDiags(pe)
		t.logDiags(warns)
		return
	}
	t.cur.Store(&fileVersion{tab})
	t.loaded, t.failed = fi, nil
	t.logDiags(warns)
}

// logFailure reports a file that cannot be read, once until it changes.
func (t *fileTable) logFailure(err error) {
	msg := err.Error()
	if pe, ok := err.(*fs.PathError); ok {
		msg = pe.Err.Error()
	}
	msg = t.file + ": " + msg
	if msg == t.failMsg || t.logf == nil {
		t.failMsg = msg
		return
	}
	t.failMsg = msg
	t.logf(msg)
}

// Get looks key up in the current version of the file.
func (t *fileTable) Get(key string) (string, bool) { return t.current().Get(key) }

// Name returns the table's spec, e.g. "hash:/etc/postfix/access".
func (t *fileTable) Name() string { return t.name }

// IsPattern reports whether the file is a regexp, pcre or cidr table.
func (t *fileTable) IsPattern() bool { return t.kind != kindHash }

// Explain is Get with the FILE:LINE of the entry that matched.
func (t *fileTable) Explain(key string) (string, string, bool) {
	return t.current().(Explainer).Explain(key)
}

// Path returns the file the table is read from.
func (t *fileTable) Path() string { return t.path }

// Check parses the table spec names and returns its warnings, or the
// error Open would return, without keeping the table: for `larkpost map
// check`, which should show warnings that Open only logs.
func Check(spec, baseDir string) ([]Diagnostic, error) {
	typ, rest := splitSpec(strings.TrimSpace(spec))
	for typ == "proxy" {
		typ, rest = splitSpec(rest)
	}
	if typ == "" {
		typ = "hash"
	}
	kind, ok := tableTypes[typ]
	if !ok || kind == kindInline || kind == kindStatic || strings.HasPrefix(strings.TrimSpace(rest), "{") {
		_, err := Open(spec, baseDir, nil)
		return nil, err
	}
	path := rest
	if !filepath.IsAbs(path) {
		path = filepath.Join(baseDir, path)
	}
	data, _, _, err := readStable(path)
	if err != nil {
		return nil, fmt.Errorf("%s:%s: %w", typ, rest, err)
	}
	_, warns, err := parseText(kind, typ+":"+rest, rest, data)
	return warns, err
}
