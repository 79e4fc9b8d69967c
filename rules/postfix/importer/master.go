package importer

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// listener is an SMTP service of master.cf.
type listener struct {
	name string
	svc  *Service
	addr string
	opts [][2]string // listener options, in order
	// lists are the restriction lists this listener overrides with -o.
	lists map[string]string
}

// standardServices are master.cf's own entries: nothing to convert.
var standardServices = map[string]bool{
	"pickup": true, "cleanup": true, "qmgr": true, "oqmgr": true, "tlsmgr": true, "trivial-rewrite": true,
	"bounce": true, "verify": true, "flush": true, "proxymap": true, "smtp": true, "showq": true,
	"error": true, "discard": true, "local": true, "virtual": true, "lmtp": true, "anvil": true,
	"scache": true, "postlogd": true, "dnsblog": true, "tlsproxy": true,
}

var servicePorts = map[string]string{"smtp": "25", "submission": "587", "smtps": "465", "submissions": "465", "urd": "465"}

// listOverrides are -o parameters that are restriction lists.
var listOverrides = map[string]bool{
	"smtpd_client_restrictions": true, "smtpd_helo_restrictions": true, "smtpd_sender_restrictions": true,
	"smtpd_relay_restrictions": true, "smtpd_recipient_restrictions": true, "smtpd_data_restrictions": true,
}

func (c *conv) listeners() {
	hosts := c.listenHosts()
	var ls []*listener
	var std []string
	defer func() {
		if len(std) > 0 {
			c.note("master.cf", 0, "", "Postfix's own services ("+strings.Join(std, ", ")+"): nothing to convert, larkpost does their work itself")
		}
	}()
	var passSvc *Service
	for _, s := range c.master {
		if s.Type == "pass" && s.Command == "smtpd" {
			passSvc = s
		}
	}
	for _, s := range c.master {
		switch {
		case s.Type == "inet" && s.Command == "smtpd":
			ls = append(ls, c.listener(s, s, hosts)...)
		case s.Type == "inet" && s.Command == "postscreen":
			if passSvc == nil {
				c.handAt(s.File, s.Line, s.Raw, "postscreen without an smtpd pass service", "add an smtp listener by hand")
				continue
			}
			c.note(s.File, s.Line, s.Raw, "postscreen's port became an SMTP listener with the options of the smtpd pass service; postscreen's own checks are not converted (see postscreen_* in this report)")
			ls = append(ls, c.listener(s, passSvc, hosts)...)
		case s.Type == "pass" && s.Command == "smtpd":
			// used by postscreen above
		case s.Type == "inet":
			c.handAt(s.File, s.Line, s.Raw, fmt.Sprintf("larkpost has no %s service", s.Command), "remove it, or run the program beside larkpost")
		case s.Command == "pipe":
			// converted where a transport names it
		case standardServices[s.Command] || s.Command == "trivial-rewrite" || s.Command == "postlogd":
			std = append(std, s.Name)
			for _, o := range s.Overrides {
				if o.Name == "syslog_name" {
					continue
				}
				c.handAt(s.File, s.Line, s.Raw, fmt.Sprintf("-o %s=%s on the %s service is not converted", o.Name, o.Value, s.Name), "set the matching larkpost setting globally, or write a route hook")
			}
		default:
			c.handAt(s.File, s.Line, s.Raw, fmt.Sprintf("larkpost has no equivalent of the %s program", s.Command), "run it beside larkpost if still needed")
		}
	}
	if len(c.master) == 0 {
		ls = append(ls, &listener{name: "smtp", addr: joinHostPort(firstHost(hosts), "25")})
	}
	if len(ls) == 0 {
		c.note("master.cf", 0, "", "no SMTP service: larkpost's default listener (127.0.0.1:2525) is kept")
		return
	}
	c.ls = ls
	var parts []string
	for _, l := range ls {
		if len(l.opts) == 0 {
			parts = append(parts, fmt.Sprintf("%s: %s", q(l.name), q(l.addr)))
			continue
		}
		o := []string{fmt.Sprintf("%s: %s", q("addr"), q(l.addr))}
		for _, kv := range l.opts {
			o = append(o, fmt.Sprintf("%s: %s", q(kv[0]), kv[1]))
		}
		parts = append(parts, fmt.Sprintf("%s: {%s}", q(l.name), strings.Join(o, ", ")))
	}
	expr := "{\n        " + strings.Join(parts, ",\n        ") + ",\n    }"
	c.set("listen", expr)
	for i := range c.cfg {
		if c.cfg[i].name == "listen" {
			for _, l := range ls {
				if l.svc != nil {
					c.cfg[i].comments = append(c.cfg[i].comments, fmt.Sprintf("# %s:%d %s", l.svc.File, l.svc.Line, l.svc.Raw))
				}
			}
			if c.isSet("inet_interfaces") {
				c.cfg[i].comments = append(c.cfg[i].comments, c.comment("inet_interfaces"))
			}
		}
	}
}

