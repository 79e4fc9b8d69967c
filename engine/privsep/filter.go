package privsep

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
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
	"sync"
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

// FilterChildMain is the whole life of a filter child: read jobs from
// standard input, one frame each (a 4-byte big-endian length, then the
// input FilterInput makes), run each and write its filing as a frame,
// until the input ends. It never returns.
func FilterChildMain() {
	in := bufio.NewReader(os.Stdin)
	limited := false
	for {
		job, err := readJobFrame(in, maxFilterInput)
		if errors.Is(err, io.EOF) {
			os.Exit(0)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "filter child:", err)
			os.Exit(1)
		}
		f, err := filterChild(job, &limited)
		if err != nil {
			fmt.Fprintln(os.Stderr, "filter child:", err)
			os.Exit(1)
		}
		if err := writeJobFrame(os.Stdout, rules.EncodeFiling(f)); err != nil {
			os.Exit(1)
		}
	}
}

func readJobFrame(r io.Reader, max int) ([]byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	size := int(binary.BigEndian.Uint32(n[:]))
	if size > max {
		return nil, fmt.Errorf("frame of %d bytes", size)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("frame: %w", io.ErrUnexpectedEOF)
	}
	return b, nil
}

func writeJobFrame(w io.Writer, b []byte) error {
	_, err := w.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...))
	return err
}

