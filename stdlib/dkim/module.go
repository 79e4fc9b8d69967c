package dkim

import (
	"fmt"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/larkpost/larkpost/stdlib/authres"
	"github.com/larkpost/larkpost/stdlib/dns"
)

// Message is what dkim.verify needs of its argument.
type Message = authres.Message

// Module returns the `dkim` module.
func Module() *starlarkstruct.Module {
	return &starlarkstruct.Module{Name: "dkim", Members: starlark.StringDict{
		"verify": starlark.NewBuiltin("dkim.verify", verify),
	}}
}

func verify(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var v starlark.Value
	if err := starlark.UnpackPositionalArgs(b.Name(), args, kwargs, 1, &v); err != nil {
		return nil, err
	}
	r, size, h, err := authres.MessageArg(b, v)
	if err != nil {
		return nil, err
	}
	s, err := dns.SessionOf(th)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	results := Verify(s, r, size, h)
	out := make([]starlark.Value, len(results))
	for i, res := range results {
		out[i] = ResultValue{res}
	}
	return starlark.NewList(out), nil
}

// ResultValue is a Result as a Starlark value.
type ResultValue struct{ R Result }

var _ starlark.HasAttrs = ResultValue{}

func (v ResultValue) String() string {
	return fmt.Sprintf("<dkim %s d=%s s=%s>", v.R.Result, v.R.Domain, v.R.Selector)
}
func (v ResultValue) Type() string          { return "dkim_result" }
func (v ResultValue) Freeze()               {}
func (v ResultValue) Truth() starlark.Bool  { return true }
func (v ResultValue) Hash() (uint32, error) { return starlark.String(v.String()).Hash() }

func (v ResultValue) AttrNames() []string {
	return []string{"algorithm", "domain", "headers", "identifier", "reason", "result", "selector"}
}

func (v ResultValue) Attr(name string) (starlark.Value, error) {
	switch name {
	case "result":
		return starlark.String(v.R.Result), nil
	case "reason":
		return starlark.String(v.R.Reason), nil
	case "domain":
		return starlark.String(v.R.Domain), nil
	case "selector":
		return starlark.String(v.R.Selector), nil
	case "algorithm":
		return starlark.String(v.R.Algorithm), nil
	case "identifier":
		return starlark.String(v.R.Identifier), nil
	case "headers":
		l := make([]starlark.Value, len(v.R.Headers))
		for i, h := range v.R.Headers {
			l[i] = starlark.String(h)
		}
		return starlark.NewList(l), nil
	}
	return nil, nil
}
