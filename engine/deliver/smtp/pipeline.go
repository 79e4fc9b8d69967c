package smtp

import (
	"bytes"
	"errors"
	"net"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/sys/unix"
)

// Pipelining (RFC 2920), as Postfix's smtp client does it: when the server
// announces PIPELINING, MAIL FROM, every RCPT TO and DATA leave in one
// write and the replies are read in order, so that a message on a cached
// connection takes two round trips (the envelope, then the body) instead of
// four. go-smtp's client only sends a command and waits for its reply, so
// the commands are formatted by go-smtp itself (a recorder: a second
// go-smtp client over a connection that answers everything) and sent
// ahead; the real client then issues the same calls, handoffConn drops the
// lines that already went out, and go-smtp reads and judges the replies as
// before.

// errOutOfStep is what go-smtp gets when it writes something other than the
// command that was sent ahead for it: the replies would no longer match
// the commands, so the session is given up.
var errOutOfStep = errors.New("pipelined command out of step")

// recorder formats commands exactly as go-smtp's client sends them.
type recorder struct {
	client *smtp.Client
	conn   *recConn
}

// newRecorder makes a recorder that knows the session's extensions: it is
// greeted with the same EHLO reply lines the server gave.
func newRecorder(lmtp bool, greeting []byte, name string) (*recorder, error) {
	rc := &recConn{in: greeting}
	r := &recorder{conn: rc}
	if lmtp {
		r.client = smtp.NewClientLMTP(rc)
	} else {
		r.client = smtp.NewClient(rc)
	}
	if err := r.client.Hello(name); err != nil {
		return nil, err
	}
	r.take() // its own EHLO
	return r, nil
}

// take returns what was recorded since the last take.
func (r *recorder) take() []byte {
	b := bytes.Clone(r.conn.out.Bytes())
	r.conn.out.Reset()
	return b
}

// recConn is the recorder's connection: it keeps what go-smtp writes and
// answers each command with success, 354 for DATA.
type recConn struct {
	in   []byte // the greeting and EHLO reply, then one reply at a time
	out  bytes.Buffer
	last []byte // the last line written
}

func (c *recConn) Read(p []byte) (int, error) {
	if len(c.in) == 0 {
		if bytes.EqualFold(bytes.TrimSpace(c.last), []byte("DATA")) {
			c.in = []byte("354 go ahead\r\n")
		} else {
			c.in = []byte("250 ok\r\n")
		}
	}
	n := copy(p, c.in)
	c.in = c.in[n:]
	return n, nil
}

func (c *recConn) Write(p []byte) (int, error) {
	c.out.Write(p)
	c.last = append(c.last[:0], p...)
	return len(p), nil
}

func (c *recConn) Close() error                     { return nil }
func (c *recConn) LocalAddr() net.Addr              { return recAddr{} }
func (c *recConn) RemoteAddr() net.Addr             { return recAddr{} }
func (c *recConn) SetDeadline(time.Time) error      { return nil }
func (c *recConn) SetReadDeadline(time.Time) error  { return nil }
func (c *recConn) SetWriteDeadline(time.Time) error { return nil }

type recAddr struct{}

func (recAddr) Network() string { return "recorder" }
func (recAddr) String() string  { return "recorder" }

// idleState is what a cached connection has to say before it is reused.
type idleState int

const (
	idleQuiet   idleState = iota // nothing to read: the server waits for us
	idleClosed                   // the server closed it (or it broke)
	idleUnknown                  // it sent something, or cannot be asked: ask with NOOP
)

// peekIdle looks at a cached connection without a round trip, as Postfix's
// connection cache does: a server that timed the session out has closed it
// (or said 421 first), which a non-blocking peek at the socket sees. Data
// that is not the end of the connection may be harmless (a TLS session
// ticket): the caller then asks with NOOP.
func peekIdle(c net.Conn) idleState {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return idleUnknown
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return idleUnknown
	}
	var (
		n    int
		perr error
		buf  [1]byte
	)
	err = rc.Read(func(fd uintptr) bool {
		n, _, perr = unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return true // never wait for the poller: this is a look, not a read
	})
	switch {
	case err != nil:
		return idleClosed
	case errors.Is(perr, unix.EAGAIN):
		return idleQuiet
	case perr != nil || n == 0:
		return idleClosed
	}
	return idleUnknown
}
