// Package mbox appends messages to mbox files the way Postfix's local(8)
// does: under a dotlock and an fcntl lock, with a From_ line in front and a
// blank line after, fsynced, and cut back with ftruncate if anything fails,
// so that a mailbox never holds half a message.
//
// Lines are quoted in the mboxrd style of mbox(5): a line matching
// "^>*From " gets one more '>'. Postfix quotes only "^From " (mboxo), which
// readers cannot undo exactly; mboxrd is undone by removing one '>' from
// every line matching "^>+From ".
//
// The package is Unix only. On Linux the fcntl lock is an open file
// description lock, which conflicts with the classic fcntl locks of Postfix,
// mutt and procmail and, unlike them, also between goroutines.
package mbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const (
	defaultLockTimeout = 30 * time.Second
	// Postfix uses 500s (stale_lock_time); five minutes is liblockfile's
	// figure, which mutt and dotlockfile share, and still far longer than
	// a delivery holds the lock.
	defaultStaleLockAge = 300 * time.Second
	lockRetry           = 100 * time.Millisecond
	bufSize             = 64 << 10
)

// ErrLocked is wrapped when the mailbox stays locked past LockTimeout; the
// caller should defer the delivery and try again later.
var ErrLocked = errors.New("mailbox is locked")

// Options controls how a delivery locks the mailbox. The zero value is what
// Deliver uses: a dotlock and an fcntl lock, waiting at most 30s for them,
// and breaking dotlocks older than 300s. Deliveries from this process to one
// path are kept apart even with both locks off; other processes are not.
type Options struct {
	// NoFcntl skips the fcntl write lock on the mailbox file.
	NoFcntl bool
	// NoDotlock skips the <path>.lock file, for spools whose directory
	// the delivering user cannot write.
	NoDotlock bool
	// LockTimeout bounds the whole wait for the locks; zero or negative
	// means 30s.
	LockTimeout time.Duration
	// StaleLockAge is the age (by mtime) past which a dotlock is taken to
	// be left behind by a crashed process and removed; zero or negative
	// means 300s. It must exceed the longest delivery, or a slow one can
	// have its lock broken under it.
	StaleLockAge time.Duration
}

// Deliver appends one message to the mbox file at path, creating it (mode
// 0600) and its parent directory (0700) if missing, under both a dotlock and
// an fcntl lock. msg is the message with LF line endings, starting with its
// header. sender is the envelope sender; "" (the null sender) is written as
// MAILER-DAEMON in the From_ line, as Postfix does. now is the time for the
// From_ line, formatted in now's location: pass time.Now() for local time,
// which is what Postfix writes.
//
// It returns the number of bytes appended. On error nothing is appended:
// whatever was written is truncated away.
func Deliver(path, sender string, now time.Time, msg io.Reader) (int64, error) {
	return DeliverOptions(path, sender, now, msg, Options{})
}

// DeliverOptions is Deliver with the locking controlled by o.
func DeliverOptions(path, sender string, now time.Time, msg io.Reader, o Options) (int64, error) {
	if o.LockTimeout <= 0 {
		o.LockTimeout = defaultLockTimeout
	}
	if o.StaleLockAge <= 0 {
		o.StaleLockAge = defaultStaleLockAge
	}
	deadline := time.Now().Add(o.LockTimeout)

	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return 0, fmt.Errorf("mbox deliver: %w", err)
	}
	release, err := enterGate(path, deadline)
	if err != nil {
		return 0, fmt.Errorf("mbox deliver %s: %w", path, err)
	}
	defer release()
	// Dotlock before opening, as Postfix does, so that a mailbox a dotlock
	// holder is about to rename or remove is not opened under it.
	if !o.NoDotlock {
		unlock, err := dotlock(path+".lock", deadline, o.StaleLockAge)
		if err != nil {
			return 0, fmt.Errorf("mbox deliver %s: %w", path, err)
		}
		defer unlock()
	}
	f, err := openLocked(path, deadline, !o.NoFcntl)
	if err != nil {
		return 0, fmt.Errorf("mbox deliver: %w", err)
	}
	// Closing also drops the fcntl lock; it runs before the dotlock goes.
	defer f.Close()
	n, err := appendMessage(f, sender, now, msg)
	if err != nil {
		return 0, fmt.Errorf("mbox deliver %s: %w", path, err)
	}
	return n, nil
}

