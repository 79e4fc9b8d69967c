package privsep

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/larkpost/larkpost/engine/deliver"
)

// ErrUnavailable is wrapped by the errors of calls that the privileged
// parent did not answer: it is gone, the client is closed, or the stream
// broke. Such a call is worth retrying later.
var ErrUnavailable = errors.New("privsep: privileged parent unavailable")

// RemoteError is an op that the parent ran, or refused, and that failed.
// It wraps the errno behind it when there is one, so errors.Is(err,
// fs.ErrNotExist) tells a missing .forward.
type RemoteError struct {
	Op    Op
	Msg   string
	Errno syscall.Errno
}

func (e *RemoteError) Error() string { return "privsep: " + e.Op.String() + ": " + e.Msg }

func (e *RemoteError) Unwrap() error {
	if e.Errno == 0 {
		return nil
	}
	return e.Errno
}

// ForwardTimeout bounds Client.ReadForward, which has no context.
const ForwardTimeout = time.Minute

// Client asks the privileged parent, in the unprivileged daemon. Its
// methods may be called from any number of goroutines; their requests are
// in flight together.
type Client struct {
	conn   *net.UnixConn
	dir    string
	wlock  chan struct{} // held while a frame is written
	done   chan struct{} // closed when the stream is dead
	failed sync.Once

	mu      sync.Mutex
	err     error // why the stream is dead, set before done is closed
	next    uint32
	pending map[uint32]chan *response
}

// NewClient starts a client on conn, its end of the socketpair. Bodies
// are copied into unlinked temporary files in tmpDir ("" means
// os.TempDir()), which must be on a file system the daemon may write.
// The client owns conn from now on.
func NewClient(conn *net.UnixConn, tmpDir string) *Client {
	c := &Client{
		conn:    conn,
		dir:     tmpDir,
		wlock:   make(chan struct{}, 1),
		done:    make(chan struct{}),
		pending: map[uint32]chan *response{},
	}
	go c.readLoop()
	return c
}

// Close ends the stream: every pending and later call fails with
// ErrUnavailable. The parent sees the end of the stream and cancels what
// it still runs.
func (c *Client) Close() error {
	c.fail(errors.New("client closed"))
	return nil
}

// fail marks the stream dead, once, and closes it.
func (c *Client) fail(why error) {
	c.failed.Do(func() {
		c.mu.Lock()
		c.err = fmt.Errorf("%w: %v", ErrUnavailable, why)
		c.pending = nil
		c.mu.Unlock()
		close(c.done)
		c.conn.Close()
	})
}

func (c *Client) deadErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *Client) readLoop() {
	fr := newFrameReader(c.conn)
	for {
		payload, got, err := fr.read(MaxResponsePayload)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("the parent closed the stream")
			}
			c.fail(err)
			return
		}
		r, err := decodeResponse(payload)
		if err != nil {
			got.close()
			c.fail(err)
			return
		}
		if got.first >= 0 {
			r.FD = os.NewFile(uintptr(got.first), "from the parent")
		}
		c.mu.Lock()
		ch := c.pending[r.ID]
		delete(c.pending, r.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- r // buffered: never blocks
		} else if r.FD != nil {
			r.FD.Close() // no one waits for it (the call was cancelled)
		}
	}
}

// forget drops a call that will not wait for its answer.
func (c *Client) forget(id uint32) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// call sends req, with body as a descriptor when not nil, and waits for
// its answer.
func (c *Client) call(ctx context.Context, req *Request, body deliver.Body) (*response, error) {
	select {
	case <-c.done:
		return nil, c.deadErr()
	default:
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("privsep: %v: %w", req.Op(), err)
	}
	fd := -1
	if body != nil {
		f, err := c.materialize(body)
		if err != nil {
			return nil, err
		}
		// The descriptor in flight holds the file; ours can go when sent.
		defer f.Close()
		fd = int(f.Fd())
	}
	ch := make(chan *response, 1)
	c.mu.Lock()
	if c.pending == nil {
		c.mu.Unlock()
		return nil, c.deadErr()
	}
	for {
		c.next++
		if _, busy := c.pending[c.next]; !busy {
			break
		}
	}
	id := c.next
	c.pending[id] = ch
	c.mu.Unlock()

	req.ID = id
	payload, err := req.Encode()
	if err != nil {
		c.forget(id)
		return nil, err
	}
	if err := c.send(ctx, req.Op(), payload, fd); err != nil {
		c.forget(id)
		return nil, err
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		c.forget(id)
		return nil, fmt.Errorf("privsep: %v: %w", req.Op(), ctx.Err())
	case <-c.done:
		select {
		case r := <-ch:
			return r, nil
		default:
		}
		return nil, c.deadErr()
	}
}

// aLongTimeAgo is a write deadline that interrupts a blocked write.
var aLongTimeAgo = time.Unix(1, 0)

