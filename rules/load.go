package rules

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.starlark.net/resolve"
	"go.starlark.net/starlark"
	"go.starlark.net/syntax"

	"github.com/larkpost/larkpost/engine/dkimsign"
	"github.com/larkpost/larkpost/engine/resolver"
	"github.com/larkpost/larkpost/rules/postfix"
	"github.com/larkpost/larkpost/stdlib/addr"
	"github.com/larkpost/larkpost/stdlib/arc"
	"github.com/larkpost/larkpost/stdlib/dkim"
	"github.com/larkpost/larkpost/stdlib/dmarc"
	"github.com/larkpost/larkpost/stdlib/dns"
	"github.com/larkpost/larkpost/stdlib/dnsbl"
	lphttp "github.com/larkpost/larkpost/stdlib/http"
	"github.com/larkpost/larkpost/stdlib/maps"
	lpmilter "github.com/larkpost/larkpost/stdlib/milter"
	"github.com/larkpost/larkpost/stdlib/policy"
	"github.com/larkpost/larkpost/stdlib/re"
	"github.com/larkpost/larkpost/stdlib/spf"
)

// Diagnostic is one problem in a config script, at a position.
type Diagnostic struct {
	Pos syntax.Position
	Msg string
}

func (d Diagnostic) String() string {
	return fmt.Sprintf("%s:%d:%d: %s", d.Pos.Filename(), d.Pos.Line, d.Pos.Col, d.Msg)
}

// Diagnostics is every problem found while loading, in file order. It is
// the error Load returns, printed one "FILE:LINE:COL: message" per line.
type Diagnostics []Diagnostic

func (ds Diagnostics) Error() string {
	lines := make([]string, len(ds))
	for i, d := range ds {
		lines[i] = d.String()
	}
	return strings.Join(lines, "\n")
}

// fileOptions is the Starlark dialect of config scripts: while loops and
// top-level if/for are allowed (bounded by the step limit); recursion is not,
// as it could grow the Go stack without bound between step checks.
var fileOptions = &syntax.FileOptions{Set: true, While: true, TopLevelControl: true, GlobalReassign: true}

// loadMaxSteps bounds the config script's own top level (loadMaxMemory
// its allocations, see guard.go).
const loadMaxSteps = 100_000_000

// Policy is a loaded, frozen config script: its settings and hooks. It is
// immutable and safe for concurrent use; a reload builds a new Policy.
type Policy struct {
	File     string
	Settings *Settings
	LoadedAt time.Time
	log      *slog.Logger // print() from scripts, tables that fail to reload
	readFwd  func(user, path string) ([]byte, error)

	// Warnings are problems that do not stop the config from loading.
	Warnings Diagnostics

	hooks       [numHooks]*starlark.Function
	tables      *postfix.Tables // the table settings, opened
	filters     *filterCache
	runFilter   func(context.Context, FilterJob) Filing
	globals     starlark.StringDict // the script's frozen globals, for rule tests
	predeclared starlark.StringDict
	dns         *dns.Env
	dkim        *dkimsign.Signer // nil: no dkim_keys
	state       *stateHolder
	obs         HookObserver // nil: hook calls are not timed
	pfc         *atomic.Pointer[postfixConfig]
}

// loader holds the state of one Load: the diagnostics and the settings that
// config(...) fills in.
type loader struct {
	settings *Settings
	diags    Diagnostics
	kwPos    map[syntax.Position]map[string]syntax.Position
	kwElems  map[syntax.Position]map[string][]syntax.Position // where each element of a list setting is written
	modules  map[string]*module
	loading  bool
	predecl  starlark.StringDict
	policy   *Policy                    // the one being loaded
	setPos   map[string]syntax.Position // where each setting was last set
	// mapsModule builds the maps module for the current recipient_delimiter.
	mapsModule func() starlark.Value
}

type module struct {
	globals starlark.StringDict
	err     error
}

// Options are the less common parameters of loading.
type Options struct {
	// Logger gets what the policy logs while it is in use: print() from
	// hooks and tables that fail to reload. nil is slog.Default().
	Logger *slog.Logger
	// ReadForward reads a user's .forward with the user's rights (a split
	// server's daemon asks its root parent); nil reads it in this process.
	ReadForward func(user, path string) ([]byte, error)
	// RunFilter runs a user's filter script outside this process (a
	// child with the user's rights and resource limits); nil runs it
	// here, under the script budget alone.
	RunFilter func(ctx context.Context, job FilterJob) Filing
	// DNSCache is the cache of the resolver the policy makes from its
	// resolvers setting, which answers the scripts' lookups and, through
	// Policy.Resolver, the server's. nil makes a new one; a server passes
	// one so that it outlives a reload. Resolver, when set, is used
	// instead (tests: a resolver.Table).
	DNSCache *resolver.Cache
	Resolver *resolver.Resolver
}

