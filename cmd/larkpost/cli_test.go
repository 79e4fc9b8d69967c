package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
)

// cliFiles writes a good config, a broken one and a message into a temp
// directory and returns their paths.
func cliFiles(t *testing.T) (good, broken, msg string) {
	t.Helper()
	dir := t.TempDir()
	good = filepath.Join(dir, "policy.star")
	broken = filepath.Join(dir, "broken.star")
	msg = filepath.Join(dir, "msg.eml")
	os.WriteFile(good, []byte("config(hostname = \"mx.cli.test\", data_dir = "+strconvQuote(filepath.Join(dir, "data"))+", listen = {\"smtp\": \"127.0.0.1:0\"})\n"), 0o600)
	os.WriteFile(broken, []byte("config(hostname = \n"), 0o600)
	os.WriteFile(msg, []byte("Subject: cli\r\n\r\nhello\r\n"), 0o600)
	return good, broken, msg
}

func strconvQuote(s string) string { b, _ := json.Marshal(s); return string(b) }

// cliCase is one run of the larkpost entry point: the exit status and
// text each stream must contain ("" checks nothing).
type cliCase struct {
	name   string
	args   []string
	code   int
	stdout string
	stderr string
	// notOut is text stdout must not contain.
	notOut string
}

func runCLICases(t *testing.T, cases []cliCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(c.args, &stdout, &stderr)
			if code != c.code || !strings.Contains(stdout.String(), c.stdout) || !strings.Contains(stderr.String(), c.stderr) ||
				(c.notOut != "" && strings.Contains(stdout.String(), c.notOut)) {
				t.Errorf("larkpost %s: exit %d, want %d (stdout containing %q, stderr %q)\nstdout:\n%s\nstderr:\n%s",
					strings.Join(c.args, " "), code, c.code, c.stdout, c.stderr, stdout.String(), stderr.String())
			}
		})
	}
}

// TestConfigArgument: a lone FILE.star is the config when -c is not
// given, and no verb ignores an argument it does not take.
func TestConfigArgument(t *testing.T) {
	t.Setenv("LARKPOST_CONFIG", "")
	good, broken, msg := cliFiles(t)
	runCLICases(t, []cliCase{
		{name: "check broken", args: []string{"check", broken}, code: 1, stderr: "broken.star:", notOut: "default.star"},
		{name: "check good", args: []string{"check", good}, code: 0, stdout: good + ": ok (hostname mx.cli.test"},
		{name: "check -c wins", args: []string{"check", "-c", good}, code: 0, stdout: good + ": ok"},
		{name: "check flag after", args: []string{"check", good, "-c", good}, code: 2, stderr: `unexpected argument`},
		{name: "check -c and a file", args: []string{"check", "-c", good, broken}, code: 2, stderr: `unexpected argument "` + broken + `"`},
		{name: "check two files", args: []string{"check", good, broken}, code: 2, stderr: "unexpected argument"},
		{name: "check extra word", args: []string{"check", "extra"}, code: 2, stderr: `larkpost check: unexpected argument "extra"`},
		{name: "serve broken", args: []string{"serve", broken}, code: 1, stderr: "config " + broken + " has errors; not starting"},
		{name: "serve extra", args: []string{"serve", good, "extra"}, code: 2, stderr: `larkpost serve: unexpected argument "extra"`},
		{name: "trace config", args: []string{"trace", good, "--to", "x@example.org"}, code: 0, stdout: "config   " + good},
		{name: "trace broken config", args: []string{"trace", broken, "--to", "x@example.org"}, code: 1, stderr: "broken.star:"},
		{name: "trace config and message", args: []string{"trace", "--to", "x@example.org", msg, good}, code: 0, stdout: "config   " + good},
		{name: "trace message stays", args: []string{"trace", "-c", good, "--to", "x@example.org", msg}, code: 0, stdout: "config   " + good},
		{name: "trace two messages", args: []string{"trace", "--to", "x@example.org", msg, msg}, code: 2, stderr: "at most one message file"},
		{name: "test broken", args: []string{"test", broken}, code: 1, stderr: "broken.star:"},
		{name: "status broken", args: []string{"status", broken}, code: 2, stderr: "the config has errors (larkpost check lists them; first: " + broken + ":"},
		{name: "status no server", args: []string{"status", good}, code: 2, stderr: "no larkpost server is running"},
		{name: "status extra", args: []string{"status", good, "extra"}, code: 2, stderr: `larkpost status: unexpected argument "extra"`},
		{name: "reload broken", args: []string{"reload", broken}, code: 2, stderr: "the config has errors"},
		{name: "reload extra", args: []string{"reload", "extra"}, code: 2, stderr: `larkpost reload: unexpected argument "extra"`},
		{name: "queue list broken", args: []string{"queue", "list", broken}, code: 2, stderr: "no larkpost server is running"},
		{name: "dkim dns broken", args: []string{"dkim", "dns", broken}, code: 1, stderr: "broken.star:"},
		{name: "dkim dns extra", args: []string{"dkim", "dns", "-c", good, "extra"}, code: 2, stderr: `larkpost dkim dns: unexpected argument "extra"`},
		{name: "map query broken", args: []string{"map", "query", broken, "alias_maps", "x"}, code: 1, stderr: "broken.star:"},
		{name: "map query extra", args: []string{"map", "query", "-c", good, "a", "b", "c"}, code: 2, stderr: "usage: larkpost map query"},
		{name: "version extra", args: []string{"version", "extra"}, code: 2, stderr: `larkpost version: unexpected argument "extra"`},
		{name: "help extra", args: []string{"help", "check", "extra"}, code: 2, stderr: `larkpost help: unexpected argument "extra"`},
	})
}

