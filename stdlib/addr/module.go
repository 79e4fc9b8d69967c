package addr

import (
	"fmt"
	"strings"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
)

// Module returns the Starlark module "addr". Its user and extension values
// are split at the recipient delimiters in delims, as for NewValue.
func Module(delims string) *starlarkstruct.Module {
	m := module{delims: delims}
	return &starlarkstruct.Module{
		Name: "addr",
		Members: starlark.StringDict{
			"parse":     starlark.NewBuiltin("addr.parse", m.parse),
			"valid":     starlark.NewBuiltin("addr.valid", m.valid),
			"split":     starlark.NewBuiltin("addr.split", m.split),
			"domain":    starlark.NewBuiltin("addr.domain", m.domain),
			"normalize": starlark.NewBuiltin("addr.normalize", m.normalize),
		},
	}
}

type module struct {
	delims string
}

// parseLoose is Parse for strings written by people: scripts pass header
// values and configuration entries, which often carry whitespace or the
// angle brackets of a path.
func parseLoose(s string) (Address, error) {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '<' && s[len(s)-1] == '>' {
		s = s[1 : len(s)-1]
	}
	return Parse(s)
}

// parseArg unpacks the single parameter s shared by most builtins.
func parseArg(b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (Address, error) {
	var s string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "s", &s); err != nil {
		return Address{}, err
	}
	a, err := parseLoose(s)
	if err != nil {
		return Address{}, fmt.Errorf("%s: %w", b.Name(), err)
	}
	return a, nil
}

func (m module) parse(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	a, err := parseArg(b, args, kwargs)
	if err != nil {
		return nil, err
	}
	return NewValue(a, m.delims), nil
}

func (m module) valid(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var s string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "s", &s); err != nil {
		return nil, err
	}
	_, err := parseLoose(s)
	return starlark.Bool(err == nil), nil
}

func (m module) split(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var local string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "local", &local); err != nil {
		return nil, err
	}
	user, ext, found := Split(local, m.delims)
	var extv starlark.Value = starlark.None
	if found {
		extv = starlark.String(ext)
	}
	return starlark.Tuple{starlark.String(user), extv}, nil
}

func (m module) domain(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	a, err := parseArg(b, args, kwargs)
	if err != nil {
		return nil, err
	}
	return starlark.String(a.Domain), nil
}

func (m module) normalize(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	a, err := parseArg(b, args, kwargs)
	if err != nil {
		return nil, err
	}
	return starlark.String(a.String()), nil
}
