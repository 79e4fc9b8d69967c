// Package maildrop is larkpost's offline submission directory, Postfix's
// maildrop: `larkpost sendmail` leaves each message there as one file,
// whether or not a server runs, and the server's pickup takes it into the
// queue through the same checks as SMTP.
//
// # Layout
//
//	DIR/tmp/       files being written (mode 01733: anyone may drop, nobody may list)
//	DIR/new/       complete messages, named by their queue id (mode 01733)
//	DIR/rejected/  messages the policy refused, kept for the admin (mode 0700)
//
// A file is one line "X-Larkpost-Envelope: <json>\n" followed by the
// message exactly as sendmail read it (LF or CRLF line endings).
package maildrop

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Envelope is what sendmail records with a message.
type Envelope struct {
	ID     string    `json:"id"`     // unique; also the queue id
	Sender string    `json:"sender"` // "" is the null sender
	Rcpts  []string  `json:"rcpts"`
	UID    int       `json:"uid"`
	User   string    `json:"user"`
	Time   time.Time `json:"time"`
	// Reason is why pickup refused the message; set only in rejected/.
	Reason string `json:"reason,omitempty"`
	// Owner is the uid that owns the file, set by Read. UID and User are
	// whatever the submitter wrote into the file; the owner is the one
	// identity a local user cannot forge.
	Owner int `json:"-"`
}

// The errors Read and Write report about the files themselves.
var (
	// ErrMalformed is wrapped when a file in new/ is not one Write made:
	// pickup moves it aside rather than retrying it forever.
	ErrMalformed = errors.New("malformed maildrop file")
	// ErrTooBig is wrapped when a file exceeds ReadLimit's bound.
	ErrTooBig = errors.New("maildrop file too big")
	// ErrExist is wrapped when new/ already holds a file with the id.
	ErrExist = errors.New("maildrop id already in use")
)

const envelopeHeader = "X-Larkpost-Envelope: "

// dropMode is Postfix's maildrop mode: the write and search bits let any
// local user create a file, the missing read bit keeps them from listing
// what others dropped, and the sticky bit from removing it.
const dropMode = os.ModeSticky | 0o733

// Init creates dir and its subdirectories when they are missing.
func Init(dir string) error {
	return ensure(dir, "tmp", "new", "rejected")
}

var subdirModes = map[string]os.FileMode{"": 0o711, "tmp": dropMode, "new": dropMode, "rejected": 0o700}

// ensure creates dir and the named subdirectories when they are missing,
// and only those: a local user running sendmail cannot create rejected/,
// and need not. The modes are set explicitly because Mkdir is subject to
// the umask, which would take the bits that let other users drop mail.
func ensure(dir string, subs ...string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return fmt.Errorf("create maildrop: %w", err)
	}
	for _, s := range append([]string{""}, subs...) {
		p := filepath.Join(dir, s)
		err := os.Mkdir(p, subdirModes[s])
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err == nil {
			err = os.Chmod(p, subdirModes[s])
		}
		if err != nil {
			return fmt.Errorf("create maildrop: %w", err)
		}
	}
	return nil
}

// Write stores msg with env in dir/new atomically: the file is written and
// fsynced in dir/tmp, renamed into dir/new without replacing anything, and
// the directory is fsynced. An empty env.ID is set to a new id; a given one
// that new/ already holds is refused with ErrExist.
func Write(dir string, env *Envelope, msg []byte) (path string, err error) {
	return defaultWriter.write(dir, env, msg)
}

// writer holds what tests replace in a write. It is a value rather than
// package variables so that tests can change it for their own writes
// while others run in parallel.
type writer struct {
	// syncFile makes a write fail at the last step in tests.
	syncFile func(*os.File) error
}

var defaultWriter = writer{syncFile: (*os.File).Sync}

func (w writer) write(dir string, env *Envelope, msg []byte) (path string, err error) {
	generated := env.ID == ""
	for tries := 0; ; tries++ {
		if generated {
			env.ID = NewID()
		}
		path, err = w.store(dir, "new", env, msg, false)
		if errors.Is(err, ErrExist) && generated && tries < 3 {
			continue
		}
		return path, err
	}
}

