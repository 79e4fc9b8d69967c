package maps

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/larkpost/larkpost/stdlib/addr"
)

// Module returns the `maps` Starlark module. baseDir resolves relative paths; delims is recipient_delimiter;
// isLocal reports local domains; logf receives reload diagnostics. Keep the returned *starlarkstruct.Module's
// Members map extensible (the caller will add an `aliases` builtin to it).
func Module(baseDir, delims string, isLocal func(string) bool, logf func(string)) *starlarkstruct.Module {
	m := &module{baseDir: baseDir, opts: AddrOptions{Delims: delims, IsLocal: isLocal}, logf: logf}
	return &starlarkstruct.Module{
		Name: "maps",
		Members: starlark.StringDict{
			"open":   starlark.NewBuiltin("maps.open", m.open),
			"inline": starlark.NewBuiltin("maps.inline", m.inline),
		},
	}
}

type module struct {
	baseDir string
	opts    AddrOptions
	logf    func(string)
}

func (m *module) open(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var spec string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "spec", &spec); err != nil {
		return nil, err
	}
	t, err := Open(spec, m.baseDir, m.logf)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	return NewTableValue(t, m.opts), nil
}

func (m *module) inline(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var entries starlark.IterableMapping
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "entries", &entries); err != nil {
		return nil, err
	}
	items := entries.Items()
	tab := make(map[string]string, len(items))
	for _, kv := range items {
		k, ok := starlark.AsString(kv[0])
		if !ok {
			return nil, fmt.Errorf("%s: key %s is %s, want string", b.Name(), kv[0], kv[0].Type())
		}
		v, ok := starlark.AsString(kv[1])
		if !ok {
			return nil, fmt.Errorf("%s: value for %q is %s, want string", b.Name(), k, kv[1].Type())
		}
		tab[k] = v
	}
	return NewTableValue(FromMap(inlineName(tab), tab), m.opts), nil
}

