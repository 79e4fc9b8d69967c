// Memory budgets for scripts.
//
// The step limit bounds a script's CPU, not its memory: one step can ask
// for gigabytes (list(range(10**8)), "x" * 10**9, ",".join([s] * 10**6)),
// and forty steps of s = s + s double a string forty times. starlark-go
// has no allocation meter, so larkpost counts what scripts build.
//
// What is counted. Every call has a budget in bytes, kept with its step
// budget in the hookCall on the thread: hook_max_memory (64MB) per hook
// call, filter_max_memory (32MB) per run (and per load) of a user's
// filter, loadMaxMemory for a config file's top level and testMaxMemory
// per rule test. Each guarded operation estimates the size of its result
// before allocating it, adds that to the call's total and fails when the
// total would pass the budget, with "memory budget exceeded: 64MB per hook
// call (hook_max_memory)". The total counts bytes allocated over the call,
// garbage included, not live memory: a loop that builds and drops a 1 MB
// string 100 times is charged 100 MB. The error ends the call exactly like
// a step overrun: a hook fails (451 4.3.5, logged with the FILE:LINE of
// the operator or call), a filter files to the INBOX, a config fails
// `larkpost check` with FILE:LINE:COL.
//
// How. Operators cannot be intercepted in starlark-go, so guardSyntax
// rewrites each file's syntax tree after parsing and before resolving
// (config files, load()ed modules, user filters and rule tests alike):
//
//   - x + y, x * y, x % y, x | y and x << y become _lp_add(x, y), ...,
//     calls whose position is the operator's, so errors name its
//     line:col. The guard charges the result's size, then computes it
//     with starlark.Binary: results and errors are the interpreter's.
//   - x op= y becomes x op= _lp_iadd(x, y) (and so on): the guard charges
//     what x op y will allocate (for list += and dict |=, which change x
//     in place, the added elements, or all of the grown x when they are
//     more than a quarter of it, as its array is then reallocated) and
//     returns y, so the interpreter still does the operation, in place
//     where it does: a = []; b = a; a += [1] leaves b == [1].
//     x is read twice, which is harmless when x is a name or x[k], x.f
//     with names and literals; any other target (x[f()] += y) is
//     evaluated once by binding it first: for _lp_t in ((x, f()),):
//     _lp_t[0][_lp_t[1]] += _lp_iadd(_lp_t[0][_lp_t[1]], y).
//   - x.join (and the other bulk methods in guardedMethods) becomes
//     _lp_attr(x.join): the attribute is looked up as before (modules,
//     msg and addresses are untouched), and when it is a method of a
//     string, list, dict or set the guard returns a bound builtin that
//     charges before calling it.
//   - The built-ins that copy or expand (list, tuple, dict, set, sorted,
//     reversed, enumerate, zip, str, repr, print, fail, bytes, and getattr,
//     so getattr(s, "join") is guarded too) are shadowed in every
//     predeclared dict by guards with the same names.
//   - stdlib/re charges the same budget through re.Budget (re.BudgetKey is
//     callKey): re.sub, re.split and re.findall bound their output before
//     building it, and compiling a new pattern is charged an estimate.
//
// str, repr, %, format, print and fail estimate their output by walking
// the value and stop as soon as the remaining budget is passed, so
// str([s] * 10**5) with s a 1 MB string fails after about 64 elements
// instead of walking 100 GB. Each nesting level counts depthCost bytes
// (the printer's Go stack), and cycles count as "[...]".
//
// The names starting with guardPrefix are reserved: a script that uses
// one does not load. The guards are predeclared names, which the
// resolver never offers as "did you mean" hints, and the _lp_t globals
// of top-level loops are removed from a file's globals after it has run.
//
// Ints: a guarded operator refuses to make an int of more than maxIntBits
// ("int too large"), not for memory but because multiplying and printing
// big ints takes superlinear time within a single step.
//
// What is not counted, because it cannot grow memory by more than a
// constant per step: + or | with a number literal operand, + of two
// string literals, % with a literal right operand, * and << of two
// number literals, x += [...] (a list display extends in place) and
// x += 1; copies and views of values the script already holds (slices,
// lower, strip, dict.items, set difference and intersection, -, &, ^,
// lazy range and elems); one element per step (append, comprehensions,
// dict and list displays); msg.body's copy of the body. Sizes are
// estimates: 16 bytes per list or tuple slot, 32 per new string in a
// list, 64 per dict or set entry, a string's length, a big int's bits / 8;
// the transient growth of buffers (up to twice the result), allocator
// overhead and the amortized growth of a list appended to in small steps
// are not counted, so the process may briefly hold up to about twice the
// budget per call. Each guarded operator takes two steps more than
// before. Nothing bounds the CPU of a single built-in between steps
// (int("9" * 10**6), a regular expression with thousands of groups).
//
// Cost: a guarded operator or method is one more builtin call, about
// 130 ns and two allocations (BenchmarkGuardedOps); BenchmarkHookCall's
// path has none, and costs what it did.