func firstHost(h []string) string {
	if len(h) == 0 {
		return ""
	}
	return h[0]
}

// listenHosts are inet_interfaces as addresses to bind ("" is all).
func (c *conv) listenHosts() []string {
	v4 := strings.TrimSpace(c.get("inet_protocols")) == "ipv4"
	var out []string
	for _, it := range splitList(c.get("inet_interfaces")) {
		switch strings.ToLower(it) {
		case "all":
			if v4 {
				return []string{"0.0.0.0"}
			}
			return []string{""}
		case "loopback-only", "localhost":
			out = append(out, "127.0.0.1")
			if !v4 {
				out = append(out, "::1")
			}
		default:
			out = append(out, strings.Trim(it, "[]"))
		}
	}
	if len(out) == 0 {
		return []string{""}
	}
	return out
}

func joinHostPort(host, port string) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + port
	}
	return host + ":" + port
}

// listener converts one smtpd service (svc: where its -o come from).
func (c *conv) listener(s, svc *Service, hosts []string) []*listener {
	name, port := s.Name, ""
	host := ""
	if i := strings.LastIndexByte(name, ':'); i >= 0 {
		host, port = strings.Trim(name[:i], "[]"), name[i+1:]
		name = "smtpd_" + port
	}
	if p, ok := servicePorts[port]; ok {
		port = p
	}
	if port == "" {
		if p, ok := servicePorts[s.Name]; ok {
			port = p
		} else if _, err := strconv.Atoi(s.Name); err == nil {
			port, name = s.Name, "smtpd_"+s.Name
		} else {
			c.handAt(s.File, s.Line, s.Raw, "unknown service port "+q(s.Name), "add the listener by hand")
			return nil
		}
	}
	base := &listener{name: name, svc: s, lists: map[string]string{}}
	for _, o := range svc.Overrides {
		val, err := c.env.Expand(o.Value)
		if err != nil {
			c.handAt(svc.File, svc.Line, svc.Raw, fmt.Sprintf("-o %s=%s: %v", o.Name, o.Value, err), "fix the value")
			continue
		}
		switch o.Name {
		case "smtpd_tls_security_level":
			if !c.tlsOK && val != "none" {
				c.handAt(svc.File, svc.Line, svc.Raw, "-o smtpd_tls_security_level="+val+": TLS needs a certificate larkpost can read", "set smtpd_tls_cert_file, then add tls_security_level to this listener")
				continue
			}
			base.opts = append(base.opts, [2]string{"tls_security_level", q(val)})
		case "smtpd_tls_wrappermode":
			if yes(val) && !c.tlsOK {
				c.handAt(svc.File, svc.Line, svc.Raw, "-o smtpd_tls_wrappermode=yes: TLS needs a certificate larkpost can read", "set smtpd_tls_cert_file, then add tls_wrappermode to this listener")
				continue
			}
			base.opts = append(base.opts, [2]string{"tls_wrappermode", pyBool(yes(val))})
		case "smtpd_sasl_auth_enable":
			if yes(val) && !c.saslOK {
				c.handAt(svc.File, svc.Line, svc.Raw, "-o smtpd_sasl_auth_enable=yes: AUTH needs smtpd_sasl_type = dovecot (or a passwd-file)", "convert smtpd_sasl_type, then add sasl_auth_enable to this listener")
				continue
			}
			base.opts = append(base.opts, [2]string{"sasl_auth_enable", pyBool(yes(val))})
		case "smtpd_tls_auth_only":
			base.opts = append(base.opts, [2]string{"tls_auth_only", pyBool(yes(val))})
		case "smtpd_upstream_proxy_protocol":
			base.opts = append(base.opts, [2]string{"upstream_proxy_protocol", q(val)})
		case "syslog_name", "milter_macro_daemon_name":
			c.note(svc.File, svc.Line, "-o "+o.Name+"="+o.Value, "nothing to convert: larkpost names the listener in its log lines and milter macros")
		case "smtpd_reject_unlisted_recipient":
			if yes(val) != yes(c.get("smtpd_reject_unlisted_recipient")) {
				c.handAt(svc.File, svc.Line, svc.Raw, "-o smtpd_reject_unlisted_recipient per listener is not converted", "check recipients in on_rcpt by tx.conn.listener")
			}
		default:
			if listOverrides[o.Name] {
				base.lists[o.Name] = o.Value
				continue
			}
			c.handAt(svc.File, svc.Line, svc.Raw, fmt.Sprintf("-o %s=%s is not converted", o.Name, o.Value), "set it globally in config(...), or check tx.conn.listener in a hook")
		}
	}
	if host != "" {
		hosts = []string{host}
	}
	var out []*listener
	for i, h := range hosts {
		l := *base
		if i > 0 {
			l.name = fmt.Sprintf("%s_%d", name, i+1)
		}
		l.addr = joinHostPort(h, port)
		out = append(out, &l)
	}
	return out
}

