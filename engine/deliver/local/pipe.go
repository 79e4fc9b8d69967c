package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/larkpost/larkpost/rules/postfix"
)

// PipeRequest is a delivery to a command from an alias or .forward.
type PipeRequest struct {
	Command  string   // run with /bin/sh -c, as local(8) does
	Argv     []string // run directly, without a shell, as pipe(8) does (wins over Command)
	Sender   string
	Rcpt     string // the recipient the pipe was expanded for
	OrigRcpt string
	Body     Body // CRLF; the command gets LF line endings
	Timeout  time.Duration
	User     string // run as this user when we are root (default_privs)
	Dir      string // working directory; "" = /
	// SizeLimit is the largest file the command may write, as Postfix's
	// local(8) passes mailbox_size_limit down as RLIMIT_FSIZE; 0 = none.
	SizeLimit int64
}

// sysexits(3) codes that local(8) treats as temporary.
var tempExits = map[int]bool{75: true} // EX_TEMPFAIL

// DeliverPipe feeds the message to a command on stdin, with the
// environment local(8) sets (SENDER, RECIPIENT, ORIGINAL_RECIPIENT, USER,
// EXTENSION, DOMAIN, LOCAL). Exit 0 is delivered, 75 (EX_TEMPFAIL) and a
// timeout defer, as does death by a signal; anything else bounces with
// the first line of stderr.
//
// The command is killed when ctx ends (the server stops) and deferred.
func DeliverPipe(ctx context.Context, req *PipeRequest) Result {
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = 1000 * time.Second
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// The limit is set by the shell before the command starts (Go cannot
	// set a child's rlimits between fork and exec): a prefix line for a
	// shell command, an exec through sh for an argv.
	limit := ""
	if req.SizeLimit > 0 {
		limit = "ulimit -f " + strconv.FormatInt((req.SizeLimit+511)/512, 10) + " || exit 75\n"
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", limit+req.Command)
	what := req.Command
	if len(req.Argv) > 0 {
		cmd = exec.CommandContext(ctx, req.Argv[0], req.Argv[1:]...)
		if limit != "" {
			cmd = exec.CommandContext(ctx, "/bin/sh", append([]string{"-c", limit + `exec "$@"`, "sh"}, req.Argv...)...)
		}
		what = strings.Join(req.Argv, " ")
	}
	cmd.Dir = req.Dir
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	local, domain, _ := strings.Cut(req.Rcpt, "@")
	userPart, ext, _ := strings.Cut(local, "+")
	cmd.Env = []string{
		"PATH=/usr/bin:/bin:/usr/local/bin", "SHELL=/bin/sh",
		"SENDER=" + req.Sender, "RECIPIENT=" + req.Rcpt, "ORIGINAL_RECIPIENT=" + req.OrigRcpt,
		"LOCAL=" + local, "USER=" + userPart, "EXTENSION=" + ext, "DOMAIN=" + domain,
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if os.Geteuid() == 0 && req.User != "" {
		cred, home, err := credential(req.User)
		if err != nil {
			return Result{Enhanced: "4.3.0", Text: "cannot run as " + req.User + ": " + err.Error()}
		}
		cmd.SysProcAttr.Credential = cred
		// As local(8): the user's home is HOME and, unless the route
		// says otherwise, the working directory (entered as the user).
		if home != "" && home != "/" {
			cmd.Env = append(cmd.Env, "HOME="+home)
			if req.Dir == "" {
				if fi, err := os.Stat(home); err == nil && fi.IsDir() {
					cmd.Dir = home
				}
			}
		}
	}
	// A message that cannot be read to its end must not reach the
	// command as a shorter one: the command is killed before it can see
	// the end of its input, and the message waits for another try.
	body := &killOnError{r: io.NewSectionReader(req.Body, 0, req.Body.Size()),
		kill: func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }}
	cmd.Stdin = NewLFReader(body)
	// Only the first line of the output is reported: keep a little of it,
	// whatever the command writes.
	stderr := &headWriter{max: 4096}
	cmd.Stdout = stderr
	cmd.Stderr = stderr
	err := cmd.Run()
	if body.err != nil {
		return Result{Enhanced: "4.3.0", Text: "error reading the queued message: " + body.err.Error()}
	}
	if parent.Err() != nil {
		return Result{Enhanced: "4.3.0", Text: "delivery interrupted (server stopping): " + what}
	}
	if ctx.Err() == context.DeadlineExceeded {
		return Result{Enhanced: "4.3.0", Text: fmt.Sprintf("command timed out after %v: %s", timeout, what)}
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return Result{Enhanced: "2.0.0", Text: "delivered to command: " + what}
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			// As Postfix's pipe_command: a command killed by a signal
			// (kill -9, the OOM killer, a resource limit) did not say the
			// message is bad; try again later.
			return Result{Enhanced: "4.3.0", Text: fmt.Sprintf("command died with signal %d: %s", int(ws.Signal()), what)}
		}
		code := ee.ExitCode()
		if code > 128 && code <= 128+64 && (len(req.Argv) == 0 || req.SizeLimit > 0) {
			// The shell's report of a command it ran dying by a signal.
			return Result{Enhanced: "4.3.0", Text: fmt.Sprintf("command died with signal %d (shell exit status %d): %s", code-128, code, what)}
		}
		msg := firstLine(stderr.String())
		if msg == "" {
			msg = "command exited with status " + strconv.Itoa(code)
		}
		if tempExits[code] {
			return Result{Enhanced: "4.3.0", Text: msg}
		}
		return Result{Enhanced: "5.3.0", Text: msg}
	}
	return Result{Enhanced: "4.3.0", Text: "cannot run command: " + err.Error()}
}

// killOnError reads the message for a command's stdin; on a read error
// it kills the command (os/exec then closes the pipe, which the command
// would take for the end of the message) and keeps the error.
type killOnError struct {
	r    io.Reader
	kill func()
	err  error
}

func (k *killOnError) Read(p []byte) (int, error) {
	n, err := k.r.Read(p)
	if err != nil && err != io.EOF && k.err == nil {
		k.err = err
		k.kill()
	}
	return n, err
}

// headWriter keeps the first max bytes written to it and drops the rest.
type headWriter struct {
	buf bytes.Buffer
	max int
}

func (w *headWriter) Write(p []byte) (int, error) {
	if room := w.max - w.buf.Len(); room > 0 {
		w.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (w *headWriter) String() string { return w.buf.String() }

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(l)
}

func credential(name string) (*syscall.Credential, string, error) {
	a, ok := postfix.LookupAccount(name)
	switch {
	case !ok:
		return nil, "", fmt.Errorf("no account %q", name)
	case a.UID == 0:
		return nil, "", fmt.Errorf("refusing to run a command as root (%s)", name)
	}
	c := &syscall.Credential{Uid: uint32(a.UID), Gid: uint32(a.GID)}
	for _, g := range a.Groups {
		c.Groups = append(c.Groups, uint32(g))
	}
	return c, a.Home, nil
}
