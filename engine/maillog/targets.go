package maillog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Config says where and how Open's handler logs.
type Config struct {
	Target   string       // "stderr" (the default), "syslog" or "journald"
	Format   string       // "text" (the default): Postfix's lines; "json": one JSON object per line
	Name     string       // syslog_name, the program name's first part; default "larkpost"
	Facility int          // the syslog facility's number (rules.SyslogFacility), for syslog and journald
	Socket   string       // the daemon's socket; "" is /dev/log for syslog, /run/systemd/journal/socket for journald
	Level    slog.Leveler // records at this level or above; nil is Info
}

// The default sockets.
const (
	DefaultSyslogSocket  = "/dev/log"
	DefaultJournalSocket = "/run/systemd/journal/socket"
)

// MaxMessage is where a message to syslog or the journal is cut: a
// datagram, and what syslog daemons take in one line.
const MaxMessage = 8192

// Budget is how long one line may wait for a busy syslog daemon or
// journal before it is dropped; once one was dropped, lines are tried
// without waiting until one gets through again.
var Budget = 50 * time.Millisecond

// warnEvery is how often dropped lines are reported on stderr.
const warnEvery = time.Minute

// Open returns a handler logging as cfg says, and what releases its
// socket. Lines to syslog or the journal are never waited for long: one
// the daemon does not take (it is down, restarting or busy) is dropped
// and counted (Dropped), and a warning goes to stderr at most once a
// minute. The fatal: lines go to stderr as well, so that a server that
// cannot start says why where it was started.
func Open(cfg Config, stderr io.Writer) (*Handler, io.Closer, error) {
	o, err := newOutput(cfg, stderr)
	if err != nil {
		return nil, nil, err
	}
	level := cfg.Level
	if level == nil {
		level = slog.LevelInfo
	}
	return &Handler{sw: newSwitcher(o), level: level}, o, nil
}

// Switch sends the lines of h, and of every handler made from it with
// WithAttrs and WithGroup (the loggers handed out so far), where cfg says
// from now on; their level stays. It returns what releases the new
// socket. serve logs to stderr until its config is loaded, then switches.
func (h *Handler) Switch(cfg Config, stderr io.Writer) (io.Closer, error) {
	o, err := newOutput(cfg, stderr)
	if err != nil {
		return nil, err
	}
	h.sw.p.Store(o)
	return o, nil
}

func newOutput(cfg Config, stderr io.Writer) (*output, error) {
	o := &output{target: cfg.Target, format: cfg.Format, name: cfg.Name, facility: cfg.Facility,
		pid: os.Getpid(), w: stderr, mu: &sync.Mutex{}}
	if o.target == "" {
		o.target = "stderr"
	}
	if o.format == "" {
		o.format = "text"
	}
	if o.name == "" {
		o.name = "larkpost"
	}
	if o.format != "text" && o.format != "json" {
		return nil, fmt.Errorf("log_format: want \"text\" or \"json\", got %q", cfg.Format)
	}
	if cfg.Facility < 0 || cfg.Facility > 23 {
		return nil, fmt.Errorf("syslog_facility: %d is no facility", cfg.Facility)
	}
	switch o.target {
	case "stderr":
	case "syslog":
		o.sock = &sockOut{path: orDefault(cfg.Socket, DefaultSyslogSocket), what: "syslog", stream: true}
	case "journald":
		o.sock = &sockOut{path: orDefault(cfg.Socket, DefaultJournalSocket), what: "journald"}
	default:
		return nil, fmt.Errorf("log_target: want \"stderr\", \"syslog\" or \"journald\", got %q", cfg.Target)
	}
	return o, nil
}