// openLocked opens the mailbox and, if lock is set, takes the fcntl lock.
// A mail reader that rewrites the mailbox and renames the new file over it
// while holding only the fcntl lock would leave the waiting delivery with the
// unlinked old file, so the lock only counts if path still names that file.
func openLocked(path string, deadline time.Time, lock bool) (*os.File, error) {
	for {
		f, err := openMailbox(path)
		if err != nil || !lock {
			return f, err
		}
		if err := fcntlLock(f, deadline); err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("stat %s: %w", path, err)
		}
		if cur, err := os.Lstat(path); err == nil && os.SameFile(fi, cur) {
			return f, nil
		}
		f.Close()
		if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("%s keeps being replaced: %w", path, ErrLocked)
		}
	}
}

// openMailbox opens path for appending, creating it if missing, and refuses
// anything but a regular file with a single link: in a shared spool a
// symlink, FIFO or hard link planted by another user would otherwise redirect
// or stall the delivery, which is why Postfix's safe_open refuses them too.
func openMailbox(path string) (*os.File, error) {
	// O_NONBLOCK keeps a FIFO without a reader from blocking the open; it
	// is cleared below once the file is known to be regular.
	const flags = unix.O_WRONLY | unix.O_APPEND | unix.O_CREAT | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
	var fd int
	var err error
	for {
		fd, err = unix.Open(path, flags, 0o600)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		// The errno for these (ELOOP, EISDIR, ENXIO, EMLINK on BSD) says
		// little; the file type says what is wrong.
		if fi, lerr := os.Lstat(path); lerr == nil && !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%s %s", path, describe(fi.Mode()))
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("fstat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if st.Nlink != 1 {
		unix.Close(fd)
		return nil, fmt.Errorf("%s has %d hard links", path, st.Nlink)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

func describe(m os.FileMode) string {
	switch {
	case m&os.ModeSymlink != 0:
		return "is a symlink"
	case m.IsDir():
		return "is a directory"
	}
	return "is not a regular file"
}

// appendMessage writes the From_ line, the quoted message and the blank
// line, and fsyncs. The size is taken here, under the locks, because only
// then is it the size to return to on failure.
func appendMessage(f *os.File, sender string, now time.Time, msg io.Reader) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("stat: %w", err)
	}
	orig := fi.Size()
	cw := &countingWriter{w: f}
	b := bufs.Get().(*copyBufs)
	defer func() {
		b.w.Reset(nil) // let go of f
		bufs.Put(b)
	}()
	bw := b.w
	bw.Reset(cw)
	err = copyMessage(bw, b.read, sender, now, msg)
	if err == nil {
		if err = bw.Flush(); err != nil {
			err = fmt.Errorf("write: %w", err)
		}
	}
	if err == nil {
		if err = f.Sync(); err != nil {
			err = fmt.Errorf("fsync: %w", err)
		}
	}
	if err != nil {
		// As Postfix does: a failed delivery is deferred and retried, so
		// anything left behind would be a partial duplicate.
		if terr := f.Truncate(orig); terr != nil {
			return 0, fmt.Errorf("%w; truncating back to %d bytes failed too, the mailbox may end in a partial message: %v", err, orig, terr)
		}
		if serr := f.Sync(); serr != nil {
			return 0, fmt.Errorf("%w; fsync after truncating back failed: %v", err, serr)
		}
		return 0, err
	}
	return cw.n, nil
}

// bufs recycles the read and write buffers: at 128 KiB a delivery they
// would otherwise be most of the garbage a busy router makes.
var bufs = sync.Pool{New: func() any {
	return &copyBufs{read: make([]byte, bufSize), w: bufio.NewWriterSize(nil, bufSize)}
}}

type copyBufs struct {
	read []byte
	w    *bufio.Writer
}

// copyMessage writes the From_ line and the quoted message to bw, reading
// msg through buf.
func copyMessage(bw *bufio.Writer, buf []byte, sender string, now time.Time, msg io.Reader) error {
	if _, err := bw.WriteString(fromLine(sender, now)); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	q := quoter{w: bw}
	for {
		n, rerr := msg.Read(buf)
		q.write(buf[:n])
		if q.err != nil {
			return fmt.Errorf("write: %w", q.err)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("read message: %w", rerr)
		}
	}
	q.finish()
	if q.err != nil {
		return fmt.Errorf("write: %w", q.err)
	}
	return nil
}

// fromLine formats the From_ line. Postfix writes two spaces before the date
// ("From %s  %.24s"); one is what mbox(5) and most writers use, and readers
// accept both.
func fromLine(sender string, now time.Time) string {
	s := "MAILER-DAEMON"
	if sender != "" {
		s = quoteSender(sender)
	}
	return "From " + s + " " + now.Format(time.ANSIC) + "\n"
}

// quoteSender quotes the local part when it is not a dot-atom, as Postfix's
// quote_822_local does, so that a space in it cannot be taken for the end of
// the address by a reader that splits the From_ line on spaces. Control
// characters become '?' so that the From_ line stays one line whatever the
// envelope carried.
func quoteSender(sender string) string {
	local, domain := sender, ""
	if i := strings.LastIndexByte(sender, '@'); i >= 0 {
		local, domain = sender[:i], sender[i:]
	}
	if !isDotAtom(local) {
		local = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(local) + `"`
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, local+domain)
}

func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		// Bytes above ASCII are UTF-8 of an SMTPUTF8 address (RFC 6531).
		if c >= 0x80 || c == '.' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

const fromPrefix = "From "

// quoter copies message text, prepending '>' to every line that matches
// ^>*From . It is a byte-level state machine rather than a line reader so
// that neither a line longer than any buffer nor a read boundary inside
// ">>>From " can hide or invent a line start.
type quoter struct {
	w       *bufio.Writer
	err     error
	midLine bool // the current line's quoting is decided and written
	gts     int  // '>' at the start of the current line, held back
	from    int  // bytes of "From " matched after them, held back
}

func (q *quoter) put(p []byte) {
	if q.err == nil {
		_, q.err = q.w.Write(p)
	}
}

// release writes the held-back prefix of the line, now that it is known
// whether it needs the extra '>'.
func (q *quoter) release() {
	for ; q.gts > 0 && q.err == nil; q.gts-- {
		q.err = q.w.WriteByte('>')
	}
	if q.err == nil {
		_, q.err = q.w.WriteString(fromPrefix[:q.from])
	}
	q.gts, q.from = 0, 0
	q.midLine = true
}

func (q *quoter) write(p []byte) {
	for len(p) > 0 && q.err == nil {
		if q.midLine {
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				q.put(p)
				return
			}
			q.put(p[:i+1])
			p = p[i+1:]
			q.midLine = false
			continue
		}
		switch c := p[0]; {
		case q.from == 0 && c == '>':
			q.gts++
			p = p[1:]
		case c == fromPrefix[q.from]:
			q.from++
			p = p[1:]
			if q.from == len(fromPrefix) {
				q.gts++
				q.release()
			}
		default:
			// Not a From_ look-alike: c is left for the mid-line
			// branch, which also handles it being the newline.
			q.release()
		}
	}
}

// finish ends the message with a newline if it lacks one, then adds the
// blank line that lets readers find the next From_ line.
func (q *quoter) finish() {
	if q.gts > 0 || q.from > 0 {
		q.release()
	}
	if q.midLine {
		q.put([]byte("\n\n"))
	} else {
		q.put([]byte("\n"))
	}
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
