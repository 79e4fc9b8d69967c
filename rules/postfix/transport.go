package postfix

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/larkpost/larkpost/stdlib/addr"
	"github.com/larkpost/larkpost/stdlib/maps"
)

// Transport is where a recipient is delivered: Postfix's
// "transport:nexthop" as a value.
type Transport struct {
	Kind    string // local, smtp, lmtp, pipe, error, discard, hold
	Nexthop string // as written: smtp: "example.com" (MX) or "[host]:port"; lmtp: "unix:/path" or "[host]:port"; pipe: the argv template; error: "5.1.1 text"
	Source  string // what chose it: a script line, a transport table, "default policy"

	// The nexthop read once, so that delivery never parses it again.
	Host   string   // smtp, lmtp: the domain (MX lookup) or host
	Port   int      // smtp, lmtp: 0 is the protocol's default
	NoMX   bool     // smtp: "[host]" form, or any lmtp host: no MX lookup
	Unix   string   // lmtp: a unix socket path
	Argv   []string // pipe: the command words, macros not filled in
	Status string   // error: the enhanced status
	Text   string   // error: the text; hold: the reason
}

func (t Transport) String() string {
	if t.Nexthop == "" {
		return t.Kind
	}
	return t.Kind + ":" + t.Nexthop
}

// ParseTransport reads a Postfix-style transport string: "local",
// "smtp:example.com", "smtp:[mx.example.net]:587", "relay:...", "lmtp:unix:/run/dovecot/lmtp",
// "lmtp:[127.0.0.1]:24", "pipe:/usr/bin/cmd -f ${sender} ${recipient}",
// "error:5.1.1 user has left", "discard:", "hold:reason".
func ParseTransport(s string) (Transport, error) {
	s = strings.TrimSpace(s)
	kind, next, _ := strings.Cut(s, ":")
	kind = strings.ToLower(strings.TrimSpace(kind))
	next = strings.TrimSpace(next)
	switch kind {
	case "local", "virtual":
		return Transport{Kind: "local"}, nil
	case "smtp", "relay":
		if next != "" {
			if err := CheckNexthop(next); err != nil {
				return Transport{}, err
			}
		}
		return nexthop("smtp", next), nil
	case "lmtp":
		if next == "" {
			return Transport{}, fmt.Errorf("lmtp needs a nexthop: lmtp:unix:/path or lmtp:[host]:port")
		}
		if !strings.HasPrefix(next, "unix:") {
			next = strings.TrimPrefix(next, "inet:")
			if err := CheckNexthop(next); err != nil {
				return Transport{}, err
			}
		}
		return nexthop("lmtp", next), nil
	case "pipe":
		if next == "" {
			return Transport{}, fmt.Errorf("pipe needs a command: pipe:/path/to/cmd args")
		}
		return Transport{Kind: "pipe", Nexthop: next, Argv: strings.Fields(next)}, nil
	case "error":
		if next == "" {
			next = "5.0.0 delivery refused by the transport table"
		}
		if !strings.HasPrefix(next, "5.") && !strings.HasPrefix(next, "4.") {
			next = "5.0.0 " + next
		}
		status, text, _ := strings.Cut(next, " ")
		return Transport{Kind: "error", Nexthop: next, Status: status, Text: strings.TrimSpace(text)}, nil
	case "discard":
		return Transport{Kind: "discard", Nexthop: next}, nil
	case "hold":
		return Transport{Kind: "hold", Nexthop: next, Text: next}, nil
	}
	return Transport{}, fmt.Errorf("unknown transport %q (want local, smtp, relay, lmtp, pipe, error, discard or hold)", kind)
}

// nexthop is an smtp or lmtp transport to next (already checked):
// "domain" (MX lookup for smtp), "[host]" or "[host]:port" (no MX),
// "host:port", "unix:/path" (lmtp).
func nexthop(kind, next string) Transport {
	t := Transport{Kind: kind, Nexthop: next}
	switch {
	case strings.HasPrefix(next, "unix:"):
		t.Unix = strings.TrimPrefix(next, "unix:")
	case strings.HasPrefix(next, "["):
		end := strings.IndexByte(next, ']')
		t.Host, t.NoMX = next[1:end], true
		t.Port, _ = strconv.Atoi(strings.TrimPrefix(next[end+1:], ":"))
	default:
		t.Host = next
		if h, port, ok := strings.Cut(next, ":"); ok {
			t.Host = h
			t.Port, _ = strconv.Atoi(port)
		}
		t.NoMX = kind == "lmtp" // lmtp never looks up MX records
	}
	return t
}

// CheckNexthop accepts "domain", "[host]", "[host]:port", "host:port".
func CheckNexthop(n string) error {
	host, port := n, ""
	if strings.HasPrefix(n, "[") {
		end := strings.IndexByte(n, ']')
		if end < 0 {
			return fmt.Errorf("bad nexthop %q: missing ]", n)
		}
		host, port = n[1:end], strings.TrimPrefix(n[end+1:], ":")
	} else if h, p, ok := strings.Cut(n, ":"); ok {
		host, port = h, p
	}
	if port != "" {
		if v, err := strconv.Atoi(port); err != nil || v < 1 || v > 65535 {
			return fmt.Errorf("bad nexthop %q: bad port", n)
		}
	}
	if host == "" || strings.ContainsAny(host, " /@") {
		return fmt.Errorf("bad nexthop %q", n)
	}
	return nil
}

// Route is the default transport of a recipient, when no route hook
// decides: transport_maps, or local and virtual mailbox domains are
// delivered here, anything else through relayhost or by MX.
//
// A transport table that fails is an error (a *maps.LookupError): the
// default route could deliver somewhere the table says not to.
func (t *Tables) Route(c *Config, a addr.Address) (Transport, error) {
	for _, tbl := range t.transport {
		v, matched, ok, err := maps.LookupTransport(tbl, a.String(), c.AddrOptions())
		if err != nil {
			return Transport{}, fmt.Errorf("transport_maps: %w", err)
		}
		if ok {
			tr, err := ParseTransport(v)
			if err != nil {
				return Transport{}, fmt.Errorf("%s %s: %w", tbl.Name(), matched, err)
			}
			if tr.Kind == "smtp" && tr.Nexthop == "" {
				// "example.com smtp:" keeps the recipient's own domain.
				tr = nexthop("smtp", a.Domain)
			}
			tr.Source = tbl.Name() + " " + matched
			return tr, nil
		}
	}
	switch {
	case c.IsLocalDomain(a.Domain), c.IsVirtualMailboxDomain(a.Domain):
		return Transport{Kind: "local", Source: DefaultSource}, nil
	case c.Relayhost != "":
		tr := nexthop("smtp", c.Relayhost)
		tr.Source = "relayhost"
		return tr, nil
	}
	tr := nexthop("smtp", a.Domain)
	tr.Source = DefaultSource
	return tr, nil
}