// filterChild runs one job; limited says whether the child has set its
// lasting limits yet.
func filterChild(job []byte, limited *bool) (rules.Filing, error) {
	line, raw, ok := bytes.Cut(job, []byte("\n"))
	if !ok {
		return rules.Filing{}, errors.New("reading the job: no header line")
	}
	var h filterHeader
	if err := json.Unmarshal(line, &h); err != nil {
		return rules.Filing{}, fmt.Errorf("reading the job: %w", err)
	}
	src := h.Src
	if src == nil {
		// Read with this process's rights: the user's. A symbolic link
		// to a file the user cannot read fails here.
		var err error
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
	if !*limited {
		if err := limitSelf(h); err != nil {
			return rules.Filing{}, err
		}
		*limited = true
	}
	if err := limitCPU(h.Timeout); err != nil {
		return rules.Filing{}, err
	}
	// filter_timeout is the script budget's own deadline (lim); the
	// parent kills a child that overruns it anyway.
	lim := rules.FilterLimits{Timeout: h.Timeout, MaxSteps: h.MaxSteps, MaxMemory: h.MaxMemory}
	return rules.RunFilterScript(context.Background(), h.Path, src, msg, lim, func(string) {}), nil
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
// no files written, no descriptors beyond a few, no core; CPU time is
// limited per job (limitCPU).
func limitSelf(h filterHeader) error {
	vm, err := vmSize()
	if err != nil {
		return err
	}
	mem := max(h.MaxMemory, 0)
	debug.SetMemoryLimit(mem + filterOverhead/2)
	as := vm + uint64(mem) + filterOverhead
	if raceBuild {
		as = ^uint64(0) // RLIM_INFINITY
	}
	for _, l := range []struct {
		res int
		val uint64
	}{
		{syscall.RLIMIT_AS, as},
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

// limitCPU lets the next job use the CPU time it has used so far plus
// filter_timeout and a little: a child serves several jobs, and
// RLIMIT_CPU counts its whole life.
func limitCPU(timeout time.Duration) error {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return err
	}
	used := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	soft := uint64((used+timeout)/time.Second) + 2
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_CPU, &l); err != nil {
		return err
	}
	l.Cur = min(soft, l.Max)
	return syscall.Setrlimit(syscall.RLIMIT_CPU, &l)
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

// FilterChildren starts filter children and keeps them for reuse: a
// child serves one user's jobs one at a time, up to MaxUse of them, and
// ends when it has been idle for Idle (as Postfix reuses its delivery
// agents). Starting the binary costs about 20 ms of CPU; a reused child
// answers in well under a millisecond. A child that fails a job (killed
// by a limit, crashed, overran its deadline) is not reused.
type FilterChildren struct {
	// Exe is the larkpost binary to run; "" is /proc/self/exe (this
	// binary, even after an upgrade replaced the file).
	Exe string
	// MaxUse bounds the jobs of one child; 0 means 100.
	MaxUse int
	// Idle is how long an idle child is kept; 0 means 10 seconds.
	Idle time.Duration
	// MaxIdle bounds the idle children kept, over all users; 0 means 16.
	MaxIdle int

	mu   sync.Mutex
	idle map[string][]*filterWorker // by credentials
}

// filterWorker is one filter child.
type filterWorker struct {
	key  string
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	errs *jobWriter
	uses int
	stop *time.Timer // ends an idle child
	done chan struct{}
}

// Run runs one job in a filter child of acct (nil: of this process's
// user) with input (from FilterInput), and returns the filing it wrote,
// or why it failed. The child is killed, with anything it started, when
// the job runs timeout plus a grace.
func (p *FilterChildren) Run(ctx context.Context, acct *postfix.Account, input []byte, timeout time.Duration) ([]byte, error) {
	w, err := p.take(acct)
	if err != nil {
		return nil, err
	}
	out, err := w.do(ctx, input, timeout)
	if err != nil {
		w.kill()
		return nil, err
	}
	p.give(w)
	return out, nil
}

func credKey(acct *postfix.Account) string {
	if acct == nil {
		return "self"
	}
	return fmt.Sprint(acct.UID, ":", acct.GID, ":", acct.Groups, ":", acct.Home)
}

// take finds an idle child of acct, or starts one.
func (p *FilterChildren) take(acct *postfix.Account) (*filterWorker, error) {
	key := credKey(acct)
	p.mu.Lock()
	for n := len(p.idle[key]); n > 0; n = len(p.idle[key]) {
		w := p.idle[key][n-1]
		p.idle[key] = p.idle[key][:n-1]
		select {
		case <-w.done:
			continue // killed while idle (the OOM killer, an admin)
		default:
		}
		if w.stop.Stop() {
			p.mu.Unlock()
			return w, nil
		}
		// Its idle timer fired: it is on its way out.
	}
	p.mu.Unlock()
	return p.start(acct, key)
}

// give puts a child that did its job back, unless it has done enough.
func (p *FilterChildren) give(w *filterWorker) {
	w.uses++
	if w.uses >= cmp.Or(p.MaxUse, 100) {
		w.end()
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.idle == nil {
		p.idle = map[string][]*filterWorker{}
	}
	n := 0
	for _, ws := range p.idle {
		n += len(ws)
	}
	if n >= cmp.Or(p.MaxIdle, 16) {
		w.end()
		return
	}
	w.stop.Reset(cmp.Or(p.Idle, 10*time.Second))
	p.idle[w.key] = append(p.idle[w.key], w)
}

func (p *FilterChildren) start(acct *postfix.Account, key string) (*filterWorker, error) {
	exe := cmp.Or(p.Exe, "/proc/self/exe")
	cmd := exec.Command(exe, FilterChildArg)
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
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	w := &filterWorker{key: key, cmd: cmd, in: in, out: bufio.NewReader(out), errs: &jobWriter{max: 4096}, done: make(chan struct{})}
	cmd.Stderr = w.errs
	if err := StartPinned(cmd); err != nil {
		return nil, fmt.Errorf("start a filter child: %w", err)
	}
	go func() {
		cmd.Wait()
		close(w.done)
	}()
	w.stop = time.AfterFunc(time.Hour, func() { w.end() })
	w.stop.Stop()
	return w, nil
}

// do runs one job in the child.
func (w *filterWorker) do(ctx context.Context, input []byte, timeout time.Duration) ([]byte, error) {
	type result struct {
		b   []byte
		err error
	}
	res := make(chan result, 1)
	w.errs.reset()
	go func() {
		if err := writeJobFrame(w.in, input); err != nil {
			res <- result{nil, err}
			return
		}
		b, err := readJobFrame(w.out, rules.MaxFilingSize)
		res <- result{b, err}
	}()
	deadline := time.NewTimer(timeout + filterGrace)
	defer deadline.Stop()
	select {
	case r := <-res:
		if r.err == nil {
			return r.b, nil
		}
		w.kill()
		<-w.done
		return nil, w.why()
	case <-deadline.C:
		return nil, fmt.Errorf("filter killed after %v", timeout+filterGrace)
	case <-ctx.Done():
		return nil, fmt.Errorf("filter: %w", ctx.Err())
	}
}

// why tells how a dead child died.
func (w *filterWorker) why() error {
	ws, ok := w.cmd.ProcessState.Sys().(syscall.WaitStatus)
	why := "filter child failed"
	switch {
	case ok && ws.Signaled():
		why = "filter killed by signal " + strconv.Itoa(int(ws.Signal())) + " (" + ws.Signal().String() + ")"
		if ws.Signal() == syscall.SIGXCPU {
			why += ": CPU time limit"
		}
	case ok:
		why = "filter process exited with status " + strconv.Itoa(ws.ExitStatus())
	}
	if last := lastLine(w.errs.String()); last != "" {
		why += ": " + last
	}
	return errors.New(why)
}

// end lets an idle child finish: its input ends.
func (w *filterWorker) end() { w.in.Close() }

// kill ends the child and its process group at once.
func (w *filterWorker) kill() {
	syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
	w.in.Close()
}

// lastLine is the most telling line of a dead child's stderr: Go's
// "fatal error: out of memory" or the child's own complaint.
func lastLine(s string) string {
	for l := range strings.Lines(s) {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "fatal error:") || strings.HasPrefix(l, "filter child:") || strings.HasPrefix(l, "runtime:") || strings.HasPrefix(l, "WARNING: DATA RACE") {
			return l
		}
	}
	return ""
}

// jobWriter keeps the first max bytes a child writes to stderr during
// a job (reset at each): Go's "fatal error: out of memory" comes first,
// before the goroutine dumps.
type jobWriter struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (w *jobWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if room := w.max - len(w.buf); room > 0 {
		w.buf = append(w.buf, p[:min(len(p), room)]...)
	}
	return len(p), nil
}

func (w *jobWriter) reset() {
	w.mu.Lock()
	w.buf = w.buf[:0]
	w.mu.Unlock()
}

func (w *jobWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf)
}

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
func FilterRunner(c *Client, children *FilterChildren) func(context.Context, rules.FilterJob) rules.Filing {
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
			return Filing(c.RunFilter(ctx, RunFilter{User: acct.Name, Path: job.Path, Timeout: job.Limits.Timeout}, input))
		}
		return Filing(children.Run(ctx, &acct, input, job.Limits.Timeout))
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
