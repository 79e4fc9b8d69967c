package rules

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"go.starlark.net/starlark"

	"github.com/larkpost/larkpost/stdlib/addr"
	"github.com/larkpost/larkpost/stdlib/re"
)

// Filing is what the file step decided for one local recipient: a
// folder, a forward, or discarding, plus an optional vacation reply.
// Whatever goes wrong in a user's script, the result is the inbox: a bad
// filter never loses or bounces mail.
type Filing struct {
	Folder   string // "" is the inbox; otherwise "Spam", "Lists/go"
	Forward  string // forward a copy to this address instead of filing
	Discard  bool
	Vacation *Vacation
	Source   string // the script line that decided, or "default"
	Err      error  // the user's script failed: filed to the inbox, and logged
}

// Plain reports a filing that writes into the mailbox (nil is the
// inbox), rather than forwarding or discarding.
func (f *Filing) Plain() bool { return f == nil || !f.Discard && f.Forward == "" }

// Vacation is an auto-reply a filter asked for (RFC 3834).
type Vacation struct {
	Subject string
	Text    string
	Days    int // at most one reply per sender per this many days
}

// FileRequest is one local delivery to file.
type FileRequest struct {
	User string   // the local user (mailbox name)
	Rcpt string   // the recipient address
	Msg  *Message // header and body
	// Marker, when set, is a file that exists while the user's filter
	// runs. Finding it before a run means an earlier run of this filter
	// on this message never finished (the process died in it): the
	// message then goes to the INBOX without running the filter again,
	// so a filter that crashes the server cannot do it at every restart.
	Marker string
}

// CleanFolder checks a folder name from a script and returns its
// canonical form ("Lists/go"; "" for the inbox). Names that could leave
// the mailbox (".." or absolute paths), hide as dotfiles or carry control
// characters are refused.
func CleanFolder(name string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" || strings.EqualFold(name, "INBOX") {
		return "", nil
	}
	if len(name) > 255 || !utf8.ValidString(name) {
		return "", fmt.Errorf("bad folder name %q", name)
	}
	parts := strings.FieldsFunc(name, func(r rune) bool { return r == '/' || r == '.' })
	if strings.HasPrefix(name, "/") || strings.HasPrefix(name, ".") || strings.Contains(name, "..") || len(parts) == 0 {
		return "", fmt.Errorf("bad folder name %q", name)
	}
	for _, p := range parts {
		for _, r := range p {
			if unicode.IsControl(r) || r == '\\' || r == '~' {
				return "", fmt.Errorf("bad folder name %q", name)
			}
		}
	}
	return strings.Join(parts, "/"), nil
}

// userFilter is a compiled per-user filter script, reloaded when its file
// changes.
type userFilter struct {
	mtime time.Time
	size  int64
	fn    *starlark.Function
	err   error
}

// filterCache holds the compiled user scripts of one policy.
type filterCache struct {
	mu sync.Mutex
	m  map[string]*userFilter
}

// FilterPath is the user's filter script path from filter_path, or "".
func (p *Policy) FilterPath(user, domain string) string {
	t := p.Settings.FilterPath
	if t == "" {
		return ""
	}
	path := strings.NewReplacer("{data_dir}", strings.TrimSuffix(p.Settings.DataDir, "/"), "{user}", user, "{domain}", domain).Replace(t)
	if !filepath.IsAbs(path) && !strings.HasPrefix(t, "{data_dir}") {
		path = filepath.Join(p.baseDir(), path)
	}
	return path
}

// userPredeclared is a user filter's sandbox: message inspection,
// addresses and regular expressions, and its own decisions. No tables,
// no config, nothing about other users, no I/O.
func userPredeclared() starlark.StringDict {
	d := starlark.StringDict{
		"addr":     addr.Module(""),
		"re":       re.Module(),
		"discard":  decisionBuiltins()["discard"],
		"forward":  effectBuiltin("forward", Redirect, "address"),
		"vacation": starlark.NewBuiltin("vacation", vacationBuiltin),
	}
	withGuards(d)
	d.Freeze()
	return d
}

const vacationKey = "larkpost.vacation"

