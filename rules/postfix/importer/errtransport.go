package importer

import (
	"strings"

	"github.com/larkpost/larkpost/stdlib/maps"
)

// Postfix's smtpd refuses at RCPT TO a recipient whose address resolves
// to the error transport (smtpd_check.c, check_rcpt_maps, when
// smtpd_reject_unlisted_recipient = yes): "550 5.1.1 <rcpt>: Recipient
// address rejected: TEXT", TEXT being the error transport's nexthop (the
// recipient's domain when it has none). Debian's "Local only" profile
// relies on it (default_transport = error), so does a transport_maps
// entry such as "example.com error:no mail here". larkpost's default
// policy does not know the route of a recipient at RCPT TO (the route hook
// runs at delivery), so the import writes the check: _error_transport.

// errorParam is a *_transport parameter set to the error transport.
type errorParam struct {
	param string
	class string // the address class it applies to: local, virtual, relay, default
	text  string // its nexthop, "" for the recipient's domain
}

// errorTransports are the *_transport parameters that resolve to the
// error transport, and the transport_maps tables, when any of those or
// any table entry is the error transport; nil when nothing is.
func (c *conv) errorTransports() (params []errorParam, tables []string, any bool) {
	for _, p := range []struct{ param, class string }{
		{"local_transport", "local"}, {"virtual_transport", "virtual"},
		{"relay_transport", "relay"}, {"default_transport", "default"},
	} {
		name, next, _ := strings.Cut(strings.TrimSpace(c.get(p.param)), ":")
		if strings.TrimSpace(name) == "error" {
			params = append(params, errorParam{p.param, p.class, strings.TrimSpace(next)})
		}
	}
	any = len(params) > 0
	specs := splitList(c.get("transport_maps"))
	for _, s := range specs {
		es, _, err := c.tableKeys(s)
		for _, e := range es {
			any = any || isErrorTransport(e.value)
		}
		any = any || err != nil // cannot tell: look it up at RCPT TO
	}
	if !any {
		return nil, nil, false
	}
	for _, s := range specs {
		if t, ok := c.openTable("transport_maps", s); ok {
			tables = append(tables, t.Var)
		}
	}
	return params, tables, true
}

func isErrorTransport(v string) bool {
	name, _, _ := strings.Cut(strings.TrimSpace(v), ":")
	return strings.TrimSpace(name) == "error"
}

// errorTransportSrc writes _error_transport, or "" when no address
// resolves to the error transport.
func (c *conv) errorTransportSrc() string {
	params, tables, any := c.errorTransports()
	if !any {
		return ""
	}
	c.need("_is_ours")
	c.need("_is_relay_domain")
	var known []string
	for _, n := range []string{"recipient_canonical_maps", "canonical_maps", "virtual_alias_maps"} {
		for _, s := range splitList(c.get(n)) {
			if t, ok := c.openTable(n, s); ok {
				known = append(known, t.Var)
			}
		}
	}
	b := []string{
		"def _error_transport(rcpt):",
		`    """Postfix's smtpd refuses a recipient whose address resolves to the`,
		`    error transport (smtpd_reject_unlisted_recipient), with 550 and the`,
		`    error text (the nexthop, or the domain). Addresses the canonical and`,
		`    virtual alias tables have pass: cleanup rewrites them first. The`,
		`    virtual alias domains are the default policy's."""`,
		"    d = rcpt.domain.lower()",
		"    if d in VIRTUAL_ALIAS_DOMAINS:",
		"        return None",
	}
	if len(known) > 0 {
		b = append(b,
			"    for t in ["+strings.Join(known, ", ")+"]:",
			"        if t.lookup(rcpt) != None:",
			"            return None")
	}
	b = append(b, "    tr = None")
	if len(tables) > 0 {
		b = append(b,
			"    # transport_maps comes first, as in Postfix.",
			"    for t in ["+strings.Join(tables, ", ")+"]:",
			"        if tr == None:",
			"            tr = t.transport(rcpt)")
	}
	for _, p := range params {
		b = append(b, "    "+c.comment(p.param))
		b = append(b, "    if tr == None and "+errorClassCond(p.class)+":")
		b = append(b, "        tr = "+q("error:"+p.text))
	}
	b = append(b,
		`    name, _, text = (tr or "").partition(":")`,
		`    if name.strip() != "error":`,
		"        return None",
		"    text = text.strip() or d",
		`    status = "5.1.1"`,
		`    words = text.split(" ", 1)`,
		`    if len(words) == 2 and words[0][:2] in ["4.", "5."] and words[0].count(".") == 2:`,
		`        status, text = "5" + words[0][1:], words[1]  # "5.7.1 text": its status (a 550 has a 5.x.x one)`,
		`    return reject("<%s>: Recipient address rejected: %s" % (rcpt.address, text), code = 550, status = status)`)
	return strings.Join(b, "\n")
}

