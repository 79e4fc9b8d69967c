package dnsbl

import (
	"errors"
	"fmt"
	"strings"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/larkpost/larkpost/stdlib/dns"
)

// Module returns the `dnsbl` module.
func Module() *starlarkstruct.Module {
	return &starlarkstruct.Module{Name: "dnsbl", Members: starlark.StringDict{
		"query":        starlark.NewBuiltin("dnsbl.query", query),
		"query_domain": starlark.NewBuiltin("dnsbl.query_domain", queryDomain),
		"score":        starlark.NewBuiltin("dnsbl.score", score),
	}}
}

func query(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var ipArg, zoneArg string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "ip", &ipArg, "zone", &zoneArg); err != nil {
		return nil, err
	}
	// A bad address or zone is the script's mistake (conn.ip is always
	// an address): fail loudly rather than answer "not listed".
	ip, err := dns.ParseIP(ipArg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	zone, err := NormalizeZone(zoneArg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	s, err := dns.SessionOf(th)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	return ResultValue{Query(s, ip, zone)}, nil
}

func queryDomain(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var domain, zoneArg string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "domain", &domain, "zone", &zoneArg); err != nil {
		return nil, err
	}
	// The zone is the script's; the domain is the client's, so a bad one
	// is a permerror result, not a failed hook.
	zone, err := NormalizeZone(zoneArg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	s, err := dns.SessionOf(th)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	return ResultValue{QueryDomain(s, domain, zone)}, nil
}

func score(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var ipArg string
	var sitesArg starlark.Value
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "ip", &ipArg, "sites", &sitesArg); err != nil {
		return nil, err
	}
	ip, err := dns.ParseIP(ipArg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	sites, err := sitesOf(sitesArg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	s, err := dns.SessionOf(th)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	return scoreValue(Score(s, ip, sites)), nil
}

// sitesOf reads the sites argument: a list (or tuple) of
// "zone[=filter][*weight]" strings, or a dict from "zone[=filter]" to
// the weight.
func sitesOf(v starlark.Value) ([]Site, error) {
	var sites []Site
	if d, ok := v.(*starlark.Dict); ok {
		for _, kv := range d.Items() {
			k, ok := kv[0].(starlark.String)
			if !ok {
				return nil, fmt.Errorf("sites: key %s is a %s, want a string \"zone[=filter]\"", kv[0], kv[0].Type())
			}
			text := string(k)
			if strings.Contains(text, "*") {
				return nil, &SiteError{Site: text, Err: errors.New("in a dict the weight is the value, not *weight in the key")}
			}
			w, err := starlark.AsInt32(kv[1])
			if err != nil {
				return nil, fmt.Errorf("sites[%q]: weight %s: %w", text, kv[1], err)
			}
			site, err := ParseSite(text)
			if err != nil {
				return nil, err
			}
			site.Weight = w
			sites = append(sites, site)
		}
		return sites, nil
	}
	it, ok := v.(starlark.Iterable)
	if !ok {
		return nil, fmt.Errorf("sites: got %s, want a list of strings or a dict", v.Type())
	}
	iter := it.Iterate()
	defer iter.Done()
	var x starlark.Value
	for i := 0; iter.Next(&x); i++ {
		text, ok := x.(starlark.String)
		if !ok {
			return nil, fmt.Errorf("sites[%d]: got %s, want a string \"zone[=filter][*weight]\"", i, x.Type())
		}
		site, err := ParseSite(string(text))
		if err != nil {
			return nil, fmt.Errorf("sites[%d]: %w", i, err)
		}
		sites = append(sites, site)
	}
	return sites, nil
}

// ResultValue is a Result as a Starlark value: true when listed.
type ResultValue struct{ R Result }

var _ starlark.HasAttrs = ResultValue{}

func (v ResultValue) String() string {
	switch {
	case v.R.Listed:
		return fmt.Sprintf("<dnsbl %s: listed %s>", v.R.Query, strings.Join(v.R.Codes, ", "))
	case v.R.Status == OK:
		return fmt.Sprintf("<dnsbl %s: not listed>", v.R.Query)
	}
	return fmt.Sprintf("<dnsbl %s: %s>", v.R.Query, v.R.Status)
}
func (v ResultValue) Type() string          { return "dnsbl_result" }
func (v ResultValue) Freeze()               {}
func (v ResultValue) Truth() starlark.Bool  { return starlark.Bool(v.R.Listed) }
func (v ResultValue) Hash() (uint32, error) { return starlark.String(v.String()).Hash() }

func (v ResultValue) AttrNames() []string {
	return []string{"codes", "error", "listed", "query", "status", "txt", "zone"}
}

func (v ResultValue) Attr(name string) (starlark.Value, error) {
	switch name {
	case "listed":
		return starlark.Bool(v.R.Listed), nil
	case "codes":
		return stringList(v.R.Codes), nil
	case "txt":
		return starlark.String(v.R.TXT), nil
	case "status":
		return starlark.String(v.R.Status), nil
	case "error":
		return starlark.String(v.R.Err), nil
	case "zone":
		return starlark.String(v.R.Zone), nil
	case "query":
		return starlark.String(v.R.Query), nil
	}
	return nil, nil
}

func scoreValue(r ScoreResult) starlark.Value {
	hits := make([]starlark.Value, len(r.Hits))
	for i, h := range r.Hits {
		hits[i] = starlarkstruct.FromStringDict(starlark.String("dnsbl_hit"), starlark.StringDict{
			"site":   starlark.String(h.Site),
			"zone":   starlark.String(h.Zone),
			"codes":  stringList(h.Codes),
			"weight": starlark.MakeInt(h.Weight),
		})
	}
	return starlarkstruct.FromStringDict(starlark.String("dnsbl_score"), starlark.StringDict{
		"score":    starlark.MakeInt(r.Score),
		"hits":     starlark.NewList(hits),
		"errors":   stringList(r.Errors),
		"complete": starlark.Bool(r.Complete),
	})
}

func stringList(ss []string) *starlark.List {
	l := make([]starlark.Value, len(ss))
	for i, s := range ss {
		l[i] = starlark.String(s)
	}
	return starlark.NewList(l)
}
