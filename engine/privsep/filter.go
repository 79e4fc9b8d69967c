package privsep

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-message/textproto"

	"github.com/larkpost/larkpost/rules"
	"github.com/larkpost/larkpost/rules/postfix"
)

// FilterChildArg, as the first argument of larkpost, makes the process a
// filter child (FilterChildMain) rather than a command.
const FilterChildArg = "__larkpost-filter-child"

// A filter child runs one user's filter script on one message, with that
// user's rights and under resource limits, and writes the filing
// (rules.EncodeFiling) to its standard output. Its standard input is a
// JSON header line (filterHeader) and the message: the header and at most
// body_checks_size_limit of body, as the hooks see it.
type filterHeader struct {
	Path      string        `json:"path"`
	Src       []byte        `json:"src,omitempty"` // the script, when the server read it; else the child reads Path
	Size      int64         `json:"size"`          // the whole message's size
	Timeout   time.Duration `json:"timeout"`
	MaxSteps  uint64        `json:"max_steps"`
	MaxMemory int64         `json:"max_memory"`
}

// Limits of a filter child.
const (
	// maxFilterInput bounds a child's input: the header (1 MiB at most,
	// header_total_limit), a body prefix and the script.
	maxFilterInput = 4 << 20
	// filterOverhead is address space the child may use beyond
	// filter_max_memory: the compiled script, the message, the heap's
	// slack between collections.
	filterOverhead = 96 << 20
	// filterGrace is how long past filter_timeout the child lives before
	// it is killed: the script's own deadline fires first.
	filterGrace = 2 * time.Second
)

// FilterInput is the standard input of a filter child for job: src is
// the script when the caller could read it (nil: the child reads
// job.Path with the user's rights).
func FilterInput(job rules.FilterJob, src []byte) ([]byte, error) {
	h := filterHeader{Path: job.Path, Src: src, Timeout: job.Limits.Timeout, MaxSteps: job.Limits.MaxSteps, MaxMemory: job.Limits.MaxMemory}
	var b bytes.Buffer
	if m := job.Msg; m != nil {
		h.Size = m.Size
	}
	line, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	b.Write(line)
	b.WriteByte('\n')
	if m := job.Msg; m != nil {
		if err := textproto.WriteHeader(&b, m.Header); err != nil {
			return nil, err
		}
		b.Write(m.Body)
	}
	if b.Len() > maxFilterInput {
		return nil, fmt.Errorf("filter input of %d bytes", b.Len())
	}
	return b.Bytes(), nil
}

// FilterChildMain is the whole life of a filter child: read the job, set
// the limits, run the script, write the filing, exit. It never returns.
func FilterChildMain() {
	f, err := filterChild(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "filter child:", err)
		os.Exit(1)
	}
	os.Stdout.Write(rules.EncodeFiling(f))
	os.Exit(0)
}

func filterChild(in io.Reader) (rules.Filing, error) {
	r := bufio.NewReader(io.LimitReader(in, maxFilterInput+1))
	line, err := r.ReadBytes('\n')
	if err != nil {
		return rules.Filing{}, fmt.Errorf("reading the job: %w", err)
	}
	var h filterHeader
	if err := json.Unmarshal(line, &h); err != nil {
		return rules.Filing{}, fmt.Errorf("reading the job: %w", err)
	}
	raw, err := io.ReadAll(r)
	if err != nil {
		return rules.Filing{}, fmt.Errorf("reading the message: %w", err)
	}
	src := h.Src
	if src == nil {
		// Read with this process's rights: the user's. A symbolic link
		// to a file the user cannot read fails here.
		src, err = readScript(h.Path)
		if errors.Is(err, os.ErrNotExist) {
			return rules.Filing{Source: "default"}, nil
		}
		if err != nil {
			return rules.Filing{Source: "default", Err: err}, nil
		}
	}
	msg := rules.ParseMessage(raw)
	msg.Size = h.Size
	if err := limitSelf(h); err != nil {
		return rules.Filing{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.Timeout)
	defer cancel()
	lim := rules.FilterLimits{Timeout: h.Timeout, MaxSteps: h.MaxSteps, MaxMemory: h.MaxMemory}
	return rules.RunFilterScript(ctx, h.Path, src, msg, lim, func(string) {}), nil
}

func readScript(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<20+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// limitSelf sets the child's resource limits once its input is read: the
// address space it has now plus filter_max_memory and an allowance (a
// Go program reserves most of its address space at start, so a fixed
// RLIMIT_AS set before exec would not let it start), CPU time just past
// filter_timeout, no files written, no descriptors beyond a few, no core.
func limitSelf(h filterHeader) error {
	vm, err := vmSize()
	if err != nil {
		return err
	}
	mem := max(h.MaxMemory, 0)
	debug.SetMemoryLimit(mem + filterOverhead/2)
	cpu := uint64(h.Timeout/time.Second) + 2
	for _, l := range []struct {
		res int
		val uint64
	}{
		{syscall.RLIMIT_AS, vm + uint64(mem) + filterOverhead},
		{syscall.RLIMIT_CPU, cpu},
		{syscall.RLIMIT_FSIZE, 0},
		{syscall.RLIMIT_NOFILE, 16},
		{syscall.RLIMIT_CORE, 0},
	} {
		if err := syscall.Setrlimit(l.res, &syscall.Rlimit{Cur: l.val, Max: l.val}); err != nil {
			return fmt.Errorf("setrlimit %d: %w", l.res, err)
		}
	}
	return nil
}

// vmSize is this process's address space in bytes (VmSize).
func vmSize() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(l, "VmSize:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmSize in /proc/self/status")
}

// FilterChild starts filter children.
type FilterChild struct {
	// Exe is the larkpost binary to run; "" is /proc/self/exe (this
	// binary, even after an upgrade replaced the file).
	Exe string
}

// Run runs a filter child as acct (nil: as this process) with input on
// its standard input, killing it (and anything it started) timeout plus a
// grace after it starts. It returns what the child wrote, or why it
// failed: killed by a limit, crashed, or timed out.
func (c FilterChild) Run(ctx context.Context, acct *postfix.Account, input io.Reader, timeout time.Duration) ([]byte, error) {
	exe := c.Exe
	if exe == "" {
		exe = "/proc/self/exe"
	}
	ctx, cancel := context.WithTimeout(ctx, timeout+filterGrace)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, FilterChildArg)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if acct != nil {
		if acct.UID == 0 || acct.GID == 0 {
			return nil, fmt.Errorf("refusing to run a filter as %q (uid or gid 0)", acct.Name)
		}
		cred := &syscall.Credential{Uid: uint32(acct.UID), Gid: uint32(acct.GID)}
		for _, g := range acct.Groups {
			cred.Groups = append(cred.Groups, uint32(g))
		}
		cmd.SysProcAttr.Credential = cred
		cmd.Env = append(cmd.Env, "USER="+acct.Name, "LOGNAME="+acct.Name, "HOME="+acct.Home)
		if fi, err := os.Stat(acct.Home); err == nil && fi.IsDir() {
			cmd.Dir = acct.Home
		}
	}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	cmd.Stdin = input
	out := &headWriter{max: rules.MaxFilingSize + 1}
	errs := &headWriter{max: 4096}
	cmd.Stdout, cmd.Stderr = out, errs
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		return nil, fmt.Errorf("filter killed after %v", timeout+filterGrace)
	}
	if err != nil {
		why := err.Error()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				why = "filter killed by signal " + strconv.Itoa(int(ws.Signal())) + " (" + ws.Signal().String() + ")"
				if ws.Signal() == syscall.SIGXCPU {
					why += ": CPU time limit"
				}
			} else {
				why = "filter process exited with status " + strconv.Itoa(ee.ExitCode())
			}
		}
		if last := lastLine(errs.String()); last != "" {
			why += ": " + last
		}
		return nil, errors.New(why)
	}
	if out.buf.Len() > rules.MaxFilingSize {
		return nil, errors.New("filter answer too large")
	}
	return out.buf.Bytes(), nil
}