// LoadFile reads and loads a config script.
func LoadFile(filename string) (*Policy, error) { return LoadFileWith(filename, Options{}) }

// LoadFileWith is LoadFile with options.
func LoadFileWith(filename string, o Options) (*Policy, error) {
	src, err := os.ReadFile(filename)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return LoadWith(filename, src, o)
}

// Load compiles and runs a config script, validates its settings and
// hooks, and returns the frozen Policy, or Diagnostics listing every problem.
func Load(filename string, src []byte) (*Policy, error) { return LoadWith(filename, src, Options{}) }

// Resolver is the policy's DNS resolver: the one of Options, or the one
// it made from its resolvers setting.
func (p *Policy) Resolver() *resolver.Resolver { return p.dns.Resolver }

// Logger is where the policy logs.
func (p *Policy) Logger() *slog.Logger { return p.log }

// LoadWith is Load with options.
func LoadWith(filename string, src []byte, o Options) (*Policy, error) {
	l := &loader{
		settings: DefaultSettings(),
		kwPos:    map[syntax.Position]map[string]syntax.Position{},
		kwElems:  map[syntax.Position]map[string][]syntax.Position{},
		modules:  map[string]*module{},
		loading:  true,
		setPos:   map[string]syntax.Position{},
	}
	p := &Policy{File: filename, Settings: l.settings, log: cmp.Or(o.Logger, slog.Default()), readFwd: o.ReadForward, runFilter: o.RunFilter, filters: &filterCache{}, state: &stateHolder{}}
	p.predeclared = l.predeclared(p)

	globals, f := l.exec(filename, src, p.predeclared)
	l.loading = false
	p.globals = globals
	if f != nil {
		l.checkHooks(p, f, globals)
	}
	if globals != nil {
		l.openTables(p)
		l.checkTLS(p)
		l.checkSASL(p)
		l.checkDKIM(p)
	}
	if len(l.diags) > 0 {
		slices.SortStableFunc(l.diags, func(a, b Diagnostic) int {
			return cmp.Or(cmp.Compare(a.Pos.Filename(), b.Pos.Filename()),
				cmp.Compare(a.Pos.Line, b.Pos.Line), cmp.Compare(a.Pos.Col, b.Pos.Col))
		})
		return nil, l.diags
	}
	l.settings.finish()
	res := o.Resolver
	if res == nil {
		res = resolver.New(l.settings.Resolvers, l.settings.DNSTimeout)
		res.Cache = cmp.Or(o.DNSCache, resolver.NewCache())
	}
	p.dns = &dns.Env{Resolver: res, Timeout: l.settings.DNSTimeout, MaxQueries: l.settings.DNSMaxQueries}
	if globals != nil {
		l.checkNotify(p) // after finish: it reads the defaults destinations gets there
		l.checkObserve(p)
	}
	p.LoadedAt = time.Now()
	// Only now: the checks above ran on settings still being finished.
	p.pfc = new(atomic.Pointer[postfixConfig])
	return p, nil
}

func (l *loader) errorf(pos syntax.Position, format string, args ...any) {
	l.diags = append(l.diags, Diagnostic{Pos: pos, Msg: fmt.Sprintf(format, args...)})
}

// exec parses, resolves and runs one file, recording its problems. It
// returns nil globals when the file could not be run.
func (l *loader) exec(filename string, src []byte, predeclared starlark.StringDict) (starlark.StringDict, *syntax.File) {
	f, err := parseFile(fileOptions, filename, src)
	if err != nil {
		var se syntax.Error
		if errors.As(err, &se) {
			l.errorf(se.Pos, "syntax error: %s", se.Msg)
		} else {
			l.errorf(syntax.MakePosition(&filename, 1, 1), "%v", err)
		}
		return nil, nil
	}
	l.recordConfigKwargs(f)
	prog, err := guardedProgram(f, predeclared.Has)
	if err != nil {
		var rl resolve.ErrorList
		if errors.As(err, &rl) {
			for _, e := range rl {
				l.errorf(e.Pos, "%s", e.Msg)
			}
		} else {
			l.errorf(syntax.MakePosition(&filename, 1, 1), "%v", err)
		}
		return nil, f
	}
	th := &starlark.Thread{Name: "load " + filename, Load: l.load,
		Print: func(_ *starlark.Thread, msg string) { fmt.Fprintln(os.Stderr, msg) }}
	th.SetLocal(callKey, &hookCall{ctx: context.Background(), maxSteps: loadMaxSteps, maxMem: loadMaxMemory, memScope: scopeLoad})
	th.SetMaxExecutionSteps(loadMaxSteps)
	globals, err := prog.Init(th, predeclared)
	if err != nil {
		l.evalError(filename, err)
		return nil, f
	}
	dropGuardNames(globals)
	globals.Freeze()
	return globals, f
}

