package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net"
	"net/textproto"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// TLSMode says how a session gets encrypted.
type TLSMode int

const (
	TLSNone     TLSMode = iota // plain text
	TLSStartTLS                // EHLO, STARTTLS, handshake, EHLO again
	TLSImplicit                // handshake from the first byte (port 465)
)

func (m TLSMode) String() string {
	switch m {
	case TLSStartTLS:
		return "starttls"
	case TLSImplicit:
		return "implicit"
	}
	return "none"
}

// Config is one load run.
type Config struct {
	Addr        string        // HOST:PORT to dial
	Messages    int           // messages to send in all
	Conc        int           // concurrent sessions
	Size        int           // payload bytes per message, before dot-stuffing, headers not included
	From        string        // envelope sender and From header
	To          []string      // envelope recipients and To header
	Persist     bool          // several messages per connection (RSET between them)
	Pipelining  bool          // MAIL, RCPT and DATA in one write (RFC 2920), as MTAs send them
	BDAT        bool          // the message as one BDAT LAST chunk (RFC 3030) instead of DATA
	TLS         TLSMode       //
	Insecure    bool          // skip certificate verification
	ServerName  string        // SNI and verification name; the host of Addr when empty
	Timeout     time.Duration // per command: write plus reply
	Duration    time.Duration // upper bound for the whole run; 0 means none
	AllowRemote bool          // allow a HOST that is not loopback
	LatencyLog  string        // file for Result.Timeline, written by the command (not Run)

	// Rate, when above 0, offers the messages open loop: message i is due
	// (i-1)/Rate seconds after the start, whether or not the server kept
	// up, and Conc only bounds the sessions in flight. 0: each session
	// sends its next message as soon as the last is done.
	Rate float64
}

// Percentiles summarise a set of latencies (nearest-rank).
type Percentiles struct {
	N                  int
	P50, P90, P99, Max time.Duration
}

// Result is what a run did. Unfinished messages were never tried, or were
// in flight when the Duration bound or the caller's context cut the run.
type Result struct {
	Messages               int // requested
	OK, Failed, Unfinished int
	Elapsed                time.Duration
	Bytes                  int64 // message bytes accepted, as sent (headers, body, dot-stuffing)
	Connections            int   // TCP connections established
	Handshakes             int   // TLS handshakes completed
	Latency                Percentiles
	Handshake              Percentiles
	Connect                Percentiles
	// Steps are the round trips of each step that succeeded: "banner"
	// from the connection to the 220, a command from its write to its
	// reply ("RCPT" once per recipient), "QUIT" when the session ends
	// politely. A command that depends on the server's own work shows
	// here; the final dot's is Latency.
	Steps     map[string]Percentiles
	FailCodes map[string]int // reply code of the failing reply, or timeout/connect/tls/io
	Samples   []string       // up to maxSamples distinct failures, first seen first
	Stopped   bool           // the run was cut short

	// Lateness is how long after its due time each message started (with
	// Rate), Late how many started more than lateSlack after it: the
	// sessions in flight were all busy, so the server did not keep up
	// with the offered rate.
	Lateness Percentiles
	Late     int

	// Timeline is every message that succeeded, in the order their final
	// replies came: when (from the run's start) and its Latency, to see
	// when the slow ones happened (-latency-log).
	Timeline []Timed
}

// Timed is one message's final reply: At from the run's start, Latency
// from the final dot.
type Timed struct{ At, Latency time.Duration }

const maxSamples = 5

// lateSlack is how late a message may start and still count as on time:
// a timer fires up to a millisecond late on this kind of machine (the
// poller waits in whole milliseconds), more under load.
const lateSlack = 5 * time.Millisecond

func perSec(n float64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return n / d.Seconds()
}

func (r Result) MsgsPerSec() float64       { return perSec(float64(r.OK), r.Elapsed) }
func (r Result) BytesPerSec() float64      { return perSec(float64(r.Bytes), r.Elapsed) }
func (r Result) HandshakesPerSec() float64 { return perSec(float64(r.Handshakes), r.Elapsed) }

