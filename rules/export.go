package rules

import (
	"context"
	"time"

	"go.starlark.net/starlark"
	"go.starlark.net/syntax"
)

// This file exports what the rule test runner, package rules/startest,
// needs of the runtime and cannot reach otherwise: test files are compiled,
// sandboxed and reported on exactly like config scripts, and see the
// config's builtins, globals and decisions as hooks do.

// Predeclared returns a copy of the names a config script sees: its
// builtins (config, decisions, addr, maps, re, ...) and the memory guards
// (guard.go). Exported so that rule test files can be run with the same
// builtins as the config they test.
func (p *Policy) Predeclared() starlark.StringDict {
	d := make(starlark.StringDict, len(p.predeclared))
	for k, v := range p.predeclared {
		d[k] = v
	}
	return d
}

// Globals returns a copy of the config script's frozen globals: its hooks,
// helper functions and tables. Exported so that rule tests can call them
// directly (policy.is_role("abuse")).
func (p *Policy) Globals() starlark.StringDict {
	d := make(starlark.StringDict, len(p.globals))
	for k, v := range p.globals {
		d[k] = v
	}
	return d
}

// ExecFile runs a script that is not a config, such as a rule test file,
// on th with the given predeclared names, the way config scripts are run:
// in the same dialect, with the same syntax error positions, guarded (see
// guard.go). It returns the file's frozen globals, without the guards' own
// names. Errors are starlark's: syntax.Error, resolve.ErrorList or
// *starlark.EvalError. th should have a budget (SetTestBudget). Exported
// for the rule test runner, which must compile test files as the config
// is compiled.
func ExecFile(th *starlark.Thread, filename string, src []byte, predeclared starlark.StringDict) (starlark.StringDict, error) {
	f, err := parseFile(fileOptions, filename, src)
	if err != nil {
		return nil, err
	}
	prog, err := guardedProgram(f, predeclared.Has)
	if err != nil {
		return nil, err
	}
	globals, err := prog.Init(th, predeclared)
	if err != nil {
		return nil, err
	}
	dropGuardNames(globals)
	globals.Freeze()
	return globals, nil
}

// SetTestBudget gives th the budget of a rule test: at most maxSteps
// steps, the memory budget of a rule test (testMaxMemory, reported as
// "per rule test"), and the deadline that ContextOf gives the hooks and
// builtins it calls (zero: none). Exported because the budget lives in a
// thread local only this package can set.
func SetTestBudget(th *starlark.Thread, maxSteps uint64, deadline time.Time) {
	th.SetLocal(callKey, &hookCall{ctx: context.Background(), deadline: deadline, maxSteps: maxSteps,
		maxMem: testMaxMemory, memScope: scopeTest})
	th.SetMaxExecutionSteps(maxSteps)
}

// DecisionValue is d as scripts see it, the value reject() and the other
// decision builtins return (kind, code, status, text, source). Exported so
// that rule tests can inspect the decisions of a dry run.
func DecisionValue(d Decision) starlark.Value { return &decisionValue{d} }

// ScriptPos is the position of the innermost frame of stack that is
// script code, not a builtin. Exported so that rule test failures are
// reported at the same FILE:LINE as hook failures.
func ScriptPos(stack starlark.CallStack) syntax.Position { return scriptPos(stack) }

// CallerSource is "file:line" of the script line that called the builtin
// running on th, as print() logs it. Exported for print() in rule tests.
func CallerSource(th *starlark.Thread) string { return callerSource(th) }

// HookNames lists the hooks a config may define, in the order the server
// meets them, for the reference's completeness test.
func HookNames() []string { return hookNames() }
