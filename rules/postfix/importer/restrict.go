package importer

import (
	"fmt"
	"path/filepath"
	"strings"
)

// The six restriction lists, in the order Postfix evaluates them.
var listNames = []string{
	"smtpd_client_restrictions", "smtpd_helo_restrictions", "smtpd_sender_restrictions",
	"smtpd_relay_restrictions", "smtpd_recipient_restrictions", "smtpd_data_restrictions",
}

// restrictions is the converted restriction lists.
type restrictions struct {
	delay bool
	// fns maps a listener ("" for the main.cf lists) to the function
	// generated for each list; "" when the list is empty.
	fns map[string]map[string]string
	// lists are the restriction words of each list, per listener, for the
	// test generator's evaluator.
	lists map[string]map[string][]string
	// relayControl: some list refuses unauthorized destinations.
	relayControl bool
}

func (c *conv) restrictions() *restrictions {
	rs := &restrictions{delay: yes(c.get("smtpd_delay_reject")), fns: map[string]map[string]string{}, lists: map[string]map[string][]string{}}
	c.handled["smtpd_delay_reject"] = true
	rs.fns[""] = map[string]string{}
	rs.lists[""] = map[string][]string{}
	for _, name := range listNames {
		words := splitList(c.get(name))
		rs.lists[""][name] = words
		f, l, t := c.line(name)
		if len(words) == 0 {
			rs.fns[""][name] = ""
			c.handled[name] = true
			continue
		}
		rs.fns[""][name] = name
		c.genList(name, name, words, c.displayWords(name, c.env, words), Item{File: f, Line: l, Text: t}, rs)
		c.done(name, "the function "+name+"()")
	}
	for _, l := range c.ls {
		if len(l.lists) == 0 {
			continue
		}
		env := &Env{Main: c.mc, Defaults: c.env.Defaults, Overrides: map[string]string{}, Undefined: map[string]bool{}}
		for _, o := range l.svc.Overrides {
			env.Overrides[o.Name] = o.Value
		}
		if ps := c.passFor(l); ps != nil {
			for _, o := range ps.Overrides {
				env.Overrides[o.Name] = o.Value
			}
		}
		rs.fns[l.name] = map[string]string{}
		rs.lists[l.name] = map[string][]string{}
		for _, name := range listNames {
			v, _ := env.Value(name)
			words := splitList(v)
			rs.lists[l.name][name] = words
			if _, over := l.lists[name]; !over {
				rs.fns[l.name][name] = rs.fns[""][name]
				continue
			}
			if len(words) == 0 {
				rs.fns[l.name][name] = ""
				continue
			}
			fn := varName(l.name) + "_" + name
			fn = strings.ToLower(fn)
			rs.fns[l.name][name] = fn
			c.genList(fn, name, words, c.displayWords(name, env, words), Item{File: l.svc.File, Line: l.svc.Line, Text: "-o " + name + "=" + l.lists[name]}, rs)
		}
	}
	if !rs.relayControl {
		c.handAt("main.cf", 0, "smtpd_relay_restrictions, smtpd_recipient_restrictions",
			"no list refuses unauthorized destinations (reject_unauth_destination): Postfix refuses to start so",
			"add reject_unauth_destination to smtpd_relay_restrictions; larkpost's default policy refuses relaying meanwhile")
	}
	for _, n := range []string{"smtpd_restriction_classes"} {
		for _, cl := range splitList(c.get(n)) {
			c.handled[cl] = true
		}
	}
	c.handled["smtpd_reject_unlisted_recipient"] = true
	if !yes(c.get("smtpd_reject_unlisted_recipient")) {
		c.noteParam("smtpd_reject_unlisted_recipient", "no: recipients that the lists permit are accepted without the user check")
	}
	return rs
}