// vacationBuiltin is vacation(text, subject="Out of office", days=7): it
// asks for an auto-reply and returns None, so the script still decides
// the folder.
func vacationBuiltin(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	v := &Vacation{Subject: "Out of office", Days: 7}
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "text", &v.Text, "subject?", &v.Subject, "days?", &v.Days); err != nil {
		return nil, err
	}
	if v.Days < 1 || v.Days > 365 {
		return nil, fmt.Errorf("vacation: days must be between 1 and 365")
	}
	if strings.ContainsAny(v.Subject, "\r\n") {
		return nil, fmt.Errorf("vacation: the subject must be one line")
	}
	th.SetLocal(vacationKey, v)
	return starlark.None, nil
}

// loadFilter compiles (or reuses) a user's script.
func (p *Policy) loadFilter(path string) (*userFilter, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	p.filters.mu.Lock()
	defer p.filters.mu.Unlock()
	if p.filters.m == nil {
		p.filters.m = map[string]*userFilter{}
	}
	if f, ok := p.filters.m[path]; ok && f.mtime.Equal(fi.ModTime()) && f.size == fi.Size() {
		return f, nil
	}
	f := &userFilter{mtime: fi.ModTime(), size: fi.Size()}
	p.filters.m[path] = f
	src, err := os.ReadFile(path)
	if err != nil {
		f.err = err
		return f, nil
	}
	fn, err := compileFilter(p.filterThread(context.Background(), "load "+path), path, src)
	if err != nil {
		f.err = err
		return f, nil
	}
	f.fn = fn
	return f, nil
}

// starlarkFileOptions is the user filter dialect: like config scripts,
// but without load().
var starlarkFileOptions = *fileOptions

// execFilter is starlark.ExecFileOptions with the memory guards (see
// guard.go): parse, guard, resolve, run, freeze.
func execFilter(th *starlark.Thread, path string, src []byte, pre starlark.StringDict) (starlark.StringDict, error) {
	f, err := parseFile(&starlarkFileOptions, path, src)
	if err != nil {
		return nil, err
	}
	prog, err := guardedProgram(f, pre.Has)
	if err != nil {
		return nil, err
	}
	globals, err := prog.Init(th, pre)
	if err != nil {
		return nil, err
	}
	dropGuardNames(globals)
	globals.Freeze()
	return globals, nil
}

func loadErr(err error) error {
	var ee *starlark.EvalError
	if errors.As(err, &ee) {
		if pos := scriptPos(ee.CallStack); pos.IsValid() {
			return fmt.Errorf("%s: %s", pos, ee.Msg)
		}
	}
	return err
}

// compileFilter runs a user's script and returns its file(msg).
func compileFilter(th *starlark.Thread, path string, src []byte) (*starlark.Function, error) {
	if len(src) > maxFilterSource {
		return nil, fmt.Errorf("%s: filter script larger than 1 MiB", path)
	}
	globals, err := execFilter(th, path, src, userPredeclared())
	if err != nil {
		return nil, loadErr(err)
	}
	fn, ok := globals["file"].(*starlark.Function)
	if !ok || fn.NumParams() != 1 {
		return nil, fmt.Errorf("%s: a filter script defines file(msg)", path)
	}
	return fn, nil
}

// maxFilterSource bounds a user's filter script.
const maxFilterSource = 1 << 20

// FilterLimits bound one run of a user's filter script: filter_timeout,
// filter_max_steps and filter_max_memory.
type FilterLimits struct {
	Timeout   time.Duration
	MaxSteps  uint64
	MaxMemory int64
}

// FilterLimits are this policy's limits for users' filters.
func (p *Policy) FilterLimits() FilterLimits {
	return FilterLimits{Timeout: p.Settings.FilterTimeout, MaxSteps: p.Settings.FilterMaxSteps, MaxMemory: p.Settings.FilterMaxMemory}
}

// filterThread is a Thread under the filter budget.
func (p *Policy) filterThread(ctx context.Context, name string) *starlark.Thread {
	return newFilterThread(ctx, name, p.FilterLimits(), p.print)
}

func newFilterThread(ctx context.Context, name string, lim FilterLimits, print func(*starlark.Thread, string)) *starlark.Thread {
	hc := &hookCall{ctx: ctx, deadline: time.Now().Add(lim.Timeout), maxSteps: lim.MaxSteps,
		maxMem: lim.MaxMemory, memScope: scopeFilter}
	th := &starlark.Thread{Name: name, Print: print, OnMaxSteps: onMaxSteps,
		Load: func(*starlark.Thread, string) (starlark.StringDict, error) {
			return nil, fmt.Errorf("load is not available in filter scripts")
		}}
	th.SetLocal(callKey, hc)
	th.SetMaxExecutionSteps(min(stepChunk, hc.maxSteps))
	return th
}

