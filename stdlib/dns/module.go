package dns

import (
	"fmt"
	"net/netip"
	"strings"

	mdns "github.com/miekg/dns"
	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	msgauth "github.com/emersion/go-msgauth/authres"

	"github.com/larkpost/larkpost/stdlib/authres"
)

// Module returns the `dns` module.
func Module() *starlarkstruct.Module {
	return &starlarkstruct.Module{Name: "dns", Members: starlark.StringDict{
		"lookup_a":    starlark.NewBuiltin("dns.lookup_a", byType(mdns.TypeA)),
		"lookup_aaaa": starlark.NewBuiltin("dns.lookup_aaaa", byType(mdns.TypeAAAA)),
		"lookup_mx":   starlark.NewBuiltin("dns.lookup_mx", byType(mdns.TypeMX)),
		"lookup_txt":  starlark.NewBuiltin("dns.lookup_txt", byType(mdns.TypeTXT)),
		"lookup_ptr":  starlark.NewBuiltin("dns.lookup_ptr", byIP(func(s *Session, ip netip.Addr) Result { return s.LookupPTR(ip) })),
		"fcrdns":      starlark.NewBuiltin("dns.fcrdns", byIP(fcrdns)),
		"lookup":      starlark.NewBuiltin("dns.lookup", lookupAny),
	}}
}

func byType(qtype uint16) func(*starlark.Thread, *starlark.Builtin, starlark.Tuple, []starlark.Tuple) (starlark.Value, error) {
	return func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var name string
		if err := starlark.UnpackPositionalArgs(b.Name(), args, kwargs, 1, &name); err != nil {
			return nil, err
		}
		s, err := SessionOf(th)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.Name(), err)
		}
		return ResultValue{s.Lookup(name, qtype)}, nil
	}
}

func byIP(fn func(*Session, netip.Addr) Result) func(*starlark.Thread, *starlark.Builtin, starlark.Tuple, []starlark.Tuple) (starlark.Value, error) {
	return func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var s string
		if err := starlark.UnpackPositionalArgs(b.Name(), args, kwargs, 1, &s); err != nil {
			return nil, err
		}
		ip, err := ParseIP(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.Name(), err)
		}
		sess, err := SessionOf(th)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.Name(), err)
		}
		return ResultValue{fn(sess, ip)}, nil
	}
}

func lookupAny(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var name, typ string
	if err := starlark.UnpackPositionalArgs(b.Name(), args, kwargs, 2, &name, &typ); err != nil {
		return nil, err
	}
	qtype, ok := mdns.StringToType[strings.ToUpper(typ)]
	if !ok || qtype == mdns.TypeANY || qtype == mdns.TypeAXFR || qtype == mdns.TypeIXFR {
		return nil, fmt.Errorf("%s: unknown or unsupported record type %q", b.Name(), typ)
	}
	s, err := SessionOf(th)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	return ResultValue{s.Lookup(name, qtype)}, nil
}

// ParseIP parses an address as scripts pass it ("192.0.2.1", "2001:db8::1",
// "[2001:db8::1]", "IPv6:2001:db8::1").
func ParseIP(s string) (netip.Addr, error) {
	t := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	if len(t) > 5 && strings.EqualFold(t[:5], "ipv6:") {
		t = t[5:]
	}
	ip, err := netip.ParseAddr(t)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("not an ip address: %q", s)
	}
	return ip.Unmap().WithZone(""), nil
}

// ResultValue is a Result as a Starlark value.
type ResultValue struct{ R Result }

var (
	_ starlark.HasAttrs  = ResultValue{}
	_ starlark.Indexable = ResultValue{}
	_ starlark.Iterable  = ResultValue{}
)

func (v ResultValue) String() string {
	if v.R.Status == OK {
		return fmt.Sprintf("<dns %s %s: %s>", v.R.Name, v.R.Type, strings.Join(v.R.Values, ", "))
	}
	return fmt.Sprintf("<dns %s %s: %s>", v.R.Name, v.R.Type, v.R.Status)
}
func (v ResultValue) Type() string          { return "dns_result" }
func (v ResultValue) Freeze()               {}
func (v ResultValue) Truth() starlark.Bool  { return len(v.R.Values) > 0 }
func (v ResultValue) Hash() (uint32, error) { return starlark.String(v.String()).Hash() }
func (v ResultValue) Len() int              { return len(v.R.Values) }
func (v ResultValue) Index(i int) starlark.Value {
	return starlark.String(v.R.Values[i])
}
func (v ResultValue) Iterate() starlark.Iterator { return &iter{v.R.Values, 0} }

func (v ResultValue) AttrNames() []string {
	return []string{"error", "exists", "name", "status", "ttl", "type", "values"}
}

func (v ResultValue) Attr(name string) (starlark.Value, error) {
	switch name {
	case "status":
		return starlark.String(v.R.Status), nil
	case "values":
		l := make([]starlark.Value, len(v.R.Values))
		for i, s := range v.R.Values {
			l[i] = starlark.String(s)
		}
		return starlark.NewList(l), nil
	case "exists":
		return starlark.Bool(v.R.Exists()), nil
	case "error":
		return starlark.String(v.R.Err), nil
	case "ttl":
		return starlark.MakeUint(uint(v.R.TTL)), nil
	case "name":
		return starlark.String(v.R.Name), nil
	case "type":
		return starlark.String(v.R.Type), nil
	}
	return nil, nil
}

type iter struct {
	v []string
	i int
}

func (it *iter) Next(p *starlark.Value) bool {
	if it.i >= len(it.v) {
		return false
	}
	*p = starlark.String(it.v[it.i])
	it.i++
	return true
}
func (it *iter) Done() {}

// fcrdns is dns.fcrdns: FCrDNS, recorded as the iprev method of
// Authentication-Results (RFC 8601 section 3).
func fcrdns(s *Session, ip netip.Addr) Result {
	r := s.FCrDNS(ip)
	res := &msgauth.IPRevResult{IP: ip.String()}
	switch r.Status {
	case OK:
		res.Value, res.Reason = msgauth.ResultPass, r.Values[0]
	case TempError:
		res.Value = msgauth.ResultTempError
	case PermError:
		res.Value = msgauth.ResultPermError
	default:
		res.Value = msgauth.ResultFail
	}
	ctx, cancel := s.Context()
	defer cancel()
	authres.Add(ctx, res)
	return r
}