package rules

import (
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	"go.starlark.net/starlark"
	"go.starlark.net/syntax"

	"github.com/larkpost/larkpost/stdlib/re"
)

// Budgets of what has no setting.
const (
	loadMaxMemory   = 256 << 20 // a config file's top level (each load()ed file has its own)
	testMaxMemory   = 256 << 20 // a rule test file's top level, and each test function
	minMemoryBudget = 1 << 20   // the least hook_max_memory and filter_max_memory
)

// Estimated sizes, in bytes.
const (
	valueSize  = 16   // one Value (an interface) in a list or tuple
	stringSize = 32   // a new string in a list: its slot and its boxed header
	entrySize  = 64   // one dict or set entry
	depthCost  = 1024 // one nesting level printed: the printer's Go stack
)

// guardPrefix starts every name the guards use; scripts may not use it.
const guardPrefix = "_lp_"

// The hookCall is also the Budget stdlib/re charges.
var _ re.Budget = (*hookCall)(nil)

// memScope names a budget in its error.
type memScope uint8

const (
	scopeHook memScope = iota
	scopeFilter
	scopeLoad
	scopeTest
)

var memScopeText = [...]string{
	scopeHook:   "per hook call (hook_max_memory)",
	scopeFilter: "per filter run (filter_max_memory)",
	scopeLoad:   "while loading the config",
	scopeTest:   "per rule test",
}

// budgetError is the error of an operation that would pass the budget.
type budgetError struct {
	max   int64
	scope memScope
}

func (e *budgetError) Error() string {
	return "memory budget exceeded: " + sizeString(e.max) + " " + memScopeText[e.scope]
}

// Remaining is how many bytes the call may still allocate; a nil
// hookCall (a thread without a budget) has no limit.
func (hc *hookCall) Remaining() int64 {
	if hc == nil {
		return math.MaxInt64
	}
	return hc.maxMem - hc.mem
}

// Charge counts n more bytes, or counts nothing and returns the budget
// error when they do not fit.
func (hc *hookCall) Charge(n int64) error {
	if hc == nil || n <= 0 {
		return nil
	}
	if n > hc.maxMem-hc.mem {
		return &budgetError{max: hc.maxMem, scope: hc.memScope}
	}
	hc.mem += n
	return nil
}

func memOf(th *starlark.Thread) *hookCall {
	hc, _ := th.Local(callKey).(*hookCall)
	return hc
}

func setMemoryBudget(dst *int64, v starlark.Value) error {
	var n int64
	if err := setSize(&n, v); err != nil {
		return err
	}
	if n < minMemoryBudget {
		return fmt.Errorf("must be at least %s", sizeString(minMemoryBudget))
	}
	*dst = n
	return nil
}

// sizeString writes a size the way config(...) takes it: "64MB".
func sizeString(n int64) string {
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"GB", 30}, {"MB", 20}, {"KB", 10}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

// withGuards adds the guards to a predeclared dict: the hidden operator
// and method guards, and the shadowed built-ins.
func withGuards(d starlark.StringDict) starlark.StringDict {
	for k, v := range guards {
		d[k] = v
	}
	return d
}

// Names of the guards the rewritten syntax calls.
const (
	guardAttr   = guardPrefix + "attr"
	guardTemp   = guardPrefix + "t"      // the variable binding a complex target
	guardReturn = guardPrefix + "return" // notes the line of a return statement
)