// Dropped is the number of lines h could not hand to syslog or the
// journal since it was opened or switched there.
func (h *Handler) Dropped() uint64 {
	o := h.sw.p.Load()
	if o.sock == nil {
		return 0
	}
	return o.sock.dropped.Load()
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// output is where a handler and all its With copies write.
type output struct {
	target, format, name string
	facility, pid        int
	mu                   *sync.Mutex // serialises w
	w                    io.Writer   // stderr: the lines, or the warnings and fatal lines
	sock                 *sockOut    // syslog, journald
}

// Close releases the socket.
func (o *output) Close() error {
	if o.sock != nil {
		return o.sock.close()
	}
	return nil
}

func (o *output) write(rd *rendered) error {
	switch o.target {
	case "syslog":
		o.sock.send([]byte(o.syslogLine(rd)), o)
	case "journald":
		o.sock.send(o.journalFields(rd), o)
	default:
		return o.stderrLine(rd)
	}
	if severity(rd.level, rd.msg) <= sevCrit {
		o.stderrLine(rd)
	}
	return nil
}

// stderrLine writes rd as a line on the stream: text or JSON.
func (o *output) stderrLine(rd *rendered) error {
	bp := lineBufs.Get().(*[]byte)
	defer lineBufs.Put(bp)
	line := (*bp)[:0]
	if o.format == "json" {
		body := rd.body
		if o.target == "journald" {
			body = rd.handler.jsonBody(rd)
		}
		line = append(line, body...)
	} else {
		line = rd.t.UTC().AppendFormat(line, "2006-01-02T15:04:05.000000Z")
		line = append(line, ' ')
		line = append(line, o.name...)
		line = append(line, '/')
		line = append(line, rd.prog...)
		line = append(line, '[')
		line = strconv.AppendInt(line, int64(o.pid), 10)
		line = append(line, "]: "...)
		line = append(line, rd.body...)
	}
	line = append(line, '\n')
	if cap(line) <= 64<<10 {
		*bp = line // a huge line is not kept for the next one
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	_, err := o.w.Write(line)
	return err
}

// lineBufs holds the buffers stream lines are put together in: eight
// lines a message, each a few hundred bytes.
var lineBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// tag is NAME/PROG[PID], as Postfix's programs call openlog(3).
func (o *output) tag(prog string) string {
	return o.name + "/" + prog + "[" + strconv.Itoa(o.pid) + "]"
}

// The syslog(3) severities.
const (
	sevCrit    = 2
	sevErr     = 3
	sevWarning = 4
	sevInfo    = 6
	sevDebug   = 7
)

// severity is the syslog severity of a line, as Postfix's msg(3): fatal
// and panic are crit, error err, warning warning.
func severity(l slog.Level, msg string) int {
	switch {
	case strings.HasPrefix(msg, "fatal:") || strings.HasPrefix(msg, "panic:"):
		return sevCrit
	case l >= slog.LevelError || strings.HasPrefix(msg, "error:"):
		return sevErr
	case l >= slog.LevelWarn || strings.HasPrefix(msg, "warning:"):
		return sevWarning
	case l >= slog.LevelInfo:
		return sevInfo
	}
	return sevDebug
}

// syslogLine is the message as glibc's syslog(3) sends it to the local
// daemon: <PRI>Mmm dd hh:mm:ss NAME/PROG[PID]: text, local time, no
// host name (the daemon adds it).
func (o *output) syslogLine(rd *rendered) string {
	pri := o.facility*8 + severity(rd.level, rd.msg)
	return "<" + strconv.Itoa(pri) + ">" + rd.t.Local().Format(time.Stamp) + " " + o.tag(rd.prog) + ": " + cut(rd.body, MaxMessage)
}

// cut shortens s to at most n bytes, at a character's boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xc0 == 0x80 {
		n--
	}
	return s[:n]
}

// queueIDRE is a queue id at the start of a message (queue.NewID).
var queueIDRE = regexp.MustCompile(`^[0-9A-HJKMNP-TV-Z]{13}:`)

// journalFields is the record in the journal's native protocol: MESSAGE
// (the text, escaped), PRIORITY, SYSLOG_FACILITY, SYSLOG_IDENTIFIER
// (NAME/PROG), SYSLOG_PID, QUEUE_ID when the message starts with one, and
// the attributes as upper-case fields (groups joined with _).
func (o *output) journalFields(rd *rendered) []byte {
	var b []byte
	msg := rd.body
	if o.format == "json" {
		msg = rd.handler.jsonBody(rd)
	}
	b = journalField(b, "MESSAGE", cut(msg, MaxMessage))
	b = journalField(b, "PRIORITY", strconv.Itoa(severity(rd.level, rd.msg)))
	b = journalField(b, "SYSLOG_FACILITY", strconv.Itoa(o.facility))
	b = journalField(b, "SYSLOG_IDENTIFIER", o.name+"/"+rd.prog)
	b = journalField(b, "SYSLOG_PID", strconv.Itoa(o.pid))
	if queueIDRE.MatchString(rd.msg) {
		b = journalField(b, "QUEUE_ID", rd.msg[:13])
	}
	var walk func(prefix string, attrs []slog.Attr)
	walk = func(prefix string, attrs []slog.Attr) {
		for _, a := range attrs {
			a.Value = a.Value.Resolve()
			if a.Equal(slog.Attr{}) {
				continue
			}
			key := prefix + journalKey(a.Key)
			if a.Value.Kind() == slog.KindGroup {
				walk(key+"_", a.Value.Group())
				continue
			}
			if reservedFields[key] {
				key = "ATTR_" + key
			}
			b = journalField(b, key[:min(len(key), 64)], cut(a.Value.String(), MaxMessage))
		}
	}
	walk("", rd.handler.nest(rd.attrs))
	return b
}

