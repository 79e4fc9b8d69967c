package importer

import (
	"fmt"
	"strings"
)

// helperSrc are the helper functions the generated code may call, in the
// order they are written.
var helperOrder = []string{"_check", "_client_access", "_defer_instead", "_is_ours", "_is_final", "_is_relay_domain", "_fqdn", "_valid_hostname", "_domain_status", "_error_transport", "_permitted"}

var helperDeps = map[string][]string{
	"_client_access": {"_check"},
	"_is_ours":       {"_is_final", "_is_relay_domain"},
	"_permitted":     {"_is_ours"},
}

var helperSrc = map[string]string{
	"_check": `def _check(action, who):
    """An access(5) action as a restriction result: PERMIT for OK, None for
    DUNNO or no entry, a refusal with Postfix's reply text, or an effect
    (DISCARD, HOLD, WARN, PREPEND, ...)."""
    d = access(action)
    if d == None:
        return None
    if d.kind == "accept":
        return PERMIT
    if d.kind == "reject":
        return reject("%s: %s" % (who, d.text), code = d.code, status = d.status)
    if d.kind == "defer":
        return defer("%s: %s" % (who, d.text), code = d.code, status = d.status)
    return d`,
	"_client_access": `def _client_access(table, conn):
    """check_client_access: the client's name and its parent domains, then
    its address and networks."""
    who = "<%s[%s]>: Client host rejected" % (conn.rdns, conn.ip)
    if conn.rdns != "unknown":
        r = _check(table.access(conn.rdns), who)
        if r != None:
            return r
    return _check(table.access(conn.ip), who)`,
	"_defer_instead": `def _defer_instead(d):
    """defer_if_reject: a refusal defers instead."""
    if d == PERMIT or d.kind != "reject":
        return d
    return defer(d.text, code = 450, status = "4.7.1")`,
	"_is_ours": `def _is_ours(domain):
    """Postfix's authorized destinations: mydestination, the virtual domains
    and relay_domains."""
    return _is_final(domain) or _is_relay_domain(domain)`,
	"_is_final": `def _is_final(domain):
    """The domains Postfix is the final destination for: mydestination and
    the virtual domains (the reject_unknown_*_domain checks skip them)."""
    d = domain.lower()
    return d in MYDESTINATION or d in VIRTUAL_ALIAS_DOMAINS or d in VIRTUAL_MAILBOX_DOMAINS`,
	"_is_relay_domain": `def _is_relay_domain(domain):
    """relay_domains; an entry with a leading dot matches subdomains."""
    d = domain.lower()
    for r in RELAY_DOMAINS:
        if d == r or (r.startswith(".") and d.endswith(r)):
            return True
    return False`,
	"_fqdn": `def _fqdn(name):
    """A fully-qualified name has a dot."""
    return "." in name.strip(".")`,
	"_valid_hostname": `def _valid_hostname(name):
    """Host name syntax, as Postfix's valid_hostname; address literals pass."""
    if name.startswith("[") and name.endswith("]"):
        return True
    if len(name) > 255:
        return False
    for label in name.rstrip(".").split("."):
        if not label or len(label) > 63 or label.startswith("-") or label.endswith("-"):
            return False
        for ch in label.elems():
            if not (ch.isalnum() or ch in "-_"):
                return False
    return True`,
	"_domain_status": `def _domain_status(name):
    """reject_unknown_*: "ok" when name has an MX, A or AAAA record,
    "nullmx" for a null MX, "temperror" when DNS could not answer (Postfix
    defers then too), "unknown" otherwise. An address literal is "ok"."""
    if name.startswith("["):
        return "ok"
    mx = dns.lookup_mx(name)
    if mx.status == "ok":
        return "nullmx" if list(mx.values) == ["."] else "ok"
    if mx.status == "temperror":
        return "temperror"
    for r in [dns.lookup_a(name), dns.lookup_aaaa(name)]:
        if r.status == "ok":
            return "ok"
        if r.status == "temperror":
            return "temperror"
    return "unknown"`,
	"_permitted": `def _permitted(rcpt):
    """The lists let the recipient through. Postfix still refuses unknown
    users of its own domains (smtpd_reject_unlisted_recipient): returning
    None leaves that check to the default policy. Other domains were allowed
    by a list (permit_mynetworks, permit_sasl_authenticated, ...): accept()
    skips the default policy's relay check."""
    if _is_ours(rcpt.domain):
        return None
    return accept()`,
}

