package smtpd

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/larkpost/larkpost/rules"
)

// inspectLimit is how much of a command line clientConn buffers to look at
// it; longer lines pass through unexamined (go-smtp bounds them).
const inspectLimit = 1024

// clientConn sits between the socket and go-smtp. It exists because go-smtp
// lacks four things an MTA needs, all of which are visible only on the wire:
//   - a per-read idle timeout plus overall DATA and session deadlines (go-smtp's
//     ReadTimeout is set once per command, so it bounds the whole DATA phase
//     and cuts off slow but live clients);
//   - a configurable banner (go-smtp always says "ESMTP Service Ready");
//   - RCPT TO:<postmaster> without a domain, which RFC 5321 requires and
//     go-smtp rejects: the line is rewritten to postmaster@hostname;
//   - per-command counts for Postfix's "disconnect from" summary.
//
// To rewrite safely it hands go-smtp one command line per Read, so nothing
// after a command is buffered inside go-smtp before the command is handled;
// message data (after a 354 reply, or the counted bytes of a BDAT chunk) is
// passed through untouched.
type clientConn struct {
	net.Conn
	info             rules.Conn
	policy           *rules.Policy // fixed for the session, even across a reload
	intake           *rules.Intake
	ctx              context.Context
	cancel           context.CancelFunc
	banner           string
	host             string
	postmasterDomain string
	idle             time.Duration
	dataMax          time.Duration
	start            time.Time
	end              time.Time // session deadline

	buf      []byte
	r, w     int
	out      []byte // inspected line waiting to be returned
	midLine  bool   // passing through a line too long to inspect
	bdatLeft uint64
	rerr     error

	greeted  bool
	inData   atomic.Bool
	inTx     atomic.Bool  // a MAIL transaction is open
	draining atomic.Bool  // the server is shutting down
	dataEnd  atomic.Int64 // unix nanos; 0 when no transfer is running
	dead     atomic.Bool
	esmtp    bool

	mu     sync.Mutex
	counts map[string]int
	ncmd   int

	closeOnce sync.Once
	onClose   func(*clientConn)
}

func newClientConn(c net.Conn, now time.Time) *clientConn {
	return &clientConn{Conn: c, start: now, buf: make([]byte, 4096), counts: map[string]int{}}
}

// unwrapConn finds our clientConn under go-smtp's view of the connection,
// which is a *tls.Conn after STARTTLS.
func unwrapConn(c net.Conn) *clientConn {
	if t, ok := c.(*tls.Conn); ok {
		c = t.NetConn()
	}
	cc, _ := c.(*clientConn)
	return cc
}

func (c *clientConn) setDeadline() error {
	d := time.Now().Add(c.idle)
	if c.end.Before(d) {
		d = c.end
	}
	if de := c.dataEnd.Load(); de != 0 && de < d.UnixNano() {
		d = time.Unix(0, de)
	}
	return c.Conn.SetReadDeadline(d)
}

// startTransfer arms the DATA/BDAT deadline unless a transfer is running.
func (c *clientConn) startTransfer() {
	c.dataEnd.CompareAndSwap(0, time.Now().Add(c.dataMax).UnixNano())
}

// endTransfer is called when the session's Data returns.
func (c *clientConn) endTransfer() {
	c.inData.Store(false)
	c.dataEnd.Store(0)
}

func (c *clientConn) fill() error {
	if c.draining.Load() && !c.inTx.Load() {
		return c.shutdownReply()
	}
	if c.r == c.w {
		c.r, c.w = 0, 0
	} else if c.w == len(c.buf) {
		c.w = copy(c.buf, c.buf[c.r:c.w])
		c.r = 0
	}
	if err := c.setDeadline(); err != nil {
		return err
	}
	for {
		n, err := c.Conn.Read(c.buf[c.w:])
		c.w += n
		if n > 0 {
			return nil
		}
		var ne net.Error
		if c.draining.Load() && errors.As(err, &ne) && ne.Timeout() {
			// Woken by drain: close an idle session politely, let
			// one in a transaction finish.
			if !c.inTx.Load() {
				return c.shutdownReply()
			}
			if err := c.setDeadline(); err != nil {
				return err
			}
			continue
		}
		if err == nil {
			err = io.ErrNoProgress
		}
		return err
	}
}