// ---------------------------------------------------------------------
// Transports: mailbox_transport, local/virtual/default/relay_transport
// and the services transport_maps names.

// transport converts a Postfix "transport:nexthop" to larkpost's; why
// says what is missing when ok is false.
func (c *conv) transport(t string) (string, string, bool) {
	name, nexthop, _ := strings.Cut(strings.TrimSpace(t), ":")
	if name == "" {
		return "", "", true // keep the default transport
	}
	var svc *Service
	for _, s := range c.master {
		if s.Name == name && s.Type == "unix" {
			svc = s
		}
	}
	cmd := name
	if svc != nil {
		c.usedSvc[svc.Name] = true
		cmd = svc.Command
		if cmd == "smtp" && name == "lmtp" {
			cmd = "lmtp"
		}
	}
	switch cmd {
	case "local", "virtual":
		return cmd, "", true
	case "smtp":
		if svc != nil && len(svc.Overrides) > 0 {
			var other []string
			for _, o := range svc.Overrides {
				if o.Name != "syslog_name" {
					other = append(other, o.Name)
				}
			}
			if len(other) > 0 {
				return "", "the " + name + " service's -o " + strings.Join(other, ", ") + " are not converted", false
			}
		}
		return "smtp:" + nexthop, "", true
	case "lmtp":
		if strings.HasPrefix(nexthop, "unix:") && !strings.HasPrefix(nexthop, "unix:/") {
			nexthop = "unix:" + filepath.Join(c.queueDir, strings.TrimPrefix(nexthop, "unix:"))
		}
		return "lmtp:" + nexthop, "", true
	case "error", "discard":
		return cmd + ":" + nexthop, "", true
	case "pipe":
		for _, a := range svc.Args {
			if strings.HasPrefix(a, "argv=") {
				i := strings.Index(svc.Raw, "argv=")
				argv := strings.TrimSpace(svc.Raw[i+len("argv="):])
				return "pipe:" + argv, "", true
			}
		}
		return "", "the pipe service " + name + " has no argv=", false
	}
	return "", "larkpost has no " + cmd + " transport", false
}