// Run sends cfg.Messages messages over cfg.Conc sessions. The error is for
// a config that cannot run; failed messages are counted in the Result.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.check(ctx); err != nil {
		return Result{}, err
	}
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	r := &runner{cfg: cfg, runID: time.Now().UnixNano()}
	if cfg.BDAT {
		// A chunk goes as it is: no dot-stuffing, and the body still ends
		// its last line.
		r.payload = endLine(makePayload(cfg.Size))
	} else {
		r.payload = dotStuff(makePayload(cfg.Size))
	}
	if cfg.TLS != TLSNone {
		r.tls = r.tlsConfig()
	}
	tallies := make([]tally, min(cfg.Conc, cfg.Messages))
	var wg sync.WaitGroup
	start := time.Now()
	r.start = start
	for i := range tallies {
		wg.Go(func() { r.worker(ctx, &tallies[i]) })
	}
	wg.Wait()
	res := merge(tallies)
	res.Elapsed = time.Since(start)
	res.Messages = cfg.Messages
	res.Unfinished = cfg.Messages - res.OK - res.Failed
	res.Stopped = res.Unfinished > 0
	return res, nil
}

// check rejects configs that cannot work, and remote targets unless asked:
// a load tool must not hit a real server by a typo.
func (c *Config) check(ctx context.Context) error {
	switch {
	case c.Messages < 1:
		return errors.New("need at least one message")
	case c.Conc < 1:
		return errors.New("need at least one session")
	case c.Size < 0:
		return errors.New("size must not be negative")
	case c.Timeout <= 0:
		return errors.New("timeout must be positive")
	case len(c.To) == 0:
		return errors.New("need at least one recipient")
	}
	for _, a := range append([]string{c.From}, c.To...) {
		if a == "" || len(a) > 254 || strings.ContainsAny(a, "<> \t\r\n") {
			return fmt.Errorf("bad address %q", a)
		}
	}
	host, _, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return err
	}
	if c.AllowRemote {
		return nil
	}
	return checkLoopback(ctx, host)
}

// checkLoopback requires every address of host to be loopback, so a name
// that also resolves elsewhere is refused too.
func checkLoopback(ctx context.Context, host string) error {
	var ips []net.IP
	if ip := net.ParseIP(host); ip != nil {
		ips = []net.IP{ip}
	} else {
		addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			ips = append(ips, a.IP)
		}
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return fmt.Errorf("%s (%s) is not a loopback address; use -allow-remote to load a remote server", host, ip)
		}
	}
	if len(ips) == 0 {
		return fmt.Errorf("%s has no address", host)
	}
	return nil
}

// runner holds what all workers share.
type runner struct {
	cfg     Config
	tls     *tls.Config
	payload []byte // built once, dot-stuffed unless BDAT: every message carries the same body
	runID   int64  // makes Message-IDs unique across runs
	next    atomic.Int64
	start   time.Time // the run's, for Rate's due times

	msgLenOnce sync.Once
	msgLen     int
}

func (r *runner) tlsConfig() *tls.Config {
	name := r.cfg.ServerName
	if name == "" {
		name, _, _ = net.SplitHostPort(r.cfg.Addr)
	}
	// No ClientSessionCache: every connection does a full handshake, which
	// is the cost a benchmark of many senders wants to see.
	return &tls.Config{ServerName: name, InsecureSkipVerify: r.cfg.Insecure, MinVersion: tls.VersionTLS12}
}

// claim hands out message numbers 1..Messages to whichever worker is free.
func (r *runner) claim() (int, bool) {
	i := int(r.next.Add(1))
	return i, i <= r.cfg.Messages
}

// tally is one worker's counts, merged after the run so workers share no locks.
type tally struct {
	ok, failed, conns int
	bytes             int64
	lat, hs, connect  []time.Duration
	timeline          []Timed
	late              []time.Duration // each message's start after its due time (Rate)
	steps             map[string][]time.Duration
	codes             map[string]int
	samples           []sample
}

