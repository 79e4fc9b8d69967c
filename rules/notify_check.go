package rules

import (
	"cmp"
	"context"
	"strings"
)

// checkNotify warns when postmaster notices have nowhere to go: with
// notify_recipient's domain (by default the hostname) neither delivered
// here nor routed by a transport or relayhost, a notice goes out by MX
// to a domain that usually does not take mail, and when that fails it is
// discarded as a double bounce, silently for the admin who never sees it.
func (l *loader) checkNotify(p *Policy) {
	s := p.Settings
	to := cmp.Or(s.NotifyRecipient, "postmaster")
	if !strings.Contains(to, "@") {
		to += "@" + s.Hostname
	}
	_, domain, _ := strings.Cut(to, "@")
	if s.IsLocalDomain(domain) || containsFold(s.VirtualAliasDomains, domain) || containsFold(s.VirtualMailboxDomains, domain) {
		return
	}
	t, err := p.Route(context.Background(), to, nil)
	if err != nil || t.Kind != "smtp" || t.NoMX || !strings.EqualFold(t.Host, domain) {
		return // a route, a relayhost or a hook takes it somewhere on purpose
	}
	pos := l.settingPos(p, "notify_recipient")
	if !s.IsSet("notify_recipient") {
		pos = l.settingPos(p, "hostname")
	}
	p.Warnings = append(p.Warnings, Diagnostic{Pos: pos, Msg: "postmaster notices go to <" + to + ">, which is not delivered here (" + domain +
		" is not in destinations) and would go out by MX: a notice that cannot be delivered is discarded as a double bounce; add " + domain +
		" to destinations or set notify_recipient to a mailbox you read"})
}