func (c *conv) passFor(l *listener) *Service {
	if l.svc != nil && l.svc.Command == "postscreen" {
		for _, s := range c.master {
			if s.Type == "pass" && s.Command == "smtpd" {
				return s
			}
		}
	}
	return nil
}

// gen writes one restriction list as a Starlark function.
type gen struct {
	c       *conv
	list    string // the Postfix list name
	at      Item   // where the list is written, for the report
	b       []string
	warn    bool // the previous word was warn_if_reject
	softer  bool // defer_if_reject seen
	pending bool // defer_if_permit seen
	depth   int
	rs      *restrictions
	disp    []string // the words as comments show them
	words_  []string
}

// show is word i as written (with $config_directory), for comments.
func (g *gen) show(i int) string {
	if g.depth == 0 && i < len(g.disp) {
		return g.disp[i]
	}
	return g.words_[i]
}

// displayWords are a list's words as the comments show them: expanded,
// but with $config_directory kept, so that they read as main.cf does.
func (c *conv) displayWords(name string, env *Env, words []string) []string {
	if c.isSet("config_directory") {
		return words
	}
	d := &Env{Main: env.Main, Defaults: map[string]string{}, Overrides: env.Overrides}
	for k, v := range env.Defaults {
		d.Defaults[k] = v
	}
	d.Defaults["config_directory"] = "$$config_directory"
	v, err := d.Value(name)
	if err != nil {
		return words
	}
	out := splitList(v)
	if len(out) != len(words) {
		return words
	}
	return out
}

func (c *conv) genList(fn, list string, words, disp []string, at Item, rs *restrictions) {
	g := &gen{c: c, list: list, at: at, rs: rs, disp: disp}
	g.b = append(g.b, fmt.Sprintf("def %s(conn, helo, tx, rcpt):", fn))
	where := at.Where()
	if at.File == "" {
		where = "Postfix's default"
	}
	g.b = append(g.b, fmt.Sprintf("    \"\"\"%s (%s), in order. Returns PERMIT (the next list", list, where),
		"    runs), a refusal, or None when no restriction decided.\"\"\"")
	g.words(words)
	switch {
	case g.pending:
		g.b = append(g.b, "    return defer_if_permit")
	case !strings.HasPrefix(g.b[len(g.b)-1], "    return "):
		g.b = append(g.b, "    return None")
	}
	c.extraFns = append(c.extraFns, strings.Join(g.b, "\n"))
}

func (g *gen) line(s string) { g.b = append(g.b, "    "+s) }

// refuse returns a refusal expression, or under warn_if_reject logs it.
func (g *gen) refuse(cond, expr string) {
	ind := "    "
	if cond != "" {
		g.line("if " + cond + ":")
		ind = "        "
	}
	switch {
	case g.warn:
		g.b = append(g.b, ind+"print(\"warn_if_reject: \" + "+expr+".text)")
	case g.softer:
		g.b = append(g.b, ind+"return _defer_instead("+expr+")")
		g.c.need("_defer_instead")
	default:
		g.b = append(g.b, ind+"return "+expr)
	}
}

func (g *gen) permit(cond string) {
	ind := "    "
	if cond != "" {
		g.line("if " + cond + ":")
		ind = "        "
	}
	if g.pending {
		g.b = append(g.b, ind+"return defer_if_permit")
		return
	}
	g.b = append(g.b, ind+"return PERMIT")
}

// result ends a block that set r.
func (g *gen) result() {
	switch {
	case g.warn:
		g.line("if r == PERMIT:")
		g.line("    return " + g.permitValue())
		g.line("if r != None:")
		g.line("    print(\"warn_if_reject: \" + r.text)")
	case g.softer:
		g.line("if r != None:")
		g.line("    return _defer_instead(r)")
		g.c.need("_defer_instead")
	case g.pending:
		g.line("if r == PERMIT:")
		g.line("    return defer_if_permit")
		g.line("if r != None:")
		g.line("    return r")
	default:
		g.line("if r != None:")
		g.line("    return r")
	}
}