type sample struct{ sig, text string }

func (t *tally) fail(f *failure) {
	t.failed++
	if t.codes == nil {
		t.codes = map[string]int{}
	}
	key := f.key()
	t.codes[key]++
	sig := f.step + " " + key
	if len(t.samples) < maxSamples && !slices.ContainsFunc(t.samples, func(s sample) bool { return s.sig == sig }) {
		t.samples = append(t.samples, sample{sig, f.Error()})
	}
}

func merge(ts []tally) Result {
	var res Result
	var lat, hs, connect, late []time.Duration
	var samples []sample
	steps := map[string][]time.Duration{}
	res.FailCodes = map[string]int{}
	for _, t := range ts {
		res.OK += t.ok
		res.Failed += t.failed
		res.Connections += t.conns
		res.Bytes += t.bytes
		lat = append(lat, t.lat...)
		hs = append(hs, t.hs...)
		connect = append(connect, t.connect...)
		late = append(late, t.late...)
		res.Timeline = append(res.Timeline, t.timeline...)
		for k, v := range t.steps {
			steps[k] = append(steps[k], v...)
		}
		for k, v := range t.codes {
			res.FailCodes[k] += v
		}
		for _, s := range t.samples {
			if len(samples) < maxSamples && !slices.ContainsFunc(samples, func(x sample) bool { return x.sig == s.sig }) {
				samples = append(samples, s)
			}
		}
	}
	for _, s := range samples {
		res.Samples = append(res.Samples, s.text)
	}
	slices.SortFunc(res.Timeline, func(a, b Timed) int { return cmp.Compare(a.At, b.At) })
	res.Handshakes = len(hs)
	res.Latency, res.Handshake, res.Connect = percentiles(lat), percentiles(hs), percentiles(connect)
	for _, d := range late {
		if d > lateSlack {
			res.Late++
		}
	}
	res.Lateness = percentiles(late)
	res.Steps = map[string]Percentiles{}
	for k, v := range steps {
		res.Steps[k] = percentiles(v)
	}
	return res
}

func percentiles(d []time.Duration) Percentiles {
	if len(d) == 0 {
		return Percentiles{}
	}
	slices.Sort(d)
	rank := func(p float64) time.Duration {
		return d[max(0, int(math.Ceil(p*float64(len(d))))-1)]
	}
	return Percentiles{N: len(d), P50: rank(0.50), P90: rank(0.90), P99: rank(0.99), Max: d[len(d)-1]}
}

// worker sends messages until none are left or ctx ends. Without Persist
// each message gets its own connection, like smtp-source.
func (r *runner) worker(ctx context.Context, t *tally) {
	var s *session
	defer func() {
		if s != nil {
			s.close(false)
		}
	}()
	for ctx.Err() == nil {
		i, ok := r.claim()
		if !ok {
			return
		}
		if !r.pace(ctx, t, i) {
			return
		}
		if s == nil {
			var f *failure
			if s, f = r.open(ctx, t); f != nil {
				r.record(ctx, t, f)
				continue
			}
		}
		lat, f := s.send(i)
		if f == nil {
			t.lat = append(t.lat, lat)
			t.timeline = append(t.timeline, Timed{At: time.Since(r.start), Latency: lat})
		}
		r.record(ctx, t, f)
		switch {
		case f != nil && f.fatal:
			s.close(false)
			s = nil
		case !r.cfg.Persist:
			s.close(true)
			s = nil
		default:
			if f = s.rset(); f != nil {
				s.close(false)
				s = nil
			}
		}
	}
}

// pace waits for message i's due time when the run offers a Rate, and
// notes how late it starts; false when ctx ended meanwhile.
func (r *runner) pace(ctx context.Context, t *tally, i int) bool {
	if r.cfg.Rate <= 0 {
		return true
	}
	due := r.start.Add(time.Duration(float64(i-1) / r.cfg.Rate * float64(time.Second)))
	if d := time.Until(due); d > 0 {
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
			return false
		}
	}
	t.late = append(t.late, max(0, time.Since(due)))
	return true
}