// drain asks the session to end: at once when it is between transactions,
// after the current transaction otherwise.
func (c *clientConn) drain() {
	c.draining.Store(true)
	if !c.inTx.Load() {
		c.Conn.SetReadDeadline(time.Now())
	}
}

func (c *clientConn) shutdownReply() error {
	c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.Conn.Write([]byte("421 4.3.2 " + c.host + " Service shutting down\r\n"))
	return io.EOF
}

func (c *clientConn) Read(b []byte) (int, error) {
	if c.dead.Load() {
		return 0, io.EOF
	}
	if len(c.out) > 0 {
		n := copy(b, c.out)
		c.out = c.out[n:]
		return n, nil
	}
	for {
		pending := c.buf[c.r:c.w]
		switch {
		case c.bdatLeft > 0 && len(pending) > 0:
			n := copy(b, pending[:min(uint64(len(pending)), c.bdatLeft)])
			c.r += n
			c.bdatLeft -= uint64(n)
			return n, nil
		case c.inData.Load() || c.bdatLeft > 0:
			if len(pending) > 0 {
				n := copy(b, pending)
				c.r += n
				return n, nil
			}
			if err := c.setDeadline(); err != nil {
				return 0, err
			}
			if c.bdatLeft > 0 && uint64(len(b)) > c.bdatLeft {
				b = b[:c.bdatLeft]
			}
			n, err := c.Conn.Read(b)
			if c.bdatLeft > 0 {
				c.bdatLeft -= uint64(n)
			}
			return n, err
		case c.midLine:
			if i := bytes.IndexByte(pending, '\n'); i >= 0 {
				pending = pending[:i+1]
				c.midLine = false
			}
			if len(pending) > 0 {
				n := copy(b, pending)
				c.r += n
				if n < len(pending) {
					c.midLine = true
				}
				return n, nil
			}
		default:
			if i := bytes.IndexByte(pending, '\n'); i >= 0 {
				c.r += i + 1
				c.out = c.inspect(pending[:i+1])
				n := copy(b, c.out)
				c.out = c.out[n:]
				return n, nil
			}
			if len(pending) >= inspectLimit || (c.rerr != nil && len(pending) > 0) {
				c.midLine = true
				continue
			}
		}
		if c.rerr != nil {
			return 0, c.rerr
		}
		c.rerr = c.fill()
	}
}

