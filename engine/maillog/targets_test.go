package maillog

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// when is the time of the records in these tests.
var when = time.Date(2026, 3, 5, 9, 4, 7, 123456000, time.UTC)

// emit logs one record at when through h, as logger l would.
func emit(t *testing.T, h slog.Handler, level slog.Level, msg string, args ...any) {
	t.Helper()
	r := slog.NewRecord(when, level, msg, 0)
	r.Add(args...)
	if err := h.Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
}

// dgramServer is a datagram socket standing in for /dev/log or the
// journal's socket.
func dgramServer(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func recv(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 1<<17)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no datagram: %v", err)
	}
	return string(buf[:n])
}

// lockedBuffer is a stderr for handlers used from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestSyslogDatagrams(t *testing.T) {
	defer func(l *time.Location) { time.Local = l }(time.Local)
	time.Local = time.FixedZone("CET", 3600) // syslog(3) stamps local time
	path := filepath.Join(t.TempDir(), "log")
	srv := dgramServer(t, path)
	var stderr lockedBuffer
	h, closer, err := Open(Config{Target: "syslog", Name: "larkpost", Facility: 2, Socket: path}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	pid := strconv.Itoa(os.Getpid())
	smtpd := h.WithAttrs([]slog.Attr{Program("smtpd")})
	tests := []struct {
		name  string
		h     slog.Handler
		level slog.Level
		msg   string
		args  []any
		want  string
	}{
		{"info, program from With", smtpd, slog.LevelInfo, "connect from localhost[127.0.0.1]", nil,
			"<22>Mar  5 10:04:07 larkpost/smtpd[" + pid + "]: connect from localhost[127.0.0.1]"},
		{"program on the record", h, slog.LevelInfo, "1K0TETV262S00: to=<joe@example.test>, relay=local, status=sent (delivered to maildir)", []any{Program("local")},
			"<22>Mar  5 10:04:07 larkpost/local[" + pid + "]: 1K0TETV262S00: to=<joe@example.test>, relay=local, status=sent (delivered to maildir)"},
		{"no program is master", h, slog.LevelInfo, "daemon started -- config x", nil,
			"<22>Mar  5 10:04:07 larkpost/master[" + pid + "]: daemon started -- config x"},
		{"warning", smtpd, slog.LevelWarn, "client connection limit exceeded", []any{"n", 3},
			"<20>Mar  5 10:04:07 larkpost/smtpd[" + pid + "]: warning: client connection limit exceeded n=3"},
		{"error", h, slog.LevelError, "hook failed", nil,
			"<19>Mar  5 10:04:07 larkpost/master[" + pid + "]: error: hook failed"},
		{"fatal is crit", h, slog.LevelError, "fatal: config x has errors; not starting", nil,
			"<18>Mar  5 10:04:07 larkpost/master[" + pid + "]: fatal: config x has errors; not starting"},
		{"escapes stay", smtpd, slog.LevelInfo, "script: a\nforged\x1b[2J", []any{"helo", "evil\x00"},
			"<22>Mar  5 10:04:07 larkpost/smtpd[" + pid + "]: script: a\\012forged\\033[2J helo=evil\\000"},
	}
	for _, tt := range tests {
		emit(t, tt.h, tt.level, tt.msg, tt.args...)
		if got := recv(t, srv); got != tt.want {
			t.Errorf("%s:\n got %q\nwant %q", tt.name, got, tt.want)
		}
	}
	if !strings.Contains(stderr.String(), "larkpost/master["+pid+"]: fatal: config x has errors") || strings.Count(stderr.String(), "\n") != 1 {
		t.Errorf("stderr should have the fatal line, and only it: %q", stderr.String())
	}

	// Another facility.
	h2, c2, _ := Open(Config{Target: "syslog", Name: "postfix", Facility: 16, Socket: path}, io.Discard)
	emit(t, h2.WithAttrs([]slog.Attr{Program("qmgr")}), slog.LevelInfo, "ABC: removed")
	c2.Close()
	if got, want := recv(t, srv), "<134>Mar  5 10:04:07 postfix/qmgr["+pid+"]: ABC: removed"; got != want {
		t.Errorf("local0: got %q, want %q", got, want)
	}

	// A long message is cut at MaxMessage, on a character boundary.
	emit(t, h, slog.LevelInfo, "x"+strings.Repeat("é", MaxMessage))
	got := recv(t, srv)
	body := got[strings.Index(got, "]: ")+3:]
	if len(body) > MaxMessage || len(body) < MaxMessage-1 || !strings.HasPrefix(body, "xé") || strings.ContainsRune(body, 0xfffd) {
		t.Errorf("long message: %d bytes, %q...", len(body), body[:10])
	}
}

