package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/maildrop"
)

func init() {
	// TestMain hands os.Args[1:] straight to run, past main's look at the
	// name the binary was invoked under; this puts it back, so the test
	// binary can stand in for larkpost linked as sendmail, mailq or
	// newaliases too.
	if os.Getenv("LARKPOST_AS_MAIN") == "1" {
		os.Args = append(os.Args[:1:1], invokedAs(os.Args[0], os.Args[1:])...)
	}
}

func TestSendmailArgs(t *testing.T) {
	t.Setenv("LARKPOST_CONFIG", "")
	def := sendmailOpts{config: "", mode: 'm', dotEnds: true}
	with := func(f func(o *sendmailOpts)) sendmailOpts {
		o := def
		f(&o)
		return o
	}
	tests := []struct {
		args []string
		want sendmailOpts
		err  string
	}{
		{[]string{"bob"}, with(func(o *sendmailOpts) { o.rcpts = []string{"bob"} }), ""},
		{[]string{"-t", "-i"}, with(func(o *sendmailOpts) { o.extract, o.dotEnds = true, false }), ""},
		{[]string{"-ti"}, with(func(o *sendmailOpts) { o.extract, o.dotEnds = true, false }), ""},
		{[]string{"-oi", "a", "b"}, with(func(o *sendmailOpts) { o.dotEnds, o.rcpts = false, []string{"a", "b"} }), ""},
		{[]string{"-o", "i", "a"}, with(func(o *sendmailOpts) { o.dotEnds, o.rcpts = false, []string{"a"} }), ""},
		{[]string{"-fann@x.test", "a"}, with(func(o *sendmailOpts) { o.from, o.hasFrom, o.rcpts = "ann@x.test", true, []string{"a"} }), ""},
		{[]string{"-f", "ann@x.test", "a"}, with(func(o *sendmailOpts) { o.from, o.hasFrom, o.rcpts = "ann@x.test", true, []string{"a"} }), ""},
		{[]string{"-r", "<>", "a"}, with(func(o *sendmailOpts) { o.from, o.hasFrom, o.rcpts = "<>", true, []string{"a"} }), ""},
		{[]string{"-F", "Cron Daemon", "-t"}, with(func(o *sendmailOpts) { o.fullName, o.extract = "Cron Daemon", true }), ""},
		{[]string{"-FCron", "a"}, with(func(o *sendmailOpts) { o.fullName, o.rcpts = "Cron", []string{"a"} }), ""},
		{[]string{"-c", "x.star", "-bs"}, with(func(o *sendmailOpts) { o.config, o.mode = "x.star", 's' }), ""},
		{[]string{"-bp"}, with(func(o *sendmailOpts) { o.mode = 'p' }), ""},
		{[]string{"-b", "i"}, with(func(o *sendmailOpts) { o.mode = 'i' }), ""},
		{[]string{"-I"}, with(func(o *sendmailOpts) { o.mode = 'i' }), ""},
		{[]string{"-q"}, with(func(o *sendmailOpts) { o.mode = 'q' }), ""},
		{[]string{"-q1h", "a"}, with(func(o *sendmailOpts) { o.rcpts = []string{"a"} }), ""},
		// What sendmail and Postfix accept and ignore.
		{[]string{"-v", "-U", "-m", "-em", "-oem", "-odb", "-oA/etc/aliases", "-N", "never", "-Z9", "-bm", "a"}, with(func(o *sendmailOpts) { o.rcpts = []string{"a"} }), ""},
		{[]string{"--", "-odd"}, with(func(o *sendmailOpts) { o.rcpts = []string{"-odd"} }), ""},
		{[]string{"a", "-t"}, with(func(o *sendmailOpts) { o.rcpts = []string{"a", "-t"} }), ""},
		{[]string{"-f"}, def, "option -f needs an argument"},
		{[]string{"-bd"}, def, "-bd is not supported: the server is `larkpost serve`"},
		{[]string{"-bv", "a"}, def, "-bv is not supported"},
	}
	for _, tt := range tests {
		got, err := parseSendmailArgs(tt.args)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("%q: error %v, want %q", tt.args, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.args, err)
			continue
		}
		if !reflect.DeepEqual(*got, tt.want) {
			t.Errorf("%q:\n got %+v\nwant %+v", tt.args, *got, tt.want)
		}
	}
}