func (g *gen) permitValue() string {
	if g.pending {
		return "defer_if_permit"
	}
	return "PERMIT"
}

func (g *gen) unsupported(word, why, todo string) {
	g.line("# " + word + ": NOT CONVERTED (" + why + "; see IMPORT-REPORT.md)")
	g.c.handAt(g.at.File, g.at.Line, g.at.Text, word+": "+why, todo)
}

// words translates the restrictions of a list (or of a class) in order.
func (g *gen) words(words []string) {
	c := g.c
	saved := g.words_
	g.words_ = words
	defer func() { g.words_ = saved }()
	classes := map[string]bool{}
	for _, cl := range splitList(c.get("smtpd_restriction_classes")) {
		classes[cl] = true
	}
	for i := 0; i < len(words); i++ {
		w := words[i]
		lw := strings.ToLower(w)
		arg := func() (string, bool) {
			if i+1 >= len(words) {
				g.unsupported(w, "missing argument", "fix the list")
				return "", false
			}
			i++
			return words[i], true
		}
		warn := g.warn
		if lw != "warn_if_reject" {
			if i > 0 || g.depth > 0 {
				g.b = append(g.b, "")
			}
		}
		switch lw {
		case "warn_if_reject":
			g.b = append(g.b, "")
			g.line("# warn_if_reject: the next restriction only logs what it would refuse")
			g.warn = true
			continue
		case "permit", "ok":
			g.line("# " + w)
			g.permit("")
		case "reject":
			g.rs.relayControl = true
			g.line("# " + w)
			g.refuse("", `reject(`+g.who()+` + ": Access denied", code = 554, status = "5.7.1")`)
		case "defer":
			g.rs.relayControl = true
			g.line("# " + w)
			g.refuse("", `defer(`+g.who()+` + ": Access denied", code = 450, status = "4.7.1")`)
		case "permit_mynetworks":
			g.line("# permit_mynetworks")
			g.permit("conn.in_networks")
		case "permit_sasl_authenticated":
			g.line("# permit_sasl_authenticated")
			g.permit("conn.user")
		case "reject_unauth_destination", "defer_unauth_destination", "check_relay_domains":
			g.rs.relayControl = true
			g.line("# " + w)
			c.need("_is_ours")
			if lw == "defer_unauth_destination" {
				g.refuse("rcpt and not _is_ours(rcpt.domain)", `defer("<%s>: Relay access denied" % rcpt.address, code = 454, status = "4.7.1")`)
			} else {
				g.refuse("rcpt and not _is_ours(rcpt.domain)", `reject("<%s>: Relay access denied" % rcpt.address, code = 554, status = "5.7.1")`)
			}
		case "permit_auth_destination":
			g.line("# permit_auth_destination")
			c.need("_is_ours")
			g.permit("rcpt and _is_ours(rcpt.domain)")
		case "reject_unlisted_recipient", "check_recipient_maps":
			g.line("# " + w + ": the default policy checks the user after the lists")
		case "reject_unauth_pipelining":
			g.line("# reject_unauth_pipelining: larkpost's SMTP server checks pipelining itself")
		case "reject_non_fqdn_sender":
			g.line("# reject_non_fqdn_sender")
			c.need("_fqdn")
			g.refuse("tx and tx.sender and not _fqdn(tx.sender.domain)", `reject("<%s>: Sender address rejected: need fully-qualified address" % tx.sender.address, code = 504, status = "5.5.2")`)
		case "reject_non_fqdn_recipient":
			g.line("# reject_non_fqdn_recipient")
			c.need("_fqdn")
			g.refuse("rcpt and not _fqdn(rcpt.domain)", `reject("<%s>: Recipient address rejected: need fully-qualified address" % rcpt.address, code = 504, status = "5.5.2")`)
		case "reject_non_fqdn_helo_hostname", "reject_non_fqdn_hostname":
			g.line("# " + w)
			c.need("_fqdn")
			g.refuse(`helo and not helo.startswith("[") and not _fqdn(helo)`, `reject("<%s>: Helo command rejected: need fully-qualified hostname" % helo, code = 504, status = "5.5.2")`)
		case "reject_invalid_helo_hostname", "reject_invalid_hostname":
			g.line("# " + w)
			c.need("_valid_hostname")
			g.refuse("helo and not _valid_hostname(helo)", `reject("<%s>: Helo command rejected: Invalid name" % helo, code = 501, status = "5.5.2")`)
		case "reject_unknown_helo_hostname", "reject_unknown_hostname":
			g.line("# " + w + ": no A, AAAA or MX record")
			c.need("_domain_status")
			g.line(`r = _domain_status(helo) if helo and not helo.startswith("[") else "ok"`)
			g.refuse(`r != "ok"`, `defer("<%s>: Helo command rejected: Host not found" % helo, code = 450, status = "4.7.1")`)
		case "reject_unknown_sender_domain":
			g.line("# reject_unknown_sender_domain: no A, AAAA or MX record (the domains we are")
			g.line("# the final destination for are not looked up)")
			c.need("_domain_status")
			c.need("_is_final")
			g.line(`r = _domain_status(tx.sender.domain) if tx and tx.sender and not _is_final(tx.sender.domain) else "ok"`)
			g.refuse(`r == "nullmx"`, `reject("<%s>: Sender address rejected: Domain does not accept mail" % tx.sender.address, code = 550, status = "5.7.27")`)
			g.refuse(`r != "ok"`, `defer("<%s>: Sender address rejected: Domain not found" % tx.sender.address, code = 450, status = "4.1.8")`)
		case "reject_unknown_recipient_domain":
			g.line("# reject_unknown_recipient_domain: no A, AAAA or MX record (the domains we")
			g.line("# are the final destination for are not looked up; relay_domains are)")
			c.need("_domain_status")
			c.need("_is_final")
			g.line(`r = _domain_status(rcpt.domain) if rcpt and not _is_final(rcpt.domain) else "ok"`)
			g.refuse(`r == "nullmx"`, `reject("<%s>: Recipient address rejected: Domain does not accept mail" % rcpt.address, code = 550, status = "5.7.27")`)
			g.refuse(`r != "ok"`, `defer("<%s>: Recipient address rejected: Domain not found" % rcpt.address, code = 450, status = "4.1.2")`)
		case "reject_unknown_client_hostname", "reject_unknown_client":
			g.line("# " + w + ": no forward-confirmed reverse name")
			g.refuse(`conn.rdns == "unknown"`, `defer("<%s>: Client host rejected: cannot find your hostname, [%s]" % (conn.ip, conn.ip), code = 450, status = "4.7.25")`)
		case "reject_unknown_reverse_client_hostname":
			g.line("# reject_unknown_reverse_client_hostname: no PTR record")
			g.refuse(`conn.rdns == "unknown" and not dns.lookup_ptr(conn.ip)`, `defer("<%s>: Client host rejected: cannot find your reverse hostname, [%s]" % (conn.ip, conn.ip), code = 450, status = "4.7.25")`)
		case "reject_plaintext_session":
			g.line("# reject_plaintext_session")
			g.refuse("not conn.tls", `defer("Session encryption is required", code = 450, status = "4.7.1")`)
		case "reject_multi_recipient_bounce":
			g.line("# reject_multi_recipient_bounce")
			n := "0"
			if g.list == "smtpd_data_restrictions" {
				n = "1"
			}
			g.refuse("tx and not tx.sender and len(tx.rcpts) > "+n, `reject("<>: Sender address rejected: Multi-recipient bounce", code = 550, status = "5.5.3")`)
		case "reject_sender_login_mismatch":
			g.line("# reject_sender_login_mismatch: the reject_sender_login_mismatch setting (checked at MAIL FROM)")
			c.set("reject_sender_login_mismatch", "True")
			c.note(g.at.File, g.at.Line, g.at.Text, "reject_sender_login_mismatch became the setting of that name, which larkpost checks at MAIL FROM (553 5.7.1)")
		case "check_client_access", "check_helo_access", "check_sender_access", "check_recipient_access", "check_reverse_client_hostname_access":
			spec, ok := arg()
			if !ok {
				continue
			}
			g.line("# " + w + " " + g.show(i))
			t, ok := c.openTable(g.list, spec)
			if !ok {
				g.line("# NOT CONVERTED: the table cannot be read (see IMPORT-REPORT.md)")
				continue
			}
			g.c.checkAccessTable(t, g.at, classes)
			switch lw {
			case "check_client_access":
				c.need("_client_access")
				g.line("r = _client_access(" + t.Var + ", conn)")
			case "check_reverse_client_hostname_access":
				c.need("_check")
				g.line("names = dns.lookup_ptr(conn.ip)")
				g.line(`r = _check(` + t.Var + `.access(names[0]), "<%s[%s]>: Client host rejected" % (names[0], conn.ip)) if names else None`)
			case "check_helo_access":
				c.need("_check")
				g.line(`r = _check(` + t.Var + `.access(helo), "<%s>: Helo command rejected" % helo) if helo else None`)
			case "check_sender_access":
				c.need("_check")
				g.line(`r = _check(` + t.Var + `.access(tx.sender if tx.sender else "<>"), "<%s>: Sender address rejected" % tx.sender.address) if tx else None`)
			case "check_recipient_access":
				c.need("_check")
				g.line(`r = _check(` + t.Var + `.access(rcpt), "<%s>: Recipient address rejected" % rcpt.address) if rcpt else None`)
			}
			g.result()
		case "check_policy_service":
			svc, ok := arg()
			if !ok {
				continue
			}
			g.line("# check_policy_service " + svc)
			if strings.HasPrefix(svc, "{") {
				g.unsupported(w+" "+svc, "per-service settings are not supported", "call policy.check with timeout= and default= in the hook")
				continue
			}
			if strings.HasPrefix(svc, "unix:") && !strings.HasPrefix(svc, "unix:/") {
				svc = "unix:" + filepath.Join(c.queueDir, strings.TrimPrefix(svc, "unix:"))
			} else if !strings.HasPrefix(svc, "inet:") && !strings.HasPrefix(svc, "unix:") {
				svc = "unix:" + filepath.Join(c.queueDir, svc)
			}
			c.need("_check")
			g.line(`r = _check(policy.check(` + q(svc) + `, tx if tx else conn, rcpt), "<%s>: " % (rcpt.address if rcpt else conn.ip) + "` + stageWord(g.list) + ` rejected")`)
			g.result()
		case "reject_rbl_client", "permit_dnswl_client":
			zone, ok := arg()
			if !ok {
				continue
			}
			g.line("# " + w + " " + zone)
			z, codes, ok := rblZone(zone)
			if !ok {
				g.unsupported(w+" "+zone, "reply filters other than =d.d.d.d are not supported", "check r.codes in the generated code by hand")
				continue
			}
			cond := "r.listed"
			if len(codes) > 0 {
				cond += " and [c for c in r.codes if c in " + qlist(codes) + "]"
			}
			g.line("r = dnsbl.query(conn.ip, " + q(z) + ")")
			if lw == "permit_dnswl_client" {
				g.permit(cond)
			} else {
				g.refuse(cond, `reject("Service unavailable; Client host [%s] blocked using `+z+`%s" % (conn.ip, ("; " + r.txt) if r.txt else ""), code = 554, status = "5.7.1")`)
			}
		case "reject_rhsbl_client", "reject_rhsbl_reverse_client", "reject_rhsbl_sender", "reject_rhsbl_helo", "reject_rhsbl_recipient", "permit_rhswl_client":
			zone, ok := arg()
			if !ok {
				continue
			}
			g.line("# " + w + " " + zone)
			z, codes, ok := rblZone(zone)
			if !ok {
				g.unsupported(w+" "+zone, "reply filters other than =d.d.d.d are not supported", "check r.codes in the generated code by hand")
				continue
			}
			var name, what string
			switch lw {
			case "reject_rhsbl_client", "reject_rhsbl_reverse_client", "permit_rhswl_client":
				name, what = `conn.rdns if conn.rdns != "unknown" else None`, "Client host"
			case "reject_rhsbl_sender":
				name, what = "tx.sender.domain if tx and tx.sender else None", "Sender address"
			case "reject_rhsbl_helo":
				name, what = "helo", "Helo command"
			case "reject_rhsbl_recipient":
				name, what = "rcpt.domain if rcpt else None", "Recipient address"
			}
			g.line("d = " + name)
			g.line("r = dnsbl.query_domain(d, " + q(z) + ") if d else None")
			cond := "r and r.listed"
			if len(codes) > 0 {
				cond += " and [c for c in r.codes if c in " + qlist(codes) + "]"
			}
			if lw == "permit_rhswl_client" {
				g.permit(cond)
			} else {
				g.refuse(cond, `reject("<%s>: `+what+` rejected: Service unavailable; domain %s blocked using `+z+`%s" % (d, d, ("; " + r.txt) if r.txt else ""), code = 554, status = "5.7.1")`)
			}
		case "defer_if_permit":
			g.rs.relayControl = true
			g.line("# defer_if_permit: a later PERMIT of this list defers instead")
			g.line(`defer_if_permit = defer("Try again later", code = 450, status = "4.7.1")`)
			g.pending = true
			c.note(g.at.File, g.at.Line, g.at.Text, "defer_if_permit applies to the end of its own list, not to the end of every list as in Postfix")
		case "defer_if_reject":
			g.line("# defer_if_reject: later refusals of this list defer instead")
			g.softer = true
		case "sleep":
			if _, ok := arg(); ok {
				g.line("# " + w + " " + words[i] + ": not converted (larkpost does not stall clients)")
				c.note(g.at.File, g.at.Line, g.at.Text, "sleep is not converted")
			}
		default:
			if classes[w] && g.depth < 10 {
				g.line("# " + w + " (smtpd_restriction_classes)")
				g.depth++
				g.words(splitList(c.get(w)))
				g.depth--
				break
			}
			why, todo := unsupportedRestriction(lw)
			if takesArg[lw] {
				if a, ok := arg(); ok {
					w += " " + a
				}
			}
			g.unsupported(w, why, todo)
		}
		if warn {
			g.warn = false
		}
	}
}

