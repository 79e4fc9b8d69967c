package privsep

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/larkpost/larkpost/engine/deliver"
	"github.com/larkpost/larkpost/engine/deliver/local"
	"github.com/larkpost/larkpost/engine/deliver/maildir"
	"github.com/larkpost/larkpost/rules"
	"github.com/larkpost/larkpost/rules/postfix"
)

// Server answers the daemon's requests in the privileged parent.
type Server struct {
	// Log gets protocol errors and refusals (Warn, which may quote the
	// offending user name or path) and one line per request (Debug: op,
	// id, user and status). It never gets addresses, commands, .forward
	// contents or message content. nil logs nothing.
	Log *slog.Logger
	// MaxInFlight bounds the requests handled at once; 0 means 64. When
	// it is reached the server stops reading until one ends.
	MaxInFlight int
	// Timeout is a request's deadline when the op has none of its own
	// (RunPipe's Timeout); 0 means 10 minutes. A delivery that overruns
	// it is answered with 4.3.0 (it may still complete).
	Timeout time.Duration
	// WriteTimeout bounds writing one response; a daemon that does not
	// read its answers for that long loses the connection. 0 means one
	// minute.
	WriteTimeout time.Duration
	// DropDir is the maildrop directory OpenDrop may open files in
	// (data_dir/maildrop/new); "" refuses OpenDrop.
	DropDir string
	// Filter starts the filter children of RunFilter; nil refuses
	// RunFilter.
	Filter *FilterChildren
	// Commits are the daemon's queue commits as seen here (queue.Follow),
	// for the Maildir deliveries made here to sync in them
	// (maildir.Commits); nil: they sync among themselves.
	Commits maildir.Commits
}

const (
	defaultInFlight = 64
	defaultTimeout  = 10 * time.Minute
	pipeGrace       = 30 * time.Second
	// defaultFilterTimeout is filter_timeout's default.
	defaultFilterTimeout = 2 * time.Second
)

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// Serve reads requests from conn until the stream ends, handling each in
// a goroutine of its own (at most MaxInFlight at once) and writing each
// answer as it is ready. When the stream ends it cancels the commands
// still running, waits for the requests in progress (each at most until
// its deadline), closes conn and returns: nil at a clean end of the
// stream, else why it stopped (a protocol error closes the stream too).
func (s *Server) Serve(conn *net.UnixConn) error {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		conn.Close()
	}()
	limit := s.MaxInFlight
	if limit <= 0 {
		limit = defaultInFlight
	}
	sem := make(chan struct{}, limit)
	out := &responder{conn: conn, timeout: s.WriteTimeout, log: s.log()}
	if out.timeout <= 0 {
		out.timeout = time.Minute
	}
	fr := newFrameReader(conn)
	for {
		payload, got, err := fr.read(MaxPayload)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			if errors.Is(err, errFrameSize) {
				s.log().Warn("privsep: protocol error, closing the stream", "err", err)
			}
			return err
		}
		req, err := Decode(payload)
		if err != nil {
			got.close()
			id, ok := peekID(payload)
			if !ok {
				s.log().Warn("privsep: undecodable request, closing the stream", "err", err)
				return err
			}
			s.log().Warn("privsep: bad request", "id", id, "err", err)
			out.send(refusal(id, err.Error(), 0))
			continue
		}
		body, size, err := takeBody(req.Op(), &got)
		if err != nil {
			s.log().Warn("privsep: bad request", "id", req.ID, "op", req.Op(), "err", err)
			out.send(refusal(req.ID, err.Error(), 0))
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out.send(s.handle(ctx, req, body, size, func() { <-sem }))
		}()
	}
}

// takeBody checks the descriptors that came with a request: exactly one,
// a regular file, for the ops with a body; none for the others.
func takeBody(op Op, got *fds) (*os.File, int64, error) {
	if got.extra > 0 {
		got.close()
		return nil, 0, fmt.Errorf("%v: more than one file descriptor", op)
	}
	if !op.HasBody() {
		if got.first >= 0 {
			got.close()
			return nil, 0, fmt.Errorf("%v takes no file descriptor", op)
		}
		return nil, 0, nil
	}
	if got.first < 0 {
		return nil, 0, fmt.Errorf("%v: no file descriptor for the body", op)
	}
	f := os.NewFile(uintptr(got.first), "privsep-body")
	got.first = -1
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("%v: body: %v", op, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%v: the body is not a regular file (%v)", op, fi.Mode().Type())
	}
	return f, fi.Size(), nil
}