// evalError reports a runtime error at the innermost script line.
func (l *loader) evalError(filename string, err error) {
	var ee *starlark.EvalError
	if errors.As(err, &ee) {
		pos := scriptPos(ee.CallStack)
		if !pos.IsValid() {
			pos = syntax.MakePosition(&filename, 1, 1)
		}
		l.errorf(pos, "%s", ee.Msg)
		return
	}
	l.errorf(syntax.MakePosition(&filename, 1, 1), "%v", err)
}

// scriptPos is the position of the innermost frame that is script code,
// not a builtin.
func scriptPos(stack starlark.CallStack) syntax.Position {
	for i := 0; i < len(stack); i++ {
		if p := stack.At(i).Pos; p.IsValid() && p.Filename() != "<builtin>" {
			return p
		}
	}
	return syntax.Position{}
}

// load implements load("other.star", ...) relative to the loading file, so a
// policy can be split into modules.
func (l *loader) load(th *starlark.Thread, name string) (starlark.StringDict, error) {
	if !l.loading {
		return nil, fmt.Errorf("load is only allowed at load time")
	}
	from := th.CallFrame(0).Pos.Filename()
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(from), name)
	}
	if m, ok := l.modules[path]; ok {
		if m == nil {
			return nil, fmt.Errorf("load cycle through %s", name)
		}
		return m.globals, m.err
	}
	l.modules[path] = nil
	src, err := os.ReadFile(path)
	if err != nil {
		l.modules[path] = &module{err: fmt.Errorf("load %s: %w", name, err)}
		return nil, l.modules[path].err
	}
	n := len(l.diags)
	globals, _ := l.exec(path, src, l.predecl)
	m := &module{globals: globals}
	if globals == nil || len(l.diags) > n {
		// The details were reported at their own positions; the load
		// statement only needs to fail.
		m.err = fmt.Errorf("load %s: module has errors", name)
	}
	l.modules[path] = m
	return m.globals, m.err
}

// recordConfigKwargs remembers where each keyword of each config(...) call
// is written, so a bad setting is reported at its own line and column.
func (l *loader) recordConfigKwargs(f *syntax.File) {
	syntax.Walk(f, func(n syntax.Node) bool {
		call, ok := n.(*syntax.CallExpr)
		if !ok {
			return true
		}
		if id, ok := call.Fn.(*syntax.Ident); !ok || id.Name != "config" {
			return true
		}
		m := map[string]syntax.Position{}
		elems := map[string][]syntax.Position{}
		for _, a := range call.Args {
			if b, ok := a.(*syntax.BinaryExpr); ok && b.Op == syntax.EQ {
				if k, ok := b.X.(*syntax.Ident); ok {
					m[k.Name] = k.NamePos
					var list []syntax.Expr
					switch v := b.Y.(type) {
					case *syntax.ListExpr:
						list = v.List
					case *syntax.TupleExpr:
						list = v.List
					}
					for _, e := range list {
						start, _ := e.Span()
						elems[k.Name] = append(elems[k.Name], start)
					}
				}
			}
		}
		l.kwPos[call.Lparen] = m
		l.kwElems[call.Lparen] = elems
		return true
	})
}

// webhooks is the process's sender of http.post requests, shared by every
// policy loaded, so that a reload neither drops queued requests nor
// starts more senders.
var webhooks = sync.OnceValue(func() *lphttp.Sender { return lphttp.New(lphttp.Options{}) })

func (l *loader) predeclared(p *Policy) starlark.StringDict {
	d := decisionBuiltins()
	d["config"] = starlark.NewBuiltin("config", l.config)
	d["addr"] = addr.Module(l.settings.RecipientDelimiter)
	d["re"] = re.Module()
	d["dns"] = dns.Module()
	d["dnsbl"] = dnsbl.Module()
	d["dkim"] = dkim.Module()
	d["dmarc"] = dmarc.Module()
	d["spf"] = spf.Module()
	d["arc"] = arc.Module()
	d["http"] = lphttp.Module(webhooks())
	d["policy"] = policy.Module(nil)
	d["milter"] = lpmilter.Module(lpmilter.Config{New: p.newMilter, Hostname: func() string { return p.Settings.Hostname }})
	d["forward"] = effectBuiltin("forward", Redirect, "address")
	l.mapsModule = func() starlark.Value {
		m := maps.Module(p.baseDir(), l.settings.RecipientDelimiter, l.settings.IsLocalDomain, p.logTable)
		m.Members["aliases"] = maps.AliasesBuiltin(p.baseDir(), p.logTable)
		return m
	}
	d["maps"] = l.mapsModule()
	l.predecl, l.policy = d, p
	l.stateModules(p)
	withGuards(d)
	d.Freeze()
	l.predecl = d
	return d
}

