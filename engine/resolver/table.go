package resolver

import (
	"fmt"
	"strings"
	"sync"

	mdns "github.com/miekg/dns"
)

// Table is DNS without a network: a fixed set of records a Resolver
// answers from when its Table is set. Rule tests (`testing.run(...,
// dns = {...})`) and `larkpost trace --dns` use it, so that scripts that
// ask DNS are tested with the same code paths as in production. A name
// not in the table is NXDOMAIN (NODATA when a name below it exists); a
// name marked with ServFail answers SERVFAIL, which lookups report as a
// temporary failure. A CNAME is followed, as a recursive resolver would.
type Table struct {
	mu   sync.RWMutex
	zone map[string][]mdns.RR
	fail map[string]bool
}

// NewTable returns an empty table.
func NewTable() *Table {
	return &Table{zone: map[string][]mdns.RR{}, fail: map[string]bool{}}
}

// Add adds records given in their presentation form after the type, as
// in a zone file: ("example.com", "MX", "10 mx.example.com") or
// ("example.com", "TXT", "v=spf1 -all"). A TXT value is taken as one
// string, quotes and all; longer than 255 bytes, it is split into several
// strings of one record, as publishers do.
func (t *Table) Add(name, typ string, values ...string) error {
	qtype, ok := mdns.StringToType[strings.ToUpper(typ)]
	if !ok {
		return fmt.Errorf("unknown record type %q", typ)
	}
	fqdn, display, err := normalize(name)
	if err != nil {
		return fmt.Errorf("%q: %w", display, err)
	}
	var rrs []mdns.RR
	for _, v := range values {
		hdr := mdns.RR_Header{Name: fqdn, Rrtype: qtype, Class: mdns.ClassINET, Ttl: 300}
		if qtype == mdns.TypeTXT {
			rrs = append(rrs, &mdns.TXT{Hdr: hdr, Txt: splitTXT(v)})
			continue
		}
		rr, err := mdns.NewRR(fqdn + " 300 IN " + mdns.TypeToString[qtype] + " " + v)
		if err != nil || rr == nil {
			return fmt.Errorf("%s %s %q: not a valid record: %v", display, mdns.TypeToString[qtype], v, err)
		}
		rrs = append(rrs, rr)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.zone[fqdn] = append(t.zone[fqdn], rrs...)
	return nil
}

// ServFail makes every query for name answer SERVFAIL.
func (t *Table) ServFail(name string) error {
	fqdn, display, err := normalize(name)
	if err != nil {
		return fmt.Errorf("%q: %w", display, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.fail[fqdn] = true
	return nil
}

func splitTXT(s string) []string {
	var parts []string
	for len(s) > 255 {
		parts = append(parts, s[:255])
		s = s[255:]
	}
	return append(parts, s)
}

// exchange answers m from the table.
func (t *Table) exchange(m *mdns.Msg) *mdns.Msg {
	out := new(mdns.Msg)
	out.SetReply(m)
	out.RecursionAvailable = true
	q := m.Question[0]
	name := strings.ToLower(q.Name)
	t.mu.RLock()
	defer t.mu.RUnlock()
	for hops := 0; hops < 8; hops++ {
		if t.fail[name] {
			out.Answer = nil
			out.Rcode = mdns.RcodeServerFailure
			return out
		}
		rrs, ok := t.zone[name]
		if !ok {
			if !t.hasDescendant(name) {
				out.Rcode = mdns.RcodeNameError
			}
			return out
		}
		var cname *mdns.CNAME
		found := false
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype {
				out.Answer, found = append(out.Answer, rr), true
			} else if c, ok := rr.(*mdns.CNAME); ok && cname == nil {
				cname = c
			}
		}
		if found || cname == nil {
			return out
		}
		out.Answer = append(out.Answer, cname)
		name = strings.ToLower(cname.Target)
	}
	out.Rcode = mdns.RcodeServerFailure // a CNAME loop
	return out
}

func (t *Table) hasDescendant(name string) bool {
	suffix := "." + name
	for n := range t.zone {
		if strings.HasSuffix(n, suffix) {
			return true
		}
	}
	return false
}