// record counts one message. An error caused by the run being cut short
// is not the server's doing, so that message stays unfinished.
func (r *runner) record(ctx context.Context, t *tally, f *failure) {
	switch {
	case f == nil:
		t.ok++
		t.bytes += int64(r.messageLen())
	case ctx.Err() != nil:
	default:
		t.fail(f)
	}
}

// failure is why one message was not accepted.
type failure struct {
	step  string // the command or phase that failed
	err   error
	fatal bool // the connection cannot carry another message
}

// Error shows a reply as the server sent it; textproto.Error would quote it.
func (f *failure) Error() string {
	var te *textproto.Error
	if errors.As(f.err, &te) {
		return fmt.Sprintf("%s: %d %s", f.step, te.Code, te.Msg)
	}
	return f.step + ": " + f.err.Error()
}

// key groups failures for the summary: the reply code when the server
// answered, else the kind of error.
func (f *failure) key() string {
	var te *textproto.Error
	if errors.As(f.err, &te) {
		return strconv.Itoa(te.Code)
	}
	var ne net.Error
	if errors.As(f.err, &ne) && ne.Timeout() {
		return "timeout"
	}
	switch f.step {
	case "connect", "handshake", "EHLO":
		return strings.ToLower(f.step)
	}
	return "io"
}

// session is one SMTP connection.
type session struct {
	r    *runner
	t    *tally
	conn net.Conn // TCP, or TLS once encrypted
	tp   *textproto.Conn
	ext  []string    // the extensions of the last EHLO reply
	stop func() bool // undoes the close-on-cancel hook
}

// took records one step's round trip.
func (s *session) took(step string, t0 time.Time) {
	if s.t.steps == nil {
		s.t.steps = map[string][]time.Duration{}
	}
	s.t.steps[step] = append(s.t.steps[step], time.Since(t0))
}

// open dials and runs the session up to the point where MAIL can be sent.
func (r *runner) open(ctx context.Context, t *tally) (*session, *failure) {
	d := net.Dialer{Timeout: r.cfg.Timeout} // no LocalAddr: bind nothing
	t0 := time.Now()
	conn, err := d.DialContext(ctx, "tcp", r.cfg.Addr)
	if err != nil {
		return nil, &failure{step: "connect", err: err, fatal: true}
	}
	t.connect = append(t.connect, time.Since(t0))
	t.conns++
	s := &session{r: r, t: t, conn: conn, tp: textproto.NewConn(conn)}
	// Closing the socket when the run is cut short wakes a worker blocked
	// on a slow server at once instead of after Timeout.
	s.stop = context.AfterFunc(ctx, func() { conn.Close() })
	if f := s.greet(ctx, t); f != nil {
		f.fatal = true
		s.close(false)
		return nil, f
	}
	return s, nil
}

func (s *session) greet(ctx context.Context, t *tally) *failure {
	if s.r.cfg.TLS == TLSImplicit {
		if f := s.handshake(ctx, t); f != nil {
			return f
		}
	}
	s.deadline()
	t0 := time.Now()
	if _, _, err := s.tp.ReadResponse(220); err != nil {
		return &failure{step: "banner", err: err}
	}
	s.took("banner", t0)
	ext, f := s.ehlo()
	if f != nil || s.r.cfg.TLS != TLSStartTLS {
		return f
	}
	if !slices.Contains(ext, "STARTTLS") {
		return &failure{step: "EHLO", err: errors.New("server does not offer STARTTLS")}
	}
	if f := s.cmd("STARTTLS", 220, "STARTTLS"); f != nil {
		return f
	}
	// Bytes already buffered would be read as if encrypted: the STARTTLS
	// command injection of CVE-2011-0411. Refuse rather than measure it.
	if s.tp.R.Buffered() > 0 {
		return &failure{step: "STARTTLS", err: errors.New("server sent data after its 220 reply")}
	}
	if f := s.handshake(ctx, t); f != nil {
		return f
	}
	_, f = s.ehlo()
	return f
}

