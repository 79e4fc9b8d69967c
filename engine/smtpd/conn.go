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

	"github.com/emersion/go-smtp"

	"github.com/larkpost/larkpost/rules"
)

// clientConn sits between the socket and go-smtp. It never parses or
// rewrites what the client sends: go-smtp alone frames the stream into
// commands, DATA and BDAT chunks, so there is one parser and nothing for
// a client to play two against each other. What the wrapper adds is seen
// from the reads' timing and from the server's own replies:
//   - deadlines: each command must be complete within smtpd_timeout of the
//     previous reply; a DATA or BDAT transfer gets a per-read idle limit, a
//     total limit and a minimum rate; the session a total limit; all of
//     them shrink under stress (go-smtp's ReadTimeout is set once per
//     command, which would bound a whole DATA phase and nothing else);
//   - the banner and Postfix's reply texts for go-smtp's own replies;
//   - per-command counts for the "disconnect from" line, taken from the
//     replies (each command gets exactly one final reply);
//   - one tripwire: a line that starts with ".\r" and not ".\r\n" ends the
//     connection, because go-smtp's dot-unstuffing drops that CR and then
//     misses an end of data that follows it: what it would store is not
//     what was sent.
type clientConn struct {
	outcome string // set when the server ends the session: timeout or refused
	net.Conn
	info   rules.Conn
	policy *rules.Policy // fixed for the session, even across a reload
	intake *rules.Intake
	// milters are the smtpd_milters' conversations; nil without milters.
	milters *milters
	ctx     context.Context
	cancel  context.CancelFunc
	banner  string
	host    string
	gate    *gate // nil in unit tests
	start   time.Time
	end     time.Time // session deadline

	timeout, stressTimeout time.Duration
	dataMax                time.Duration
	minRate                int64

	lastReply atomic.Int64 // unix nanos of the last final reply: the next command is due within the timeout
	xferStart atomic.Int64 // unix nanos; 0 when no DATA/BDAT transfer runs
	xferBytes atomic.Int64

	dot     int       // tripwire state: how much of "\r\n.\r" was seen last
	rerr    error     // a tripwire error, for the next Read once ahead is empty
	ahead   readAhead // read from the socket, not yet by go-smtp (readahead.go)
	tripped bool      // the tripwire error was read: the stream ends
	dead    atomic.Bool
	inTx    atomic.Bool // a MAIL transaction is open
	drain   atomic.Bool // the server is shutting down

	greeted bool
	// pending holds replies not sent yet: go-smtp writes and flushes
	// each line, and the replies go out when go-smtp next reads from the
	// network (Read sends them first), as Postfix's smtpd flushes only
	// when no command is waiting. So an EHLO reply is one write and one
	// wakeup for the client instead of nine, and the replies to
	// pipelined MAIL, RCPTs and DATA one write instead of one each.
	pending  []byte
	wmu      sync.Mutex  // pending, and writes to the client
	bdatOpen bool        // a BDAT chunk got "Continue": the transfer goes on (conn goroutine only)
	esmtp    atomic.Bool // the client said EHLO (go-smtp answered with the multi-line reply)
	mu       sync.Mutex
	verb     string // the command the session is answering, set just before its reply
	last     string // the last command answered, for "timeout after VERB"
	counts   map[string]int
	ncmd     int

	// TLS (see tls.go); these belong to go-smtp's goroutine.
	tlsCfg   *tls.Config // STARTTLS is offered with this; nil: not
	tlsc     *tls.Conn   // the TLS connection once started
	tlsFresh bool        // TLS started and nothing read through it yet
	needHelo atomic.Bool // TLS started: EHLO again before MAIL or AUTH
	listener rules.Listener
	authMech string // the SASL mechanism of the login (info.User)

	closeOnce  sync.Once
	onTLS      func(*clientConn)
	onTLSError func(*clientConn, error)
	onClose    func(*clientConn)
	onTimeout  func(*clientConn)        // logs "timeout after VERB"
	onRefusal  func(verb, reply string) // logs go-smtp's own refusals
}