// callFilter runs a compiled file(msg) on msg.
func callFilter(th *starlark.Thread, fn *starlark.Function, msg *Message) Filing {
	v, err := starlark.Call(th, fn, starlark.Tuple{msgValue{msg}}, nil)
	if err != nil {
		return Filing{Source: "default", Err: loadErr(err)}
	}
	f := filingOf(v, th.Local(callKey).(*hookCall).source(fn))
	// A vacation reply answers mail the user keeps: not mail the filter
	// discards or sends elsewhere.
	if vac, ok := th.Local(vacationKey).(*Vacation); ok && !f.Discard && f.Forward == "" {
		f.Vacation = vac
	}
	return f
}

// RunFilterScript runs a user's filter script, src read from path, on
// msg: the file step of a process that runs filters one at a time (the
// filter child). print gets the script's print() lines.
func RunFilterScript(ctx context.Context, path string, src []byte, msg *Message, lim FilterLimits, print func(string)) Filing {
	pr := func(_ *starlark.Thread, s string) { print(s) }
	fn, err := compileFilter(newFilterThread(ctx, "load "+path, lim, pr), path, src)
	if err != nil {
		return Filing{Source: "default", Err: err}
	}
	return callFilter(newFilterThread(ctx, "file", lim, pr), fn, msg)
}

// FileMessage runs the file step for one local delivery: the admin's file(msg,
// user) hook first (a folder or decision from it is final), then the
// user's own filter script at filter_path, then the inbox.
func (p *Policy) FileMessage(ctx context.Context, req FileRequest) Filing {
	if req.Msg == nil {
		req.Msg = &Message{}
	}
	if p.hooks[HookFile] != nil {
		v, source, err := p.callValue(ctx, HookFile, msgValue{req.Msg}, starlark.String(req.User))
		if err != nil {
			return Filing{Source: "default", Err: p.scriptError(HookFile, err)}
		}
		if v != starlark.None {
			return filingOf(v, source)
		}
	}
	at := strings.LastIndexByte(req.Rcpt, '@')
	path := p.FilterPath(req.User, req.Rcpt[at+1:])
	if path == "" {
		return Filing{Source: "default"}
	}
	if p.obs == nil {
		return p.userFilter(ctx, req, path)
	}
	start := time.Now()
	f := p.userFilter(ctx, req, path)
	p.obs("filter", time.Since(start), CallOutcome(f.Err))
	return f
}

// userFilter runs the user's filter script at path, in a child when the
// server has one for it.
func (p *Policy) userFilter(ctx context.Context, req FileRequest, path string) Filing {
	if p.runFilter != nil {
		// Only a definite "no such file" spares the child: a home the
		// server cannot look into is the child's to read. No marker: a
		// filter in a child cannot take the server down.
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return Filing{Source: "default"}
		}
		return p.runFilter(ctx, FilterJob{User: req.User, Rcpt: req.Rcpt, Path: path, Msg: req.Msg, Limits: p.FilterLimits(),
			DefaultPrivs: p.Settings.DefaultPrivs})
	}
	if req.Marker != "" {
		if _, err := os.Stat(req.Marker); err == nil {
			os.Remove(req.Marker)
			return Filing{Source: "default", Err: fmt.Errorf("%s: an earlier run on this message never finished (the server stopped in it); not run again", path)}
		}
		// No fsync: the marker only has to survive the process, not the
		// machine, and the page cache outlives a killed process.
		if err := os.WriteFile(req.Marker, nil, 0o600); err != nil {
			return Filing{Source: "default", Err: fmt.Errorf("filter marker: %w", err)}
		}
		defer os.Remove(req.Marker)
	}
	uf, err := p.loadFilter(path)
	if err != nil {
		if os.IsNotExist(err) {
			return Filing{Source: "default"}
		}
		return Filing{Source: "default", Err: err}
	}
	if uf.err != nil {
		return Filing{Source: "default", Err: uf.err}
	}
	return callFilter(p.filterThread(ctx, "file "+req.User), uf.fn, req.Msg)
}