// TestSyslogRestart: while the daemon is away, lines are dropped, counted
// and reported once on stderr; when it is back, the next line reaches it.
func TestSyslogRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	srv := dgramServer(t, path)
	var stderr lockedBuffer
	h, closer, err := Open(Config{Target: "syslog", Facility: 2, Socket: path}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	emit(t, h, slog.LevelInfo, "one")
	if got := recv(t, srv); !strings.HasSuffix(got, "]: one") {
		t.Fatalf("got %q", got)
	}
	srv.Close()
	os.Remove(path)
	start := time.Now()
	emit(t, h, slog.LevelInfo, "two")
	emit(t, h, slog.LevelInfo, "three")
	if d := time.Since(start); d > time.Second {
		t.Errorf("dropping two lines took %v", d)
	}
	if h.Dropped() != 2 {
		t.Errorf("dropped %d, want 2", h.Dropped())
	}
	if n := strings.Count(stderr.String(), "warning: syslog: cannot write to "+path); n != 1 {
		t.Errorf("want one warning on stderr, got %d: %q", n, stderr.String())
	}
	srv = dgramServer(t, path)
	emit(t, h, slog.LevelInfo, "four")
	if got := recv(t, srv); !strings.HasSuffix(got, "larkpost/master["+strconv.Itoa(os.Getpid())+"]: four") {
		t.Errorf("after the restart: got %q", got)
	}
}

// TestSyslogBusy: a daemon that does not read makes lines drop after a
// short wait, not block the server.
func TestSyslogBusy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	dgramServer(t, path) // never read
	h, closer, _ := Open(Config{Target: "syslog", Facility: 2, Socket: path}, io.Discard)
	defer closer.Close()
	// The kernel's socket buffer takes some lines; the first one past it
	// must be dropped within the budget, not wait for the daemon.
	start := time.Now()
	n := 0
	for ; n < 100000 && h.Dropped() == 0; n++ {
		emit(t, h, slog.LevelInfo, "line "+strconv.Itoa(n)+" "+strings.Repeat("x", 1000))
	}
	if h.Dropped() == 0 {
		t.Fatalf("a daemon that never reads took %d lines: nothing was dropped", n)
	}
	if d := time.Since(start); d > 2*Budget+time.Second {
		t.Errorf("%d lines to a stuck daemon took %v (dropped %d)", n, d, h.Dropped())
	}
}

// TestSyslogStream: a stream /dev/log is written as syslog(3) does, each
// message ending in a NUL, and connected again when it breaks.
func TestSyslogStream(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	h, closer, _ := Open(Config{Target: "syslog", Facility: 2, Socket: path}, io.Discard)
	defer closer.Close()
	read := func(msg string) string {
		t.Helper()
		emit(t, h, slog.LevelInfo, msg)
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		s, err := bufio.NewReader(c).ReadString(0)
		if err != nil {
			t.Fatalf("read: %v (%q)", err, s)
		}
		return s
	}
	if got := read("one"); !regexp.MustCompile(`^<22>\w{3} [ \d]\d \d\d:\d\d:\d\d larkpost/master\[\d+\]: one\x00$`).MatchString(got) {
		t.Errorf("got %q", got)
	}
	// The daemon closed the connection: the next line goes to a new one.
	if got := read("two"); !strings.HasSuffix(got, "]: two\x00") {
		t.Errorf("after reconnecting: got %q", got)
	}
}

