package auth

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DovecotOptions are the optional settings of NewDovecot.
type DovecotOptions struct {
	// Timeout bounds connecting with its handshake, and each login.
	// Default: 10 seconds.
	Timeout time.Duration
	// Service is the service= name Dovecot's passdb sees. Default:
	// "smtp".
	Service string
	// Penalty lets Dovecot delay logins from addresses with recent
	// failures (its anvil auth penalty, up to 15 s, shared with IMAP).
	// Off by default, so requests carry "no-penalty": the Limiter does
	// that job for SMTP and answers at once, while a 15 s delay would
	// outlast Timeout and turn a refusal into a 454. When on, set
	// Timeout above 15 s.
	Penalty bool
}

// Dovecot is a Backend asking a Dovecot auth server, as Postfix does with
// smtpd_sasl_type = dovecot. It speaks the client side of Dovecot's auth
// protocol version 1 over one connection, opened on first use and again
// after an error, and relays every login as PLAIN whatever mechanism the
// SMTP client used.
//
// Logins are multiplexed on the connection by request id, so a slow answer
// (Dovecot delays failures by auth_failure_delay, 2 s by default) holds up
// only its own login.
//
// Every request carries "secured": the SMTP server offers AUTH only over
// TLS unless AllowInsecureAuth is set, which this backend does not support.
type Dovecot struct {
	network, addr string
	timeout       time.Duration
	service       string
	penalty       bool

	mu     sync.Mutex // guards the fields below; held while connecting
	conn   *dovecotConn
	nextID uint32
	closed bool
}

var _ Backend = (*Dovecot)(nil)

// ErrDovecotClosed is returned by a Dovecot backend after Close.
var ErrDovecotClosed = errors.New("auth: dovecot client closed")

// ParseDovecotPath reads Postfix's smtpd_sasl_path for Dovecot: inet:host:port
// for TCP, unix:path or a bare path for a unix socket. A relative path is
// left relative; Postfix resolves it against the queue directory, and so
// must the caller.
func ParseDovecotPath(path string) (network, address string, err error) {
	switch {
	case strings.HasPrefix(path, "inet:"):
		hp := path[len("inet:"):]
		if _, _, err := net.SplitHostPort(hp); err != nil {
			return "", "", fmt.Errorf("dovecot auth path %q: %v", path, err)
		}
		return "tcp", hp, nil
	case strings.HasPrefix(path, "unix:"):
		path = path[len("unix:"):]
	}
	if path == "" {
		return "", "", errors.New("dovecot auth path is empty")
	}
	return "unix", path, nil
}

// NewDovecot returns a client for the auth server at path (see
// ParseDovecotPath). It does not connect yet, so that the mail server can
// start before Dovecot does.
func NewDovecot(path string, opts DovecotOptions) (*Dovecot, error) {
	network, addr, err := ParseDovecotPath(path)
	if err != nil {
		return nil, err
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Service == "" {
		opts.Service = "smtp"
	}
	if strings.ContainsFunc(opts.Service, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return nil, fmt.Errorf("dovecot auth: bad service name %q", opts.Service)
	}
	return &Dovecot{network: network, addr: addr, timeout: opts.Timeout, service: opts.Service, penalty: opts.Penalty}, nil
}

// Close drops the connection; logins waiting on it fail as temporary.
func (d *Dovecot) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.conn != nil {
		d.conn.fail(ErrDovecotClosed)
	}
	return nil
}