// filingOf reads a file() result: a folder name, forward(addr), discard()
// or None for the inbox. Anything else files to the inbox with an error.
func filingOf(v starlark.Value, source string) Filing {
	switch v := v.(type) {
	case starlark.NoneType:
		return Filing{Source: source}
	case starlark.String:
		folder, err := CleanFolder(string(v))
		if err != nil {
			return Filing{Source: source, Err: err}
		}
		return Filing{Folder: folder, Source: source}
	case *decisionValue:
		src := v.d.Source
		if src == "" {
			src = source
		}
		switch v.d.Kind {
		case Discard:
			return Filing{Discard: true, Source: src}
		case Redirect:
			return Filing{Forward: v.d.Text, Source: src}
		}
		return Filing{Source: src, Err: fmt.Errorf("file returned %s; want a folder, forward(), discard() or None", v.d.Kind)}
	}
	return Filing{Source: source, Err: fmt.Errorf("file returned %s; want a folder name, forward(), discard() or None", v.Type())}
}

// FilterJob is one run of a user's filter script for a runner outside
// this process (Options.RunFilter).
type FilterJob struct {
	User   string // the mailbox user
	Rcpt   string
	Path   string // the script, from filter_path
	Msg    *Message
	Limits FilterLimits
	// DefaultPrivs runs the filter when User has no account of its own
	// (a virtual user) or is root.
	DefaultPrivs string
}

// filingWire is a Filing as the filter child writes it.
type filingWire struct {
	Folder   string    `json:"folder,omitempty"`
	Forward  string    `json:"forward,omitempty"`
	Discard  bool      `json:"discard,omitempty"`
	Vacation *Vacation `json:"vacation,omitempty"`
	Source   string    `json:"source,omitempty"`
	Err      string    `json:"error,omitempty"`
}

// MaxFilingSize bounds an encoded Filing.
const MaxFilingSize = 32 << 10

// EncodeFiling writes f for DecodeFiling (the filter child's answer),
// shortening what would not fit in MaxFilingSize.
func EncodeFiling(f Filing) []byte {
	w := filingWire{Folder: f.Folder, Forward: f.Forward, Discard: f.Discard, Vacation: f.Vacation, Source: f.Source}
	if f.Err != nil {
		w.Err = f.Err.Error()
	}
	if len(w.Err) > 2048 {
		w.Err = w.Err[:2048] + "..."
	}
	b, _ := json.Marshal(w)
	if len(b) > MaxFilingSize {
		b, _ = json.Marshal(filingWire{Source: "default", Err: "filter answer too large (a vacation text over 16 KB?)"})
	}
	return b
}

// DecodeFiling reads what EncodeFiling wrote, checking it as it would be
// checked had the script run here: the process that wrote it ran a
// user's code with the user's rights, so its answer is the user's input.
func DecodeFiling(b []byte) (Filing, error) {
	var w filingWire
	if len(b) > MaxFilingSize {
		return Filing{}, fmt.Errorf("filing of %d bytes", len(b))
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return Filing{}, fmt.Errorf("bad filing: %w", err)
	}
	f := Filing{Discard: w.Discard, Forward: w.Forward, Source: w.Source}
	folder, err := CleanFolder(w.Folder)
	if err != nil {
		return Filing{}, err
	}
	f.Folder = folder
	n := 0
	for _, set := range []bool{w.Discard, w.Forward != "", w.Folder != ""} {
		if set {
			n++
		}
	}
	switch {
	case n > 1:
		return Filing{}, errors.New("bad filing: more than one of folder, forward and discard")
	case w.Forward != "" && !validForward(w.Forward):
		return Filing{}, fmt.Errorf("bad filing: forward address %q", w.Forward)
	case !cleanLine(w.Source, 512):
		return Filing{}, errors.New("bad filing: source")
	}
	if v := w.Vacation; v != nil {
		if v.Days < 1 || v.Days > 365 || !cleanLine(v.Subject, 998) || len(v.Text) > 16<<10 || f.Discard || f.Forward != "" {
			return Filing{}, errors.New("bad filing: vacation")
		}
		f.Vacation = v
	}
	if w.Err != "" {
		f.Err = errors.New(w.Err)
	}
	return f, nil
}

func validForward(a string) bool {
	if _, err := addr.Parse(a); err != nil {
		return false
	}
	return cleanLine(a, 998)
}

func cleanLine(s string, max int) bool {
	if len(s) > max || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}
