package auth

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"
)

// Limits of the passwd-file reader. They bound what a broken or hostile
// file can cost; real files are far below them.
const (
	maxPasswdFileSize = 64 << 20
	maxPasswdLineLen  = 64 << 10
	passwdCheckEvery  = time.Second
)

// PasswdFile is a Backend reading Dovecot's passwd-file format:
//
//	user:{SCHEME}hash:uid:gid:gecos:home:shell:extra_fields
//
// Only the first two fields are used; the rest may be absent. Lines
// starting with # and blank lines are skipped. User names may be full
// addresses and are matched ignoring ASCII case. Dovecot's default
// auth_username_format=%Lu lowercases only the name typed, so a file entry
// with capitals is out of reach there but found here; two entries that
// differ only in case are refused. The schemes are {SHA512-CRYPT},
// {SHA256-CRYPT}, {BLF-CRYPT}, {ARGON2ID}, {CRYPT} (any of those, told
// apart by the hash's $id$) and {PLAIN}, which stores the password itself
// and is meant for tests and examples only. A hash without a {SCHEME} is
// read as {CRYPT}. An empty password field locks the account.
//
// The file is checked for changes (modification time, size, identity) at
// most once a second, on the next login. A file that no longer parses is
// not used: the last good content stays in force and the error, with the
// file name and line, is logged and returned by Err.
type PasswdFile struct {
	path string
	log  *slog.Logger
	now  func() time.Time
	sem  chan struct{}

	mu      sync.Mutex
	users   map[string]passwdEntry
	dummy   verifier
	checked time.Time   // last stat
	current os.FileInfo // the file the content in force came from
	failed  os.FileInfo // the version that failed to load, not retried
	err     error       // why the last reload failed, nil once one succeeds
}

type passwdEntry struct {
	name string
	v    verifier // nil: locked
}

// PasswdFileOptions are the optional settings of OpenPasswdFile.
type PasswdFileOptions struct {
	// Logger receives reload failures. Default: slog.Default().
	Logger *slog.Logger
	// Now is the clock deciding when to look at the file again.
	// Default: time.Now.
	Now func() time.Time
	// MaxConcurrent bounds the hashes computed at once, since one
	// argon2id hash may take a large block of memory. Default:
	// GOMAXPROCS.
	MaxConcurrent int
}

var _ Backend = (*PasswdFile)(nil)

// OpenPasswdFile loads path. Unlike a reload, a first load that fails is
// an error: there is no earlier content to fall back on, and starting
// with no users would fail every login silently.
func OpenPasswdFile(path string, opts PasswdFileOptions) (*PasswdFile, error) {
	f := &PasswdFile{path: path, log: opts.Logger, now: opts.Now}
	if f.log == nil {
		f.log = slog.Default()
	}
	if f.now == nil {
		f.now = time.Now
	}
	n := opts.MaxConcurrent
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	f.sem = make(chan struct{}, n)
	fi, users, dummy, err := loadPasswdFile(path)
	if err != nil {
		return nil, err
	}
	f.users, f.dummy, f.current, f.checked = users, dummy, fi, f.now()
	return f, nil
}

// Err returns the error of the last reload if it failed, meaning an older
// content is in force; nil otherwise.
func (f *PasswdFile) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// Reload reads the file now, whether or not it changed (for SIGHUP). On
// error the content in force stays.
func (f *PasswdFile) Reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checked = f.now()
	return f.reloadLocked()
}

func (f *PasswdFile) reloadLocked() error {
	fi, users, dummy, err := loadPasswdFile(f.path)
	if err != nil {
		f.failed, f.err = fi, err
		f.log.Warn(err.Error() + "; keeping the previous content")
		return err
	}
	f.users, f.dummy, f.current, f.failed, f.err = users, dummy, fi, nil, nil
	return nil
}

