package rules

import (
	"fmt"
	"os"
	"strings"

	"go.starlark.net/starlark"
	"go.starlark.net/syntax"

	"github.com/larkpost/larkpost/engine/resolver"
	"github.com/larkpost/larkpost/stdlib/dns"
)

// WithResolver returns a copy of p whose scripts resolve through res: a
// rule test's or a dry run's fake DNS (a resolver.Table).
func (p *Policy) WithResolver(res *resolver.Resolver) *Policy {
	cp := *p
	env := *p.dns
	env.Resolver = res
	cp.dns = &env
	return &cp
}

// DNSTable reads fake DNS as rule tests and `larkpost trace --dns` write
// it: a dict from names to dicts from record types to a value or a list of
// values in zone-file form, with "SERVFAIL": True for a name whose lookups
// fail:
//
//	{"example.com": {"TXT": "v=spf1 ip4:192.0.2.0/24 -all", "MX": ["10 mx.example.com"]},
//	 "2.0.192.zen.spamhaus.org": {"A": "127.0.0.2"},
//	 "broken.example": {"SERVFAIL": True}}
//
// Every name not in the table does not exist (NXDOMAIN).
func DNSTable(v starlark.Value) (*resolver.Table, error) {
	t := resolver.NewTable()
	top, ok := v.(*starlark.Dict)
	if !ok {
		return nil, fmt.Errorf("want a dict of names, got %s", v.Type())
	}
	for _, item := range top.Items() {
		name, ok := starlark.AsString(item[0])
		if !ok {
			return nil, fmt.Errorf("name %s: want a string", item[0])
		}
		types, ok := item[1].(*starlark.Dict)
		if !ok {
			return nil, fmt.Errorf("%s: want a dict of record types, got %s", name, item[1].Type())
		}
		for _, tv := range types.Items() {
			typ, ok := starlark.AsString(tv[0])
			if !ok {
				return nil, fmt.Errorf("%s: record type %s: want a string", name, tv[0])
			}
			if strings.EqualFold(typ, "SERVFAIL") {
				if tv[1].Truth() {
					if err := t.ServFail(name); err != nil {
						return nil, err
					}
				}
				continue
			}
			var values []string
			switch x := tv[1].(type) {
			case starlark.String:
				values = []string{string(x)}
			case starlark.Iterable:
				for e := range starlark.Elements(x) {
					s, ok := starlark.AsString(e)
					if !ok {
						return nil, fmt.Errorf("%s %s: want strings, got %s", name, typ, e.Type())
					}
					values = append(values, s)
				}
			default:
				return nil, fmt.Errorf("%s %s: want a string or a list of strings, got %s", name, typ, x.Type())
			}
			if err := t.Add(name, typ, values...); err != nil {
				return nil, err
			}
		}
	}
	return t, nil
}

// DNSTableFile reads a DNSTable from a file holding one dict, in Starlark
// or JSON syntax (true/false/null are accepted).
func DNSTableFile(path string) (*resolver.Table, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	env := starlark.StringDict{"true": starlark.True, "false": starlark.False, "null": starlark.None}
	th := &starlark.Thread{Name: "dns table"}
	th.SetMaxExecutionSteps(1 << 20)
	v, err := starlark.EvalOptions(&syntax.FileOptions{}, th, path, src, env)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	t, err := DNSTable(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// FakeResolver is a resolver answering from t alone.
func FakeResolver(t *resolver.Table) *resolver.Resolver { return &resolver.Resolver{Table: t} }

var _ dns.Call = (*hookCall)(nil)