// permittedErrorSrc is _permitted when some address resolves to the error
// transport.
const permittedErrorSrc = `def _permitted(rcpt):
    """The lists let the recipient through. Postfix still checks the address
    (smtpd_reject_unlisted_recipient): _error_transport refuses one routed
    to the error transport, and returning None leaves unknown users of its
    own domains to the default policy. Other domains were allowed by a list
    (permit_mynetworks, permit_sasl_authenticated, ...): accept() skips the
    default policy's relay check."""
    r = _error_transport(rcpt)
    if r != None:
        return r
    if _is_ours(rcpt.domain):
        return None
    return accept()`

func (c *conv) need(h string) {
	if c.helpers[h] {
		return
	}
	c.helpers[h] = true
	for _, d := range helperDeps[h] {
		c.need(d)
	}
}

// headerChecks converts header_checks (regexp or pcre tables) into a
// function on_data calls.
func (c *conv) headerChecks() {
	if !c.isSet("header_checks") {
		return
	}
	var vars []string
	for _, spec := range splitList(c.get("header_checks")) {
		typ, rest, _ := strings.Cut(strings.TrimPrefix(spec, "proxy:"), ":")
		if typ != "regexp" && typ != "pcre" {
			c.hand("header_checks", spec+": only regexp and pcre header_checks are converted", "write an on_data hook")
			continue
		}
		t, ok := c.openTable("header_checks", spec)
		if !ok {
			continue
		}
		vars = append(vars, t.Var)
		fs, _ := c.resolvePath(rest)
		if strings.HasPrefix(rest, "{") {
			continue
		}
		c.checkHeaderActions(fs)
	}
	c.handled["header_checks"] = true
	if len(vars) == 0 {
		return
	}
	c.done("header_checks", "the function header_checks()")
	c.headerFn = strings.Join([]string{
		"def header_checks(msg):",
		"    \"\"\"" + strings.TrimPrefix(c.comment("header_checks"), "# ") + ": each header",
		"    line, unfolded; the first action decides.\"\"\"",
		"    for name in msg.header_names:",
		"        for value in msg.headers(name):",
		"            for t in [" + strings.Join(vars, ", ") + "]:",
		"                d = access(t.get(name + \": \" + value))",
		"                if d:",
		"                    return d",
		"    return None",
	}, "\n")
}

func (c *conv) checkHeaderActions(path string) {
	lines, err := readLines(path)
	if err != nil {
		return
	}
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || t[0] == '#' || l[0] == ' ' || l[0] == '\t' || strings.HasPrefix(t, "if ") || t == "endif" {
			continue
		}
		// /pattern/flags ACTION text
		delim := t[0]
		end := strings.LastIndexByte(t, delim)
		if end <= 0 {
			continue
		}
		rest := strings.TrimSpace(strings.TrimLeft(t[end+1:], "imxsUX!"))
		word := strings.ToUpper(strings.Fields(rest + " x")[0])
		switch word {
		case "REJECT", "DEFER", "DISCARD", "HOLD", "WARN", "INFO", "PREPEND", "REDIRECT", "BCC", "OK", "DUNNO":
			continue
		}
		c.handAt(path, i+1, t, "the header_checks action "+word+" has no equivalent", "write this check in on_data by hand")
	}
}

func readLines(path string) ([]string, error) {
	es, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.ReplaceAll(es, "\r", ""), "\n"), nil
}