// TestHelp: every way of asking for help prints usage on stdout and
// exits 0; an unknown command exits 2 with the command list.
func TestHelp(t *testing.T) {
	cases := []cliCase{
		{name: "--help", args: []string{"--help"}, code: 0, stdout: "larkpost serve"},
		{name: "-h", args: []string{"-h"}, code: 0, stdout: "larkpost serve"},
		{name: "help", args: []string{"help"}, code: 0, stdout: "larkpost serve"},
		{name: "none", args: nil, code: 2, stderr: "larkpost serve"},
		{name: "unknown", args: []string{"frobnicate"}, code: 2, stderr: "unknown command \"frobnicate\"\nusage: larkpost COMMAND"},
		{name: "help unknown", args: []string{"help", "frobnicate"}, code: 2, stderr: "larkpost check"},
		{name: "sendmail --help", args: []string{"sendmail", "--help"}, code: 0, stdout: "usage: larkpost sendmail"},
		{name: "sendmail -h is the hop count", args: []string{"sendmail", "-h"}, code: exUsage, stderr: "option -h needs an argument"},
		{name: "queue list --help", args: []string{"queue", "list", "--help"}, code: 0, stdout: "-state STATE"},
		{name: "map query -h", args: []string{"map", "query", "-h"}, code: 0, stdout: "usage: larkpost map query"},
		{name: "dkim keygen --help", args: []string{"dkim", "keygen", "--help"}, code: 0, stdout: "-algorithm TYPE"},
		{name: "bad flag", args: []string{"check", "--bogus"}, code: 2, stderr: "flag provided but not defined: -bogus"},
	}
	for n := range verbs {
		cases = append(cases,
			cliCase{name: n + " --help", args: []string{n, "--help"}, code: 0, stdout: "usage: larkpost " + n},
			cliCase{name: "help " + n, args: []string{"help", n}, code: 0, stdout: "usage: larkpost " + n})
		if n != "sendmail" {
			cases = append(cases, cliCase{name: n + " -h", args: []string{n, "-h"}, code: 0, stdout: "usage: larkpost " + n})
		}
	}
	runCLICases(t, cases)
}