// journal parses the native protocol.
func journal(t *testing.T, d string) map[string][]string {
	t.Helper()
	f := map[string][]string{}
	for len(d) > 0 {
		nl := strings.IndexByte(d, '\n')
		if nl < 0 {
			t.Fatalf("field without a newline: %q", d)
		}
		line := d[:nl]
		if k, v, ok := strings.Cut(line, "="); ok {
			f[k] = append(f[k], v)
			d = d[nl+1:]
			continue
		}
		d = d[nl+1:]
		n := binary.LittleEndian.Uint64([]byte(d[:8]))
		f[line] = append(f[line], d[8:8+n])
		if d[8+n] != '\n' {
			t.Fatalf("binary field %s not ended by a newline", line)
		}
		d = d[9+n:]
	}
	return f
}

func TestJournald(t *testing.T) {
	path := filepath.Join(t.TempDir(), "socket")
	srv := dgramServer(t, path)
	h, closer, err := Open(Config{Target: "journald", Facility: 2, Socket: path}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	pid := strconv.Itoa(os.Getpid())
	tests := []struct {
		name  string
		h     slog.Handler
		level slog.Level
		msg   string
		args  []any
		want  map[string]string
	}{
		{"queue line", h.WithAttrs([]slog.Attr{Program("qmgr")}), slog.LevelInfo, "1K0TETV262S00: removed", nil, map[string]string{
			"MESSAGE": "1K0TETV262S00: removed", "PRIORITY": "6", "SYSLOG_FACILITY": "2",
			"SYSLOG_IDENTIFIER": "larkpost/qmgr", "SYSLOG_PID": pid, "QUEUE_ID": "1K0TETV262S00"}},
		{"no queue id, attributes", h.WithAttrs([]slog.Attr{Program("smtpd"), slog.String("client", "x[192.0.2.1]")}).WithGroup("tls"),
			slog.LevelWarn, "NOQUEUE: reject: RCPT", []any{"cipher-suite", "TLS_AES", "message", "m"}, map[string]string{
				"MESSAGE": "warning: NOQUEUE: reject: RCPT client=x[192.0.2.1] tls.cipher-suite=TLS_AES tls.message=m", "PRIORITY": "4",
				"SYSLOG_IDENTIFIER": "larkpost/smtpd", "QUEUE_ID": "", "CLIENT": "x[192.0.2.1]", "TLS_CIPHER_SUITE": "TLS_AES", "TLS_MESSAGE": "m"}},
		{"newlines: escaped in MESSAGE, binary in a field", h, slog.LevelError, "fatal: boom\nforged", []any{"source", "a\nb", "message", "x"}, map[string]string{
			"MESSAGE": `fatal: boom\012forged source=a\012b message=x`, "PRIORITY": "2", "SYSLOG_IDENTIFIER": "larkpost/master",
			"SOURCE": "a\nb", "ATTR_MESSAGE": "x"}},
	}
	for _, tt := range tests {
		emit(t, tt.h, tt.level, tt.msg, tt.args...)
		f := journal(t, recv(t, srv))
		for k, v := range tt.want {
			if v == "" {
				if f[k] != nil {
					t.Errorf("%s: unexpected %s=%q", tt.name, k, f[k])
				}
				continue
			}
			if len(f[k]) != 1 || f[k][0] != v {
				t.Errorf("%s: %s = %q, want %q", tt.name, k, f[k], v)
			}
		}
	}
}

func TestJSON(t *testing.T) {
	var buf bytes.Buffer
	h, _, err := Open(Config{Format: "json"}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	l := slog.New(h).With(Program("cleanup"), "client", "x[192.0.2.1]")
	l.WithGroup("milter").Warn("helo=<evil\x1b[2J>\nforged", "name", "rspamd", "n", 2)
	line := buf.String()
	if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "}\n") {
		t.Fatalf("not one line: %q", line)
	}
	for _, c := range line[:len(line)-1] {
		if c < 0x20 || c == 0x7f {
			t.Errorf("control character %q in %q", c, line)
		}
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatalf("%v: %s", err, line)
	}
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$`).MatchString(got["time"].(string)) {
		t.Errorf("time %q", got["time"])
	}
	want := map[string]any{"level": "WARN", "program": "larkpost/cleanup", "pid": float64(os.Getpid()),
		"msg": "helo=<evil\x1b[2J>\nforged", "client": "x[192.0.2.1]", "milter": map[string]any{"name": "rspamd", "n": float64(2)}}
	for k, v := range want {
		g, _ := json.Marshal(got[k])
		w, _ := json.Marshal(v)
		if string(g) != string(w) {
			t.Errorf("%s = %s, want %s", k, g, w)
		}
	}
	if len(got) != len(want)+1 {
		t.Errorf("fields %v, want those of %v and time", got, want)
	}

	// As the syslog message.
	path := filepath.Join(t.TempDir(), "log")
	srv := dgramServer(t, path)
	h, closer, _ := Open(Config{Target: "syslog", Format: "json", Facility: 2, Socket: path}, io.Discard)
	defer closer.Close()
	emit(t, h.WithAttrs([]slog.Attr{Program("smtpd")}), slog.LevelInfo, "connect from x[192.0.2.1]")
	if got := recv(t, srv); !regexp.MustCompile(`^<22>Mar  5 \d\d:04:07 larkpost/smtpd\[\d+\]: \{"time":"2026-03-05T09:04:07.123456Z","level":"INFO","msg":"connect from x\[192.0.2.1\]","program":"larkpost/smtpd","pid":\d+\}$`).MatchString(got) {
		t.Errorf("syslog JSON: %q", got)
	}
}

func TestOpenErrors(t *testing.T) {
	for _, c := range []Config{{Target: "file"}, {Format: "xml"}, {Target: "syslog", Facility: 24}} {
		if _, _, err := Open(c, io.Discard); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	h, closer, err := Open(Config{}, io.Discard)
	if err != nil || h == nil || closer.Close() != nil {
		t.Errorf("the zero Config: %v", err)
	}
}

// TestRealJournald writes to a real systemd-journald's native socket,
// named by LARKPOST_JOURNAL_SOCKET (.ci/interop-logs.sh runs one in a
// journald namespace and reads the entries back with journalctl, by
// their CI_RUN field, LARKPOST_JOURNAL_RUN).
func TestRealJournald(t *testing.T) {
	sock := os.Getenv("LARKPOST_JOURNAL_SOCKET")
	if sock == "" {
		t.Skip("LARKPOST_JOURNAL_SOCKET is not set (.ci/interop-logs.sh sets it)")
	}
	h, closer, err := Open(Config{Target: "journald", Name: "larkpost", Facility: 2, Socket: sock}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	l := slog.New(h).With("ci_run", os.Getenv("LARKPOST_JOURNAL_RUN"))
	smtpd := l.With(Program("smtpd"))
	smtpd.Info("connect from localhost[127.0.0.1]")
	smtpd.Info("NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 554 5.7.1 <x@elsewhere.example>: Relay access denied; from=<ann@example.org> to=<x@elsewhere.example> proto=ESMTP helo=<client.example>")
	l.Info("1K1T5CJN8WM00: from=<ann@example.org>, size=405, nrcpt=1 (queue active)", Program("qmgr"))
	l.Warn("script: two\nlines", "source", "a\nb")
	if h.Dropped() != 0 {
		t.Fatalf("%d lines dropped", h.Dropped())
	}
}

// TestSwitch: loggers made before the switch (a policy's, the engine's
// components') follow it.
func TestSwitch(t *testing.T) {
	var stderr lockedBuffer
	h := New(&stderr, slog.LevelInfo)
	smtpd := slog.New(h).With(Program("smtpd"), "k", "v")
	smtpd.Info("before")
	path := filepath.Join(t.TempDir(), "log")
	srv := dgramServer(t, path)
	closer, err := h.Switch(Config{Target: "syslog", Facility: 2, Socket: path}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	smtpd.Info("after")
	if got := recv(t, srv); !regexp.MustCompile(`^<22>\w{3} [ \d]\d \d\d:\d\d:\d\d larkpost/smtpd\[\d+\]: after k=v$`).MatchString(got) {
		t.Errorf("after the switch: got %q", got)
	}
	if out := stderr.String(); !strings.HasSuffix(out, "larkpost/smtpd["+strconv.Itoa(os.Getpid())+"]: before k=v\n") || strings.Contains(out, "after") {
		t.Errorf("stderr: %q", out)
	}
	if _, err := h.Switch(Config{Target: "nowhere"}, &stderr); err == nil {
		t.Error("a bad target switched")
	}
}