var takesArg = map[string]bool{
	"check_sender_mx_access": true, "check_sender_ns_access": true, "check_sender_a_access": true,
	"check_recipient_mx_access": true, "check_recipient_ns_access": true, "check_recipient_a_access": true,
	"check_client_mx_access": true, "check_client_ns_access": true, "check_client_a_access": true,
	"check_helo_mx_access": true, "check_helo_ns_access": true, "check_helo_a_access": true,
	"check_reverse_client_hostname_mx_access": true, "check_reverse_client_hostname_ns_access": true,
	"check_ccert_access": true, "check_sasl_access": true,
}

func unsupportedRestriction(w string) (string, string) {
	switch {
	case strings.HasSuffix(w, "_mx_access") || strings.HasSuffix(w, "_ns_access") || strings.HasSuffix(w, "_a_access"):
		return "MX/NS/A access checks are not converted", "look the records up with dns.lookup_mx / dns.lookup and check them with the table in the hook"
	case strings.Contains(w, "unverified"):
		return "address verification probes are not supported", "drop it, or check the address with a table of known addresses"
	case strings.Contains(w, "login_mismatch"):
		return "only reject_sender_login_mismatch is converted", "use reject_sender_login_mismatch = True, or compare tx.conn.user with a table in on_mail"
	case strings.Contains(w, "clientcerts") || w == "check_ccert_access":
		return "client certificate permits are not converted", "check conn.tls.peer_fingerprint in the hook (smtpd_tls_ask_ccert)"
	case w == "reject_unlisted_sender":
		return "not converted", "check senders of your own domains against your users in the hook"
	case w == "permit_mx_backup":
		return "not converted (deprecated in Postfix)", "list the backup domains in relay_domains"
	}
	return "larkpost has no equivalent of this restriction", "write it in the hook by hand"
}