// handshake wraps the connection in TLS; its time is measured alone,
// without the round trip of the STARTTLS command.
func (s *session) handshake(ctx context.Context, t *tally) *failure {
	tc := tls.Client(s.conn, s.r.tls)
	s.deadline()
	t0 := time.Now()
	if err := tc.HandshakeContext(ctx); err != nil {
		return &failure{step: "handshake", err: err}
	}
	t.hs = append(t.hs, time.Since(t0))
	s.conn = tc
	s.tp = textproto.NewConn(tc)
	return nil
}

// ehlo returns the first word of each extension line.
func (s *session) ehlo() ([]string, *failure) {
	t0 := time.Now()
	if err := s.write("EHLO localhost"); err != nil {
		return nil, &failure{step: "EHLO", err: err}
	}
	_, msg, err := s.tp.ReadResponse(250)
	if err != nil {
		return nil, &failure{step: "EHLO", err: err}
	}
	s.took("EHLO", t0)
	var ext []string
	for _, line := range strings.Split(msg, "\n")[1:] {
		if f := strings.Fields(line); len(f) > 0 {
			ext = append(ext, strings.ToUpper(f[0]))
		}
	}
	s.ext = ext
	return ext, nil
}

func (s *session) deadline() { s.conn.SetDeadline(time.Now().Add(s.r.cfg.Timeout)) }

func (s *session) write(format string, args ...any) error {
	s.deadline()
	if _, err := fmt.Fprintf(s.tp.W, format+"\r\n", args...); err != nil {
		return err
	}
	return s.tp.W.Flush()
}

// cmd sends one command and wants a reply of class or code expect.
func (s *session) cmd(step string, expect int, format string, args ...any) *failure {
	t0 := time.Now()
	if err := s.write(format, args...); err != nil {
		return &failure{step: step, err: err, fatal: true}
	}
	if _, _, err := s.tp.ReadResponse(expect); err != nil {
		return replyFailure(step, err)
	}
	s.took(step, t0)
	return nil
}

// replyFailure keeps the connection for the next message when the server
// refused politely; 421 and I/O errors mean it is gone.
func replyFailure(step string, err error) *failure {
	var te *textproto.Error
	fatal := !errors.As(err, &te) || te.Code == 421
	return &failure{step: step, err: err, fatal: fatal}
}

// send runs one transaction; no failure means the server said 250 to the
// data, after the latency returned.
func (s *session) send(i int) (time.Duration, *failure) {
	cfg := &s.r.cfg
	if cfg.BDAT {
		return s.chunk(i)
	}
	if cfg.Pipelining {
		if f := s.envelope(); f != nil {
			return 0, f
		}
	} else {
		if f := s.cmd("MAIL", 2, "MAIL FROM:<%s>", cfg.From); f != nil {
			return 0, f
		}
		for _, rcpt := range cfg.To {
			if f := s.cmd("RCPT", 2, "RCPT TO:<%s>", rcpt); f != nil {
				return 0, f
			}
		}
		if f := s.cmd("DATA", 354, "DATA"); f != nil {
			return 0, f
		}
	}
	// The whole message may be long: one deadline of Timeout covers it.
	s.deadline()
	w := s.tp.W
	w.WriteString(s.r.header(i))
	w.Write(s.r.payload)
	t0, f := s.end(".\r\n")
	if f != nil {
		return 0, f
	}
	if _, _, err := s.tp.ReadResponse(250); err != nil {
		return 0, replyFailure("end of data", err)
	}
	return time.Since(t0), nil
}

