// Package re is the Starlark `re` module: regular expressions for policy
// and filter scripts, with Go's RE2 syntax, so matching takes linear time
// whatever the pattern (no catastrophic backtracking from a user's filter).
//
//	re.search(pattern, s)      first match anywhere: a list [whole, group1, ...], or None
//	re.match(pattern, s)       the same, anchored at the start of s
//	re.findall(pattern, s)     every match: the whole matches, or the first group when there is one
//	re.sub(pattern, repl, s)   replace every match; $1 / ${name} in repl refer to groups
//	re.split(pattern, s)       split s around matches
//
// A pattern may start with "(?i)" for case-insensitive matching. Compiled
// patterns are cached, so calling re.search in a hook costs one lookup.
//
// When the thread carries a Budget (under BudgetKey), every function
// charges it for what it builds and never builds more than the budget
// allows (plus one match), and compiling a new pattern is charged an
// estimate of its program's size: re.sub("x", "y"*10**6, "x"*3000) fails
// with the budget's error instead of allocating 3 GB.
package re

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
)

// Budget is the memory budget of the Starlark call running on a thread.
// An embedder that bounds what scripts allocate stores one under BudgetKey
// with Thread.SetLocal; this package then charges it before allocating.
// Without one nothing is counted.
type Budget interface {
	// Remaining is how many more bytes the call may allocate.
	Remaining() int64
	// Charge counts n more bytes. When they do not fit it counts nothing
	// and returns the error that ends the call.
	Charge(n int64) error
}

// BudgetKey is the thread-local key under which the embedder stores the
// call's Budget.
const BudgetKey = "larkpost.call"

func budgetOf(th *starlark.Thread) Budget {
	if th == nil {
		return nil
	}
	b, _ := th.Local(BudgetKey).(Budget)
	return b
}

// Sizes of what the functions build, per element.
const (
	valueSize  = 16 // a Value (interface) in a list
	stringSize = 32 // a new String in a list: its slot and its boxed header
	indexSize  = 40 // a match's [start, end] pair from the matcher
)

// maxCached bounds the compiled-pattern cache, by count and by the
// estimated size of the programs it holds.
const (
	maxCached      = 1024
	maxCachedBytes = 64 << 20
)

var (
	mu         sync.Mutex
	cache      = map[string]*regexp.Regexp{}
	cacheBytes int64
)

func compile(th *starlark.Thread, fn, pattern string) (*regexp.Regexp, error) {
	mu.Lock()
	rx, ok := cache[pattern]
	mu.Unlock()
	if ok {
		return rx, nil
	}
	cost := compileCost(pattern)
	if b := budgetOf(th); b != nil {
		if err := b.Charge(cost); err != nil {
			return nil, err
		}
	}
	rx, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("%s: bad pattern %q: %v", fn, pattern, err)
	}
	if cost > maxCachedBytes/4 {
		return rx, nil // too big to keep: compiled (and charged) each time
	}
	mu.Lock()
	if len(cache) >= maxCached || cacheBytes+cost > maxCachedBytes {
		cache, cacheBytes = map[string]*regexp.Regexp{}, 0
	}
	if _, ok := cache[pattern]; !ok {
		cache[pattern] = rx
		cacheBytes += cost
	}
	mu.Unlock()
	return rx, nil
}

// compileCost is a generous estimate of what compiling pattern allocates,
// from its text: Go's regexp takes up to about 500 bytes per pattern byte,
// more than 10 KB per Unicode class (\pL), twice that with case folding,
// and x{n} copies x n times (n is at most 1000). Nested repetitions are
// not multiplied, so the estimate is approximate; Go itself refuses
// programs beyond a few hundred MB.
func compileCost(p string) int64 {
	const perByte, perClass = 512, 16 << 10
	cost := int64(len(p)) * perByte
	classes := int64(strings.Count(p, `\p`) + strings.Count(p, `\P`))
	if strings.Contains(p, "(?") {
		classes *= 2 // flags, perhaps (?i): folded classes are larger
	}
	cost = addSat(cost, mulSat(classes, perClass))
	for i := 1; i < len(p); i++ {
		if p[i] != '{' || p[i-1] == '\\' {
			continue
		}
		j := i + 1
		for j < len(p) && (p[j] >= '0' && p[j] <= '9' || p[j] == ',') {
			j++
		}
		if j == i+1 || j >= len(p) || p[j] != '}' {
			continue
		}
		n := int64(0)
		for _, f := range strings.Split(p[i+1:j], ",") {
			if k, err := strconv.ParseInt(f, 10, 64); err == nil {
				n = max(n, min(k, 1000))
			}
		}
		cost = addSat(cost, mulSat(mulSat(n, perByte), atomLen(p[:i])))
	}
	return cost
}

// atomLen is the length of the atom a repetition at the end of p applies
// to: a group, a class, an escape or one character (4 bytes, at most).
func atomLen(p string) int64 {
	if strings.HasSuffix(p, ")") {
		depth := 0
		for i := len(p) - 1; i >= 0; i-- {
			switch p[i] {
			case ')':
				depth++
			case '(':
				if depth--; depth == 0 {
					return int64(len(p) - i)
				}
			}
		}
		return int64(len(p))
	}
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndexByte(p, '['); i >= 0 {
			return int64(len(p) - i)
		}
	}
	return 4
}