// fileBody is a body received as a descriptor.
type fileBody struct {
	f    *os.File
	size int64
}

func (b fileBody) ReadAt(p []byte, off int64) (int, error) { return b.f.ReadAt(p, off) }
func (b fileBody) Size() int64                             { return b.size }

// handle runs one request and answers it; release frees its place among
// those in flight once the work is really over (which, for a delivery
// that overruns its deadline, may be after the answer).
func (s *Server) handle(ctx context.Context, req *Request, body *os.File, size int64, release func()) response {
	op, user := req.Op(), req.User()
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	if req.RunPipe != nil {
		if req.RunPipe.Timeout > 0 {
			timeout = req.RunPipe.Timeout
		}
		// DeliverPipe's own timer reports a timeout; ours is only a guard.
		req.RunPipe.Timeout = timeout
		timeout += pipeGrace
	}
	if req.RunFilter != nil {
		if req.RunFilter.Timeout <= 0 {
			req.RunFilter.Timeout = defaultFilterTimeout
		}
		timeout = req.RunFilter.Timeout + filterGrace + time.Second
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	res := make(chan response, 1)
	go func() {
		defer release()
		defer cancel()
		if body != nil {
			defer body.Close()
		}
		defer func() {
			if p := recover(); p != nil {
				s.log().Error("privsep: request panicked", "id", req.ID, "op", op, "panic", fmt.Sprint(p))
				res <- temp(req.ID, "internal error in the privileged parent", 0)
			}
		}()
		res <- s.do(rctx, req, fileBody{body, size})
	}()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var r response
	select {
	case r = <-res:
	case <-deadline.C:
		r = temp(req.ID, fmt.Sprintf("%v timed out after %v (it may still complete)", op, timeout), 0)
	}
	s.log().Debug("privsep: request", "id", req.ID, "op", op, "user", user, "status", r.Status.Enhanced)
	return r
}

// account finds the account a request runs as: never root, nor an
// account with uid 0 or in group 0.
func account(name string) (postfix.Account, error) {
	if uid, gid, ok := NumericUser(name); ok {
		return postfix.Account{Name: name, UID: uid, GID: gid, Groups: []int{gid}}, nil
	}
	if name == "root" {
		return postfix.Account{}, errors.New("refusing to act as root")
	}
	a, ok := postfix.LookupAccount(name)
	switch {
	case !ok:
		return a, fmt.Errorf("no account %q", name)
	case a.UID == 0:
		return a, fmt.Errorf("refusing to act as %q: uid 0", name)
	case a.GID == 0 || slices.Contains(a.Groups, 0):
		return a, fmt.Errorf("refusing to act as %q: group 0", name)
	}
	return a, nil
}

// do runs the op with the rights of its user.
func (s *Server) do(ctx context.Context, req *Request, body fileBody) response {
	id := req.ID
	if req.OpenDrop != nil {
		return s.openDrop(id, req.OpenDrop.Path)
	}
	acct, err := account(req.User())
	if err != nil {
		s.log().Warn("privsep: refused", "id", id, "op", req.Op(), "user", req.User(), "err", err)
		var errno syscall.Errno
		if req.ReadForward != nil {
			// A user without an account has no .forward.
			errno = syscall.EPERM
			if _, ok := postfix.LookupAccount(req.User()); !ok {
				errno = syscall.ENOENT
			}
		}
		return refusal(id, err.Error(), errno)
	}
	switch {
	case req.ReadForward != nil:
		if _, _, ok := NumericUser(acct.Name); ok {
			return refusal(id, "a numeric owner has no .forward", syscall.EPERM)
		}
		data, err := postfix.ReadForward(acct.Name, req.ReadForward.Path)
		if err != nil {
			var errno syscall.Errno
			errors.As(err, &errno)
			return temp(id, err.Error(), errno)
		}
		if len(data) > MaxData {
			return temp(id, fmt.Sprintf("larger than %d bytes", MaxData), 0)
		}
		return response{ID: id, Status: deliver.Sent("read"), Data: data}
	case req.DeliverMailbox != nil:
		o := req.DeliverMailbox
		return deliverAs(id, acct, &local.Request{QueueID: o.QueueID, Sender: o.Sender, Rcpt: o.Rcpt, OrigRcpt: o.OrigRcpt,
			Mailbox: o.Mailbox, Folder: o.Folder, Body: body, SizeLimit: o.SizeLimit, Commits: s.Commits})
	case req.DeliverFile != nil:
		o := req.DeliverFile
		return deliverAs(id, acct, &local.Request{QueueID: o.QueueID, Sender: o.Sender, Rcpt: o.Rcpt, OrigRcpt: o.OrigRcpt,
			Mailbox: o.Path, Body: body, SizeLimit: o.SizeLimit, Commits: s.Commits})
	case req.RunPipe != nil:
		o := req.RunPipe
		st := local.DeliverPipe(ctx, &local.PipeRequest{Command: o.Command, Argv: o.Argv, Sender: o.Sender, Rcpt: o.Rcpt,
			OrigRcpt: o.OrigRcpt, Body: body, Timeout: o.Timeout, User: acct.Name, Dir: o.Dir,
			SizeLimit: o.SizeLimit})
		return response{ID: id, Status: st}
	case req.RunFilter != nil:
		// Most users have no script: a stat with their rights (cheap)
		// rather than a child (about 20 ms) tells.
		var statErr error
		if err := acct.Do(func() error { _, statErr = os.Stat(req.RunFilter.Path); return nil }); err == nil && errors.Is(statErr, fs.ErrNotExist) {
			return response{ID: id, Status: deliver.Sent("no filter"), Data: rules.EncodeFiling(rules.Filing{Source: "default"})}
		}
		if s.Filter == nil {
			return refusal(id, "filters are not run here", 0)
		}
		if body.size > maxFilterInput {
			return refusal(id, fmt.Sprintf("filter input of %d bytes", body.size), 0)
		}
		input := make([]byte, body.size)
		if _, err := body.ReadAt(input, 0); err != nil {
			return temp(id, "filter input: "+err.Error(), 0)
		}
		out, err := s.Filter.Run(ctx, &acct, input, req.RunFilter.Timeout)
		if err != nil {
			return temp(id, err.Error(), 0)
		}
		return response{ID: id, Status: deliver.Sent("filtered"), Data: out}
	}
	return refusal(id, "no op", 0)
}

// openDrop opens a maildrop file for the daemon: read-only, never through
// a symbolic link, only a regular file with one link directly in DropDir
// (the name is the daemon's; the directory and the checks are ours).
func (s *Server) openDrop(id uint32, path string) response {
	if s.DropDir == "" || filepath.Dir(path) != filepath.Clean(s.DropDir) {
		return refusal(id, "not a maildrop file: "+path, syscall.EPERM)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		var errno syscall.Errno
		errors.As(err, &errno)
		return temp(id, err.Error(), errno)
	}
	fi, err := f.Stat()
	st, ok := fi.Sys().(*syscall.Stat_t)
	if err != nil || !fi.Mode().IsRegular() || !ok || st.Nlink != 1 {
		f.Close()
		return refusal(id, "not a regular maildrop file: "+path, syscall.EPERM)
	}
	return response{ID: id, Status: deliver.Sent("opened"), FD: f}
}

// deliverAs writes a mailbox or a file with the account's rights.
func deliverAs(id uint32, acct postfix.Account, lr *local.Request) response {
	var st deliver.Status
	err := acct.Do(func() (err error) {
		// Do runs this on a thread of its own: a panic is caught here.
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("internal error: %v", p)
			}
		}()
		st = local.Deliver(lr)
		return nil
	})
	if err != nil {
		return temp(id, "cannot take the rights of "+acct.Name+": "+err.Error(), 0)
	}
	return response{ID: id, Status: st}
}

// temp is a failure worth retrying.
func temp(id uint32, why string, errno syscall.Errno) response {
	return response{ID: id, Status: deliver.Temp("4.3.0", why), Errno: errno, Err: why}
}

// refusal is a request the parent will not run.
func refusal(id uint32, why string, errno syscall.Errno) response {
	return temp(id, "privileged parent: "+why, errno)
}

// responder writes answers one at a time.
type responder struct {
	mu      sync.Mutex
	conn    *net.UnixConn
	timeout time.Duration
	log     *slog.Logger
}

func (w *responder) send(r response) {
	b, err := r.encode()
	if err != nil {
		w.log.Error("privsep: cannot encode a response", "id", r.ID, "err", err)
		bad := temp(r.ID, "privileged parent: bad response", 0)
		b, err = bad.encode()
		if err != nil {
			return
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
	fd := -1
	if r.FD != nil {
		defer r.FD.Close() // the daemon has its own copy once sent
		fd = int(r.FD.Fd())
	}
	if _, err := writeFrame(w.conn, b, fd); err != nil {
		// The daemon is gone or stuck: end the stream, and Serve.
		w.log.Warn("privsep: cannot answer, closing the stream", "id", r.ID, "err", err)
		w.conn.Close()
	}
}