func newClientConn(c net.Conn, now time.Time) *clientConn {
	cc := &clientConn{Conn: c, start: now, counts: map[string]int{}, timeout: 5 * time.Minute, end: now.Add(time.Hour)}
	cc.lastReply.Store(now.UnixNano())
	return cc
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

// currentTimeout is smtpd_timeout, or smtpd_stress_timeout while the
// listener is under stress.
func (c *clientConn) currentTimeout() time.Duration {
	if c.gate != nil && c.gate.stressed() && c.stressTimeout > 0 {
		return min(c.timeout, c.stressTimeout)
	}
	return c.timeout
}

// readDeadline is when the read now starting must have returned.
func (c *clientConn) readDeadline(now time.Time) time.Time {
	t := c.currentTimeout()
	d := c.end
	if xs := c.xferStart.Load(); xs != 0 {
		start := time.Unix(0, xs)
		d = minTime(d, now.Add(t), start.Add(c.dataMax))
		if c.minRate > 0 {
			// After a grace of one timeout, the transfer must keep up
			// smtpd_min_data_rate on average.
			earned := time.Duration(c.xferBytes.Load() * int64(time.Second) / c.minRate)
			d = minTime(d, start.Add(t+earned))
		}
		return d
	}
	return minTime(d, time.Unix(0, c.lastReply.Load()).Add(t))
}

func minTime(ts ...time.Time) time.Time {
	m := ts[0]
	for _, t := range ts[1:] {
		if t.Before(m) {
			m = t
		}
	}
	return m
}

// rearm applies a changed deadline (stress, drain) to a read in progress.
func (c *clientConn) rearm() { c.Conn.SetReadDeadline(c.readDeadline(time.Now())) }

// beginTransfer starts the DATA/BDAT clock unless it runs already (BDAT
// chunks share one transfer).
func (c *clientConn) beginTransfer() {
	if c.xferStart.CompareAndSwap(0, time.Now().UnixNano()) {
		c.xferBytes.Store(0)
	}
}

// endTransfer is called when the session's Data returns.
func (c *clientConn) endTransfer() { c.xferStart.Store(0) }

func (c *clientConn) Read(b []byte) (int, error) {
	c.ahead.mu.Lock()
	defer c.ahead.mu.Unlock()
	if len(c.ahead.left) > 0 && !c.dead.Load() {
		if c.xferStart.Load() == 0 {
			c.ahead.settle()
		}
		return c.ahead.give(b), nil
	}
	c.ahead.drop()
	if err := c.rerr; err != nil {
		c.rerr, c.tripped = nil, true // once, to whoever reads next; then EOF
		return 0, err
	}
	if c.tripped || c.dead.Load() {
		return 0, io.EOF
	}
	for {
		if c.drain.Load() && !c.inTx.Load() {
			return 0, c.shutdownReply()
		}
		// The client may be waiting for them before it sends more.
		if err := c.flush(); err != nil {
			return 0, err
		}
		now := time.Now()
		d := c.readDeadline(now)
		if err := c.Conn.SetReadDeadline(d); err != nil {
			return 0, err
		}
		buf := b
		if len(b) < aheadSize && c.xferStart.Load() != 0 && c.xferBytes.Load() >= aheadAfter {
			if p := c.ahead.take(); p != nil {
				buf = p
			}
		}
		n, err := c.transport().Read(buf)
		if n > 0 {
			c.tlsFresh = false
			if c.xferStart.Load() != 0 {
				c.xferBytes.Add(int64(n))
			}
			if i := c.tripwire(buf[:n]); i >= 0 {
				// What came before the offending byte is the client's
				// and go-smtp frames it as usual; nothing after it is read.
				c.rerr = errDotCR
				n = i
			}
			if c.ahead.buf == nil {
				return n, nil
			}
			m := copy(b, buf[:n])
			c.ahead.keep(buf[m:n])
			return m, nil
		}
		c.ahead.drop()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			if time.Now().Before(c.readDeadline(time.Now())) {
				continue // woken early by rearm: the deadline moved
			}
			if c.xferStart.Load() == 0 {
				return 0, c.timedOut()
			}
		}
		if err == io.EOF && c.xferStart.Load() != 0 {
			// go-smtp reads a BDAT chunk through an io.LimitReader and
			// takes an EOF for the chunk's end: a client that hangs up
			// mid-chunk would leave a truncated message queued.
			err = io.ErrUnexpectedEOF
		}
		if err == nil {
			err = io.ErrNoProgress
		}
		return 0, err
	}
}

// errDotCR is the tripwire's reply: see clientConn.
var errDotCR = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Error: bare <CR> received after a leading dot"}