// end sends what is buffered of the message, then its last bytes
// alone, and returns when those left. Latency is the server's work after
// the end of the message: the rest is flushed first so it does not count
// transfer time.
func (s *session) end(last string) (time.Time, *failure) {
	w := s.tp.W
	if err := w.Flush(); err != nil {
		return time.Time{}, &failure{step: "message", err: err, fatal: true}
	}
	s.deadline()
	w.WriteString(last)
	t0 := time.Now()
	if err := w.Flush(); err != nil {
		return time.Time{}, &failure{step: "end of data", err: err, fatal: true}
	}
	return t0, nil
}

// chunk runs a transaction whose message is one BDAT LAST chunk. As with
// DATA, latency runs from the chunk's last bytes (its final CRLF) to the
// 250: the server cannot answer before it has the whole chunk. With
// Pipelining the envelope and the chunk go in one write (RFC 3030 allows
// BDAT in a pipelined group) and the envelope's replies are read after
// it, so the envelope is not timed on its own.
func (s *session) chunk(i int) (time.Duration, *failure) {
	cfg := &s.r.cfg
	if !slices.Contains(s.ext, "CHUNKING") {
		return 0, &failure{step: "BDAT", err: errors.New("server does not offer CHUNKING"), fatal: true}
	}
	if !cfg.Pipelining {
		if f := s.cmd("MAIL", 2, "MAIL FROM:<%s>", cfg.From); f != nil {
			return 0, f
		}
		for _, rcpt := range cfg.To {
			if f := s.cmd("RCPT", 2, "RCPT TO:<%s>", rcpt); f != nil {
				return 0, f
			}
		}
	}
	h, p := s.r.header(i), s.r.payload
	s.deadline()
	w := s.tp.W
	if cfg.Pipelining {
		fmt.Fprintf(w, "MAIL FROM:<%s>\r\n", cfg.From)
		for _, rcpt := range cfg.To {
			fmt.Fprintf(w, "RCPT TO:<%s>\r\n", rcpt)
		}
	}
	fmt.Fprintf(w, "BDAT %d LAST\r\n", len(h)+len(p))
	if len(p) > 0 {
		w.WriteString(h)
		w.Write(p[:len(p)-2])
	} else { // the header's blank line ends the message
		w.WriteString(h[:len(h)-2])
	}
	t0, f := s.end("\r\n")
	if f != nil {
		return 0, f
	}
	var first *failure
	if cfg.Pipelining {
		// Every reply is read even after a refusal, to stay in step.
		if _, _, err := s.tp.ReadResponse(2); err != nil {
			first = replyFailure("MAIL", err)
		}
		for range cfg.To {
			if _, _, err := s.tp.ReadResponse(2); err != nil && first == nil {
				first = replyFailure("RCPT", err)
			}
		}
	}
	_, _, err := s.tp.ReadResponse(250)
	lat := time.Since(t0)
	switch {
	case first != nil:
		return 0, first
	case err != nil:
		return 0, replyFailure("end of data", err)
	}
	return lat, nil
}

// envelope sends MAIL, the RCPTs and DATA in one write and reads their
// replies in order (step "envelope": the write to the 354). Every reply is
// read even after a refusal, so the session stays in step; a 354 the
// server gave anyway is ended with a lone dot.
func (s *session) envelope() *failure {
	cfg := &s.r.cfg
	t0 := time.Now()
	s.deadline()
	w := s.tp.W
	fmt.Fprintf(w, "MAIL FROM:<%s>\r\n", cfg.From)
	for _, rcpt := range cfg.To {
		fmt.Fprintf(w, "RCPT TO:<%s>\r\n", rcpt)
	}
	w.WriteString("DATA\r\n")
	if err := w.Flush(); err != nil {
		return &failure{step: "MAIL", err: err, fatal: true}
	}
	var first *failure
	note := func(step string, expect int) {
		if _, _, err := s.tp.ReadResponse(expect); err != nil && first == nil {
			first = replyFailure(step, err)
		}
	}
	note("MAIL", 2)
	for range cfg.To {
		note("RCPT", 2)
	}
	_, _, err := s.tp.ReadResponse(354)
	switch {
	case err == nil && first != nil:
		if s.write(".") == nil {
			s.tp.ReadResponse(2)
		}
	case err != nil && first == nil:
		first = replyFailure("DATA", err)
	}
	if first == nil {
		s.took("envelope", t0)
	}
	return first
}