// render writes larkpost.star, the tests and the report.
func (c *conv) render() error {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }

	// hooks first: they decide which helpers are needed
	hooks := c.hooksSrc()

	w("# larkpost.star: imported from the Postfix configuration in %s\n", c.o.Dir)
	w("# by `larkpost import postfix` (larkpost %s) on %s.\n", c.o.Version, c.o.Now.Format("2006-01-02"))
	w("#\n# Every main.cf and master.cf line is accounted for in IMPORT-REPORT.md:\n")
	w("# %d converted, %d to do by hand, %d notes. postfix_import_test.star checks\n", len(c.res.Converted), len(dedupe(c.res.Hand)), len(dedupe(c.res.Notes)))
	w("# the old behaviour: larkpost test -c larkpost.star postfix_import_test.star\n\n")
	w("# Postfix's domain lists, used by config(...) and by the restrictions below.\n")
	for _, k := range c.consts {
		w("%s\n", k)
	}
	w("\nconfig(\n")
	for _, l := range c.cfg {
		for _, cm := range l.comments {
			w("    %s\n", cm)
		}
		w("    %s = %s,\n", l.name, l.expr)
	}
	w("    # larkpost's own queue, state and mailbox base (Postfix's queue stays where it is).\n")
	w("    data_dir = %s,\n", q("/var/lib/larkpost"))
	w(")\n")
	if len(c.tables) > 0 {
		w("\n# Lookup tables, read where Postfix reads them (no postmap step).\n")
		for _, t := range c.tables {
			w("%s = maps.open(%s)\n", t.Var, q(t.Spec))
		}
	}
	if len(c.extraFns) > 0 {
		w("\n# A restriction that lets the request through ends its list; the next\n# list runs, as in Postfix.\nPERMIT = \"permit\"\n")
	}
	for _, f := range c.extraFns {
		w("\n%s\n", f)
	}
	if c.headerFn != "" {
		w("\n%s\n", c.headerFn)
	}
	for _, h := range helperOrder {
		if c.helpers[h] {
			src := helperSrc[h]
			if d, ok := c.dynHelpers[h]; ok {
				src = d
			}
			w("\n%s\n", src)
		}
	}
	if hooks != "" {
		w("\n%s", hooks)
	}
	if len(c.route) > 0 {
		w("\n%s\n", strings.Join(c.route, "\n"))
	}
	c.res.Star = []byte(b.String())
	c.res.Test = []byte(c.testsSrc())
	c.res.Hand = dedupe(c.res.Hand)
	c.res.Notes = dedupe(c.res.Notes)
	sortItems(c.res.Converted)
	sortItems(c.res.Hand)
	sortItems(c.res.Notes)
	c.res.Report = []byte(c.reportSrc())
	return nil
}

func dedupe(items []Item) []Item {
	seen := map[string]bool{}
	var out []Item
	for _, it := range items {
		k := fmt.Sprintf("%s\x00%d\x00%s\x00%s", it.File, it.Line, it.Text, it.Why)
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, it)
	}
	return out
}