// routing converts the *_transport parameters into a route hook.
func (c *conv) routing() {
	var lines []string
	add := func(param, cond, comment string) {
		raw := c.get(param)
		def := postconfDefaults[param]
		if !c.isSet(param) || normalize(c.mc.Params[param].Value) == normalize(def) {
			c.handled[param] = true
			return
		}
		t, why, ok := c.transport(raw)
		if !ok {
			c.hand(param, why, "write a route hook that returns a larkpost transport (docs/reference/transports.md)")
			return
		}
		if t == "" || t == "local" && param != "default_transport" || t == "virtual" && param == "virtual_transport" {
			c.done(param, "the default")
			return
		}
		c.done(param, "the route hook")
		lines = append(lines, "    "+c.comment(param), "    # "+comment, "    if "+cond+":", "        return "+q(t))
	}
	add("mailbox_transport", "rcpt.domain in MYDESTINATION", "local users' mailboxes")
	if !c.isSet("mailbox_transport") {
		add("local_transport", "rcpt.domain in MYDESTINATION", "local domains")
	} else if c.isSet("local_transport") {
		c.handled["local_transport"] = true
	}
	add("virtual_transport", "rcpt.domain in VIRTUAL_MAILBOX_DOMAINS", "virtual mailbox domains")
	add("relay_transport", "_is_relay_domain(rcpt.domain)", "relay_domains")
	add("default_transport", "not _is_ours(rcpt.domain)", "everything else")
	if len(lines) == 0 {
		return
	}
	c.need("_is_ours")
	c.need("_is_relay_domain")
	var b []string
	b = append(b, "def route(rcpt, msg):",
		`    """Postfix's *_transport parameters; None lets transport_maps and the`,
		`    default routing decide."""`)
	if len(c.tableList("transport_maps")) > 0 {
		var ts []string
		for _, s := range splitList(c.get("transport_maps")) {
			if t, ok := c.openTable("transport_maps", s); ok {
				ts = append(ts, t.Var)
			}
		}
		b = append(b, "    # transport_maps comes first, as in Postfix.",
			"    for t in ["+strings.Join(ts, ", ")+"]:",
			"        if t.transport(rcpt) != None:",
			"            return None")
	}
	b = append(b, lines...)
	b = append(b, "    return None")
	c.route = b
	c.checkTransportTables()
}

// checkTransportTables reports transport_maps entries naming services
// larkpost does not have.
func (c *conv) checkTransportTables() {
	for _, s := range splitList(c.get("transport_maps")) {
		es, fs, err := c.tableKeys(s)
		if err != nil {
			continue
		}
		for _, e := range es {
			name, _, _ := strings.Cut(e.value, ":")
			switch name {
			case "", "smtp", "relay", "lmtp", "local", "virtual", "error", "discard":
				continue
			}
			if t, _, ok := c.transport(e.value); ok {
				c.handAt(fs, e.line, e.key+" "+e.value, "the "+name+" transport is a master.cf service larkpost does not know by that name",
					"write "+q(e.key+" "+t)+" in the table (larkpost's transport), or return it from a route hook")
			} else {
				c.handAt(fs, e.line, e.key+" "+e.value, "larkpost has no "+name+" transport", "route this destination in a route hook (docs/reference/transports.md)")
			}
		}
	}
}

// unusedPipes notes the pipe services nothing routes to.
func (c *conv) unusedPipes() {
	for _, s := range c.master {
		if s.Command == "pipe" && !c.usedSvc[s.Name] {
			c.note(s.File, s.Line, s.Raw, "a pipe service no transport setting or table names: nothing to convert")
		}
	}
}