func (s *session) rset() *failure { return s.cmd("RSET", 250, "RSET") }

// close ends the session; polite sends QUIT first and ignores its reply:
// the message is already counted.
func (s *session) close(polite bool) {
	if polite {
		t0 := time.Now()
		if s.write("QUIT") == nil {
			if _, _, err := s.tp.ReadResponse(221); err == nil {
				s.took("QUIT", t0)
			}
		}
	}
	s.stop()
	s.conn.Close()
}

// header is a message's header section and the blank line after it.
func (r *runner) header(i int) string {
	var b strings.Builder
	b.WriteString("From: " + r.cfg.From + "\r\n")
	b.WriteString(addrHeader("To", r.cfg.To))
	fmt.Fprintf(&b, "Subject: smtpload message %d of %d\r\n", i, r.cfg.Messages)
	fmt.Fprintf(&b, "Message-ID: <%d.%d.%d@smtpload.invalid>\r\n", r.runID, os.Getpid(), i)
	b.WriteString("Date: " + time.Now().Format(time.RFC1123Z) + "\r\n")
	b.WriteString("\r\n")
	return b.String()
}

// messageLen is the bytes of one message as sent, for bytes/s. Header
// lengths vary by a few digits between messages; message 1's is close enough.
func (r *runner) messageLen() int {
	r.msgLenOnce.Do(func() { r.msgLen = len(r.header(1)) + len(r.payload) })
	return r.msgLen
}

// addrHeader folds a list of addresses so lines stay within 78 characters
// (unless one address alone is longer).
func addrHeader(name string, addrs []string) string {
	var b strings.Builder
	b.WriteString(name + ":")
	col := len(name) + 1
	for i, a := range addrs {
		if i < len(addrs)-1 {
			a += ","
		}
		if i > 0 && col+1+len(a) > 78 {
			b.WriteString("\r\n")
			col = 0
		}
		b.WriteString(" " + a)
		col += 1 + len(a)
	}
	b.WriteString("\r\n")
	return b.String()
}

// makePayload returns size bytes of CRLF lines of at most 78 characters.
// Every 16th line starts with a dot so dot-stuffing is exercised.
func makePayload(size int) []byte {
	const width, alphabet = 76, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, 0, size)
	for line := 0; len(b) < size; line++ {
		rem := size - len(b)
		if rem == 1 { // only when size is 1: a lone byte, the terminator adds the CRLF
			return append(b, 'x')
		}
		n := min(width, rem-2)
		if rem-n-2 == 1 { // never leave one byte over: widen this line to 77
			n++
		}
		for j := range n {
			c := alphabet[(line+j)%len(alphabet)]
			if j == 0 && line%16 == 0 {
				c = '.'
			}
			b = append(b, c)
		}
		b = append(b, '\r', '\n')
	}
	return b
}

// endLine makes p end in CRLF (an empty body stays empty).
func endLine(p []byte) []byte {
	if len(p) > 0 && !bytes.HasSuffix(p, []byte("\r\n")) {
		p = append(bytes.TrimSuffix(p, []byte("\r")), '\r', '\n')
	}
	return p
}

// dotStuff doubles a dot that starts a line (RFC 5321 4.5.2) and makes the
// body end in CRLF so the terminating dot starts a line.
func dotStuff(p []byte) []byte {
	out := make([]byte, 0, len(p)+len(p)/64+2)
	for i, c := range p {
		if c == '.' && (i == 0 || i >= 2 && p[i-2] == '\r' && p[i-1] == '\n') {
			out = append(out, '.')
		}
		out = append(out, c)
	}
	if len(out) > 0 && !bytes.HasSuffix(out, []byte("\r\n")) {
		out = append(out, '\r', '\n')
	}
	return out
}