// inspect looks at one complete command line and returns the bytes to hand
// to go-smtp.
func (c *clientConn) inspect(line []byte) []byte {
	verb, arg, _ := strings.Cut(strings.TrimRight(string(line), "\r\n"), " ")
	verb = strings.ToUpper(verb)
	c.mu.Lock()
	c.ncmd++
	if len(c.counts) < 32 || c.counts[verb] > 0 {
		c.counts[verb]++
	}
	c.mu.Unlock()
	switch verb {
	case "EHLO":
		c.esmtp = true
	case "HELO":
		c.esmtp = false
	case "BDAT":
		// Track the chunk the way go-smtp parses it, so its bytes are
		// never taken for commands.
		f := strings.Fields(arg)
		if len(f) == 1 || len(f) == 2 && strings.EqualFold(f[1], "LAST") {
			if n, err := strconv.ParseUint(f[0], 10, 32); err == nil {
				c.bdatLeft = n
				c.startTransfer()
			}
		}
	case "RCPT":
		if rest, ok := cutPrefixFold(strings.TrimLeft(arg, " "), "TO:"); ok {
			rest = strings.TrimLeft(rest, " ")
			if pm, ok := cutPrefixFold(rest, "<postmaster>"); ok {
				return []byte("RCPT TO:<postmaster@" + c.postmasterDomain + ">" + pm + "\r\n")
			}
		}
	}
	return append([]byte(nil), line...)
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

func (c *clientConn) Write(b []byte) (int, error) {
	out := b
	switch {
	case !c.greeted:
		c.greeted = true
		if bytes.HasPrefix(b, []byte("220 ")) {
			out = []byte("220 " + c.banner + "\r\n")
		}
	case bytes.HasPrefix(b, []byte("354 ")):
		// go-smtp calls the session's Data right after this reply, and
		// reads nothing in between: from here on bytes are message data.
		c.inData.Store(true)
		c.startTransfer()
		out = []byte("354 End data with <CR><LF>.<CR><LF>\r\n")
	default:
		if r, ok := replyText(b, c.host); ok {
			out = r
		}
	}
	if _, err := c.Conn.Write(out); err != nil {
		return 0, err
	}
	return len(b), nil
}

// kill makes every later Read fail, so that after a timeout in DATA the
// rest of a half-sent message is never parsed as commands.
func (c *clientConn) kill() { c.dead.Store(true) }

func (c *clientConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		if c.onClose != nil {
			c.onClose(c)
		}
	})
	return err
}

// summary is Postfix's "ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5".
func (c *clientConn) summary() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var sb strings.Builder
	for _, v := range []string{"EHLO", "HELO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "VRFY", "QUIT"} {
		if n := c.counts[v]; n > 0 {
			sb.WriteString(strings.ToLower(v) + "=" + strconv.Itoa(n) + " ")
		}
	}
	sb.WriteString("commands=" + strconv.Itoa(c.ncmd))
	return sb.String()
}

// client is Postfix's "name[ip]" form.
func (c *clientConn) client() string { return c.info.RDNS + "[" + c.info.IP.String() + "]" }

func itoa(n int) string { return strconv.Itoa(n) }

// replyRewrites replaces go-smtp's chatty success texts with the plain
// ones Postfix users and their log parsers know.
var replyRewrites = []struct{ prefix, reply []byte }{
	{[]byte("502 5.5.1 Missing MAIL FROM command"), []byte("503 5.5.1 Error: need MAIL command\r\n")},
	{[]byte("502 5.5.1 Please introduce yourself first"), []byte("503 5.5.1 Error: send HELO/EHLO first\r\n")},
	{[]byte("501 5.5.2 Was expecting RCPT arg syntax"), []byte("501 5.1.3 Bad recipient address syntax\r\n")},
	{[]byte("501 5.5.2 Was expecting MAIL arg syntax"), []byte("501 5.1.7 Bad sender address syntax\r\n")},
	{[]byte("502 5.5.1 Missing RCPT TO command"), []byte("554 5.5.1 Error: no valid recipients\r\n")},
	{[]byte("250 2.0.0 Roger, accepting mail from"), []byte("250 2.1.0 Ok\r\n")},
	{[]byte("250 2.0.0 I'll make sure"), []byte("250 2.1.5 Ok\r\n")},
	{[]byte("250 2.0.0 I have successfully done nothing"), []byte("250 2.0.0 Ok\r\n")},
	{[]byte("250 2.0.0 Session reset"), []byte("250 2.0.0 Ok\r\n")},
}

func replyText(b []byte, host string) ([]byte, bool) {
	if len(b) < 4 || b[0] != '2' && b[0] != '5' && b[0] != '4' {
		return nil, false
	}
	if bytes.HasPrefix(b, []byte("421 4.4.2 Idle timeout")) {
		return []byte("421 4.4.2 " + host + " Error: timeout exceeded\r\n"), true
	}
	for _, r := range replyRewrites {
		if bytes.HasPrefix(b, r.prefix) {
			return r.reply, true
		}
	}
	return nil, false
}