// Authenticate asks Dovecot. A FAIL with "temp" (passdb unreachable) and
// any trouble with the connection are errors; a plain FAIL is a refusal.
func (d *Dovecot) Authenticate(ctx context.Context, user, pass string, client netip.Addr) (Result, error) {
	// A NUL would shift PLAIN's fields; the mechanisms refuse it
	// already, this guards other callers.
	if strings.ContainsRune(user, 0) || strings.ContainsRune(pass, 0) {
		return Result{Reason: "NUL in credentials"}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	for try := 0; ; try++ {
		c, fresh, err := d.get(ctx)
		if err != nil {
			return Result{}, fmt.Errorf("dovecot auth %s: %w", d.addr, err)
		}
		res, stale, err := d.request(ctx, c, user, pass, client)
		// A connection that died before answering may have been closed
		// by Dovecot while idle (a restart); one retry on a new one
		// hides that from the user.
		if stale && !fresh && try == 0 {
			continue
		}
		if err != nil {
			return Result{}, fmt.Errorf("dovecot auth %s: %w", d.addr, err)
		}
		return res, nil
	}
}

// get returns the live connection, or makes one; fresh reports the latter.
func (d *Dovecot) get(ctx context.Context) (c *dovecotConn, fresh bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, false, ErrDovecotClosed
	}
	if d.conn != nil && !d.conn.dead() {
		return d.conn, false, nil
	}
	d.conn = nil
	c, err = dialDovecot(ctx, d.network, d.addr)
	if err != nil {
		return nil, false, err
	}
	d.conn = c
	return c, true, nil
}

func (d *Dovecot) newID() uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.nextID++
	if d.nextID == 0 {
		d.nextID = 1
	}
	return d.nextID
}

// request runs one AUTH on c. stale reports that c died before any answer
// to it, so that the login may be tried again elsewhere.
func (d *Dovecot) request(ctx context.Context, c *dovecotConn, user, pass string, client netip.Addr) (res Result, stale bool, err error) {
	id := d.newID()
	ch, err := c.register(id)
	if err != nil {
		return Result{}, true, err
	}
	defer c.unregister(id)

	resp := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
	var b strings.Builder
	b.WriteString("AUTH\t" + strconv.FormatUint(uint64(id), 10) + "\tPLAIN\tservice=" + d.service + "\tnologin")
	if client.IsValid() {
		b.WriteString("\trip=" + client.Unmap().WithZone("").String())
	}
	if !d.penalty {
		b.WriteString("\tno-penalty")
	}
	// resp= goes last: Dovecot stops reading parameters at it.
	b.WriteString("\tsecured\tresp=" + resp + "\n")
	if err := c.write(ctx, b.String()); err != nil {
		return Result{}, true, err
	}

	conts := 0
	for {
		var r dovecotReply
		select {
		case r = <-ch:
		case <-c.done:
			// An answer may have come just before the end.
			select {
			case r = <-ch:
			default:
				return Result{}, conts == 0, c.err
			}
		case <-ctx.Done():
			// The connection stays: Dovecot answers late on purpose
			// (failure delay, penalty), a late answer is dropped by
			// id, and a new connection to a hung server would hang
			// as well. A dead peer shows as an error instead.
			return Result{}, false, fmt.Errorf("no answer: %w", ctx.Err())
		}
		switch r.cmd {
		case "OK":
			name, _ := r.param("user")
			if name == "" {
				name = user
			}
			return Result{OK: true, User: name}, false, nil
		case "FAIL":
			reason, _ := r.param("reason")
			if _, temp := r.param("temp"); temp {
				if reason == "" {
					reason = "no reason given"
				}
				return Result{}, false, fmt.Errorf("temporary failure: %s", reason)
			}
			if reason == "" {
				reason = "authentication failed"
			}
			return Result{Reason: reason}, false, nil
		case "CONT":
			// PLAIN with an initial response needs no continuation,
			// but a server that ignored resp= asks for it once; more
			// is a broken peer.
			if conts++; conts > 1 {
				err := errors.New("protocol error: repeated CONT")
				c.fail(err)
				return Result{}, false, err
			}
			if err := c.write(ctx, "CONT\t"+strconv.FormatUint(uint64(id), 10)+"\t"+resp+"\n"); err != nil {
				return Result{}, false, err
			}
		}
	}
}

