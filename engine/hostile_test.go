package engine

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/maildrop"
)

// TestLogCannotBeForged sends control characters in every field a client
// controls that reaches the log (HELO, MAIL, RCPT, Message-ID) and makes a
// script print() a Subject whose encoded word decodes to a newline. Every
// log line must be one line that starts like a log line, with no control
// character in it.
func TestLogCannotBeForged(t *testing.T) {
	t.Parallel()
	h := start(t, `
def on_data(tx, msg):
    print("subject", msg.subject)
`)
	c := dialRaw(t, h.addr)
	defer c.Close()
	c.cmd("EHLO evil\x1b[2J\x07\x00host", "250 ")
	c.cmd("MAIL FROM:<a\x1b]0;pwned\x07@example.org>", "")
	c.cmd("RSET", "250 ")
	c.cmd("MAIL FROM:<ann@example.org>", "250 ")
	c.cmd("RCPT TO:<x\rforged: status=sent@mx.test>", "")
	c.cmd("RCPT TO:<alice@mx.test>", "250 ")
	c.cmd("DATA", "354 ")
	c.cmd("Message-ID: <id\x1b[31m@evil>\r\nSubject: =?utf-8?q?x=0Aforged_line=0D=1B[1m?=\r\n\r\nbody\r\n.", "250 ")
	c.cmd("QUIT", "221 ")
	if !h.log.WaitFor(`subject x`, 3*time.Second) || !h.log.WaitFor(`message-id=`, 3*time.Second) {
		t.Fatalf("the script's print and the message-id were not logged:\n%s", h.log.String())
	}
	h.settle()
	start := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z larkpost/[a-z]+\[\d+\]: `)
	for _, line := range strings.Split(strings.TrimSuffix(h.log.String(), "\n"), "\n") {
		if !start.MatchString(line) {
			t.Errorf("a line that is not a log line: %q", line)
		}
		for _, r := range line {
			if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 {
				t.Errorf("control character %q in %q", r, line)
			}
		}
		if strings.Contains(line, "]: forged") {
			t.Errorf("a forged line: %q", line)
		}
	}
	for _, want := range []string{`subject x\012forged line\015\033[1m`, `message-id=<id\033[31m@evil>`,
		`NOQUEUE: reject: MAIL from localhost[127.0.0.1]: 501 5.1.7 Bad sender address syntax; proto=ESMTP helo=<evil\033[2J\007\000host>`} {
		if !strings.Contains(h.log.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
}

// TestLongHeaderLine: an 800 KB header line is over smtpd_line_length_limit
// (64 KB): the client is told so, not that it timed out, and the log says
// why.
func TestLongHeaderLine(t *testing.T) {
	t.Parallel()
	h := start(t, "")
	c := dialReady(t, h.addr)
	defer c.Close()
	c.cmd("MAIL FROM:<ann@example.org>", "250 ")
	c.cmd("RCPT TO:<alice@mx.test>", "250 ")
	c.cmd("DATA", "354 ")
	c.write("Subject: long\r\nX-Long: " + strings.Repeat("y", 800<<10) + "\r\n\r\nbody\r\n.\r\n")
	if l := c.readLine(); !strings.HasPrefix(l, "500 5.5.2 Error: line too long") {
		t.Errorf("got %q, want 500 5.5.2 Error: line too long", l)
	}
	if !h.log.WaitFor(`reject: END-OF-MESSAGE from .*: 500 5\.5\.2 Error: line too long`, 3*time.Second) ||
		!h.log.WaitFor(`line longer than smtpd_line_length_limit \(65536 bytes\)`, 3*time.Second) {
		t.Errorf("the log does not say why:\n%s", h.log.String())
	}
}

// TestHeaderLimits: a header field over header_size_limit, or a header over
// header_total_limit, is refused with 552 5.3.4 once the client has sent
// the whole message, and the session goes on.
func TestHeaderLimits(t *testing.T) {
	t.Parallel()
	h := start(t, `config(header_size_limit = 2000, header_total_limit = 20000, smtpd_line_length_limit = 100000)`)
	c := dialReady(t, h.addr)
	defer c.Close()
	tests := []struct{ header, want string }{
		{"X-Big: " + strings.Repeat("z", 3000) + "\r\n", "552 5.3.4 Error: message header field too long"},
		{"X-Folded: a\r\n" + strings.Repeat("\tcontinued line of the same field\r\n", 100), "552 5.3.4 Error: message header field too long"},
		{strings.Repeat("X-Many: a field of its own\r\n", 1000), "552 5.3.4 Error: message header too long"},
		{"Subject: fine\r\n", "250 2.0.0 Ok: queued as"},
	}
	for _, tt := range tests {
		c.cmd("MAIL FROM:<ann@example.org>", "250 ")
		c.cmd("RCPT TO:<alice@mx.test>", "250 ")
		c.cmd("DATA", "354 ")
		c.cmd(tt.header+"\r\nbody\r\n.", tt.want)
	}
}

// TestDotCRAtTheEnd: "\r\n.\r" before the end of data is a line holding a
// bare CR after a stuffed dot, which go-smtp's dot-unstuffing would
// silently drop (and then miss the end of data). The message is refused
// and the connection closed; nothing different from what was sent is
// ever stored.
func TestDotCRAtTheEnd(t *testing.T) {
	t.Parallel()
	h := start(t, `config(smtpd_forbid_bare_newline = "normalize")`)
	c := dialReady(t, h.addr)
	defer c.Close()
	c.cmd("MAIL FROM:<ann@example.org>", "250 ")
	c.cmd("RCPT TO:<dotcr@mx.test>", "250 ")
	c.cmd("DATA", "354 ")
	c.write("Subject: x\r\n\r\nlast line\r\n.\r\r\n.\r\n")
	if l := c.readLine(); !strings.HasPrefix(l, "550 5.5.2 Error: bare <CR> received after a leading dot") {
		t.Errorf("got %q, want 550 5.5.2", l)
	}
	if l := c.readLine(); !strings.HasPrefix(l, "<error") {
		t.Errorf("got %q, want the connection closed", l)
	}
	h.settle()
	if got := h.mailbox("dotcr"); len(got) != 0 {
		t.Errorf("stored %q", got[0])
	}
}

// TestPipeArguments: pipe(8) macros are expanded once, and an address
// that would put an option ("-o...") on a command line bounces 5.1.3
// before the command runs (allow_min_user).
func TestPipeArguments(t *testing.T) {
	t.Parallel()
	// Pipes run as default_privs (nobody) when the tests run as root: the
	// script and its output file must be theirs to use.
	dir, err := os.MkdirTemp("", "pipeargs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	script := filepath.Join(dir, "record.sh")
	out := filepath.Join(dir, "argv")
	os.WriteFile(script, []byte("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >> "+out+"\necho --- >> "+out+"\ncat > /dev/null\n"), 0o755)
	os.WriteFile(out, nil, 0o666)
	os.Chmod(out, 0o666)
	h := start(t, fmt.Sprintf(`config(relay_domains = ["tickets.example.test"], networks = ["127.0.0.0/8"])
def route(rcpt, msg):
    if rcpt.domain == "tickets.example.test":
        return "pipe:%s ${user} ${recipient} ${sender}"
`, script))
	for _, tt := range []struct{ from, to string }{
		{"ann@example.org", "-oProxyCommand=id@tickets.example.test"},
		{"ann@example.org", `"${sender}"@tickets.example.test`},
		{"-oX@example.org", "ok@tickets.example.test"},
		{"ann@example.org", "ticket+-x@tickets.example.test"},
	} {
		if _, err := send(t, h.addr, tt.from, []string{tt.to}, "Subject: t\r\n\r\nx\r\n"); err != nil {
			t.Fatalf("send %s -> %s: %v", tt.from, tt.to, err)
		}
	}
	h.settle()
	for _, want := range []string{
		`to=<-oProxyCommand=id@tickets.example.test>, relay=pipe, .*dsn=5\.1\.3, status=bounced \(bad address syntax: \$\{user\} starts with "-"`,
		`to=<ok@tickets.example.test>, relay=pipe, .*dsn=5\.1\.3, status=bounced \(bad address syntax: \$\{sender\} starts with "-"`,
		`to=<\$\{sender\}@tickets.example.test>, relay=pipe, .*status=sent`,
		`to=<ticket\+-x@tickets.example.test>, relay=pipe, .*status=sent`,
	} {
		if !h.log.WaitFor(want, 3*time.Second) {
			t.Errorf("log lacks %s", want)
		}
	}
	got, _ := os.ReadFile(out)
	runs := strings.Split(strings.TrimSuffix(string(got), "---\n"), "---\n")
	sort.Strings(runs)
	if want := []string{"${sender}\n${sender}@tickets.example.test\nann@example.org\n", "ticket\nticket+-x@tickets.example.test\nann@example.org\n"}; !slices.Equal(runs, want) {
		t.Errorf("the command ran with %q, want %q", runs, want)
	}
	if bytes.Contains(got, []byte("-oProxyCommand")) {
		t.Error("an option from an address reached the command")
	}
}

// dialRaw connects and reads the banner, nothing more.
func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	rc := &rawClient{Conn: c, t: t}
	rc.expect("220 ")
	return rc
}

// TestMaildropTimeNotTrusted: the time a local user writes into a maildrop
// file does not become the message's arrival: delay= and the queue
// lifetime count from pickup.
func TestMaildropTimeNotTrusted(t *testing.T) {
	t.Parallel()
	h := start(t, "")
	id := maildrop.NewID()
	h.drop(&maildrop.Envelope{ID: id, Sender: "ann@mx.test", Rcpts: []string{"bob@mx.test"}, Time: time.Now().Add(-10 * 24 * time.Hour)}, "Subject: old\n\nclaims to be ten days old\n")
	if !h.log.WaitFor(id+`: to=<bob@mx.test>, relay=local, delay=\d\.\d\d, .*status=sent`, 5*time.Second) {
		t.Errorf("delay= counted from the maildrop file's claim:\n%s", h.log.String())
	}
	msgs := h.waitMailbox("bob", 1)
	if len(msgs) != 1 || bytes.Contains(msgs[0], []byte(time.Now().Add(-10*24*time.Hour).Format("02 Jan 2006"))) {
		t.Errorf("the Received: line carries the claimed time:\n%s", msgs)
	}
}

// TestAliasPipeDashedAddress: an alias or .forward pipe gets the addresses
// in its environment, where a script may pass them on as arguments: a
// sender starting with "-" bounces before the command runs.
func TestAliasPipeDashedAddress(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ran := filepath.Join(dir, "ran")
	h := start(t, fmt.Sprintf(`config(default_privs = "root")
def expand(rcpt):
    if rcpt.user == "list":
        return ["|/bin/sh -c 'touch %s'"]
`, ran))
	if _, err := send(t, h.addr, "-oX@example.org", []string{"list@mx.test"}, "Subject: t\r\n\r\nx\r\n"); err != nil {
		t.Fatal(err)
	}
	if !h.log.WaitFor(`relay=pipe, .*dsn=5\.1\.3, status=bounced \(bad address syntax: <-oX@example.org> starts with "-"`, 3*time.Second) {
		t.Errorf("no 5.1.3 bounce:\n%s", h.log.String())
	}
	if _, err := os.Stat(ran); err == nil {
		t.Error("the command ran")
	}
}
