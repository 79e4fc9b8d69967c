package maps

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// ReloadInterval bounds how often a file table stats its file to see
// whether it changed. It is the default for the tables Open opens from
// then on; a table keeps the value it was opened with.
var ReloadInterval = time.Second

// fileTable is a table read from a file, swapped for a new version when
// the file changes. Lookups never wait for a reload: one caller of Get
// checks the file while the others keep using the current version.
type fileTable struct {
	name string
	file string // the path as written, for diagnostics
	path string // the path resolved against baseDir
	kind tableKind
	logf func(string)

	cur    atomic.Pointer[fileVersion]
	reload *reloader

	failMsg string // the last stat or read error, already logged; guarded by reload.mu
}

type fileVersion struct {
	t Table
}

func openFile(name, file, path string, kind tableKind, logf func(string), o reloadOptions) (Table, error) {
	t := &fileTable{name: name, file: file, path: path, kind: kind, logf: logf, reload: &reloader{opts: o}}
	// At startup there is no previous version to fall back on, so a
	// recently changed file is read anyway.
	tab, read, warns, err := t.load(false)
	if err != nil {
		if _, ok := err.(ParseError); ok {
			return nil, err
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	t.cur.Store(&fileVersion{tab})
	t.reload.took(read)
	t.logDiags(warns)
	t.reload.schedule()
	return t, nil
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
// errBusy rather than parse a file that may be half-written. settled
// requires t.reload.mu.
func (t *fileTable) load(settled bool) (Table, []fileStamp, []Diagnostic, error) {
	data, fi, stable, err := readStable(t.path)
	if err != nil {
		return nil, nil, nil, err
	}
	read := []fileStamp{{t.path, fi}}
	if settled && !t.reload.settled(read, stable, time.Now()) {
		return nil, nil, nil, errBusy
	}
	tab, warns, err := parseText(t.kind, t.name, t.file, data)
	return tab, read, warns, err
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
	t.reload.poll(t.check)
	return t.cur.Load().t
}

// check reloads the file if it changed. t.reload.mu must be held.
func (t *fileTable) check() {
	fi, err := os.Stat(t.path)
	if err != nil {
		t.logFailure(err)
		return
	}
	t.failMsg = ""
	if !t.reload.stale([]fileStamp{{t.path, fi}}, time.Now()) {
		return
	}
	tab, read, warns, err := t.load(true)
	if err == errBusy {
		return
	}
	if err != nil {
		var pe ParseError
		if !errors.As(err, &pe) {
			t.logFailure(err)
			return
		}
		t.reload.rejected(read)
		t.logDiags(pe)
		t.logDiags(warns)
		return
	}
	t.cur.Store(&fileVersion{tab})
	t.reload.took(read)
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
	if kind == kindPgsql || kind == kindSQLite {
		return checkSQL(kind, typ+":"+rest, rest, path)
	}
	data, _, _, err := readStable(path)
	if err != nil {
		return nil, fmt.Errorf("%s:%s: %w", typ, rest, err)
	}
	_, warns, err := parseText(kind, typ+":"+rest, rest, data)
	return warns, err
}
