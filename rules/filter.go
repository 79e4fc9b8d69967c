package rules

import (
	"context"
	"errors"
	"fmt"
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
	if len(src) > 1<<20 {
		f.err = fmt.Errorf("%s: filter script larger than 1 MiB", path)
		return f, nil
	}
	pre := userPredeclared()
	globals, err := execFilter(p.filterThread(context.Background(), "load "+path), path, src, pre)
	if err != nil {
		f.err = loadErr(err)
		return f, nil
	}
	fn, ok := globals["file"].(*starlark.Function)
	if !ok || fn.NumParams() != 1 {
		f.err = fmt.Errorf("%s: a filter script defines file(msg)", path)
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

// filterThread is a Thread under the filter budget: filter_max_steps,
// filter_timeout and filter_max_memory, tighter than hooks'.
func (p *Policy) filterThread(ctx context.Context, name string) *starlark.Thread {
	hc := &hookCall{ctx: ctx, deadline: time.Now().Add(p.Settings.FilterTimeout), maxSteps: p.Settings.FilterMaxSteps,
		maxMem: p.Settings.FilterMaxMemory, memScope: scopeFilter}
	th := &starlark.Thread{Name: name, Print: p.print, OnMaxSteps: onMaxSteps,
		Load: func(*starlark.Thread, string) (starlark.StringDict, error) {
			return nil, fmt.Errorf("load is not available in filter scripts")
		}}
	th.SetLocal(callKey, hc)
	th.SetMaxExecutionSteps(min(stepChunk, hc.maxSteps))
	return th
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
	th := p.filterThread(ctx, "file "+req.User)
	v, err := starlark.Call(th, uf.fn, starlark.Tuple{msgValue{req.Msg}}, nil)
	if err != nil {
		return Filing{Source: "default", Err: loadErr(err)}
	}
	f := filingOf(v, th.Local(callKey).(*hookCall).source(uf.fn))
	// A vacation reply answers mail the user keeps: not mail the filter
	// discards or sends elsewhere.
	if vac, ok := th.Local(vacationKey).(*Vacation); ok && !f.Discard && f.Forward == "" {
		f.Vacation = vac
	}
	return f
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