var binopGuardNames = map[syntax.Token]string{
	syntax.PLUS:    guardPrefix + "add",
	syntax.STAR:    guardPrefix + "mul",
	syntax.PERCENT: guardPrefix + "mod",
	syntax.PIPE:    guardPrefix + "or",
	syntax.LTLT:    guardPrefix + "shl",
}

// augGuardNames maps an augmented assignment to its guard and operator.
var augGuardNames = map[syntax.Token]struct {
	name string
	op   syntax.Token
}{
	syntax.PLUS_EQ:    {guardPrefix + "iadd", syntax.PLUS},
	syntax.STAR_EQ:    {guardPrefix + "imul", syntax.STAR},
	syntax.PERCENT_EQ: {guardPrefix + "imod", syntax.PERCENT},
	syntax.PIPE_EQ:    {guardPrefix + "ior", syntax.PIPE},
	syntax.LTLT_EQ:    {guardPrefix + "ishl", syntax.LTLT},
}

// guardedMethods are the methods of built-in types that allocate in bulk,
// by receiver type.
var guardedMethods = map[string]map[string]methodSize{
	"string": {
		"join":       joinSize,
		"replace":    replaceSize,
		"format":     formatMethodSize,
		"split":      splitSize,
		"rsplit":     splitSize,
		"splitlines": splitlinesSize,
	},
	"list": {"extend": func(recv starlark.Value, args starlark.Tuple, _ []starlark.Tuple, limit int64) int64 {
		return growSize(recv, argsSize(args, 0, 1, valueSize, limit), valueSize)
	}},
	"dict": {"update": func(recv starlark.Value, args starlark.Tuple, kwargs []starlark.Tuple, limit int64) int64 {
		return growSize(recv, addSat(argsSize(args, 0, 1, entrySize, limit), int64(len(kwargs))*entrySize), entrySize)
	}},
	"set": {
		"union": func(recv starlark.Value, args starlark.Tuple, _ []starlark.Tuple, limit int64) int64 {
			return addSat(int64(starlark.Len(recv))*entrySize, argsSize(args, 0, len(args), entrySize, limit))
		},
		"update": func(recv starlark.Value, args starlark.Tuple, _ []starlark.Tuple, limit int64) int64 {
			return growSize(recv, argsSize(args, 0, len(args), entrySize, limit), entrySize)
		},
		"symmetric_difference": func(recv starlark.Value, args starlark.Tuple, _ []starlark.Tuple, limit int64) int64 {
			return addSat(int64(starlark.Len(recv))*entrySize, argsSize(args, 0, 1, entrySize, limit))
		},
	},
}

// methodSize estimates what a method call allocates; limit is what is
// left of the budget (an estimate may stop counting beyond it).
type methodSize func(recv starlark.Value, args starlark.Tuple, kwargs []starlark.Tuple, limit int64) int64

// guardedMethodNames is every name in guardedMethods: a DotExpr with one
// of these names is rewritten.
var guardedMethodNames = func() map[string]bool {
	m := map[string]bool{}
	for _, methods := range guardedMethods {
		for name := range methods {
			m[name] = true
		}
	}
	return m
}()

// methodGuards holds, by receiver type and name, the guard builtins that
// guardMethod binds to a receiver.
var methodGuards = func() map[string]map[string]*starlark.Builtin {
	out := map[string]map[string]*starlark.Builtin{}
	for typ, methods := range guardedMethods {
		out[typ] = map[string]*starlark.Builtin{}
		for name, size := range methods {
			out[typ][name] = starlark.NewBuiltin(name, func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
				recv := b.Receiver()
				if hc := memOf(th); hc != nil {
					if err := hc.Charge(size(recv, args, kwargs, hc.Remaining())); err != nil {
						return nil, err
					}
				}
				orig, err := recv.(starlark.HasAttrs).Attr(name)
				if err != nil {
					return nil, err
				}
				return orig.(*starlark.Builtin).CallInternal(th, args, kwargs)
			})
		}
	}
	return out
}()