// hooksSrc writes the hooks that run the restriction functions in
// Postfix's order.
func (c *conv) hooksSrc() string {
	rs := c.rs
	if rs == nil {
		return ""
	}
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	listeners := []string{""}
	for _, l := range c.ls {
		if _, ok := rs.fns[l.name]; ok {
			listeners = append(listeners, l.name)
		}
	}
	mainName := "smtp"
	if len(c.ls) > 0 {
		mainName = c.ls[0].name
	}
	stageLists := func(names []string) (map[string][]string, bool) {
		out := map[string][]string{}
		any := false
		for _, ln := range listeners {
			var fs []string
			for _, n := range names {
				if f := rs.fns[ln][n]; f != "" {
					fs = append(fs, f)
				}
			}
			out[ln] = fs
			any = any || len(fs) > 0
		}
		return out, any
	}
	// table writes the functions a stage runs: one list, or a dict by listener.
	table := func(constName string, m map[string][]string) {
		if len(listeners) == 1 {
			if len(m[""]) <= 2 {
				w("%s = [%s]\n", constName, strings.Join(m[""], ", "))
				return
			}
			w("%s = [\n", constName)
			for _, f := range m[""] {
				w("    %s,\n", f)
			}
			w("]\n")
			return
		}
		w("%s = {\n", constName)
		for _, ln := range listeners {
			key := ln
			if ln == "" {
				key = mainName
			}
			if len(m[ln]) <= 2 {
				w("    %s: [%s],\n", q(key), strings.Join(m[ln], ", "))
				continue
			}
			w("    %s: [\n", q(key))
			for _, f := range m[ln] {
				w("        %s,\n", f)
			}
			w("    ],\n")
		}
		w("}\n")
	}
	lookup := func(constName, conn string) string {
		if len(listeners) == 1 {
			return constName
		}
		return fmt.Sprintf("%s.get(%s.listener, %s[%s])", constName, conn, constName, q(mainName))
	}
	heloCheck := func() {
		w("    %s\n", c.comment("smtpd_helo_required"))
		w("    if conn.helo == None and conn.listener != \"sendmail\":\n")
		w("        return reject(\"Error: send HELO/EHLO first\", code = 503, status = \"5.5.1\")\n")
	}
	mailDone := false
	stage := func(hook, args, conn, helo, tx, rcpt string, names []string, final string, comment string) {
		m, any := stageLists(names)
		if !any {
			return
		}
		constName := strings.ToUpper(strings.TrimPrefix(hook, "on_")) + "_RESTRICTIONS"
		w("\n# %s\n", comment)
		table(constName, m)
		w("\ndef %s(%s):\n", hook, args)
		if conn != "conn" {
			w("    conn = %s\n", conn)
		}
		if hook == "on_mail" && c.heloRequired {
			heloCheck()
			mailDone = true
		}
		w("    if conn.listener == \"sendmail\":\n        return None  # Postfix runs no smtpd restrictions for local submission\n")
		w("    for check in %s:\n", lookup(constName, "conn"))
		w("        r = check(conn, %s, %s, %s)\n", helo, tx, rcpt)
		w("        if r != None and r != PERMIT:\n            return r\n")
		w("    return %s\n", final)
	}
	final := "None"
	if rs.relayControl {
		c.need("_permitted")
		final = "_permitted(rcpt)"
		if !yes(c.get("smtpd_reject_unlisted_recipient")) {
			final = "accept()"
		} else if src := c.errorTransportSrc(); src != "" {
			c.errorCheck = true
			c.dynHelpers["_error_transport"] = src
			c.dynHelpers["_permitted"] = permittedErrorSrc
			c.need("_error_transport")
		}
	}
	if rs.delay {
		stage("on_rcpt", "tx, rcpt", "tx.conn", "conn.helo", "tx", "rcpt",
			[]string{"smtpd_client_restrictions", "smtpd_helo_restrictions", "smtpd_sender_restrictions", "smtpd_relay_restrictions", "smtpd_recipient_restrictions"},
			final, "smtpd_delay_reject = yes: Postfix runs the client, HELO and sender\n# restrictions at RCPT TO, then the relay and recipient restrictions.")
	} else {
		stage("on_connect", "conn", "conn", "None", "None", "None", []string{"smtpd_client_restrictions"}, "None", "smtpd_delay_reject = no: the client restrictions run at connect.")
		stage("on_helo", "conn, name", "conn", "name", "None", "None", []string{"smtpd_helo_restrictions"}, "None", "The HELO restrictions.")
		stage("on_mail", "tx, sender", "tx.conn", "conn.helo", "tx", "None", []string{"smtpd_sender_restrictions"}, "None", "The sender restrictions.")
		stage("on_rcpt", "tx, rcpt", "tx.conn", "conn.helo", "tx", "rcpt", []string{"smtpd_relay_restrictions", "smtpd_recipient_restrictions"}, final, "The relay and recipient restrictions.")
	}
	if c.heloRequired && !mailDone {
		w("\ndef on_mail(tx, sender):\n    conn = tx.conn\n")
		heloCheck()
		w("    return None\n")
	}
	m, anyData := stageLists([]string{"smtpd_data_restrictions"})
	if anyData || c.headerFn != "" {
		w("\n")
		if anyData {
			w("# smtpd_data_restrictions (larkpost asks at the end of DATA).\n")
			table("DATA_RESTRICTIONS", m)
		}
		w("\ndef on_data(tx, msg):\n    conn = tx.conn\n")
		if anyData {
			w("    rcpt = tx.rcpts[0] if len(tx.rcpts) == 1 else None\n")
			w("    if conn.listener != \"sendmail\":\n")
			w("        for check in %s:\n", lookup("DATA_RESTRICTIONS", "conn"))
			w("            r = check(conn, conn.helo, tx, rcpt)\n")
			w("            if r != None and r != PERMIT:\n                return r\n")
		}
		if c.headerFn != "" {
			w("    return header_checks(msg)\n")
		} else {
			w("    return None\n")
		}
	}
	return b.String()
}