func addSat(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

func mulSat(a, b int64) int64 {
	if a <= 0 || b <= 0 {
		return 0
	}
	if a > math.MaxInt64/b {
		return math.MaxInt64
	}
	return a * b
}

// fitting is the n to give Go's FindAll or Split (at most limit, -1 for
// no limit) so that what they build stays within b plus one element of
// per bytes: if they return that many, the result passes the budget.
func fitting(b Budget, per int64, limit int) int {
	if b == nil {
		return limit
	}
	fit := b.Remaining()/per + 1
	if limit >= 0 && fit >= int64(limit) || fit > math.MaxInt32 {
		return limit
	}
	return int(fit)
}

// matches counts the matches of rx in s, and their total length.
func matches(rx *regexp.Regexp, s string) (n, length int64) {
	rx.ReplaceAllStringFunc(s, func(m string) string {
		n++
		length += int64(len(m))
		return ""
	})
	return n, length
}

// Module returns the `re` module.
func Module() *starlarkstruct.Module {
	return &starlarkstruct.Module{Name: "re", Members: starlark.StringDict{
		"search":  starlark.NewBuiltin("re.search", search(false)),
		"match":   starlark.NewBuiltin("re.match", search(true)),
		"findall": starlark.NewBuiltin("re.findall", findall),
		"sub":     starlark.NewBuiltin("re.sub", sub),
		"split":   starlark.NewBuiltin("re.split", split),
	}}
}

func search(anchored bool) func(*starlark.Thread, *starlark.Builtin, starlark.Tuple, []starlark.Tuple) (starlark.Value, error) {
	return func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var pattern, s string
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "pattern", &pattern, "s", &s); err != nil {
			return nil, err
		}
		if anchored {
			pattern = `\A(?:` + pattern + `)`
		}
		rx, err := compile(th, b.Name(), pattern)
		if err != nil {
			return nil, err
		}
		if bud := budgetOf(th); bud != nil {
			// The groups share s; their indexes, strings and list entries.
			if err := bud.Charge(int64(rx.NumSubexp()+1) * (valueSize + 2*8 + stringSize)); err != nil {
				return nil, err
			}
		}
		m := rx.FindStringSubmatch(s)
		if m == nil {
			return starlark.None, nil
		}
		out := make([]starlark.Value, len(m))
		for i, g := range m {
			out[i] = starlark.String(g)
		}
		return starlark.NewList(out), nil
	}
}

// maxFindall bounds the matches findall returns.
const maxFindall = 10000

func findall(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var pattern, s string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "pattern", &pattern, "s", &s); err != nil {
		return nil, err
	}
	rx, err := compile(th, b.Name(), pattern)
	if err != nil {
		return nil, err
	}
	// Per match: the matcher's index and string slices, and the list entry.
	per := int64(rx.NumSubexp()+1)*(2*8+valueSize) + 2*24 + stringSize
	bud := budgetOf(th)
	all := rx.FindAllStringSubmatch(s, fitting(bud, per, maxFindall))
	if bud != nil {
		if err := bud.Charge(int64(len(all)) * per); err != nil {
			return nil, err
		}
	}
	var out []starlark.Value
	for _, m := range all {
		if len(m) > 1 {
			out = append(out, starlark.String(m[1]))
		} else {
			out = append(out, starlark.String(m[0]))
		}
	}
	return starlark.NewList(out), nil
}

func sub(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var pattern, repl, s string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "pattern", &pattern, "repl", &repl, "s", &s); err != nil {
		return nil, err
	}
	rx, err := compile(th, b.Name(), pattern)
	if err != nil {
		return nil, err
	}
	// Each match becomes repl with its $ references expanded, each at
	// most as long as the match; there are at most len(s)+1 matches.
	n, lit, refs := int64(len(s)), int64(len(repl)), int64(strings.Count(repl, "$"))
	size := func(matches, matched int64) int64 {
		return addSat(addSat(n-matched, mulSat(matches, lit)), mulSat(refs, matched))
	}
	bud := budgetOf(th)
	if bud != nil && size(n+1, n) > bud.Remaining() {
		// Too much if every position matched: count the matches, in a
		// pass that copies at most s, and charge the bound they give.
		if err := bud.Charge(n); err != nil {
			return nil, err
		}
		if err := bud.Charge(size(matches(rx, s))); err != nil {
			return nil, err
		}
		return starlark.String(rx.ReplaceAllString(s, repl)), nil
	}
	out := rx.ReplaceAllString(s, repl)
	if bud != nil {
		bud.Charge(int64(len(out))) // within the bound, which fitted
	}
	return starlark.String(out), nil
}

func split(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var pattern, s string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "pattern", &pattern, "s", &s); err != nil {
		return nil, err
	}
	rx, err := compile(th, b.Name(), pattern)
	if err != nil {
		return nil, err
	}
	// Per part: the matcher's index pair, Go's string and the list entry.
	const per = indexSize + valueSize + stringSize
	bud := budgetOf(th)
	n := fitting(bud, per, -1)
	parts := rx.Split(s, n)
	if bud != nil {
		// With n parts, the last is the unsplit rest: charged as a part,
		// it passes the budget, as the whole split would have.
		if err := bud.Charge(int64(len(parts)) * per); err != nil {
			return nil, err
		}
	}
	out := make([]starlark.Value, len(parts))
	for i, p := range parts {
		out[i] = starlark.String(p)
	}
	return starlark.NewList(out), nil
}
