package maps

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"go.starlark.net/starlark"
)

// AliasesBuiltin is the `maps.aliases(path)` builtin: it opens an aliases
// file (relative to baseDir) and returns an aliases value; load errors are
// reported as a Starlark error listing FILE:LINE lines.
//
// The builtin remembers each file it opened successfully and returns the
// same value for it again, so a policy that calls maps.aliases for every
// message does not re-read the file each time; the value reloads itself
// when the file changes. Warnings and reload errors go to logf.
func AliasesBuiltin(baseDir string, logf func(string)) *starlark.Builtin {
	c := &aliasesCache{baseDir: baseDir, logf: logf, open: map[string]*Aliases{}}
	return starlark.NewBuiltin("maps.aliases", c.call)
}

type aliasesCache struct {
	baseDir string
	logf    func(string)

	mu   sync.Mutex
	open map[string]*Aliases
}

func (c *aliasesCache) call(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var path string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "path", &path); err != nil {
		return nil, err
	}
	if path == "" {
		return nil, fmt.Errorf("%s: empty path", b.Name())
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(c.baseDir, path)
	}
	path = filepath.Clean(path)
	c.mu.Lock()
	defer c.mu.Unlock()
	if a, ok := c.open[path]; ok {
		return &aliasesValue{a}, nil
	}
	a, err := OpenAliases(path, c.logf)
	if err != nil {
		// A policy must not run on half an aliases file: the good
		// entries returned alongside the error are dropped.
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	c.open[path] = a
	return &aliasesValue{a}, nil
}

// aliasesValue is the Starlark value of type "aliases".
type aliasesValue struct {
	a *Aliases
}

var (
	_ starlark.HasAttrs  = (*aliasesValue)(nil)
	_ starlark.Container = (*aliasesValue)(nil)
)

func (v *aliasesValue) String() string        { return fmt.Sprintf("<aliases %q>", v.a.Path()) }
func (v *aliasesValue) Type() string          { return "aliases" }
func (v *aliasesValue) Freeze()               {}
func (v *aliasesValue) Truth() starlark.Bool  { return starlark.True }
func (v *aliasesValue) Hash() (uint32, error) { return 0, errors.New("unhashable type: aliases") }

var aliasesAttrNames = []string{"get", "owner", "path"}

func (v *aliasesValue) AttrNames() []string { return aliasesAttrNames }

func (v *aliasesValue) Attr(name string) (starlark.Value, error) {
	switch name {
	case "get":
		return starlark.NewBuiltin("get", v.get).BindReceiver(v), nil
	case "owner":
		return starlark.NewBuiltin("owner", v.owner).BindReceiver(v), nil
	case "path":
		return starlark.String(v.a.Path()), nil
	}
	return nil, nil
}

// Has implements `name in aliases`. Anything but a string is an error
// rather than False, because `rcpt in aliases` with an address value would
// otherwise be silently never true.
func (v *aliasesValue) Has(x starlark.Value) (bool, error) {
	s, ok := x.(starlark.String)
	if !ok {
		return false, fmt.Errorf("'in aliases' requires a string name, not %s", x.Type())
	}
	_, found := v.a.Lookup(string(s))
	return found, nil
}

func (v *aliasesValue) get(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var name string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "name", &name); err != nil {
		return nil, err
	}
	targets, ok := v.a.Lookup(name)
	if !ok {
		return starlark.None, nil
	}
	list := make([]starlark.Value, len(targets))
	for i, t := range targets {
		s := t.Value
		if t.Kind == TargetPipe {
			// The "|" is what tells a script a command from an address.
			s = "|" + s
		}
		list[i] = starlark.String(s)
	}
	return starlark.NewList(list), nil
}

func (v *aliasesValue) owner(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var name string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "name", &name); err != nil {
		return nil, err
	}
	if o, ok := v.a.Owner(name); ok {
		return starlark.String(o), nil
	}
	return starlark.None, nil
}