func TestSendmailReadMessage(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		dotEnds bool
		want    string
	}{
		{"lone dot ends", "a\n.\nb\n", true, "a\n"},
		{"lone dot with CRLF ends", "a\r\n.\r\nb\r\n", true, "a\r\n"},
		{"dot at EOF ends", "a\n.", true, "a\n"},
		{"leading dots stay", "..a\n.b\n", true, "..a\n.b\n"},
		{"dot inside a line stays", "a.\n x .\n", true, "a.\n x .\n"},
		{"-i keeps a lone dot", "a\n.\nb\n", false, "a\n.\nb\n"},
		{"no final newline", "a\nb", true, "a\nb"},
		{"empty", "", true, ""},
	}
	for _, tt := range tests {
		got, err := readMessage(strings.NewReader(tt.in), tt.dotEnds, 1<<20)
		if err != nil || string(got) != tt.want {
			t.Errorf("%s: %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
	// A line longer than the read buffer, ending in a dot, is no end.
	long := strings.Repeat("x", 10000) + "\n.\n"
	if got, _ := readMessage(strings.NewReader(long+"y\n"), true, 1<<20); string(got) != long[:10001] {
		t.Errorf("long line: read %d bytes, want %d", len(got), 10001)
	}
	if _, err := readMessage(strings.NewReader(strings.Repeat("x\n", 100)), false, 100); err == nil {
		t.Errorf("a message over the limit was read")
	}
}

// sendmailConfig writes a config for data dir DIR/data; the server it
// describes need not run.
func sendmailConfig(t *testing.T, extra string) (cfg, data string) {
	t.Helper()
	dir := t.TempDir()
	data = filepath.Join(dir, "data")
	cfg = filepath.Join(dir, "larkpost.star")
	text := fmt.Sprintf("config(listen = {\"smtp\": \"127.0.0.1:0\"}, data_dir = %q, hostname = \"mx.test\", resolvers = [], message_size_limit = 4096)\n%s", data, extra)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg, data
}

// runSendmailCmd runs `larkpost sendmail -c cfg args...` with stdin.
func runSendmailCmd(t *testing.T, cfg, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := larkpost(append([]string{"sendmail", "-c", cfg}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	code = exitCode(cmd.Run())
	return out.String(), errb.String(), code
}

type dropped struct {
	env *maildrop.Envelope
	msg string
}

func maildropContents(t *testing.T, data string) []dropped {
	t.Helper()
	files, err := maildrop.List(filepath.Join(data, "maildrop"))
	if err != nil {
		t.Fatal(err)
	}
	var out []dropped
	for _, f := range files {
		env, msg, err := maildrop.Read(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, dropped{env, string(msg)})
	}
	return out
}

func TestSendmailSubmits(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Fatalf("sendmail needs the current user: %v", err)
	}
	self := me.Username + "@mx.test"
	const plain = "Subject: hi\n\nbody\n"
	tests := []struct {
		name     string
		args     []string
		stdin    string
		code     int
		stderr   string   // regexp; "" means silent
		sender   string   // the envelope sender
		rcpts    []string // nil: nothing submitted
		has      []string // regexps the stored message matches
		hasNot   []string
		bodyTail string // the stored message ends so
	}{
		{name: "recipients are qualified with origin", args: []string{"bob", "carol@x.test"}, stdin: plain,
			sender: self, rcpts: []string{"bob@mx.test", "carol@x.test"},
			has: []string{`(?m)^From: .*<` + regexp.QuoteMeta(self) + `>\n`, `(?m)^Date: \w{3}, \d\d \w{3} \d{4} `, `(?m)^Message-ID: <\d{14}\.[0-9A-Z]{13}@mx\.test>\n`, `^Subject: hi\n`, `\n\nbody\n$`}},
		{name: "a lone dot ends the message", args: []string{"bob"}, stdin: "Subject: x\n\nline\n.\nafter\n",
			sender: self, rcpts: []string{"bob@mx.test"}, bodyTail: "\nline\n"},
		{name: "-i keeps a lone dot", args: []string{"-i", "bob"}, stdin: "Subject: x\n\nline\n.\nafter\n",
			sender: self, rcpts: []string{"bob@mx.test"}, bodyTail: "\nline\n.\nafter\n"},
		{name: "-oi keeps a lone dot", args: []string{"-oi", "bob"}, stdin: "Subject: x\n\nline\n.\nafter\n",
			sender: self, rcpts: []string{"bob@mx.test"}, bodyTail: "\nline\n.\nafter\n"},
		{name: "-t takes To, Cc and Bcc and removes Bcc", args: []string{"-t"},
			stdin:  "To: a@x.test, bob\nCc: \"Doe, J\" <c@x.test>,\n d@x.test\nBcc: secret@x.test\nSubject: x\n\nbody\n",
			sender: self, rcpts: []string{"a@x.test", "bob@mx.test", "c@x.test", "d@x.test", "secret@x.test"},
			has: []string{`(?m)^To: a@x.test, bob\n`}, hasNot: []string{`(?im)^bcc:`, `secret`}},
		{name: "-t adds the arguments and drops duplicates", args: []string{"-t", "extra@x.test", "A@X.TEST"}, stdin: "To: a@x.test\nCc: Root <root>\n\nbody\n",
			sender: self, rcpts: []string{"extra@x.test", "A@X.TEST", "root@mx.test"}},
		{name: "-t follows Resent- headers", args: []string{"-t"}, stdin: "To: old@x.test\nResent-To: new@x.test\nResent-Bcc: hidden@x.test\n\nbody\n",
			sender: self, rcpts: []string{"new@x.test", "hidden@x.test"}, hasNot: []string{`hidden`}},
		{name: "Bcc goes without -t too", args: []string{"bob"}, stdin: "Bcc: secret@x.test\nSubject: x\n\nbody\n",
			sender: self, rcpts: []string{"bob@mx.test"}, hasNot: []string{`secret`}},
		{name: "-f sets the sender", args: []string{"-f", "ann@example.org", "bob"}, stdin: plain,
			sender: "ann@example.org", rcpts: []string{"bob@mx.test"}, has: []string{`(?m)^From: <ann@example.org>\n`}},
		{name: "-f attached and unqualified", args: []string{"-fann", "bob"}, stdin: plain,
			sender: "ann@mx.test", rcpts: []string{"bob@mx.test"}},
		{name: "-f <> is the null sender", args: []string{"-f", "<>", "bob"}, stdin: plain,
			sender: "", rcpts: []string{"bob@mx.test"}, has: []string{`(?m)^From: <MAILER-DAEMON@mx.test>\n`}},
		{name: "-F adds From with the name", args: []string{"-F", "Cron Daemon", "bob"}, stdin: plain,
			sender: self, rcpts: []string{"bob@mx.test"}, has: []string{`(?m)^From: "Cron Daemon" <` + regexp.QuoteMeta(self) + `>\n`}},
		{name: "-F leaves an existing From", args: []string{"-F", "Cron Daemon", "bob"}, stdin: "From: Me <me@x.test>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <a@b>\n\nbody\n",
			sender: self, rcpts: []string{"bob@mx.test"}, has: []string{`^From: Me <me@x.test>\nDate: Mon, 1 Jan 2024 00:00:00 \+0000\nMessage-ID: <a@b>\n\nbody\n$`}, hasNot: []string{`Cron`}},
		{name: "CRLF input gets CRLF headers", args: []string{"bob"}, stdin: "Subject: x\r\n\r\nbody\r\n",
			sender: self, rcpts: []string{"bob@mx.test"}, has: []string{`(?m)^Date: [^\r\n]*\r\n`, `Subject: x\r\n(.*\r\n)*\r\nbody\r\n$`}},
		{name: "a message without a header gets one", args: []string{"bob"}, stdin: "just text\n",
			sender: self, rcpts: []string{"bob@mx.test"}, has: []string{`(?s)^From: .*\nMessage-ID: [^\n]*\n\njust text\n$`}},
		{name: "a mailbox From_ line is dropped", args: []string{"bob"}, stdin: "From ann Mon Jan  1 00:00:00 2024\nSubject: x\n\nbody\n",
			sender: self, rcpts: []string{"bob@mx.test"}, hasNot: []string{`From ann`}},
		{name: "ignored options", args: []string{"-v", "-U", "-m", "-em", "-odb", "-N", "never", "bob"}, stdin: plain,
			sender: self, rcpts: []string{"bob@mx.test"}},
		{name: "no recipients", args: nil, stdin: plain, code: 64, stderr: `^larkpost sendmail: no recipients\n$`},
		{name: "-t without recipient headers", args: []string{"-t"}, stdin: plain, code: 64, stderr: `^larkpost sendmail: no recipients\n$`},
		{name: "bad recipient", args: []string{"bob@"}, stdin: plain, code: 64, stderr: `^larkpost sendmail: recipient "bob@": `},
		{name: "bad header address", args: []string{"-t"}, stdin: "To: <a b c>\n\n", code: 65, stderr: `^larkpost sendmail: To: header: `},
		{name: "too big", args: []string{"bob"}, stdin: strings.Repeat("x", 5000), code: 65, stderr: `message too big \(message_size_limit is 4096 bytes\)`},
		{name: "too big once queued with CRLF", args: []string{"bob"}, stdin: strings.Repeat("x\n", 1900), code: 65, stderr: `message too big: \d+ bytes as queued \(message_size_limit is 4096 bytes\)`},
		{name: "-bd", args: []string{"-bd"}, code: 64, stderr: `^larkpost sendmail: -bd is not supported`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, data := sendmailConfig(t, "")
			stdout, stderr, code := runSendmailCmd(t, cfg, tt.stdin, tt.args...)
			if code != tt.code || stdout != "" || !regexp.MustCompile(tt.stderr).MatchString(stderr) || tt.stderr == "" && stderr != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, no stdout, stderr matching %q", code, stdout, stderr, tt.code, tt.stderr)
			}
			got := maildropContents(t, data)
			if tt.rcpts == nil {
				if len(got) != 0 {
					t.Fatalf("submitted %+v", got[0].env)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("%d files in the maildrop, want 1", len(got))
			}
			env, msg := got[0].env, got[0].msg
			if env.Sender != tt.sender || !reflect.DeepEqual(env.Rcpts, tt.rcpts) {
				t.Errorf("envelope from <%s> to %v, want <%s> to %v", env.Sender, env.Rcpts, tt.sender, tt.rcpts)
			}
			if env.UID != os.Getuid() || env.User != me.Username || time.Since(env.Time) > time.Minute {
				t.Errorf("envelope uid %d user %q time %v", env.UID, env.User, env.Time)
			}
			for _, re := range tt.has {
				if !regexp.MustCompile(re).MatchString(msg) {
					t.Errorf("stored message does not match %s:\n%s", re, msg)
				}
			}
			for _, re := range tt.hasNot {
				if regexp.MustCompile(re).MatchString(msg) {
					t.Errorf("stored message matches %s:\n%s", re, msg)
				}
			}
			if !strings.HasSuffix(msg, tt.bodyTail) {
				t.Errorf("stored message ends %q, want %q", msg[max(0, len(msg)-30):], tt.bodyTail)
			}
		})
	}
}

// TestSendmailServerDown: mail submitted while no server runs is
// delivered once the server starts, exactly once, and the maildrop empties.
func TestSendmailServerDown(t *testing.T) {
	cfg, data := sendmailConfig(t, "")
	if _, stderr, code := runSendmailCmd(t, cfg, "Subject: offline\n\nqueued while down\n", "bob"); code != 0 || stderr != "" {
		t.Fatalf("sendmail: exit %d: %s", code, stderr)
	}
	if n := len(maildropContents(t, data)); n != 1 {
		t.Fatalf("%d files in the maildrop, want 1", n)
	}
	s := runServer(t, cfg, data)
	defer s.cmd.Process.Signal(syscall.SIGTERM)
	box := filepath.Join(data, "mail", "bob")
	if n := waitCount(t, box, 1); n != 1 {
		t.Fatalf("%d messages delivered, want 1", n)
	}
	time.Sleep(1500 * time.Millisecond) // more than a pickup interval
	if n := countMaildir(t, box); n != 1 {
		t.Errorf("%d copies delivered, want exactly 1", n)
	}
	if n := len(maildropContents(t, data)); n != 0 {
		t.Errorf("%d files left in the maildrop", n)
	}
	files, _ := filepath.Glob(filepath.Join(box, "new", "*"))
	if b, err := os.ReadFile(files[0]); err != nil || !bytes.Contains(b, []byte("Received: by mx.test (larkpost, from userid ")) || !bytes.Contains(b, []byte("\n\nqueued while down\n")) {
		t.Errorf("delivered message (%v):\n%s", err, b)
	}
}

// TestSendmailWhileServing: a submission is picked up within about two
// seconds, and -bs and -bp reach the running server.
func TestSendmailWhileServing(t *testing.T) {
	cfg, data := sendmailConfig(t, "")
	s := runServer(t, cfg, data)
	defer s.cmd.Process.Signal(syscall.SIGTERM)
	box := filepath.Join(data, "mail", "bob")

	start := time.Now()
	if _, stderr, code := runSendmailCmd(t, cfg, "Subject: online\n\nhello\n", "bob"); code != 0 || stderr != "" {
		t.Fatalf("sendmail: exit %d: %s", code, stderr)
	}
	if n := waitCount(t, box, 1); n != 1 {
		t.Fatalf("%d messages delivered, want 1", n)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("delivered after %v, want about 2s at most", d)
	}

	session := "EHLO client.test\r\nMAIL FROM:<ann@x.test>\r\nRCPT TO:<bob@mx.test>\r\nDATA\r\nSubject: bs\r\n\r\nby -bs\r\n.\r\nQUIT\r\n"
	stdout, stderr, code := runSendmailCmd(t, cfg, session, "-bs")
	if code != 0 || !strings.HasPrefix(stdout, "220 ") || !strings.Contains(stdout, "250 2.0.0 Ok: queued as ") || !strings.Contains(stdout, "\r\n221 ") {
		t.Fatalf("-bs: exit %d, stderr %q, session:\n%s", code, stderr, stdout)
	}
	if n := waitCount(t, box, 2); n != 2 {
		t.Errorf("%d messages delivered after -bs, want 2", n)
	}
	if stdout, stderr, code := runSendmailCmd(t, cfg, "", "-bp"); code != 0 || !strings.Contains(stdout, "Mail queue is empty") {
		t.Errorf("-bp: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// TestSendmailRefusedByHook: the policy sees listener "sendmail", and
// what it refuses is kept in maildrop/rejected with a log line.
func TestSendmailRefusedByHook(t *testing.T) {
	cfg, data := sendmailConfig(t, `
def on_rcpt(tx, rcpt):
    if tx.conn.listener == "sendmail" and rcpt.user == "nobody":
        return reject("no such user here")
`)
	s := runServer(t, cfg, data)
	defer s.cmd.Process.Signal(syscall.SIGTERM)
	const msg = "Subject: refused\n\nkeep me\n"
	if _, stderr, code := runSendmailCmd(t, cfg, msg, "nobody"); code != 0 || stderr != "" {
		t.Fatalf("sendmail: exit %d: %s", code, stderr)
	}
	waitLog(t, s, "reject: sendmail from local: 550 5.7.1 no such user here; stage=RCPT")
	rejected, _ := filepath.Glob(filepath.Join(data, "maildrop", "rejected", "*"))
	if len(rejected) != 1 {
		t.Fatalf("rejected/ holds %v, want one message", rejected)
	}
	env, body, err := maildrop.Read(rejected[0])
	if err != nil || !strings.Contains(env.Reason, "no such user here") || !strings.HasPrefix(string(body), "Subject: refused\n") || !strings.HasSuffix(string(body), "\n\nkeep me\n") {
		t.Errorf("rejected copy: %+v %q %v", env, body, err)
	}
	if n := len(maildropContents(t, data)); n != 0 {
		t.Errorf("%d files left in maildrop/new", n)
	}
}

// TestSendmailLinks: larkpost linked as sendmail, mailq or newaliases is
// that program.
func TestSendmailLinks(t *testing.T) {
	cfg, data := sendmailConfig(t, "")
	bin, err := filepath.Abs(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tests := []struct {
		name   string
		args   []string
		code   int
		output string // regexp over stdout and stderr
		queued int
	}{
		{"sendmail", []string{"-oi", "-t"}, 0, `^$`, 1},
		{"newaliases", nil, 0, `^newaliases: larkpost reads aliases directly; nothing to do\n$`, 0},
		{"mailq", nil, 2, `no larkpost server is running`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			link := filepath.Join(dir, tt.name)
			if err := os.Symlink(bin, link); err != nil {
				t.Fatal(err)
			}
			before := len(maildropContents(t, data))
			cmd := exec.Command(link, tt.args...)
			cmd.Env = append(os.Environ(), "LARKPOST_AS_MAIN=1", "LARKPOST_CONFIG="+cfg)
			cmd.Stdin = strings.NewReader("To: bob\nSubject: via link\n\nx\n")
			out, err := cmd.CombinedOutput()
			if code := exitCode(err); code != tt.code || !regexp.MustCompile(tt.output).Match(out) {
				t.Errorf("exit %d, output %q; want exit %d and output matching %s", code, out, tt.code, tt.output)
			}
			if n := len(maildropContents(t, data)) - before; n != tt.queued {
				t.Errorf("%d messages submitted, want %d", n, tt.queued)
			}
		})
	}
}