// who is the Starlark expression of the reply prefix Postfix gives a
// refusal in this list: "<client[ip]>: Client host rejected", ...
func (g *gen) who() string {
	switch g.list {
	case "smtpd_client_restrictions":
		return `"<%s[%s]>: Client host rejected" % (conn.rdns, conn.ip)`
	case "smtpd_helo_restrictions":
		return `"<%s>: Helo command rejected" % helo`
	case "smtpd_sender_restrictions":
		return `"<%s>: Sender address rejected" % (tx.sender.address if tx else "")`
	case "smtpd_data_restrictions":
		return `"<DATA>: Data command rejected"`
	}
	return `"<%s>: Recipient address rejected" % (rcpt.address if rcpt else "")`
}

func stageWord(list string) string {
	switch list {
	case "smtpd_client_restrictions":
		return "Client host"
	case "smtpd_helo_restrictions":
		return "Helo command"
	case "smtpd_sender_restrictions":
		return "Sender address"
	case "smtpd_data_restrictions":
		return "Data command"
	}
	return "Recipient address"
}

// rblZone splits "zone=127.0.0.2" into the zone and its reply filter.
func rblZone(s string) (string, []string, bool) {
	z, f, ok := strings.Cut(s, "=")
	if !ok {
		return z, nil, true
	}
	if strings.ContainsAny(f, "[];") {
		return z, nil, false
	}
	return z, []string{f}, true
}

