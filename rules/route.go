package rules

import (
	"context"
	"fmt"

	"go.starlark.net/starlark"

	"github.com/larkpost/larkpost/rules/postfix"
	"github.com/larkpost/larkpost/stdlib/addr"
)

// Transport is where a recipient is delivered: Postfix's
// "transport:nexthop" as a value. It is postfix.Transport, whose
// transport_maps and default routes Route falls back on.
type Transport = postfix.Transport

// ParseTransport reads a Postfix-style transport string: "local",
// "smtp:example.com", "smtp:[mx.example.net]:587", "relay:...", "lmtp:unix:/run/dovecot/lmtp",
// "lmtp:[127.0.0.1]:24", "pipe:/usr/bin/cmd -f ${sender} ${recipient}",
// "error:5.1.1 user has left", "discard:", "hold:reason".
func ParseTransport(s string) (Transport, error) { return postfix.ParseTransport(s) }

// Route decides the transport of one recipient: the route hook, or
// transport_maps, or the default: local and virtual mailbox domains are
// delivered here, anything else through relayhost or by MX. It runs at
// delivery time, so a changed policy applies to mail already queued.
func (p *Policy) Route(ctx context.Context, rcpt string, m *Message) (Transport, error) {
	a, err := addr.Parse(rcpt)
	if err != nil {
		return Transport{Kind: "error", Nexthop: "5.1.3 bad recipient address syntax", Status: "5.1.3",
			Text: "bad recipient address syntax", Source: DefaultSource}, nil
	}
	if p.hooks[HookRoute] != nil {
		if m == nil {
			m = &Message{}
		}
		v, source, err := p.callValue(ctx, HookRoute, addr.NewValue(a, p.Settings.RecipientDelimiter), msgValue{m})
		if err != nil {
			return Transport{}, p.scriptError(HookRoute, err)
		}
		if v != starlark.None {
			s, ok := starlark.AsString(v)
			if !ok {
				return Transport{}, fmt.Errorf("route returned %s, want a transport string or None", v.Type())
			}
			t, err := ParseTransport(s)
			if err != nil {
				return Transport{}, p.scriptError(HookRoute, err)
			}
			t.Source = source
			return t, nil
		}
	}
	return p.tables.Route(p.postfixConfig(), a)
}