// lastLine is the most telling line of a dead child's stderr: Go's
// "fatal error: out of memory" or the child's own complaint.
func lastLine(s string) string {
	for l := range strings.Lines(s) {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "fatal error:") || strings.HasPrefix(l, "filter child:") || strings.HasPrefix(l, "runtime:") {
			return l
		}
	}
	return ""
}

// headWriter keeps the first max bytes written to it.
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

// Filing turns a child's answer, or its failure, into the filing: a
// failed filter files to the inbox, with the reason logged.
func Filing(out []byte, err error) rules.Filing {
	if err != nil {
		return rules.Filing{Source: "default", Err: err}
	}
	f, err := rules.DecodeFiling(out)
	if err != nil {
		return rules.Filing{Source: "default", Err: fmt.Errorf("filter child: %w", err)}
	}
	return f
}

// FilterRunner is rules.Options.RunFilter with filter children: asked of
// the root parent through c in a split server's daemon, or started by
// this process (root) when c is nil.
func FilterRunner(c *Client, child FilterChild) func(context.Context, rules.FilterJob) rules.Filing {
	return func(ctx context.Context, job rules.FilterJob) rules.Filing {
		acct, src, err := filterAccount(job)
		if err != nil {
			return rules.Filing{Source: "default", Err: err}
		}
		if src != nil && len(src) == 0 {
			return rules.Filing{Source: "default"} // no script: the inbox
		}
		input, err := FilterInput(job, src)
		if err != nil {
			return rules.Filing{Source: "default", Err: err}
		}
		if c != nil {
			return Filing(c.RunFilter(ctx, RunFilter{User: acct.Name, Timeout: job.Limits.Timeout}, input))
		}
		return Filing(child.Run(ctx, &acct, bytes.NewReader(input), job.Limits.Timeout))
	}
}

// filterAccount is whom a filter runs as, the mailbox's user or else
// default_privs, never root; and the script when it lies outside that
// user's home (an admin's filters folder, which the server reads: the
// user may not be able to), else nil for the child to read as the user.
// An empty non-nil script means there is none.
func filterAccount(job rules.FilterJob) (postfix.Account, []byte, error) {
	acct, ok := postfix.LookupAccount(job.User)
	own := ok && acct.UID != 0 && acct.GID != 0
	if !own {
		acct, ok = postfix.LookupAccount(job.DefaultPrivs)
		if !ok || acct.UID == 0 || acct.GID == 0 {
			return acct, nil, fmt.Errorf("no unprivileged account to run the filter as (default_privs = %q)", job.DefaultPrivs)
		}
	}
	if own && inside(acct.Home, job.Path) {
		return acct, nil, nil
	}
	src, err := readScript(job.Path)
	if errors.Is(err, os.ErrNotExist) {
		return acct, []byte{}, nil
	}
	if err != nil {
		return acct, nil, err
	}
	if src == nil {
		src = []byte{}
	}
	return acct, src, nil
}

// inside reports whether path lies in dir (a home that is not "/").
func inside(dir, path string) bool {
	dir = filepath.Clean(dir)
	if dir == "/" || dir == "." || !filepath.IsAbs(dir) {
		return false
	}
	rel, err := filepath.Rel(dir, filepath.Clean(path))
	return err == nil && rel != "." && !strings.HasPrefix(rel, "..")
}
