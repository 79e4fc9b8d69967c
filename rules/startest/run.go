// Package startest runs policy unit tests written in Starlark, the
// *_test.star files beside a config, the way go test runs Go tests: it
// calls every test_* function of each file against a loaded policy, with
// the `testing` module to dry-run a connection and a message through the
// same intake the server uses and the `assert` module to check what was
// decided, and prints go-test-like lines ("--- FAIL: FILE:test_name (line
// N): message") ending with "N passed, N failed". It is the runner behind
// `larkpost test`.
package startest

import (
	"cmp"
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

	"github.com/larkpost/larkpost/rules"
)

// Options configures Run.
type Options struct {
	Paths   []string       // test files or directories; none: the config's directory
	Run     *regexp.Regexp // only tests whose "file:name" matches
	Verbose bool
	Out     io.Writer
	User    string // run the tests beside this user's filter script (filter_path)
}

// Summary counts test outcomes.
type Summary struct{ Passed, Failed int }

// testMaxSteps bounds one test function (each hook it triggers has its
// own budget from the config), as the rules' test memory budget its
// allocations (rules.SetTestBudget).
const testMaxSteps = 100_000_000

// Run runs the test_* functions of *_test.star files against p and
// prints go-test-like lines to opts.Out, ending with "N passed, N failed".
// A test file that does not load counts as one failed test.
func Run(p *rules.Policy, opts Options) (Summary, error) {
	paths := opts.Paths
	if opts.User != "" && len(paths) == 0 {
		fp := p.FilterPath(opts.User, p.Settings.Hostname)
		if fp == "" {
			return Summary{}, fmt.Errorf("test: --user needs filter_path in the config")
		}
		// Only this user's tests: NAME_test.star, NAME_*_test.star.
		paths, _ = filepath.Glob(filepath.Join(filepath.Dir(fp), opts.User+"*_test.star"))
		if len(paths) == 0 {
			return Summary{}, fmt.Errorf("test: no %s*_test.star beside %s", opts.User, fp)
		}
	}
	files, err := findTests(p, paths)
	if err != nil {
		return Summary{}, err
	}
	var sum Summary
	for _, f := range files {
		runFile(p, f, opts, &sum)
	}
	fmt.Fprintf(opts.Out, "%d passed, %d failed\n", sum.Passed, sum.Failed)
	return sum, nil
}

func findTests(p *rules.Policy, paths []string) ([]string, error) {
	if len(paths) == 0 {
		dir := "."
		if p.File != rules.DefaultConfigName {
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

// predeclared is what a test file sees: the config's builtins, the
// testing and assert modules, and the config's own globals as `policy`.
func predeclared(p *rules.Policy) starlark.StringDict {
	d := p.Predeclared()
	delete(d, "config")
	d["testing"] = testingModule()
	d["assert"] = assertModule()
	d["policy"] = policyModule(p)
	return d
}

func runFile(p *rules.Policy, file string, opts Options, sum *Summary) {
	src, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintf(opts.Out, "--- FAIL: %s: %v\n", file, err)
		sum.Failed++
		return
	}
	th := &starlark.Thread{Name: "load " + file, Print: testPrint(opts.Out)}
	rules.SetTestBudget(th, testMaxSteps, time.Time{})
	globals, err := rules.ExecFile(th, file, src, predeclared(p))
	if err != nil {
		fmt.Fprintf(opts.Out, "--- FAIL: %s: %s\n", file, loadErrorText(err))
		sum.Failed++
		return
	}

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
		th := &starlark.Thread{Name: t.name, Print: testPrint(opts.Out)}
		th.SetLocal(testKey, st)
		rules.SetTestBudget(th, testMaxSteps, time.Now().Add(time.Minute))
		if t.fn.NumParams() > 0 {
			st.failures = append(st.failures, failure{pos: t.fn.Position(), msg: t.name + " must take no parameters"})
		} else if _, err := starlark.Call(th, t.fn, nil, nil); err != nil {
			pos := t.fn.Position()
			var ee *starlark.EvalError
			if errors.As(err, &ee) {
				if sp := rules.ScriptPos(ee.CallStack); sp.IsValid() {
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

func testPrint(out io.Writer) func(*starlark.Thread, string) {
	return func(th *starlark.Thread, msg string) {
		fmt.Fprintf(out, "    %s: %s\n", rules.CallerSource(th), msg)
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
		if pos := rules.ScriptPos(ee.CallStack); pos.IsValid() {
			return fmt.Sprintf("%s: %s", pos, ee.Msg)
		}
		return ee.Msg
	}
	return err.Error()
}