// inlineName writes a map in Postfix's inline: syntax, which is what the
// table's name shows in traces.
func inlineName(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	b.WriteString("inline:{")
	for i, k := range keys {
		if b.Len() > maxInlineName {
			fmt.Fprintf(&b, ", ...%d more", len(keys)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		kv := k + "=" + m[k]
		if strings.ContainsAny(kv, " \t,{}") {
			kv = "{ " + k + " = " + m[k] + " }"
		}
		b.WriteString(kv)
	}
	b.WriteString("}")
	return b.String()
}

// maxInlineName bounds the name of a big inline table, which shows up in
// every trace line that mentions the table.
const maxInlineName = 200

// TableValue is a Table as Starlark scripts see it, a value of type
// "table". It is immutable and hashes by identity.
type TableValue struct {
	t    Table
	opts AddrOptions
	id   uint32
}

var (
	_ starlark.Value    = (*TableValue)(nil)
	_ starlark.HasAttrs = (*TableValue)(nil)
	_ starlark.Mapping  = (*TableValue)(nil)
)

// tableIDs numbers table values for Hash, because Starlark has no way to
// hash a pointer.
var tableIDs atomic.Uint32

// NewTableValue returns the Starlark view of t, searching addresses with
// o. Go code that opens tables itself, for settings, hands them to
// scripts this way.
func NewTableValue(t Table, o AddrOptions) *TableValue {
	return &TableValue{t: t, opts: o, id: tableIDs.Add(1)}
}

// Table returns the table v shows.
func (v *TableValue) Table() Table { return v.t }

// String returns <table NAME>.
func (v *TableValue) String() string { return "<table " + v.t.Name() + ">" }

// Type returns "table".
func (v *TableValue) Type() string { return "table" }

// Freeze does nothing: a table cannot be changed from Starlark.
func (v *TableValue) Freeze() {}

// Truth is always true, even for a table that is empty right now: its
// file may fill it on the next reload.
func (v *TableValue) Truth() starlark.Bool { return starlark.True }

// Hash hashes by identity.
func (v *TableValue) Hash() (uint32, error) { return v.id, nil }

// Get implements `key in table` and table[key] with Table.Get, or
// FallibleTable.Lookup, whose failure is an error.
func (v *TableValue) Get(k starlark.Value) (starlark.Value, bool, error) {
	s, ok := starlark.AsString(k)
	if !ok {
		return nil, false, fmt.Errorf("table key is %s, want string", k.Type())
	}
	r, ok, err := Lookup(v.t, s)
	if err != nil || !ok {
		return nil, false, err
	}
	return starlark.String(r), true, nil
}

type tableMethod func(v *TableValue, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error)

var tableMethods = map[string]tableMethod{
	"get":       (*TableValue).get,
	"lookup":    (*TableValue).lookup,
	"access":    (*TableValue).access,
	"domain":    (*TableValue).domain,
	"transport": (*TableValue).transport,
	"ip":        (*TableValue).ip,
	"match":     (*TableValue).match,
}

var tableAttrNames = func() []string {
	names := []string{"name"}
	for n := range tableMethods {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}()

// Attr returns the attribute called name, or nil, nil if there is none.
func (v *TableValue) Attr(name string) (starlark.Value, error) {
	if name == "name" {
		return starlark.String(v.t.Name()), nil
	}
	m, ok := tableMethods[name]
	if !ok {
		return nil, nil
	}
	return starlark.NewBuiltin(name, func(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		return m(v, b, args, kwargs)
	}), nil
}

// AttrNames returns the sorted attribute names.
func (v *TableValue) AttrNames() []string { return tableAttrNames }

// result turns a lookup result into a string, or None for a miss. A
// failed lookup is an error of the method b, never None: a script that
// took an outage for "not listed" would reject or accept mail wrongly,
// where an error makes the hook fail temporarily.
func result(b *starlark.Builtin, value string, ok bool, err error) (starlark.Value, error) {
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	if !ok {
		return starlark.None, nil
	}
	return starlark.String(value), nil
}

// addressArg accepts an address as a string or as an address value like
// rcpt and sender; the null sender becomes "".
func addressArg(b *starlark.Builtin, x starlark.Value) (string, error) {
	switch x := x.(type) {
	case *addr.Value:
		return x.Address().String(), nil
	case starlark.String:
		return string(x), nil
	}
	return "", fmt.Errorf("%s: got %s, want string or address", b.Name(), x.Type())
}

func (v *TableValue) get(b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var key string
	var def starlark.Value = starlark.None
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "key", &key, "default?", &def); err != nil {
		return nil, err
	}
	r, ok, err := Lookup(v.t, key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	if ok {
		return starlark.String(r), nil
	}
	return def, nil
}

func (v *TableValue) lookup(b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var x starlark.Value
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "address", &x); err != nil {
		return nil, err
	}
	a, err := addressArg(b, x)
	if err != nil {
		return nil, err
	}
	r, _, ok, err := LookupAddress(v.t, a, v.opts)
	return result(b, r, ok, err)
}

// access picks the access(5) search by the shape of key: an address (or
// the null sender), a client IP address, or a host name.
func (v *TableValue) access(b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var x starlark.Value
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "key", &x); err != nil {
		return nil, err
	}
	key, err := addressArg(b, x)
	if err != nil {
		return nil, err
	}
	var r string
	var ok bool
	switch accessMode(key, x) {
	case ModeAccessIP:
		r, _, ok, err = LookupIP(v.t, key)
	case ModeDomain:
		r, _, ok, err = LookupDomain(v.t, key)
	default:
		r, _, ok, err = LookupAccess(v.t, key, v.opts)
	}
	return result(b, r, ok, err)
}

func accessMode(key string, x starlark.Value) string {
	if _, isAddr := x.(*addr.Value); isAddr {
		return ModeAccess
	}
	if m := QueryMode(key); m != ModeAddress {
		return m
	}
	return ModeAccess
}

func (v *TableValue) domain(b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var name string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "name", &name); err != nil {
		return nil, err
	}
	r, _, ok, err := LookupDomain(v.t, name)
	return result(b, r, ok, err)
}

func (v *TableValue) transport(b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var x starlark.Value
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "address", &x); err != nil {
		return nil, err
	}
	a, err := addressArg(b, x)
	if err != nil {
		return nil, err
	}
	r, _, ok, err := LookupTransport(v.t, a, v.opts)
	return result(b, r, ok, err)
}

func (v *TableValue) ip(b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var s string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "addr", &s); err != nil {
		return nil, err
	}
	r, _, ok, err := LookupIP(v.t, s)
	return result(b, r, ok, err)
}

func (v *TableValue) match(b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var x starlark.Value
	mode := "auto"
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "key", &x, "mode?", &mode); err != nil {
		return nil, err
	}
	key, err := addressArg(b, x)
	if err != nil {
		return nil, err
	}
	if _, isAddr := x.(*addr.Value); isAddr && mode == "auto" && key != "" {
		mode = ModeAddress
	}
	r, matched, ok, err := QueryAs(v.t, mode, key, v.opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	if !ok {
		return starlark.None, nil
	}
	return starlark.Tuple{starlark.String(r), starlark.String(matched)}, nil
}