// send writes one frame, giving up when ctx ends. A frame cut off after
// its first byte breaks the stream for every call.
func (c *Client) send(ctx context.Context, op Op, payload []byte, fd int) error {
	select {
	case c.wlock <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("privsep: %v: %w", op, ctx.Err())
	case <-c.done:
		return c.deadErr()
	}
	defer func() { <-c.wlock }()
	interrupted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		c.conn.SetWriteDeadline(aLongTimeAgo)
		close(interrupted)
	})
	n, err := writeFrame(c.conn, payload, fd)
	if !stop() {
		<-interrupted
		c.conn.SetWriteDeadline(time.Time{})
	}
	switch {
	case err == nil:
		return nil
	case n == 0 && ctx.Err() != nil:
		// Nothing went: the stream is intact.
		return fmt.Errorf("privsep: %v: %w", op, ctx.Err())
	}
	c.fail(fmt.Errorf("write: %v", err))
	return c.deadErr()
}

// materialize copies body into an unlinked temporary file.
func (c *Client) materialize(body deliver.Body) (*os.File, error) {
	f, err := os.CreateTemp(c.dir, "privsep-body-*")
	if err != nil {
		return nil, fmt.Errorf("privsep: body: %w", err)
	}
	os.Remove(f.Name())
	n, err := io.Copy(f, io.NewSectionReader(body, 0, body.Size()))
	if err == nil && n != body.Size() {
		err = fmt.Errorf("read %d of %d bytes", n, body.Size())
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("privsep: body: %w", err)
	}
	return f, nil
}

// status turns a call's outcome into a delivery status: anything but the
// parent's answer is temporary.
func status(op Op, r *response, err error) deliver.Status {
	switch {
	case err != nil:
		return deliver.Temp("4.3.0", err.Error())
	case r.Status.Enhanced == "":
		return deliver.Temp("4.3.0", (&RemoteError{Op: op, Msg: r.Err}).Error())
	}
	return r.Status
}

// ReadForward reads user's .forward at path with the user's rights (see
// postfix.ReadForward). It has the signature of postfix.Config's
// ReadForward hook; it gives up after ForwardTimeout.
func (c *Client) ReadForward(user, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ForwardTimeout)
	defer cancel()
	r, err := c.call(ctx, &Request{ReadForward: &ReadForward{User: user, Path: path}}, nil)
	if err != nil {
		return nil, err
	}
	if r.Err != "" {
		return nil, &RemoteError{Op: OpReadForward, Msg: r.Err, Errno: r.Errno}
	}
	if r.Data == nil {
		return []byte{}, nil
	}
	return r.Data, nil
}

// DeliverMailbox writes body into a mailbox with the rights of req.User.
func (c *Client) DeliverMailbox(ctx context.Context, req DeliverMailbox, body deliver.Body) deliver.Status {
	r, err := c.call(ctx, &Request{DeliverMailbox: &req}, body)
	return status(OpDeliverMailbox, r, err)
}

// DeliverFile appends body to a file with the rights of req.User.
func (c *Client) DeliverFile(ctx context.Context, req DeliverFile, body deliver.Body) deliver.Status {
	r, err := c.call(ctx, &Request{DeliverFile: &req}, body)
	return status(OpDeliverFile, r, err)
}

// RunPipe runs a command as req.User with body on its standard input.
// A deadline of ctx shorter than req.Timeout becomes the timeout.
func (c *Client) RunPipe(ctx context.Context, req RunPipe, body deliver.Body) deliver.Status {
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left > 0 && (req.Timeout <= 0 || left < req.Timeout) {
			req.Timeout = left
		}
	}
	req.Timeout = min(req.Timeout, MaxTimeout)
	if req.Argv != nil {
		req.Argv = append([]string(nil), req.Argv...)
	}
	r, err := c.call(ctx, &Request{RunPipe: &req}, body)
	return status(OpRunPipe, r, err)
}

// RunFilter runs a user's filter script in a filter child of req.User
// (see FilterInput for input) and returns the filing it wrote.
func (c *Client) RunFilter(ctx context.Context, req RunFilter, input []byte) ([]byte, error) {
	r, err := c.call(ctx, &Request{RunFilter: &req}, bytesBody(input))
	if err != nil {
		return nil, err
	}
	if r.Err != "" {
		return nil, &RemoteError{Op: OpRunFilter, Msg: r.Err, Errno: r.Errno}
	}
	return r.Data, nil
}

// bytesBody is a body held in memory.
type bytesBody []byte

func (b bytesBody) ReadAt(p []byte, off int64) (int, error) {
	return bytes.NewReader(b).ReadAt(p, off)
}
func (b bytesBody) Size() int64 { return int64(len(b)) }

// OpenDrop opens a maildrop file through the parent (see OpenDrop): for a
// daemon that cannot read what other users' sendmail wrote.
func (c *Client) OpenDrop(path string) (*os.File, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ForwardTimeout)
	defer cancel()
	r, err := c.call(ctx, &Request{OpenDrop: &OpenDrop{Path: path}}, nil)
	if err != nil {
		return nil, err
	}
	if r.FD == nil {
		msg := r.Err
		if msg == "" {
			msg = "no descriptor in the answer"
		}
		return nil, &RemoteError{Op: OpOpenDrop, Msg: msg, Errno: r.Errno}
	}
	return r.FD, nil
}