// reservedFields are the journal's fields this package sets itself: an
// attribute of the same name gets ATTR_ in front.
var reservedFields = map[string]bool{"MESSAGE": true, "PRIORITY": true, "SYSLOG_FACILITY": true,
	"SYSLOG_IDENTIFIER": true, "SYSLOG_PID": true, "QUEUE_ID": true, "MESSAGE_ID": true}

// journalKey makes an attribute key a journal field name: upper case,
// A-Z 0-9 _, not starting with _ or a digit (the caller cuts it at 64
// characters).
func journalKey(k string) string {
	var b strings.Builder
	for _, c := range strings.ToUpper(k) {
		if c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
	}
	s := strings.TrimLeft(b.String(), "_")
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		s = "ATTR_" + s
	}
	return s
}

// journalField appends KEY=VALUE\n, or for a value with a newline KEY\n,
// its length as 64-bit little endian, the value and \n.
func journalField(b []byte, key, value string) []byte {
	if !strings.ContainsRune(value, '\n') {
		return append(append(append(append(b, key...), '='), value...), '\n')
	}
	b = append(append(b, key...), '\n')
	b = binary.LittleEndian.AppendUint64(b, uint64(len(value)))
	return append(append(b, value...), '\n')
}

// sockOut is the local socket of syslog or the journal: datagrams sent to
// the path each time, so that a daemon that restarts (a new socket at the
// same path) is found again by the next line. A syslog socket that is a
// stream socket (some syslog-ng setups) is connected instead, each line
// ending in a NUL as syslog(3) writes it, and connected again after an
// error.
type sockOut struct {
	path   string
	what   string // "syslog", "journald"
	stream bool   // a stream socket may be tried (syslog)

	mu       sync.Mutex
	dgram    *net.UnixConn // unconnected, for datagrams
	conn     net.Conn      // connected, when the path is a stream socket
	isStream bool
	failing  bool // the last line was dropped: do not wait for the next
	lastWarn time.Time
	dropped  atomic.Uint64
}

func (s *sockOut) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if s.dgram != nil {
		err = s.dgram.Close()
		s.dgram = nil
	}
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
	return err
}

// send hands one message to the daemon, trying once (and once more on a
// new connection when a stream connection broke); a message that does
// not go is counted and dropped.
func (s *sockOut) send(msg []byte, o *output) {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.try(msg)
	if err != nil && s.isStream && s.conn != nil && !isTimeout(err) {
		s.conn.Close()
		s.conn = nil
		err = s.try(msg)
	}
	if err == nil {
		s.failing = false
		return
	}
	s.failing = true
	n := s.dropped.Add(1)
	if time.Since(s.lastWarn) >= warnEvery {
		s.lastWarn = time.Now()
		line := fmt.Sprintf("%s %s: warning: %s: cannot write to %s: %v; %d log line(s) dropped so far",
			time.Now().UTC().Format("2006-01-02T15:04:05.000000Z"), o.tag(DefaultProgram), s.what, s.path, err, n)
		o.mu.Lock()
		io.WriteString(o.w, line+"\n")
		o.mu.Unlock()
	}
}

func (s *sockOut) deadline() time.Time {
	if s.failing {
		return time.Now().Add(time.Millisecond)
	}
	return time.Now().Add(Budget)
}

func (s *sockOut) try(msg []byte) error {
	if s.isStream {
		if s.conn == nil {
			c, err := net.DialTimeout("unix", s.path, Budget)
			if err != nil {
				return err
			}
			s.conn = c
		}
		s.conn.SetWriteDeadline(s.deadline())
		_, err := s.conn.Write(append(msg, 0))
		return err
	}
	if s.dgram == nil {
		c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram"}) // autobind
		if err != nil {
			return err
		}
		s.dgram = c
	}
	var err error
	if s.failing {
		// One attempt, no waiting: a daemon that is still stuck costs
		// nothing more.
		rc, rerr := s.dgram.SyscallConn()
		if rerr != nil {
			return rerr
		}
		if rerr := rc.Write(func(fd uintptr) bool {
			err = syscall.Sendto(int(fd), msg, 0, &syscall.SockaddrUnix{Name: s.path})
			return true
		}); rerr != nil {
			return rerr
		}
		if err != nil {
			err = os.NewSyscallError("sendto", err)
		}
	} else {
		s.dgram.SetWriteDeadline(time.Now().Add(Budget))
		_, _, err = s.dgram.WriteMsgUnix(msg, nil, &net.UnixAddr{Name: s.path, Net: "unixgram"})
	}
	if s.stream && errors.Is(err, syscall.EPROTOTYPE) {
		s.isStream = true
		return s.try(msg)
	}
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