// Reject stores msg with env in dir/rejected, replacing an earlier copy
// with the same id: a retry after a crash writes the same message again.
func Reject(dir string, env *Envelope, msg []byte) (path string, err error) {
	return defaultWriter.store(dir, "rejected", env, msg, true)
}

var tmpSeq atomic.Uint64

func (w writer) store(dir, sub string, env *Envelope, msg []byte, replace bool) (string, error) {
	if !ValidID(env.ID) {
		return "", fmt.Errorf("maildrop: bad id %q", env.ID)
	}
	if err := ensure(dir, "tmp", sub); err != nil {
		return "", err
	}
	head, err := json.Marshal(env)
	if err != nil {
		return "", fmt.Errorf("maildrop: %w", err)
	}
	// The pid and a counter keep writers apart even when two of them are
	// given the same id; only the rename decides which one wins.
	tmp := filepath.Join(dir, "tmp", env.ID+"."+strconv.Itoa(os.Getpid())+"."+strconv.FormatUint(tmpSeq.Add(1), 10))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("maildrop: %w", err)
	}
	_, err = f.Write(append(append([]byte(envelopeHeader), head...), '\n'))
	if err == nil {
		_, err = f.Write(msg)
	}
	if err == nil {
		err = w.syncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("maildrop: write %s: %w", env.ID, err)
	}
	final := filepath.Join(dir, sub, env.ID)
	if replace {
		err = os.Rename(tmp, final)
	} else {
		err = renameNoReplace(tmp, final)
	}
	if err != nil {
		os.Remove(tmp)
		if errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("maildrop: %s: %w", env.ID, ErrExist)
		}
		return "", fmt.Errorf("maildrop: %w", err)
	}
	if err := syncDir(filepath.Join(dir, sub)); err != nil {
		return final, fmt.Errorf("maildrop: %w", err)
	}
	return final, nil
}

// syncDir makes a rename in dir durable. A local user who is not the
// owner may not open the drop directory (it has no read bit); the rename
// is then as durable as the filesystem makes it, as with Postfix's postdrop.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if errors.Is(err, fs.ErrPermission) {
		return nil
	}
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// List returns the files waiting in dir/new, oldest first. A missing
// directory holds nothing.
func List(dir string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(dir, "new"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("maildrop: %w", err)
	}
	type file struct {
		path string
		mod  time.Time
	}
	files := make([]file, 0, len(ents))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // taken away since ReadDir
		}
		files = append(files, file{filepath.Join(dir, "new", e.Name()), info.ModTime()})
	}
	sort.SliceStable(files, func(i, j int) bool {
		if !files[i].mod.Equal(files[j].mod) {
			return files[i].mod.Before(files[j].mod)
		}
		return files[i].path < files[j].path
	})
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = f.path
	}
	return out, nil
}

// Read parses one file: its envelope line, then the message as written.
func Read(path string) (*Envelope, []byte, error) {
	return ReadLimit(path, -1)
}

// ReadLimit is Read for files of at most max bytes (no bound when max is
// negative), so a huge file is refused before it is in memory. The file
// must be a regular file with no other links: the drop directory is
// writable by everyone, and pickup may run as root, so a link to a file
// the submitter cannot read must never be read on their behalf.
func ReadLimit(path string, max int64) (*Envelope, []byte, error) {
	return ReadLimitWith(nil, path, max)
}