// tripwire follows "\r\n.\r" across reads and returns the index of the
// first byte that completes "\r\n.\r" + not "\n", or -1. It sees every
// byte the client sends, so the bulk of a read is searched with
// bytes.Index (vectorized) and only its ends go byte by byte: a 1 MB body
// spent 12% of the server's CPU in the byte loop alone.
func (c *clientConn) tripwire(p []byte) int {
	const pat = "\r\n.\r"
	if len(p) <= len(pat) {
		return c.tripwireSlow(p)
	}
	// A pattern begun in an earlier read is decided within the first
	// len(pat) bytes.
	if i := c.tripwireSlow(p[:len(pat)]); i >= 0 {
		return i
	}
	// Every pattern that lies wholly in p, in order.
	for i := 0; ; {
		j := bytes.Index(p[i:], []byte(pat))
		if j < 0 {
			break
		}
		k := i + j + len(pat) // the byte that must be "\n"
		if k == len(p) {
			c.dot = len(pat)
			return -1
		}
		if p[k] != '\n' {
			return k
		}
		i = k - 1 // the "\r\n" ending here may begin the next one
	}
	// The state after p: the longest end of p that begins the pattern
	// (p is longer than the pattern, so no earlier read is involved).
	c.dot = 0
	for n := len(pat) - 1; n > 0; n-- {
		if bytes.HasSuffix(p, []byte(pat[:n])) {
			c.dot = n
			break
		}
	}
	return -1
}

// tripwireSlow is the tripwire's state machine, one byte at a time.
func (c *clientConn) tripwireSlow(p []byte) int {
	const pat = "\r\n.\r"
	for i, ch := range p {
		if c.dot == len(pat) {
			if ch != '\n' {
				return i
			}
			c.dot = 2 // "\r\n" may start the next line's pattern
			continue
		}
		switch {
		case ch == pat[c.dot]:
			c.dot++
		case ch == '\r':
			c.dot = 1
		default:
			c.dot = 0
		}
	}
	return -1
}

// drainNow asks the session to end: at once when it is between
// transactions, after the current transaction otherwise.
func (c *clientConn) drainNow() {
	c.drain.Store(true)
	if !c.inTx.Load() {
		c.Conn.SetReadDeadline(time.Now())
	}
}

func (c *clientConn) shutdownReply() error {
	c.kill()
	c.send([]byte("421 4.3.2 " + c.host + " Service shutting down\r\n"))
	return io.EOF
}

// timedOut ends a session whose command did not arrive in time. It
// answers and ends the session itself rather than hand go-smtp the
// timeout: go-smtp's line reader (bufio.ReadLine) would take the part of a
// line read before the deadline for a whole command and run it.
func (c *clientConn) timedOut() error {
	c.kill()
	if c.onTimeout != nil {
		c.onTimeout(c)
	}
	c.send([]byte("421 4.4.2 " + c.host + " Error: timeout exceeded\r\n"))
	return io.EOF
}

// SetWriteDeadline is go-smtp's per-reply write deadline; ours replaces it
// (the server's WriteTimeout is 0) so that it shrinks under stress too.
func (c *clientConn) SetWriteDeadline(time.Time) error { return nil }

