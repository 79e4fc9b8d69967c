package arc

import (
	"fmt"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/larkpost/larkpost/stdlib/authres"
	"github.com/larkpost/larkpost/stdlib/dns"
)

// Message is what arc.verify needs of its argument.
type Message = authres.Message

// Module returns the `arc` module.
func Module() *starlarkstruct.Module {
	return &starlarkstruct.Module{Name: "arc", Members: starlark.StringDict{
		"verify": starlark.NewBuiltin("arc.verify", verifyBuiltin),
	}}
}

func verifyBuiltin(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
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
	return Value(Verify(s, r, size, h)), nil
}

// Value returns res as the Starlark value arc.verify returns.
func Value(res Result) starlark.Value {
	sets := make([]starlark.Value, len(res.Sets))
	for i, s := range res.Sets {
		sets[i] = starlarkstruct.FromStringDict(starlark.String("arc_set"), starlark.StringDict{
			"instance":               starlark.MakeInt(s.Instance),
			"domain":                 starlark.String(s.Domain),
			"selector":               starlark.String(s.Selector),
			"seal_result":            starlark.String(s.SealResult),
			"ams_domain":             starlark.String(s.AMSDomain),
			"ams_selector":           starlark.String(s.AMSSelector),
			"ams_result":             starlark.String(s.AMSResult),
			"authentication_results": starlark.String(s.AuthResults),
		})
	}
	return starlarkstruct.FromStringDict(starlark.String("arc_result"), starlark.StringDict{
		"result":       starlark.String(res.Result),
		"reason":       starlark.String(res.Reason),
		"temporary":    starlark.Bool(res.Temporary),
		"instances":    starlark.MakeInt(res.Instances),
		"oldest_pass":  starlark.MakeInt(res.OldestPass),
		"sets":         starlark.NewList(sets),
		"last_results": starlark.String(res.LastResults),
	})
}
