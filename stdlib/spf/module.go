package spf

import (
	"fmt"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/larkpost/larkpost/stdlib/addr"
	"github.com/larkpost/larkpost/stdlib/dns"
)

// Module returns the `spf` module.
func Module() *starlarkstruct.Module {
	return &starlarkstruct.Module{Name: "spf", Members: starlark.StringDict{
		"check":      starlark.NewBuiltin("spf.check", checkMail),
		"check_helo": starlark.NewBuiltin("spf.check_helo", checkHelo),
	}}
}

func checkMail(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var ip string
	var helo, sender starlark.Value
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "ip", &ip, "helo", &helo, "sender", &sender); err != nil {
		return nil, err
	}
	return run(th, b, ip, helo, sender)
}

func checkHelo(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var ip string
	var helo starlark.Value
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "ip", &ip, "helo", &helo); err != nil {
		return nil, err
	}
	return run(th, b, ip, helo, nil)
}

// run is both builtins; a nil sender checks the HELO identity.
func run(th *starlark.Thread, b *starlark.Builtin, ipArg string, heloArg, senderArg starlark.Value) (starlark.Value, error) {
	ip, err := dns.ParseIP(ipArg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	// conn.helo is None before HELO.
	helo, err := text(heloArg, "helo")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	s, err := dns.SessionOf(th)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	if senderArg == nil {
		return Value{CheckHelo(s, ip, helo)}, nil
	}
	sender, err := text(senderArg, "sender")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	return Value{Check(s, ip, helo, sender)}, nil
}

// text accepts a string, None (as "") or an address value (as its
// string, "" for the null sender).
func text(v starlark.Value, what string) (string, error) {
	switch v := v.(type) {
	case starlark.String:
		return string(v), nil
	case starlark.NoneType:
		return "", nil
	case *addr.Value:
		return v.String(), nil
	}
	return "", fmt.Errorf("%s: got %s, want string", what, v.Type())
}

// Value is a Result as a Starlark value, true when the result is pass.
type Value struct{ R Result }

var _ starlark.HasAttrs = Value{}

func (v Value) String() string {
	return fmt.Sprintf("<spf %s %s: %s>", v.R.Identity, v.R.Domain, v.R.Value)
}
func (v Value) Type() string          { return "spf_result" }
func (v Value) Freeze()               {}
func (v Value) Truth() starlark.Bool  { return v.R.Value == Pass }
func (v Value) Hash() (uint32, error) { return starlark.String(v.String()).Hash() }

func (v Value) AttrNames() []string {
	return []string{"domain", "identity", "reason", "result", "sender"}
}

func (v Value) Attr(name string) (starlark.Value, error) {
	switch name {
	case "result":
		return starlark.String(v.R.Value), nil
	case "reason":
		return starlark.String(v.R.Reason), nil
	case "identity":
		return starlark.String(v.R.Identity), nil
	case "domain":
		return starlark.String(v.R.Domain), nil
	case "sender":
		return starlark.String(v.R.Sender), nil
	}
	return nil, nil
}