// config(...) stores settings. It reports every bad keyword instead of
// stopping at the first, so `larkpost check` lists them all.
func (l *loader) config(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	if !l.loading {
		return nil, fmt.Errorf("config() may only be called at load time, not from a hook")
	}
	call := th.CallFrame(1).Pos
	if len(args) > 0 {
		return nil, fmt.Errorf("config: settings are keyword arguments, e.g. config(hostname=\"mx.example.com\")")
	}
	positions := l.kwPos[call]
	for _, kv := range kwargs {
		name := string(kv[0].(starlark.String))
		pos, ok := positions[name]
		if !ok {
			pos = call
		}
		s, known := settingTable[name]
		if !known {
			msg := fmt.Sprintf("unknown setting %q", name)
			if near := nearest(name, SettingNames()); near != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", near)
			}
			l.errorf(pos, "%s", msg)
			continue
		}
		if err := s.set(l.settings, kv[1]); err != nil {
			var items itemErrors
			if !errors.As(err, &items) {
				l.errorf(pos, "%s: %v", name, err)
				continue
			}
			elems := l.kwElems[call][name]
			for _, ie := range items {
				at := pos
				if ie.i < len(elems) {
					at = elems[ie.i]
				}
				l.errorf(at, "%s: %v", name, ie.err)
			}
			continue
		}
		l.settings.explicit[name] = true
		l.settings.noteRaw(name, kv[1])
		l.setPos[name] = pos
		if stateModuleSettings[name] {
			l.stateModules(l.policy)
		}
		if name == "recipient_delimiter" {
			// Compiled code looks predeclared names up in this map at run
			// time, so code after this call, and every hook, splits
			// addresses with the configured delimiter.
			l.predecl["addr"] = addr.Module(l.settings.RecipientDelimiter)
			l.predecl["maps"] = l.mapsModule()
		}
	}
	return starlark.None, nil
}

// nearest returns the candidate within edit distance 2 of s, if any.
func nearest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// checkHooks binds the hook functions and reports names that look like
// hooks but are not, and hooks with the wrong parameters.
func (l *loader) checkHooks(p *Policy, f *syntax.File, globals starlark.StringDict) {
	defPos := map[string]syntax.Position{}
	for _, stmt := range f.Stmts {
		switch s := stmt.(type) {
		case *syntax.DefStmt:
			defPos[s.Name.Name] = s.Name.NamePos
		case *syntax.AssignStmt:
			if id, ok := s.LHS.(*syntax.Ident); ok {
				defPos[id.Name] = id.NamePos
			}
		}
	}
	for name, v := range globals {
		h, isHook := hookByName[name]
		fn, isFn := v.(*starlark.Function)
		pos := defPos[name]
		if !pos.IsValid() && isFn {
			pos = fn.Position()
		}
		if !pos.IsValid() {
			pos = syntax.MakePosition(&p.File, 1, 1)
		}
		if !isHook {
			if strings.HasPrefix(name, "on_") && isFn {
				msg := fmt.Sprintf("%s is not a hook", name)
				if near := nearest(name, hookNames()); near != "" {
					msg += fmt.Sprintf(" (did you mean %s?)", near)
				}
				l.errorf(pos, "%s; hooks are %s", msg, strings.Join(hookNames(), ", "))
			}
			continue
		}
		spec := hookSpecs[h]
		if !isFn {
			l.errorf(pos, "%s must be a function %s(%s), got %s", name, name, strings.Join(spec.params, ", "), v.Type())
			continue
		}
		if fn.NumParams() != len(spec.params) || fn.HasVarargs() || fn.HasKwargs() || fn.NumKwonlyParams() > 0 {
			l.errorf(pos, "%s takes %d parameters (%s), not %d", name, len(spec.params), strings.Join(spec.params, ", "), fn.NumParams())
			continue
		}
		p.hooks[h] = fn
	}
}

// parseFile parses a script. A statement missing its end (a def without
// its colon, an unclosed call) is reported by starlark-go at the token
// after the line break, the start of the next line; it is moved to the
// end of the line where the statement is.
func parseFile(opts *syntax.FileOptions, filename string, src []byte) (*syntax.File, error) {
	f, err := opts.Parse(filename, src, 0)
	var se syntax.Error
	if err == nil || !errors.As(err, &se) || !strings.HasPrefix(se.Msg, "got newline") {
		return f, err
	}
	if se.Pos.Col != 1 {
		return f, err
	}
	lines := strings.Split(string(src), "\n")
	name := se.Pos.Filename()
	for n := int(se.Pos.Line) - 1; n >= 1 && n <= len(lines); n-- {
		if line := strings.TrimRight(lines[n-1], " \t\r"); strings.TrimSpace(line) != "" {
			se.Pos = syntax.MakePosition(&name, int32(n), int32(len(line)+1))
			break
		}
	}
	return f, se
}
