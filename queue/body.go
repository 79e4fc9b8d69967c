package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"
)

// InlineMax is the largest message kept inside Badger (key b/<id>); a
// larger one has a file of its own under bodies/, so that receiving,
// queueing and delivering it never holds it in memory, and Badger's
// value log (mmap'd, sparse) is never written.
const InlineMax = 64 << 10

// spoolStep is how much disk a BodyWriter reserves at a time.
const spoolStep = 1 << 20

// BodyWriter is a message body being received into its own file,
// bodies/<id>. Nothing refers to the file until the message's record is
// committed (EnqueueFile); a file without a record is removed at the next
// start.
type BodyWriter struct {
	q        *Queue
	id       string
	f        *os.File
	n        int64
	reserved int64
	done     bool
}

// CreateBody starts the body file of message id.
func (q *Queue) CreateBody(id string) (*BodyWriter, error) {
	if !validID(id) {
		return nil, fmt.Errorf("create body: bad queue id %q", id)
	}
	if !q.space.reserve(spoolStep, Reserve) {
		return nil, fmt.Errorf("create body %s: %w", id, ErrNoSpace)
	}
	f, err := openFile(q.bodyPath(id), unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o600)
	if err != nil {
		q.space.release(spoolStep)
		return nil, fmt.Errorf("create body: %w", err)
	}
	return &BodyWriter{q: q, id: id, f: f, reserved: spoolStep}, nil
}

// Write appends to the body, reserving disk space a megabyte at a time so
// that bodies never eat into the space Badger needs (ErrNoSpace).
func (w *BodyWriter) Write(p []byte) (int, error) {
	for w.n+int64(len(p)) > w.reserved {
		if !w.q.space.reserve(spoolStep, Reserve) {
			return 0, fmt.Errorf("body %s: %w", w.id, ErrNoSpace)
		}
		w.reserved += spoolStep
	}
	n, err := w.f.Write(p)
	w.n += int64(n)
	if err != nil {
		w.q.space.refresh()
		return n, fmt.Errorf("body %s: %w", w.id, err)
	}
	return n, nil
}

// Size is the number of bytes written.
func (w *BodyWriter) Size() int64 { return w.n }

// ReadAt reads back what was written, for the header and the body prefix
// the hooks see.
func (w *BodyWriter) ReadAt(p []byte, off int64) (int, error) {
	return w.f.ReadAt(p, off)
}

// Discard removes a body whose message was not queued.
func (w *BodyWriter) Discard() {
	if w.done {
		return
	}
	w.done = true
	w.f.Close()
	os.Remove(w.f.Name())
	w.q.space.release(w.reserved)
}

// finish closes the file after its record is committed.
func (w *BodyWriter) finish() {
	w.done = true
	w.f.Close()
	w.q.space.release(w.reserved)
}

func (q *Queue) bodyPath(id string) string { return filepath.Join(q.bodyDir, id) }

// validID keeps file names derived from ids inside bodies/.
func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}

// EnqueueFile stores a new message whose body is in w's file: the message
// is prefix (trace and rewritten header lines, kept in Badger as h/<id>)
// followed by the file from offset skip. The commit fsyncs the file (with
// the batch's others: syncBodies) and the body directory before it writes
// the record, so a record never names a body that a crash could lose. On
// success w is finished; on error the caller still owns it (Discard).
func (q *Queue) EnqueueFile(ctx context.Context, r *Record, prefix []byte, w *BodyWriter, skip int64) error {
	startWriteback(w.f)
	r.BodyFile, r.BodySkip = true, skip
	op, size, err := PutFileOp(r, prefix)
	if err != nil {
		return err
	}
	op.sync = w.f
	if err := q.Commit(ctx, size, op); err != nil {
		return fmt.Errorf("enqueue %s: %w", r.ID, err)
	}
	w.finish()
	return nil
}

// LinkBody gives message newID the body file of message id (a hard link:
// a forwarded copy shares the bytes). The record of newID must then be
// stored with PutFileOp.
func (q *Queue) LinkBody(id, newID string) error {
	if !validID(id) || !validID(newID) {
		return fmt.Errorf("link body: bad queue id")
	}
	return os.Link(q.bodyPath(id), q.bodyPath(newID))
}

// PutFileOp stores a new message whose body file already exists: record,
// prefix and schedule entry. The commit fsyncs the body directory first.
func PutFileOp(r *Record, prefix []byte) (Op, int, error) {
	r.BodyFile = true
	rec, err := encodeRecord(r)
	if err != nil {
		return Op{}, 0, err
	}
	return Op{newFile: true, apply: func(txn *badger.Txn) error {
		if err := txn.Set(recordKey(r.ID), rec); err != nil {
			return err
		}
		if len(prefix) > 0 {
			if err := txn.Set(prefixKey(r.ID), prefix); err != nil {
				return err
			}
		}
		return indexNew(txn, r)
	}, indexes: r}, len(rec) + len(prefix) + 64, nil
}