// Write sends one reply line (go-smtp writes and flushes line by line).
func (c *clientConn) Write(b []byte) (int, error) {
	if c.tlsFresh && c.greeted {
		// A reply before anything was read through TLS answers a command
		// sent in plaintext after STARTTLS (see tls.go).
		c.tlsFresh = false
		return 0, c.refusePipelinedTLS()
	}
	out := b
	switch {
	case c.tlsCfg != nil && bytes.HasPrefix(b, []byte("502 5.5.1 TLS not supported")):
		if err := c.startTLS(); err != nil {
			return 0, err
		}
		return len(b), nil
	case c.tlsCfg != nil && c.tlsc == nil && bytes.Equal(b, []byte("250-PIPELINING\r\n")):
		out = []byte("250-PIPELINING\r\n250-STARTTLS\r\n")
	case !c.greeted:
		c.greeted = true
		if bytes.HasPrefix(b, []byte("220 ")) {
			out = []byte("220 " + c.banner + "\r\n")
		}
		c.lastReply.Store(time.Now().UnixNano())
	case bytes.HasPrefix(b, []byte("354 ")):
		// go-smtp calls the session's Data right after this reply; the
		// reply at the end of the data counts the command.
		c.setVerb("DATA")
		out = []byte("354 End data with <CR><LF>.<CR><LF>\r\n")
	default:
		r, verb, ok := replyText(b, c.host)
		if ok {
			out = r
		}
		c.countReply(verb, out)
	}
	c.wmu.Lock()
	c.pending = append(c.pending, out...)
	full := len(c.pending) >= maxPending
	c.wmu.Unlock()
	if full {
		// A client pipelining thousands of short commands whose replies
		// are long (EHLO) must not make the session hold them all.
		if err := c.flush(); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

// maxPending is how many bytes of replies wait for the next read at most.
const maxPending = 4096

// flush sends the pending replies.
func (c *clientConn) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(c.pending) == 0 {
		return nil
	}
	c.Conn.SetWriteDeadline(time.Now().Add(c.currentTimeout()))
	_, err := c.transport().Write(c.pending)
	c.pending = c.pending[:0]
	return err
}

// countReply counts the command a reply answers: what the session said it
// was answering, or what go-smtp's own reply text says.
func (c *clientConn) countReply(verb string, b []byte) {
	if len(b) < 4 {
		return
	}
	if bytes.HasPrefix(b, []byte("250-Hello ")) {
		c.esmtp.Store(true)
		c.needHelo.Store(false)
		c.setVerb("EHLO") // the first line of the EHLO reply
		return
	}
	if b[3] != ' ' {
		return
	}
	if bytes.HasPrefix(b, []byte("334 ")) {
		// An AUTH challenge: the exchange goes on, and its last reply
		// counts the command.
		c.lastReply.Store(time.Now().UnixNano())
		return
	}
	if verb == "HELO" {
		c.esmtp.Store(false)
		c.needHelo.Store(false)
	}
	c.lastReply.Store(time.Now().UnixNano())
	if verb != "" && b[0] != '2' && c.onRefusal != nil {
		// go-smtp's own refusal (syntax, sequence): the session never saw
		// the command, so it is logged here.
		c.onRefusal(verb, strings.TrimRight(string(b), "\r\n"))
	}
	c.mu.Lock()
	if verb == "" {
		verb = c.verb
		if verb == "BDAT" {
			c.bdatOpen = false // the reply with the transfer's result
		}
	} else if verb == "BDAT" {
		c.bdatOpen = true // "Continue"
	}
	c.verb = ""
	c.ncmd++
	if verb != "" {
		c.counts[verb]++
		c.last = verb
	}
	c.mu.Unlock()
}

// setVerb names the command whose reply comes next, for the counts.
func (c *clientConn) setVerb(v string) {
	c.mu.Lock()
	c.verb = v
	c.mu.Unlock()
}

// dataVerb is "DATA" when the transfer began with a 354, else "BDAT".
func (c *clientConn) dataVerb() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.verb == "DATA" {
		return "DATA"
	}
	return "BDAT"
}

// closeFlushTimeout bounds how long closing waits for the client to take
// the last replies.
const closeFlushTimeout = 5 * time.Second

// kill ends the session: every later Read fails, and the session refuses
// what go-smtp still finds in its read buffer (see session.ended).
func (c *clientConn) kill() { c.dead.Store(true) }

func (c *clientConn) Close() error {
	// The last replies (221, a 421) have not been read for: send them,
	// unless another goroutine closes the connection while the session's
	// own is writing (the server shutting down), or the client does not
	// take them soon.
	if c.wmu.TryLock() {
		if len(c.pending) > 0 {
			c.Conn.SetWriteDeadline(time.Now().Add(min(c.currentTimeout(), closeFlushTimeout)))
			c.transport().Write(c.pending)
			c.pending = c.pending[:0]
		}
		c.wmu.Unlock()
	}
	// A Read under way gives the buffer back itself when its read fails.
	if c.ahead.mu.TryLock() {
		c.ahead.drop()
		c.ahead.mu.Unlock()
	}
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		if c.onClose != nil {
			c.onClose(c)
		}
	})
	return err
}

// refusePipelinedTLS ends a session whose client sent commands in
// plaintext after STARTTLS (see tls.go), as Postfix does.
func (c *clientConn) refusePipelinedTLS() error {
	c.kill()
	if c.onRefusal != nil {
		c.onRefusal("STARTTLS", "554 5.5.1 Error: improper command pipelining after STARTTLS")
	}
	c.send([]byte("554 5.5.1 Error: improper command pipelining after STARTTLS\r\n"))
	return io.EOF
}

