package dmarc

import (
	"errors"
	"fmt"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/larkpost/larkpost/stdlib/authres"
	"github.com/larkpost/larkpost/stdlib/dns"
)

// Message is what dmarc.check needs of its argument, the message value
// of on_data: only its parsed header is read.
type Message = authres.Message

// maxDKIM bounds the DKIM results a script may pass; dkim.verify gives
// at most 9.
const maxDKIM = 100

// Module returns the `dmarc` module.
func Module() *starlarkstruct.Module {
	return &starlarkstruct.Module{Name: "dmarc", Members: starlark.StringDict{
		"check": starlark.NewBuiltin("dmarc.check", checkBuiltin),
	}}
}

func checkBuiltin(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var msgv, spfv, dkimv starlark.Value = nil, starlark.None, starlark.None
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "msg", &msgv, "spf?", &spfv, "dkim?", &dkimv); err != nil {
		return nil, err
	}
	msg, ok := msgv.(Message)
	if !ok {
		return nil, fmt.Errorf("%s: got %s, want the message (msg of on_data)", b.Name(), msgv.Type())
	}
	var spf Auth
	if spfv != starlark.None {
		var err error
		if spf, err = auth(spfv); err != nil {
			return nil, fmt.Errorf("%s: spf: %w", b.Name(), err)
		}
	}
	var dkim []Auth
	if dkimv != starlark.None {
		iter, ok := dkimv.(starlark.Iterable)
		if !ok {
			return nil, fmt.Errorf("%s: dkim: got %s, want the list dkim.verify returns", b.Name(), dkimv.Type())
		}
		it := iter.Iterate()
		defer it.Done()
		var x starlark.Value
		for i := 0; it.Next(&x); i++ {
			if i == maxDKIM {
				return nil, fmt.Errorf("%s: dkim: more than %d results", b.Name(), maxDKIM)
			}
			a, err := auth(x)
			if err != nil {
				return nil, fmt.Errorf("%s: dkim[%d]: %w", b.Name(), i, err)
			}
			dkim = append(dkim, a)
		}
	}
	s, err := dns.SessionOf(th)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	_, _, h := msg.RawMessage()
	return ResultValue{Check(s, h, spf, dkim)}, nil
}

// auth reads a check's result as a script passes it: a value with the
// attributes result and domain (spf.check's, dkim.verify's), or a dict
// with those keys.
func auth(v starlark.Value) (Auth, error) {
	var get func(string) (starlark.Value, error)
	switch v := v.(type) {
	case *starlark.Dict:
		get = func(k string) (starlark.Value, error) {
			x, found, err := v.Get(starlark.String(k))
			if !found {
				return nil, err
			}
			return x, err
		}
	case starlark.String:
		// A string has attributes too: its methods.
		return Auth{}, fmt.Errorf("got string, want a result with result and domain")
	case starlark.HasAttrs:
		get = func(k string) (starlark.Value, error) {
			x, err := v.Attr(k)
			var nsa starlark.NoSuchAttrError
			if errors.As(err, &nsa) {
				return nil, nil
			}
			return x, err
		}
	default:
		return Auth{}, fmt.Errorf("got %s, want a result with result and domain", v.Type())
	}
	str := func(k string) (string, error) {
		x, err := get(k)
		if err != nil {
			return "", err
		}
		if x == nil {
			return "", fmt.Errorf("%s has no %s", v.Type(), k)
		}
		s, ok := starlark.AsString(x)
		if !ok && x != starlark.None {
			return "", fmt.Errorf("%s is %s, want a string", k, x.Type())
		}
		return s, nil
	}
	var a Auth
	var err error
	if a.Result, err = str("result"); err != nil {
		return Auth{}, err
	}
	if a.Domain, err = str("domain"); err != nil {
		return Auth{}, err
	}
	return a, nil
}

// ResultValue is a Result as a Starlark value.
type ResultValue struct{ R Result }

var _ starlark.HasAttrs = ResultValue{}

func (v ResultValue) String() string {
	return fmt.Sprintf("<dmarc %s %s disposition=%s>", v.R.Result, v.R.FromDomain, v.R.Disposition)
}
func (v ResultValue) Type() string          { return "dmarc_result" }
func (v ResultValue) Freeze()               {}
func (v ResultValue) Truth() starlark.Bool  { return true }
func (v ResultValue) Hash() (uint32, error) { return starlark.String(v.String()).Hash() }

func (v ResultValue) AttrNames() []string {
	return []string{"adkim", "aspf", "disposition", "dkim_aligned", "from_domain", "org_domain",
		"pct", "policy", "policy_domain", "reason", "record", "result", "spf_aligned"}
}

func (v ResultValue) Attr(name string) (starlark.Value, error) {
	r := v.R
	switch name {
	case "result":
		return starlark.String(r.Result), nil
	case "reason":
		return starlark.String(r.Reason), nil
	case "from_domain":
		return starlark.String(r.FromDomain), nil
	case "org_domain":
		return starlark.String(r.OrgDomain), nil
	case "policy_domain":
		return starlark.String(r.PolicyDomain), nil
	case "record":
		return starlark.String(r.Record), nil
	case "policy":
		return starlark.String(r.Policy), nil
	case "disposition":
		return starlark.String(r.Disposition), nil
	case "pct":
		return starlark.MakeInt(r.Pct), nil
	case "spf_aligned":
		return starlark.Bool(r.SPFAligned), nil
	case "dkim_aligned":
		return starlark.Bool(r.DKIMAligned), nil
	case "adkim":
		return starlark.String(r.ADKIM), nil
	case "aspf":
		return starlark.String(r.ASPF), nil
	}
	return nil, nil
}