// guardMethod returns v, or its guard when v is a bulk method bound to a
// string, list, dict or set.
func guardMethod(v starlark.Value) starlark.Value {
	b, ok := v.(*starlark.Builtin)
	if !ok || b.Receiver() == nil {
		return v
	}
	var typ string
	switch b.Receiver().(type) {
	case starlark.String, *starlark.List, *starlark.Dict, *starlark.Set:
		typ = b.Receiver().Type()
	default:
		return v
	}
	if g := methodGuards[typ][b.Name()]; g != nil {
		return g.BindReceiver(b.Receiver())
	}
	return v
}

// chargeOperands checks an operator guard's two operands and charges
// what x op y will allocate, as size estimates it.
func chargeOperands(th *starlark.Thread, name string, op syntax.Token, args starlark.Tuple, size func(syntax.Token, starlark.Value, starlark.Value, int64) int64) error {
	if len(args) != 2 {
		return fmt.Errorf("%s: internal error: got %d operands", name, len(args))
	}
	if err := checkIntBits(op, args[0], args[1]); err != nil {
		return err
	}
	if hc := memOf(th); hc != nil {
		return hc.Charge(size(op, args[0], args[1], hc.Remaining()))
	}
	return nil
}

// guards are the predeclared names withGuards adds.
var guards = func() starlark.StringDict {
	d := starlark.StringDict{}
	for op, name := range binopGuardNames {
		d[name] = starlark.NewBuiltin(name, func(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, _ []starlark.Tuple) (starlark.Value, error) {
			if err := chargeOperands(th, name, op, args, binarySize); err != nil {
				return nil, err
			}
			return starlark.Binary(op, args[0], args[1])
		})
	}
	for _, g := range augGuardNames {
		op, name := g.op, g.name
		d[name] = starlark.NewBuiltin(name, func(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, _ []starlark.Tuple) (starlark.Value, error) {
			if err := chargeOperands(th, name, op, args, augmentedSize); err != nil {
				return nil, err
			}
			return args[1], nil
		})
	}
	// return x becomes return _lp_return(x): the call notes the line, so a
	// decision that is a plain value (a route string, a folder name, a
	// list of addresses) names the line that returned it, not the def.
	// The hook's own return runs last, after its helpers' returns.
	d[guardReturn] = starlark.NewBuiltin(guardReturn, func(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, _ []starlark.Tuple) (starlark.Value, error) {
		if len(args) != 1 {
			return nil, fmt.Errorf("%s: internal error: got %d values", guardReturn, len(args))
		}
		if hc := memOf(th); hc != nil && th.CallStackDepth() > 1 {
			hc.ret = th.CallFrame(1).Pos
		}
		return args[0], nil
	})
	d[guardAttr] = starlark.NewBuiltin(guardAttr, func(_ *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, _ []starlark.Tuple) (starlark.Value, error) {
		if len(args) != 1 {
			return nil, fmt.Errorf("%s: internal error: got %d operands", guardAttr, len(args))
		}
		return guardMethod(args[0]), nil
	})

	seq := func(per int64) builtinSize {
		return func(args starlark.Tuple, _ []starlark.Tuple, limit int64) int64 {
			return argsSize(args, 0, 1, per, limit)
		}
	}
	shadow(d, "list", seq(valueSize))
	shadow(d, "reversed", seq(valueSize))
	shadow(d, "set", seq(entrySize))
	shadow(d, "enumerate", seq(3*valueSize)) // a slot and a pair per element
	shadow(d, "tuple", func(args starlark.Tuple, _ []starlark.Tuple, limit int64) int64 {
		if len(args) == 1 {
			if _, ok := args[0].(starlark.Tuple); ok {
				return 0 // tuple(t) is t
			}
		}
		return argsSize(args, 0, 1, valueSize, limit)
	})
	shadow(d, "sorted", func(args starlark.Tuple, kwargs []starlark.Tuple, limit int64) int64 {
		n := argsSize(args, 0, 1, valueSize, limit)
		if len(args) > 1 || len(kwargs) > 0 {
			n = mulSat(n, 2) // the keys
		}
		return n
	})
	shadow(d, "dict", func(args starlark.Tuple, kwargs []starlark.Tuple, limit int64) int64 {
		return addSat(argsSize(args, 0, 1, entrySize, limit), int64(len(kwargs))*entrySize)
	})
	shadow(d, "zip", func(args starlark.Tuple, _ []starlark.Tuple, limit int64) int64 {
		if len(args) == 0 {
			return 0
		}
		per := int64(len(args)+1) * valueSize // a slot and a row tuple
		rows := int64(math.MaxInt64)
		for _, a := range args {
			rows = min(rows, seqLen(a, limit/per+1))
		}
		return mulSat(rows, per)
	})
	shadow(d, "str", func(args starlark.Tuple, _ []starlark.Tuple, limit int64) int64 {
		if len(args) != 1 {
			return 0
		}
		if _, ok := args[0].(starlark.String); ok {
			return 0 // str(s) is s
		}
		return textSize(args[0], false, limit)
	})
	shadow(d, "repr", func(args starlark.Tuple, _ []starlark.Tuple, limit int64) int64 {
		if len(args) != 1 {
			return 0
		}
		return textSize(args[0], true, limit)
	})
	shadow(d, "print", printSize)
	shadow(d, "fail", printSize)
	shadow(d, "bytes", func(args starlark.Tuple, _ []starlark.Tuple, limit int64) int64 {
		if len(args) != 1 {
			return 0
		}
		switch x := args[0].(type) {
		case starlark.Bytes:
			return 0
		case starlark.String:
			if !utf8.ValidString(string(x)) {
				return mulSat(int64(len(x)), 3) // invalid bytes become U+FFFD
			}
			return int64(len(x))
		}
		return argsSize(args, 0, 1, 1, limit)
	})
	getattr := starlark.Universe["getattr"].(*starlark.Builtin)
	d["getattr"] = starlark.NewBuiltin("getattr", func(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		v, err := getattr.CallInternal(th, args, kwargs)
		if err != nil {
			return nil, err
		}
		return guardMethod(v), nil
	})
	d.Freeze()
	return d
}()