// errorClassCond is the Starlark condition of an address class, with the
// domain lower-cased in d.
func errorClassCond(class string) string {
	switch class {
	case "local":
		return "d in MYDESTINATION"
	case "virtual":
		return "d in VIRTUAL_MAILBOX_DOMAINS"
	case "relay":
		return "_is_relay_domain(d)"
	}
	return "not _is_ours(d)"
}

// errorOutcome is _error_transport for the tests' evaluator: the refusal
// of a recipient that resolves to the error transport, or false.
func (c *conv) errorOutcome(rcpt string) (outcome, bool) {
	if !c.errorCheck {
		return outcome{}, false
	}
	d := domainOf(rcpt)
	if containsStr(c.vaDomains, d) {
		return outcome{}, false
	}
	opts := maps.AddrOptions{Delims: c.get("recipient_delimiter"), IsLocal: func(d string) bool { return containsStr(c.myDest, d) }}
	lookup := func(param string, f func(maps.Table) (bool, error)) (bool, bool) {
		for _, s := range splitList(c.get(param)) {
			t, err := maps.Open(c.specFor(s), c.o.OutDir, nil)
			if err != nil {
				return false, false
			}
			found, err := f(t)
			if err != nil {
				return false, false
			}
			if found {
				return true, true
			}
		}
		return false, true
	}
	for _, n := range []string{"recipient_canonical_maps", "canonical_maps", "virtual_alias_maps"} {
		found, ok := lookup(n, func(t maps.Table) (bool, error) {
			_, _, found, err := maps.LookupAddress(t, rcpt, opts)
			return found, err
		})
		if !ok || found {
			return outcome{}, false
		}
	}
	tr := ""
	if _, ok := lookup("transport_maps", func(t maps.Table) (bool, error) {
		v, _, found, err := maps.LookupTransport(t, rcpt, opts)
		if found {
			tr = v
		}
		return found, err
	}); !ok {
		return outcome{}, false
	}
	if tr == "" {
		params, _, _ := c.errorTransports()
		for _, p := range params {
			if c.inClass(p.class, d) {
				tr = "error:" + p.text
				break
			}
		}
	}
	if !isErrorTransport(tr) {
		return outcome{}, false
	}
	_, text, _ := strings.Cut(tr, ":")
	text = strings.TrimSpace(text)
	if text == "" {
		text = d
	}
	return outcome{kind: "reject", code: 550, text: stripStatus(text)}, true
}

func (c *conv) inClass(class, d string) bool {
	switch class {
	case "local":
		return containsStr(c.myDest, d)
	case "virtual":
		return containsStr(c.vmDomains, d)
	case "relay":
		return c.isRelayDomain(d)
	}
	return !c.isOurs(d)
}

func (c *conv) isRelayDomain(d string) bool {
	d = strings.ToLower(d)
	for _, r := range c.relayDomains {
		if d == r || strings.HasPrefix(r, ".") && strings.HasSuffix(d, r) {
			return true
		}
	}
	return false
}