// Body is a queued message's content, read by offset: the inline bytes,
// or the stored prefix followed by the body file from its skip offset.
// It implements io.ReaderAt; delivery agents read it as a stream.
type Body struct {
	prefix []byte
	f      *os.File
	skip   int64
	size   int64
	id     string // the message whose body file f is, for EnqueueCopy
}

// OpenBody opens the content of a queued message. Close it when done.
func (q *Queue) OpenBody(r *Record) (*Body, error) {
	var prefix []byte
	key := bodyKey(r.ID)
	if r.BodyFile {
		key = prefixKey(r.ID)
	}
	err := q.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		prefix, err = item.ValueCopy(nil)
		return err
	})
	switch {
	case errors.Is(err, badger.ErrKeyNotFound) && r.BodyFile:
		prefix = nil // a message without added header lines
	case errors.Is(err, badger.ErrKeyNotFound):
		return nil, fmt.Errorf("body of %s: %w", r.ID, ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("body of %s: %w", r.ID, err)
	}
	b := &Body{prefix: prefix, size: int64(len(prefix))}
	if !r.BodyFile {
		return b, nil
	}
	f, err := openFile(q.bodyPath(r.ID), unix.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("body file of %s: %w", r.ID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("body file of %s: %w", r.ID, err)
	}
	fi, err := f.Stat()
	if err != nil || fi.Size() < r.BodySkip {
		f.Close()
		return nil, fmt.Errorf("body file of %s: %w: shorter than its header", r.ID, ErrNotFound)
	}
	b.f, b.skip, b.size, b.id = f, r.BodySkip, b.size+fi.Size()-r.BodySkip, r.ID
	return b, nil
}

// NewBody makes a Body of bytes in memory, for messages made by the server
// itself and for tests.
func NewBody(b []byte) *Body { return &Body{prefix: b, size: int64(len(b))} }

// Size is the message size in bytes.
func (b *Body) Size() int64 { return b.size }

// ReadAt implements io.ReaderAt over prefix and file.
func (b *Body) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("body: negative offset")
	}
	if off >= b.size {
		return 0, io.EOF
	}
	want := len(p)
	if rem := b.size - off; int64(want) > rem {
		p = p[:rem]
	}
	n := 0
	if off < int64(len(b.prefix)) {
		n = copy(p, b.prefix[off:])
	}
	if n < len(p) {
		m, err := b.f.ReadAt(p[n:], off+int64(n)-int64(len(b.prefix))+b.skip)
		n += m
		if err != nil && (err != io.EOF || n < len(p)) {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // the file shrank under us
			}
			return n, err
		}
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// Reader reads the whole message from the start.
func (b *Body) Reader() io.Reader { return io.NewSectionReader(b, 0, b.size) }

// Head returns at most n bytes from the start: the header and a prefix of
// the body for the hooks and for reports.
func (b *Body) Head(n int64) ([]byte, error) {
	buf := make([]byte, min(n, b.size))
	k, err := b.ReadAt(buf, 0)
	if k == len(buf) {
		err = nil
	}
	return buf[:k], err
}

// Bytes returns the whole message; only for small messages and tools.
func (b *Body) Bytes() ([]byte, error) { return b.Head(b.size) }

// Close releases the body file.
func (b *Body) Close() error {
	if b.f != nil {
		return b.f.Close()
	}
	return nil
}

// sweepBodies removes body files that no record names: what a crash left
// between a body's first byte and its record's commit.
func (q *Queue) sweepBodies() error {
	entries, err := os.ReadDir(q.bodyDir)
	if err != nil {
		return err
	}
	return q.db.View(func(txn *badger.Txn) error {
		for _, e := range entries {
			id := e.Name()
			if _, err := txn.Get(recordKey(id)); err == nil {
				continue
			}
			if _, err := txn.Get(corruptKey(id)); err == nil {
				continue
			}
			if strings.HasPrefix(id, ".") || !validID(id) {
				continue
			}
			os.Remove(q.bodyPath(id))
		}
		return nil
	})
}

var _ io.ReaderAt = (*Body)(nil)

// EnqueueCopy stores a new message m whose content is add followed by
// b's (a forwarded copy with its Delivered-To line). A large body is
// shared by a hard link, not copied.
func (q *Queue) EnqueueCopy(ctx context.Context, m *Record, add []byte, b *Body) error {
	m.Size = int64(len(add)) + b.Size()
	if b.f == nil {
		data, err := b.Bytes()
		if err != nil {
			return fmt.Errorf("enqueue %s: %w", m.ID, err)
		}
		return q.Enqueue(ctx, m, append(append([]byte{}, add...), data...))
	}
	if err := q.LinkBody(b.id, m.ID); err != nil {
		return fmt.Errorf("enqueue %s: %w", m.ID, err)
	}
	m.BodySkip = b.skip
	op, size, err := PutFileOp(m, append(append([]byte{}, add...), b.prefix...))
	if err == nil {
		err = q.Commit(ctx, size, op)
	}
	if err != nil {
		os.Remove(q.bodyPath(m.ID))
		return fmt.Errorf("enqueue %s: %w", m.ID, err)
	}
	return nil
}