// TestQueueUsage: usage errors of queue exit 2 before any server is asked.
func TestQueueUsage(t *testing.T) {
	t.Setenv("LARKPOST_CONFIG", "")
	good, _, _ := cliFiles(t)
	runCLICases(t, []cliCase{
		{name: "state typo", args: []string{"queue", "list", "-c", good, "--state", "deffered"}, code: 2, stderr: `unknown --state "deffered" (want one of active, deferred, hold, corrupt)`},
		{name: "state ok", args: []string{"queue", "list", "-c", good, "--state", "deferred"}, code: 2, stderr: "no larkpost server is running"},
		{name: "show without id", args: []string{"queue", "show", "-c", good}, code: 2, stderr: "give one message id"},
		{name: "show two ids", args: []string{"queue", "show", "-c", good, "A", "B"}, code: 2, stderr: "give one message id"},
		{name: "delete nothing", args: []string{"queue", "delete", "-c", good}, code: 2, stderr: "give message ids, filters or --all"},
		{name: "unknown sub", args: []string{"queue", "lsit"}, code: 2, stderr: `unknown command "lsit" (want one of list, show`},
		{name: "none", args: []string{"queue"}, code: 2, stderr: "usage: larkpost queue"},
		{name: "bad duration", args: []string{"queue", "list", "--older-than", "soon"}, code: 2},
	})
}

// TestQueueListJSONEmpty: an empty queue is "messages": [], not null.
func TestQueueListJSONEmpty(t *testing.T) {
	s := startServer(t, "")
	cfg := s.cmd.Args[len(s.cmd.Args)-1]
	runCLICases(t, []cliCase{
		{name: "json", args: []string{"queue", "list", "--json", "-c", cfg}, code: 0, stdout: `"messages": []`},
		{name: "config argument", args: []string{"queue", "list", cfg, "--json"}, code: 0, stdout: `"messages": []`},
		{name: "text", args: []string{"queue", "list", "-c", cfg}, code: 0, stdout: "Mail queue is empty"},
	})
}

func TestVersionLine(t *testing.T) {
	info := func(v string, settings ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "github.com/larkpost/larkpost", Version: v}}
		for i := 0; i+1 < len(settings); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return bi
	}
	for _, c := range []struct {
		name, linked string
		bi           *debug.BuildInfo
		want         string
	}{
		{"module version", "", info("v1.2.3"), "larkpost v1.2.3 (go1.26.0)"},
		{"linked wins", "v9.0.0", info("v1.2.3"), "larkpost v9.0.0 (go1.26.0)"},
		{"revision", "", info("(devel)", "vcs.revision", "0123456789abcdef0123", "vcs.time", "2026-12-01T10:00:00Z"),
			"larkpost 0123456789ab 2026-12-01T10:00:00Z (go1.26.0)"},
		{"dirty", "", info("(devel)", "vcs.revision", "0123456789abcdef", "vcs.modified", "true"), "larkpost 0123456789ab+dirty (go1.26.0)"},
		{"pseudo-version and revision", "", info("v0.0.0-20261201100000-0123456789ab", "vcs.revision", "0123456789abcdef"),
			"larkpost v0.0.0-20261201100000-0123456789ab 0123456789ab (go1.26.0)"},
		{"nothing known", "", info("(devel)"), "larkpost (devel) (go1.26.0)"},
		{"no build info", "", nil, "larkpost (devel)"},
	} {
		if got := versionLine(c.linked, c.bi); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
	var out bytes.Buffer
	if code := run([]string{"version"}, &out, &out); code != 0 || !strings.HasPrefix(out.String(), "larkpost ") || !strings.Contains(out.String(), "go1.") {
		t.Errorf("larkpost version: exit %d, %q", code, out.String())
	}
}

// TestServeStartErrors: a second server on one data_dir, or on a port in
// use, says so instead of Badger's or the kernel's words.
func TestServeStartErrors(t *testing.T) {
	t.Setenv("LARKPOST_CONFIG", "")
	s := startServer(t, "")
	cfg := s.cmd.Args[len(s.cmd.Args)-1]

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := t.TempDir()
	busyPort := filepath.Join(dir, "busy.star")
	src := fmt.Sprintf("config(listen = {\"smtp\": %q}, data_dir = %q, hostname = \"mx.test\", resolvers = [])\n", l.Addr().String(), filepath.Join(dir, "data"))
	if os.Geteuid() == 0 {
		src += "config(allow_root = True)\n" // one process, as startServer's
	}
	os.WriteFile(busyPort, []byte(src), 0o600)

	runCLICases(t, []cliCase{
		{name: "data_dir in use", args: []string{"serve", "-c", cfg}, code: 1,
			stderr: fmt.Sprintf("fatal: another larkpost (pid %d) is using %s", s.cmd.Process.Pid, s.data)},
		{name: "port in use", args: []string{"serve", busyPort}, code: 1,
			stderr: "fatal: address in use: is another server listening on " + l.Addr().String() + "?"},
	})

	// A port below 1024 without root gets a hint; as root, or above
	// 1024, EACCES is something else and is printed as it is.
	denied := func(port int) error {
		return fmt.Errorf("listener smtp: %w", &net.OpError{Op: "listen", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(0, 0, 0, 0), Port: port},
			Err: os.NewSyscallError("bind", syscall.EACCES)})
	}
	for _, c := range []struct {
		port, euid int
		hint       bool
	}{{25, 1000, true}, {25, 0, false}, {2525, 1000, false}} {
		got := startError(denied(c.port), t.TempDir(), c.euid)
		if strings.Contains(got, "ports below 1024 need root (start larkpost serve as root) or CAP_NET_BIND_SERVICE") != c.hint ||
			!strings.Contains(got, "permission denied") {
			t.Errorf("startError(port %d, EACCES) as uid %d: %q; want hint %v", c.port, c.euid, got, c.hint)
		}
	}
}

