package rules

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.starlark.net/resolve"
	"go.starlark.net/starlark"
	"go.starlark.net/syntax"
)

// TestOptions configures RunTests.
type TestOptions struct {
	Paths   []string       // test files or directories; none: the config's directory
	Run     *regexp.Regexp // only tests whose "file:name" matches
	Verbose bool
	Out     io.Writer
	User    string // run the tests beside this user's filter script (filter_path)
}

// TestSummary counts test outcomes.
type TestSummary struct{ Passed, Failed int }

// testMaxSteps bounds one test function (each hook it triggers has its
// own budget from the config), as testMaxMemory its allocations.
const testMaxSteps = 100_000_000

// RunTests runs the test_* functions of *_test.star files against p and
// prints go-test-like lines to opts.Out, ending with "N passed, N failed".
// A test file that does not load counts as one failed test.
func RunTests(p *Policy, opts TestOptions) (TestSummary, error) {
	paths := opts.Paths
	if opts.User != "" && len(paths) == 0 {
		fp := p.FilterPath(opts.User, p.Settings.Hostname)
		if fp == "" {
			return TestSummary{}, fmt.Errorf("test: --user needs filter_path in the config")
		}
		// Only this user's tests: NAME_test.star, NAME_*_test.star.
		paths, _ = filepath.Glob(filepath.Join(filepath.Dir(fp), opts.User+"*_test.star"))
		if len(paths) == 0 {
			return TestSummary{}, fmt.Errorf("test: no %s*_test.star beside %s", opts.User, fp)
		}
	}
	files, err := findTests(p, paths)
	if err != nil {
		return TestSummary{}, err
	}
	var sum TestSummary
	for _, f := range files {
		p.runTestFile(f, opts, &sum)
	}
	fmt.Fprintf(opts.Out, "%d passed, %d failed\n", sum.Passed, sum.Failed)
	return sum, nil
}

func findTests(p *Policy, paths []string) ([]string, error) {
	if len(paths) == 0 {
		dir := "."
		if p.File != DefaultConfigName {
			dir = filepath.Dir(p.File)
		}
		paths = []string{dir}
	}
	var files []string
	for _, path := range paths {
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("test: %w", err)
		}
		if !fi.IsDir() {
			files = append(files, path)
			continue
		}
		m, _ := filepath.Glob(filepath.Join(path, "*_test.star"))
		files = append(files, m...)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("test: no *_test.star files in %s", strings.Join(paths, ", "))
	}
	slices.Sort(files)
	return files, nil
}

// testPredeclared is what a test file sees: the config's builtins, the
// testing and assert modules, and the config's own globals as `policy`.
func (p *Policy) testPredeclared() starlark.StringDict {
	d := starlark.StringDict{}
	for k, v := range p.predeclared {
		if k != "config" {
			d[k] = v
		}
	}
	d["testing"] = testingModule()
	d["assert"] = assertModule()
	d["policy"] = p.policyModule()
	return d
}

func (p *Policy) runTestFile(file string, opts TestOptions, sum *TestSummary) {
	src, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintf(opts.Out, "--- FAIL: %s: %v\n", file, err)
		sum.Failed++
		return
	}
	pre := p.testPredeclared()
	f, err := parseFile(fileOptions, file, src)
	var prog *starlark.Program
	if err == nil {
		prog, err = guardedProgram(f, pre.Has)
	}
	var globals starlark.StringDict
	if err == nil {
		th := &starlark.Thread{Name: "load " + file, Print: p.testPrint(opts.Out)}
		th.SetLocal(callKey, &hookCall{ctx: context.Background(), maxSteps: testMaxSteps, maxMem: testMaxMemory, memScope: scopeTest})
		th.SetMaxExecutionSteps(testMaxSteps)
		globals, err = prog.Init(th, pre)
	}
	if err != nil {
		fmt.Fprintf(opts.Out, "--- FAIL: %s: %s\n", file, loadErrorText(err))
		sum.Failed++
		return
	}
	dropGuardNames(globals)
	globals.Freeze()

	type test struct {
		name string
		fn   *starlark.Function
	}
	var tests []test
	for name, v := range globals {
		if fn, ok := v.(*starlark.Function); ok && strings.HasPrefix(name, "test_") {
			tests = append(tests, test{name, fn})
		}
	}
	slices.SortFunc(tests, func(a, b test) int { return cmp.Compare(a.fn.Position().Line, b.fn.Position().Line) })
	for _, t := range tests {
		id := file + ":" + t.name
		if opts.Run != nil && !opts.Run.MatchString(id) {
			continue
		}
		if opts.Verbose {
			fmt.Fprintf(opts.Out, "=== RUN   %s\n", id)
		}
		start := time.Now()
		st := &testState{policy: p, dir: filepath.Dir(file)}
		th := &starlark.Thread{Name: t.name, Print: p.testPrint(opts.Out)}
		th.SetLocal(testKey, st)
		th.SetLocal(callKey, &hookCall{ctx: context.Background(), deadline: time.Now().Add(time.Minute), maxSteps: testMaxSteps,
			maxMem: testMaxMemory, memScope: scopeTest})
		th.SetMaxExecutionSteps(testMaxSteps)
		if t.fn.NumParams() > 0 {
			st.failures = append(st.failures, failure{pos: t.fn.Position(), msg: t.name + " must take no parameters"})
		} else if _, err := starlark.Call(th, t.fn, nil, nil); err != nil {
			pos := t.fn.Position()
			var ee *starlark.EvalError
			if errors.As(err, &ee) {
				if sp := scriptPos(ee.CallStack); sp.IsValid() {
					pos = sp
				}
				err = errors.New(ee.Msg)
			}
			st.failures = append(st.failures, failure{pos: pos, msg: "error: " + err.Error()})
		}
		elapsed := time.Since(start).Seconds()
		if len(st.failures) == 0 {
			sum.Passed++
			if opts.Verbose {
				fmt.Fprintf(opts.Out, "--- PASS: %s (%.2fs)\n", id, elapsed)
			}
			continue
		}
		sum.Failed++
		first := st.failures[0]
		fmt.Fprintf(opts.Out, "--- FAIL: %s (line %d): %s\n", id, first.pos.Line, first.msg)
		for _, f := range st.failures[1:] {
			fmt.Fprintf(opts.Out, "    %s:%d: %s\n", f.pos.Filename(), f.pos.Line, f.msg)
		}
	}
}

func (p *Policy) testPrint(out io.Writer) func(*starlark.Thread, string) {
	return func(th *starlark.Thread, msg string) {
		fmt.Fprintf(out, "    %s: %s\n", callerSource(th), msg)
	}
}

// loadErrorText formats a test file's load error as FILE:LINE:COL: message.
func loadErrorText(err error) string {
	var se syntax.Error
	var rl resolve.ErrorList
	var ee *starlark.EvalError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("%s: syntax error: %s", se.Pos, se.Msg)
	case errors.As(err, &rl):
		var parts []string
		for _, e := range rl {
			parts = append(parts, fmt.Sprintf("%s: %s", e.Pos, e.Msg))
		}
		return strings.Join(parts, "; ")
	case errors.As(err, &ee):
		if pos := scriptPos(ee.CallStack); pos.IsValid() {
			return fmt.Sprintf("%s: %s", pos, ee.Msg)
		}
		return ee.Msg
	}
	return err.Error()
}