// lastVerb is the last command answered ("CONNECT" before any).
func (c *clientConn) lastVerb() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == "" {
		return "CONNECT"
	}
	return c.last
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

// replyRewrites gives go-smtp's own replies Postfix's texts, and names
// the command each answers.
var replyRewrites = []struct {
	prefix []byte
	verb   string
	reply  []byte
}{
	{[]byte("502 5.5.1 Missing MAIL FROM command"), "RCPT", []byte("503 5.5.1 Error: need MAIL command\r\n")},
	{[]byte("502 5.5.1 Please introduce yourself first"), "MAIL", []byte("503 5.5.1 Error: send HELO/EHLO first\r\n")},
	{[]byte("501 5.5.2 Was expecting RCPT arg syntax"), "RCPT", []byte("501 5.1.3 Bad recipient address syntax\r\n")},
	{[]byte("501 5.5.2 Was expecting MAIL arg syntax"), "MAIL", []byte("501 5.1.7 Bad sender address syntax\r\n")},
	{[]byte("502 5.5.1 Missing RCPT TO command"), "DATA", []byte("554 5.5.1 Error: no valid recipients\r\n")},
	{[]byte("250 2.0.0 Roger, accepting mail from"), "MAIL", []byte("250 2.1.0 Ok\r\n")},
	{[]byte("250 2.0.0 I'll make sure"), "RCPT", []byte("250 2.1.5 Ok\r\n")},
	{[]byte("250 2.0.0 I have successfully done nothing"), "NOOP", []byte("250 2.0.0 Ok\r\n")},
	{[]byte("250 2.0.0 Session reset"), "RSET", []byte("250 2.0.0 Ok\r\n")},
	{[]byte("250 2.0.0 Hello "), "HELO", nil},
	{[]byte("250 2.0.0 Continue"), "BDAT", nil},
	{[]byte("252 2.5.0 Cannot VRFY"), "VRFY", nil},
	{[]byte("221 "), "QUIT", nil},
	{[]byte("220 2.0.0 Ready to start TLS"), "STARTTLS", nil},
	{[]byte("503 5.5.1 Already authenticated"), "AUTH", []byte("503 5.5.1 Error: already authenticated\r\n")},
	{[]byte("235 "), "AUTH", nil},
	{[]byte("500 5.4.0 Too long line"), "", []byte("500 5.5.2 Error: line too long\r\n")},
	{[]byte("500 5.5.1 Too many errors"), "", []byte("421 4.7.0 Error: too many errors\r\n")},
}

func replyText(b []byte, host string) ([]byte, string, bool) {
	if len(b) < 4 {
		return nil, "", false
	}
	if bytes.HasPrefix(b, []byte("421 4.4.2 Idle timeout")) {
		return []byte("421 4.4.2 " + host + " Error: timeout exceeded\r\n"), "", true
	}
	if bytes.HasPrefix(b, []byte("250 ")) && !bytes.HasPrefix(b, []byte("250 2")) {
		return b, "", true // the last line of the EHLO reply: counted with its first
	}
	for _, r := range replyRewrites {
		if bytes.HasPrefix(b, r.prefix) {
			if r.reply == nil {
				return b, r.verb, true
			}
			return r.reply, r.verb, true
		}
	}
	return nil, "", false
}

// endOutcome is how the session ended, for Observer.Disconnected.
func (c *clientConn) endOutcome() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.outcome != "" {
		return c.outcome
	}
	if c.counts["QUIT"] > 0 {
		return "quit"
	}
	return "lost"
}

func (c *clientConn) setOutcome(o string) {
	c.mu.Lock()
	c.outcome = o
	c.mu.Unlock()
}

// splitReply takes "421 4.7.0 text" apart.
func splitReply(reply string) (code int, status, text string) {
	f := strings.SplitN(reply, " ", 3)
	if len(f) > 0 {
		code, _ = strconv.Atoi(f[0])
	}
	if len(f) > 1 && len(f[1]) >= 5 && f[1][1] == '.' {
		status = f[1]
		if len(f) > 2 {
			text = f[2]
		}
	} else if len(f) > 1 {
		text = strings.Join(f[1:], " ")
	}
	return code, status, text
}