// TestControlWithBrokenConfig: a typo in the config does not lock the
// admin out of a server that runs: status and queue ask the server of
// the data_dir written in it, with a warning; a control socket the user
// may not open says so instead of "no server".
func TestControlWithBrokenConfig(t *testing.T) {
	s := startServer(t, "")
	broken := filepath.Join(t.TempDir(), "broken.star")
	os.WriteFile(broken, []byte(fmt.Sprintf("config(data_dir = %q, hostnme = \"typo\")\n", s.data)), 0o600)
	runCLICases(t, []cliCase{
		{name: "status", args: []string{"status", "-c", broken}, code: 0, stdout: "queue", stderr: "warning: the config has errors"},
		{name: "queue list", args: []string{"queue", "list", broken, "--json"}, code: 0, stdout: `"messages": []`, stderr: "asking the server of data_dir " + s.data},
	})
	if os.Geteuid() != 0 {
		return // the permission case needs a second user; CI runs this as root
	}
	// As another user, who may not reach the server's data_dir: the
	// answer says so, not "no server is running".
	dir, err := os.MkdirTemp("", "larkpost-cli-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "larkpost.test")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(bin, b, 0o755)
	good := filepath.Join(dir, "good.star")
	os.WriteFile(good, []byte(fmt.Sprintf("config(data_dir = %q)\n", s.data)), 0o644)
	cmd := exec.Command(bin, "status", "-c", good)
	cmd.Env = append(os.Environ(), "LARKPOST_AS_MAIN=1", "LARKPOST_CONFIG=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), "permission denied on "+filepath.Join(s.data, "control.sock")) || !strings.Contains(string(out), "control_group") {
		t.Errorf("status as nobody: exit %d, %v:\n%s", code, err, out)
	}
}

// TestPostfixConfigGiven: a main.cf where a script was wanted gets a hint
// to import it; a broken script does not.
func TestPostfixConfigGiven(t *testing.T) {
	t.Setenv("LARKPOST_CONFIG", "")
	dir := t.TempDir()
	maincf := filepath.Join(dir, "main.cf")
	os.WriteFile(maincf, []byte("# main.cf\nmyhostname = mx.example.com\nmydestination = $myhostname, localhost\nrelayhost =\n"), 0o600)
	renamed := filepath.Join(dir, "postfix.conf")
	os.WriteFile(renamed, []byte("myhostname = mx.example.com\nmydomain = example.com\nmyorigin = $mydomain\ninet_interfaces = all\n"), 0o600)
	_, broken, _ := cliFiles(t)
	hint := "looks like a Postfix configuration, not a larkpost script: convert it with `larkpost import postfix " + dir + "`"
	runCLICases(t, []cliCase{
		{name: "check -c main.cf", args: []string{"check", "-c", maincf}, code: 1, stderr: hint},
		{name: "serve -c renamed main.cf", args: []string{"serve", "-c", renamed}, code: 1, stderr: hint},
	})
	var stderr bytes.Buffer
	if run([]string{"check", broken}, &bytes.Buffer{}, &stderr); strings.Contains(stderr.String(), "looks like a Postfix") {
		t.Errorf("a broken script was taken for a Postfix config:\n%s", stderr.String())
	}
}