// maybeReload looks at the file at most once a second. A version that
// failed is not parsed again until it changes, so a broken file costs one
// log line, not one a second.
func (f *PasswdFile) maybeReload() {
	now := f.now()
	if now.Sub(f.checked) < passwdCheckEvery && !now.Before(f.checked) {
		return
	}
	f.checked = now
	fi, err := os.Stat(f.path)
	if err != nil {
		if f.failed != nil || f.err == nil {
			f.failed, f.err = nil, err
			f.log.Warn(err.Error() + "; keeping the previous content")
		}
		return
	}
	if sameVersion(fi, f.current) {
		f.failed, f.err = nil, nil
		return
	}
	if f.failed != nil && sameVersion(fi, f.failed) {
		return
	}
	f.reloadLocked()
}

func sameVersion(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// Authenticate checks user and pass. An unknown or locked user costs one
// hash of the same scheme and parameters as most of the file's entries,
// so that timing does not tell which users exist.
func (f *PasswdFile) Authenticate(ctx context.Context, user, pass string, _ netip.Addr) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	f.mu.Lock()
	f.maybeReload()
	e, known := f.users[asciiLower(user)]
	dummy := f.dummy
	f.mu.Unlock()

	v := e.v
	if v == nil {
		v = dummy
	}
	select {
	case f.sem <- struct{}{}:
	case <-ctx.Done():
		return Result{}, fmt.Errorf("passwd-file %s: waiting to hash: %w", f.path, ctx.Err())
	}
	ok := v.verify([]byte(pass))
	<-f.sem

	switch {
	case !known:
		return Result{Reason: "unknown user"}, nil
	case e.v == nil:
		return Result{Reason: "account locked"}, nil
	case !ok:
		return Result{Reason: "wrong password"}, nil
	}
	return Result{OK: true, User: e.name}, nil
}

// loadPasswdFile parses the whole file; any bad line fails the load, since
// a half-read file would lock out the users past the bad line.
func loadPasswdFile(path string) (os.FileInfo, map[string]passwdEntry, verifier, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, nil, nil, err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return nil, nil, nil, err
	}
	if fi.Size() > maxPasswdFileSize {
		return fi, nil, nil, fmt.Errorf("%s: larger than %d bytes", path, maxPasswdFileSize)
	}
	users, dummy, err := parsePasswd(path, io.LimitReader(fh, maxPasswdFileSize+1))
	return fi, users, dummy, err
}

func parsePasswd(name string, r io.Reader) (map[string]passwdEntry, verifier, error) {
	users := map[string]passwdEntry{}
	costs := map[string]int{}
	sample := map[string]verifier{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxPasswdLineLen)
	lineNo, size := 0, 0
	for sc.Scan() {
		lineNo++
		raw := sc.Bytes()
		if size += len(raw) + 1; size > maxPasswdFileSize+1 {
			return nil, nil, fmt.Errorf("%s: larger than %d bytes", name, maxPasswdFileSize)
		}
		line := string(bytes.TrimSuffix(raw, []byte("\r")))
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || trimmed[0] == '#' {
			continue
		}
		user, rest, _ := strings.Cut(line, ":")
		pw, _, _ := strings.Cut(rest, ":")
		if err := checkUser(user); err != nil {
			return nil, nil, fmt.Errorf("%s:%d: bad user name", name, lineNo)
		}
		key := asciiLower(user)
		if _, dup := users[key]; dup {
			return nil, nil, fmt.Errorf("%s:%d: user %q listed twice", name, lineNo, user)
		}
		e := passwdEntry{name: key}
		if pw != "" {
			v, err := parseHash(pw)
			if err != nil {
				// err describes the field, never quotes it: for
				// {PLAIN} the field is the password.
				return nil, nil, fmt.Errorf("%s:%d: user %q: %v", name, lineNo, user, err)
			}
			e.v = v
			c := v.cost()
			costs[c]++
			if sample[c] == nil {
				sample[c] = v
			}
		}
		users[key] = e
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, nil, fmt.Errorf("%s:%d: line longer than %d bytes", name, lineNo+1, maxPasswdLineLen)
		}
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	dummy, best := dummyHash, 0
	for c, n := range costs {
		if n > best || (n == best && c < dummy.cost()) {
			dummy, best = sample[c], n
		}
	}
	return users, dummy, nil
}

// asciiLower folds case the way Dovecot's %L does: ASCII only, so that a
// name is never changed into one that means something else in another
// locale.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
