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
package re

import (
	"fmt"
	"regexp"
	"sync"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
)

// maxCached bounds the compiled-pattern cache.
const maxCached = 1024

var (
	mu    sync.Mutex
	cache = map[string]*regexp.Regexp{}
)

func compile(fn, pattern string) (*regexp.Regexp, error) {
	mu.Lock()
	rx, ok := cache[pattern]
	mu.Unlock()
	if ok {
		return rx, nil
	}
	rx, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("%s: bad pattern %q: %v", fn, pattern, err)
	}
	mu.Lock()
	if len(cache) >= maxCached {
		cache = map[string]*regexp.Regexp{}
	}
	cache[pattern] = rx
	mu.Unlock()
	return rx, nil
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
	return func(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var pattern, s string
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "pattern", &pattern, "s", &s); err != nil {
			return nil, err
		}
		if anchored {
			pattern = `\A(?:` + pattern + `)`
		}
		rx, err := compile(b.Name(), pattern)
		if err != nil {
			return nil, err
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

func findall(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var pattern, s string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "pattern", &pattern, "s", &s); err != nil {
		return nil, err
	}
	rx, err := compile(b.Name(), pattern)
	if err != nil {
		return nil, err
	}
	var out []starlark.Value
	for _, m := range rx.FindAllStringSubmatch(s, 10000) {
		if len(m) > 1 {
			out = append(out, starlark.String(m[1]))
		} else {
			out = append(out, starlark.String(m[0]))
		}
	}
	return starlark.NewList(out), nil
}

func sub(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var pattern, repl, s string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "pattern", &pattern, "repl", &repl, "s", &s); err != nil {
		return nil, err
	}
	rx, err := compile(b.Name(), pattern)
	if err != nil {
		return nil, err
	}
	return starlark.String(rx.ReplaceAllString(s, repl)), nil
}

func split(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var pattern, s string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "pattern", &pattern, "s", &s); err != nil {
		return nil, err
	}
	rx, err := compile(b.Name(), pattern)
	if err != nil {
		return nil, err
	}
	parts := rx.Split(s, -1)
	out := make([]starlark.Value, len(parts))
	for i, p := range parts {
		out[i] = starlark.String(p)
	}
	return starlark.NewList(out), nil
}