// builtinSize estimates what a call of a built-in allocates.
type builtinSize func(args starlark.Tuple, kwargs []starlark.Tuple, limit int64) int64

// shadow adds a guard of the universal built-in name: it charges size,
// then runs the built-in itself, without a frame of its own, so errors,
// print's caller and call stacks are as before.
func shadow(d starlark.StringDict, name string, size builtinSize) {
	orig := starlark.Universe[name].(*starlark.Builtin)
	d[name] = starlark.NewBuiltin(name, func(th *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		if hc := memOf(th); hc != nil {
			if err := hc.Charge(size(args, kwargs, hc.Remaining())); err != nil {
				return nil, err
			}
		}
		return orig.CallInternal(th, args, kwargs)
	})
}

// printSize is the size of the text print(*args, sep=" ") and fail write.
func printSize(args starlark.Tuple, kwargs []starlark.Tuple, limit int64) int64 {
	sep := int64(1)
	for _, kv := range kwargs {
		if s, ok := kv[1].(starlark.String); ok && kv[0] == starlark.String("sep") {
			sep = int64(len(s))
		}
	}
	n := mulSat(sep, int64(len(args)))
	for _, a := range args {
		if n > limit {
			break
		}
		n = addSat(n, textSize(a, false, limit-n))
	}
	return n
}

// argsSize is per bytes for each element of the iterables args[from:to].
func argsSize(args starlark.Tuple, from, to int, per, limit int64) int64 {
	var n int64
	for i := from; i < to && i < len(args); i++ {
		n = addSat(n, mulSat(seqLen(args[i], limit/per+1), per))
	}
	return n
}

// seqLen is the number of elements of an iterable (0 for anything else),
// counted up to max when its length is not known in advance.
func seqLen(x starlark.Value, max int64) int64 {
	if _, ok := x.(starlark.Iterable); !ok {
		return 0
	}
	if n := starlark.Len(x); n >= 0 {
		return int64(n)
	}
	it := starlark.Iterate(x)
	if it == nil {
		return 0
	}
	defer it.Done()
	var n int64
	var v starlark.Value
	for n < max && it.Next(&v) {
		n++
	}
	return n
}