// ReadLimitWith is ReadLimit with open in place of opening path here:
// a split server's daemon, which may not read what other users wrote,
// has its root parent open the file (with the same O_NOFOLLOW). It
// returns an error wrapping fs.ErrPermission when even open cannot.
func ReadLimitWith(open func(path string) (*os.File, error), path string, max int64) (*Envelope, []byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrPermission) && open != nil {
		f, err = open(path)
	}
	if errors.Is(err, syscall.ELOOP) {
		return nil, nil, fmt.Errorf("%s: %w: a symbolic link", path, ErrMalformed)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("maildrop: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("maildrop: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s: %w: not a regular file", path, ErrMalformed)
	}
	owner := -1
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		if sys.Nlink != 1 {
			return nil, nil, fmt.Errorf("%s: %w: the file has other links", path, ErrMalformed)
		}
		owner = int(sys.Uid)
	}
	var r io.Reader = f
	if max >= 0 {
		r = io.LimitReader(f, max+1)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, nil, fmt.Errorf("maildrop: %w", err)
	}
	if max >= 0 && int64(len(data)) > max {
		return nil, nil, fmt.Errorf("%s: %w", path, ErrTooBig)
	}
	nl := bytes.IndexByte(data, '\n')
	if nl < 0 || !bytes.HasPrefix(data, []byte(envelopeHeader)) {
		return nil, nil, fmt.Errorf("%s: %w: no envelope line", path, ErrMalformed)
	}
	env := &Envelope{}
	if err := json.Unmarshal(bytes.TrimSuffix(data[len(envelopeHeader):nl], []byte("\r")), env); err != nil {
		return nil, nil, fmt.Errorf("%s: %w: %v", path, ErrMalformed, err)
	}
	if !ValidID(env.ID) {
		return nil, nil, fmt.Errorf("%s: %w: bad id %q", path, ErrMalformed, env.ID)
	}
	env.Owner = owner
	return env, data[nl+1:], nil
}

// Remove deletes a file that is now queued and makes that durable: a
// file that came back after a crash would be picked up a second time.
func Remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("maildrop: %w", err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("maildrop: %w", err)
	}
	return nil
}

// Quarantine moves a file that cannot be read as a message from new/ to
// rejected/, under a name that replaces nothing, and returns where it went.
func Quarantine(path string) (string, error) {
	dir := filepath.Dir(filepath.Dir(path))
	if err := ensure(dir, "rejected"); err != nil {
		return "", err
	}
	base := filepath.Join(dir, "rejected", filepath.Base(path)+".malformed")
	dst := base
	for i := 1; ; i++ {
		err := renameNoReplace(path, dst)
		if err == nil {
			return dst, syncDir(filepath.Dir(dst))
		}
		if !errors.Is(err, fs.ErrExist) || i > 100 {
			return "", fmt.Errorf("maildrop: %w", err)
		}
		dst = base + "." + strconv.Itoa(i)
	}
}

// Sweep removes files left in dir/tmp by writers that died more than age
// ago, and returns how many it removed.
func Sweep(dir string, age time.Duration) (int, error) {
	ents, err := os.ReadDir(filepath.Join(dir, "tmp"))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("maildrop: %w", err)
	}
	n := 0
	cutoff := time.Now().Add(-age)
	for _, e := range ents {
		info, err := e.Info()
		if err != nil || !info.ModTime().Before(cutoff) {
			continue
		}
		if os.Remove(filepath.Join(dir, "tmp", e.Name())) == nil {
			n++
		}
	}
	return n, nil
}

// idAlphabet is the queue's id alphabet (Crockford's base32), so that
// maildrop ids are queue ids in every respect: length, characters, order.
const idAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// idMark is the top of the 10 low bits that queue ids keep for a counter.
// The server's own ids start the counter at zero every microsecond and
// never get near it, so an id made by a sendmail process cannot be one
// the server makes in the same microsecond; the pid in the bits below
// keeps concurrent sendmail processes apart.
const idMark = 1 << 9

var lastID atomic.Uint64

// NewID returns an id for a message submitted by this process: a queue id
// (13 characters, ordered by time) that no server process will make.
func NewID() string {
	low := idMark | uint64(os.Getpid())&(idMark-1)
	for {
		last := lastID.Load()
		next := uint64(time.Now().UnixMicro())<<10 | low
		if next <= last {
			next = last + 1<<10
		}
		if lastID.CompareAndSwap(last, next) {
			var b [13]byte
			for i := len(b) - 1; i >= 0; i-- {
				b[i] = idAlphabet[next&31]
				next >>= 5
			}
			return string(b[:])
		}
	}
}

// ValidID reports whether id can name a maildrop file and a queue entry:
// ASCII letters and digits only, so it is safe in paths and log lines.
func ValidID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range []byte(id) {
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}