// checkAccessTable reports access-table actions access() cannot express:
// restriction names, restriction classes, FILTER and the like.
func (c *conv) checkAccessTable(t *tableRef, at Item, classes map[string]bool) {
	if c.checkedTables == nil {
		c.checkedTables = map[string]bool{}
	}
	if c.checkedTables[t.Var] {
		return
	}
	c.checkedTables[t.Var] = true
	if !indexedTypes[t.Typ] && t.Typ != "cidr" {
		return
	}
	es, fs, err := c.tableKeys(t.Spec)
	if err != nil {
		return
	}
	for _, e := range es {
		word := strings.ToUpper(strings.Fields(e.value + " x")[0])
		switch word {
		case "OK", "PERMIT", "DUNNO", "REJECT", "DEFER", "DEFER_IF_PERMIT", "DEFER_IF_REJECT", "DISCARD", "HOLD", "WARN", "INFO", "PREPEND", "REDIRECT", "BCC":
			if word == "DEFER_IF_PERMIT" || word == "DEFER_IF_REJECT" {
				c.note(fs, e.line, e.key+" "+e.value, word+" defers unconditionally in larkpost")
			}
			continue
		}
		if len(word) == 3 && word[0] >= '2' && word[0] <= '5' || isNumber(word) {
			continue
		}
		why := "the action " + q(strings.Fields(e.value + " ")[0]) + " is not an access(5) result larkpost understands"
		if classes[strings.Fields(e.value + " x")[0]] {
			why = "a restriction class as an access result is not supported"
		}
		c.handAt(fs, e.line, e.key+" "+e.value, why, "replace it with OK, REJECT, DEFER, DUNNO... or write the check in the hook")
	}
}

func isNumber(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}