// dovecotConn is one connection after a good handshake. A reader goroutine
// hands each answer to the request with its id.
type dovecotConn struct {
	nc  net.Conn
	wmu sync.Mutex

	mu      sync.Mutex
	pending map[uint32]chan dovecotReply
	done    chan struct{} // closed when the connection is unusable
	err     error         // why; set before done is closed
}

// dialDovecot connects and runs the handshake: the server sends VERSION,
// MECH lines, SPID, CUID, COOKIE and DONE; the client sends VERSION and
// CPID. Both sides send at once, as Postfix's xsasl_dovecot does.
func dialDovecot(ctx context.Context, network, addr string) (*dovecotConn, error) {
	var dl net.Dialer
	nc, err := dl.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if deadline, ok := ctx.Deadline(); ok {
		nc.SetDeadline(deadline)
	}
	r := bufio.NewReaderSize(nc, maxDovecotLine)
	if err := dovecotHandshake(nc, r); err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	c := &dovecotConn{nc: nc, pending: map[uint32]chan dovecotReply{}, done: make(chan struct{})}
	go c.readLoop(r)
	return c, nil
}

func dovecotHandshake(nc net.Conn, r *bufio.Reader) error {
	if _, err := nc.Write([]byte("VERSION\t1\t1\nCPID\t" + strconv.Itoa(os.Getpid()) + "\n")); err != nil {
		return err
	}
	version, plain := false, false
	// The server's greeting is a handful of lines; a thousand means it
	// is not a Dovecot auth server.
	for n := 0; n < 1000; n++ {
		b, err := readDovecotLine(r)
		if err != nil {
			return fmt.Errorf("handshake: %w", err)
		}
		l, err := parseDovecotLine(b)
		if err != nil {
			return fmt.Errorf("handshake: %w", err)
		}
		switch l.cmd {
		case "VERSION":
			if len(l.args) < 1 || l.args[0] != "1" {
				return errors.New("handshake: auth protocol major version is not 1")
			}
			version = true
		case "MECH":
			if len(l.args) > 0 && strings.EqualFold(l.args[0], Plain) {
				plain = true
			}
		case "DONE":
			switch {
			case !version:
				return errors.New("handshake: no VERSION")
			case !plain:
				return errors.New("handshake: server does not offer PLAIN")
			}
			return nil
		}
		// SPID, CUID and COOKIE are for the master login process,
		// which nologin does without.
	}
	return errors.New("handshake: no DONE")
}

func (c *dovecotConn) readLoop(r *bufio.Reader) {
	for {
		b, err := readDovecotLine(r)
		if err != nil {
			c.fail(err)
			return
		}
		l, err := parseDovecotLine(b)
		if err != nil {
			c.fail(fmt.Errorf("protocol error: %w", err))
			return
		}
		switch l.cmd {
		case "OK", "FAIL", "CONT":
		default:
			continue // nothing else is defined after the handshake
		}
		rep, err := parseDovecotReply(l)
		if err != nil {
			c.fail(fmt.Errorf("protocol error: %w", err))
			return
		}
		c.mu.Lock()
		ch := c.pending[rep.id]
		c.mu.Unlock()
		if ch == nil {
			continue // a login that gave up waiting
		}
		select {
		case ch <- rep:
		default: // more answers than a request takes; it has its answer
		}
	}
}

func (c *dovecotConn) register(id uint32) (chan dovecotReply, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return nil, c.err
	}
	ch := make(chan dovecotReply, 2)
	c.pending[id] = ch
	return ch, nil
}

func (c *dovecotConn) unregister(id uint32) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

func (c *dovecotConn) write(ctx context.Context, s string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	deadline, _ := ctx.Deadline()
	c.nc.SetWriteDeadline(deadline)
	if _, err := c.nc.Write([]byte(s)); err != nil {
		c.fail(err)
		return err
	}
	return nil
}

func (c *dovecotConn) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = err
	close(c.done)
	c.nc.Close()
}

func (c *dovecotConn) dead() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}
