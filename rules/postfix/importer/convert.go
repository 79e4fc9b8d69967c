package importer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Options say what to import and where the result goes.
type Options struct {
	Dir     string    // the Postfix configuration directory, as given ($config_directory)
	OutDir  string    // the output folder; relative table paths are written relative to it
	Version string    // larkpost's version, for the header
	Now     time.Time // the date in the header
	// Hostname is the machine's name, for myhostname's default; "" asks
	// the operating system.
	Hostname string
	// Passwd is the passwd file local_recipient_maps' unix:passwd.byname
	// reads; "" is /etc/passwd.
	Passwd string
	// Interfaces lists the machine's addresses with their prefix lengths,
	// for mynetworks' default; nil asks the operating system.
	Interfaces func() ([]netip.Prefix, error)
}

// Item is one line of the report.
type Item struct {
	File string // "main.cf", "master.cf", a table's path; "" for a default
	Line int
	Text string // the line as written ("name = value")
	Why  string
	Todo string // what to do; empty for notes
}

// Where is FILE:LINE, or "(default)".
func (it Item) Where() string {
	switch {
	case it.File == "":
		return "(Postfix default)"
	case it.Line == 0:
		return it.File
	}
	return it.File + ":" + strconv.Itoa(it.Line)
}

// Result is an import: the three files and the report's items.
type Result struct {
	Star, Test, Report []byte
	Converted          []Item // Why holds what the line became
	Hand               []Item // needs hand work
	Notes              []Item // converted with a difference worth knowing, or nothing to convert
}

// NeedsHandWork reports whether the report lists anything to do by hand.
func (r *Result) NeedsHandWork() bool { return len(r.Hand) > 0 }

type cfgLine struct {
	comments []string
	name     string
	expr     string
}

type conv struct {
	o          Options
	env        *Env
	mc         *MainCF
	master     []*Service
	masterFile string
	res        *Result

	handled map[string]bool
	cfg     []cfgLine
	cfgSet  map[string]bool
	consts  []string

	tables     []*tableRef
	tableByKey map[string]*tableRef

	networks     []netip.Prefix
	myDest       []string
	relayDomains []string
	vaDomains    []string
	vmDomains    []string
	localUsers   []string // nil: any local part (local_recipient_maps empty)
	knownUser    string   // a local part the default policy accepts, for the tests
	aliasFiles   []string

	queueDir      string
	rs            *restrictions
	ls            []*listener
	tlsOK         bool
	headerFn      string
	checkedTables map[string]bool
	usedSvc       map[string]bool
	heloRequired  bool
	saslOK        bool
	dnsNames      map[string]bool // names the generated tests' DNS resolves
	extraFns      []string        // helper functions the generated code needs, in order
	helpers       map[string]bool
	route         []string          // route hook body lines
	errorCheck    bool              // on_rcpt refuses recipients routed to the error transport
	dynHelpers    map[string]string // helpers written for this config (_error_transport)
	sasl          bool
}

// Import reads the Postfix configuration in o.Dir and converts it.
func Import(o Options) (*Result, error) {
	if o.Dir == "" {
		o.Dir = "/etc/postfix"
	}
	if o.OutDir == "" {
		o.OutDir = "larkpost-from-postfix"
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	mc, err := readMainCF(o.Dir)
	if err != nil {
		return nil, err
	}
	c := &conv{o: o, mc: mc, res: &Result{}, handled: map[string]bool{}, cfgSet: map[string]bool{},
		tableByKey: map[string]*tableRef{}, helpers: map[string]bool{}, dynHelpers: map[string]string{}, usedSvc: map[string]bool{}}
	c.env = &Env{Main: mc, Defaults: c.defaults(), Undefined: map[string]bool{}}
	// mydomain's default is $myhostname minus its first label.
	if _, rest, ok := strings.Cut(c.env.Get("myhostname"), "."); ok && rest != "" {
		c.env.Defaults["mydomain"] = rest
	} else {
		c.env.Defaults["mydomain"] = "localdomain"
	}
	c.masterFile = filepath.Join(o.Dir, "master.cf")
	if data, err := os.ReadFile(c.masterFile); err == nil {
		if c.master, err = ParseMasterCF("master.cf", data); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %v", c.masterFile, errors.Unwrap(err))
	} else {
		c.note("master.cf", 0, "", "no master.cf: a single SMTP listener on port 25 is assumed")
	}
	// Expanding every parameter once finds loops and bad syntax early,
	// with the line they are on.
	for _, name := range mc.Order {
		p := mc.Params[name]
		if _, err := c.env.Expand(p.Value); err != nil {
			return nil, fmt.Errorf("%s:%d: %s: %v", p.File, p.Line, name, err)
		}
	}
	for _, p := range mc.Dups {
		later := mc.Params[p.Name]
		c.note(p.File, p.Line, p.Name+" = "+p.Value, fmt.Sprintf("overridden by line %d, as in Postfix", later.Line))
	}
	c.queueDir = c.get("queue_directory")
	c.convertAll()
	if err := c.render(); err != nil {
		return nil, err
	}
	return c.res, nil
}

// defaults are postconf -d's values, with the machine-dependent ones
// computed here and $config_directory the imported folder.
func (c *conv) defaults() map[string]string {
	d := make(map[string]string, len(postconfDefaults)+4)
	for k, v := range postconfDefaults {
		d[k] = v
	}
	host := c.o.Hostname
	if host == "" {
		host, _ = os.Hostname()
	}
	host = strings.ToLower(host)
	if !strings.Contains(host, ".") {
		host += ".localdomain"
	}
	d["myhostname"] = host
	_, d["mydomain"], _ = strings.Cut(host, ".")
	d["config_directory"] = c.o.Dir
	d["mynetworks"] = "" // computed from mynetworks_style
	d["stress"] = ""
	return d
}

func (c *conv) get(name string) string { return c.env.Get(name) }

func (c *conv) isSet(name string) bool { return c.mc.Params[name] != nil }

// line is a parameter's FILE, LINE and text, or the default's.
func (c *conv) line(name string) (string, int, string) {
	if p := c.mc.Params[name]; p != nil {
		return p.File, p.Line, p.Name + " = " + p.Value
	}
	raw, _ := c.env.Raw(name)
	return "", 0, strings.TrimSpace(name + " = " + raw)
}

func (c *conv) comment(name string) string {
	f, l, t := c.line(name)
	if f == "" {
		return "# Postfix default: " + t
	}
	return fmt.Sprintf("# %s:%d %s", f, l, t)
}

func (c *conv) hand(name, why, todo string) {
	f, l, t := c.line(name)
	c.handled[name] = true
	c.res.Hand = append(c.res.Hand, Item{File: f, Line: l, Text: t, Why: why, Todo: todo})
}

func (c *conv) handAt(file string, line int, text, why, todo string) {
	c.res.Hand = append(c.res.Hand, Item{File: file, Line: line, Text: text, Why: why, Todo: todo})
}

func (c *conv) noteParam(name, why string) {
	f, l, t := c.line(name)
	c.handled[name] = true
	c.res.Notes = append(c.res.Notes, Item{File: f, Line: l, Text: t, Why: why})
}

func (c *conv) note(file string, line int, text, why string) {
	c.res.Notes = append(c.res.Notes, Item{File: file, Line: line, Text: text, Why: why})
}

// done records a main.cf parameter as converted to what.
func (c *conv) done(name, what string) {
	c.handled[name] = true
	if p := c.mc.Params[name]; p != nil {
		c.res.Converted = append(c.res.Converted, Item{File: p.File, Line: p.Line, Text: p.Name + " = " + p.Value, Why: what})
	}
}

// set adds a config(...) keyword, commented with the parameters it came from.
func (c *conv) set(setting, expr string, from ...string) {
	var comments []string
	for _, f := range from {
		comments = append(comments, c.comment(f))
		c.done(f, "config "+setting)
	}
	if c.cfgSet[setting] {
		for i := range c.cfg {
			if c.cfg[i].name == setting {
				c.cfg[i].expr = expr
				c.cfg[i].comments = append(c.cfg[i].comments, comments...)
			}
		}
		return
	}
	c.cfgSet[setting] = true
	c.cfg = append(c.cfg, cfgLine{comments: comments, name: setting, expr: expr})
}

// q quotes a Starlark string.
func q(s string) string { return strconv.Quote(s) }

func qlist(items []string) string {
	parts := make([]string, len(items))
	for i, s := range items {
		parts[i] = q(s)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func yes(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "yes", "true", "1", "on":
		return true
	}
	return false
}

func pyBool(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

// ---------------------------------------------------------------------
// The parameters.

type kind int

const (
	kString kind = iota
	kInt
	kBool
	kSize
	kDuration
	kTables
)

type simple struct {
	to   string
	kind kind
	unit string // a duration's default unit
}

// simpleParams convert one to one.
var simpleParams = map[string]simple{
	"recipient_delimiter":                   {"recipient_delimiter", kString, ""},
	"mailbox_size_limit":                    {"mailbox_size_limit", kSize, ""},
	"message_size_limit":                    {"message_size_limit", kSize, ""},
	"header_size_limit":                     {"header_size_limit", kSize, ""},
	"body_checks_size_limit":                {"body_checks_size_limit", kSize, ""},
	"queue_minfree":                         {"queue_minfree", kSize, ""},
	"smtpd_min_data_rate":                   {"smtpd_min_data_rate", kSize, ""},
	"soft_bounce":                           {"soft_bounce", kBool, ""},
	"allow_min_user":                        {"allow_min_user", kBool, ""},
	"always_add_missing_headers":            {"always_add_missing_headers", kBool, ""},
	"smtpd_peername_lookup":                 {"smtpd_peername_lookup", kBool, ""},
	"maximal_queue_lifetime":                {"maximal_queue_lifetime", kDuration, "d"},
	"bounce_queue_lifetime":                 {"bounce_queue_lifetime", kDuration, "d"},
	"minimal_backoff_time":                  {"minimal_backoff", kDuration, "s"},
	"maximal_backoff_time":                  {"maximal_backoff", kDuration, "s"},
	"delay_warning_time":                    {"delay_warning_time", kDuration, "h"},
	"smtpd_timeout":                         {"smtpd_timeout", kDuration, "s"},
	"command_time_limit":                    {"command_time_limit", kDuration, "s"},
	"default_destination_rate_delay":        {"default_destination_rate_delay", kDuration, "s"},
	"smtp_destination_rate_delay":           {"smtp_destination_rate_delay", kDuration, "s"},
	"relay_destination_rate_delay":          {"smtp_destination_rate_delay", kDuration, "s"},
	"lmtp_destination_rate_delay":           {"lmtp_destination_rate_delay", kDuration, "s"},
	"local_destination_rate_delay":          {"local_destination_rate_delay", kDuration, "s"},
	"milter_command_timeout":                {"milter_command_timeout", kDuration, "s"},
	"milter_connect_timeout":                {"milter_connect_timeout", kDuration, "s"},
	"milter_content_timeout":                {"milter_content_timeout", kDuration, "s"},
	"qmgr_message_active_limit":             {"qmgr_message_active_limit", kInt, ""},
	"local_destination_concurrency_limit":   {"local_destination_concurrency_limit", kInt, ""},
	"default_destination_concurrency_limit": {"default_destination_concurrency_limit", kInt, ""},
	"default_process_limit":                 {"delivery_workers", kInt, ""},
	"smtpd_recipient_limit":                 {"smtpd_recipient_limit", kInt, ""},
	"smtpd_client_connection_count_limit":   {"smtpd_client_connection_count_limit", kInt, ""},
	"virtual_alias_expansion_limit":         {"virtual_alias_expansion_limit", kInt, ""},
	"virtual_alias_recursion_limit":         {"virtual_alias_recursion_limit", kInt, ""},
	"virtual_minimum_uid":                   {"virtual_minimum_uid", kInt, ""},
	"milter_protocol":                       {"milter_protocol", kInt, ""},
	"default_privs":                         {"default_privs", kString, ""},
	"milter_default_action":                 {"milter_default_action", kString, ""},
	"smtpd_tls_mandatory_ciphers":           {"smtpd_tls_mandatory_ciphers", kString, ""},
	"smtpd_tls_protocols":                   {"smtpd_tls_protocols", kString, ""},
	"smtpd_tls_mandatory_protocols":         {"smtpd_tls_mandatory_protocols", kString, ""},
	"smtpd_tls_ask_ccert":                   {"smtpd_tls_ask_ccert", kBool, ""},
	"smtpd_tls_received_header":             {"smtpd_tls_received_header", kBool, ""},
	"canonical_maps":                        {"canonical_maps", kTables, ""},
	"sender_canonical_maps":                 {"sender_canonical_maps", kTables, ""},
	"recipient_canonical_maps":              {"recipient_canonical_maps", kTables, ""},
	"relocated_maps":                        {"relocated_maps", kTables, ""},
	"virtual_alias_maps":                    {"virtual_alias_maps", kTables, ""},
	"virtual_mailbox_maps":                  {"virtual_mailbox_maps", kTables, ""},
	"virtual_uid_maps":                      {"virtual_uid_maps", kTables, ""},
	"virtual_gid_maps":                      {"virtual_gid_maps", kTables, ""},
	"transport_maps":                        {"transport_maps", kTables, ""},
	"smtp_tls_policy_maps":                  {"smtp_tls_policy_maps", kTables, ""},
	"smtpd_sender_login_maps":               {"smtpd_sender_login_maps", kTables, ""},
}

// ignored are parameters with nothing to convert, and why.
var ignored = map[string]string{
	"compatibility_level":                 "the defaults it selects were applied while importing",
	"command_directory":                   "a Postfix installation path",
	"daemon_directory":                    "a Postfix installation path",
	"data_directory":                      "Postfix's own state (larkpost keeps its state under data_dir)",
	"meta_directory":                      "a Postfix installation path",
	"shlib_directory":                     "a Postfix installation path",
	"queue_directory":                     "Postfix's queue (larkpost's queue is under data_dir); relative paths were resolved against it",
	"config_directory":                    "the imported folder",
	"html_directory":                      "documentation path",
	"manpage_directory":                   "documentation path",
	"sample_directory":                    "documentation path",
	"readme_directory":                    "documentation path",
	"sendmail_path":                       "larkpost sendmail is installed as sendmail",
	"newaliases_path":                     "no newaliases step: aliases are read directly",
	"mailq_path":                          "larkpost queue list (mailq link)",
	"setgid_group":                        "larkpost's control socket uses control_group",
	"debugger_command":                    "debugging aid",
	"biff":                                "larkpost does not notify comsat",
	"alias_database":                      "no newaliases step: aliases are read directly",
	"inet_protocols":                      "applied to the listeners' addresses",
	"inet_interfaces":                     "applied to the listeners' addresses",
	"mynetworks_style":                    "applied to networks",
	"unknown_local_recipient_reject_code": "larkpost refuses unknown local users with 550, Postfix's default",
	"smtp_tls_session_cache_database":     "larkpost keeps TLS sessions in memory",
	"smtpd_tls_session_cache_database":    "larkpost keeps TLS sessions in memory",
	"smtp_tls_CApath":                     "larkpost verifies servers against the system's roots (or smtp_tls_CAfile)",
	"smtpd_tls_loglevel":                  "larkpost logs the TLS version and cipher of each session",
	"smtp_tls_loglevel":                   "larkpost logs the TLS version and cipher of each delivery",
	"smtp_tls_note_starttls_offer":        "logging only",
	"maillog_file":                        "larkpost logs to log_target",
	"syslog_name":                         "larkpost's syslog_name is its own setting (default larkpost)",
	"syslog_facility":                     "larkpost logs to the mail facility",
	"mail_name":                           "used in smtpd_banner only",
	"mail_owner":                          "larkpost runs as its own mail_owner (default larkpost)",
	"append_dot_mydomain":                 "larkpost never appends $mydomain to host names",
	"smtputf8_enable":                     "larkpost supports SMTPUTF8",
	"smtpd_tls_dh1024_param_file":         "Go's TLS stack uses ECDHE only",
	"smtpd_tls_exclude_ciphers":           "Go's TLS stack chooses safe ciphers (smtpd_tls_mandatory_ciphers)",
	"smtp_tls_mandatory_protocols":        "larkpost's outbound TLS uses TLS 1.2 or later when it verifies",
	"smtp_tls_protocols":                  "larkpost's outbound TLS uses Go's defaults",
	"broken_sasl_auth_clients":            "larkpost accepts AUTH=LOGIN style clients",
	"smtpd_sasl_security_options":         "larkpost offers PLAIN and LOGIN only over TLS unless smtpd_tls_auth_only is off",
	"smtpd_sasl_tls_security_options":     "larkpost offers PLAIN and LOGIN only over TLS unless smtpd_tls_auth_only is off",
	"smtpd_sasl_local_domain":             "larkpost passes the login as typed",
	"milter_macro_daemon_name":            "larkpost sends {daemon_name} as the listener's name",
	"smtpd_tls_wrappermode":               "applied to the listeners",
	"smtpd_use_tls":                       "applied to smtpd_tls_security_level",
	"smtpd_enforce_tls":                   "applied to smtpd_tls_security_level",
	"parent_domain_matches_subdomains":    "applied to relay_domains",
	"smtpd_delay_reject":                  "applied to the hooks the restrictions run in",
	"smtpd_restriction_classes":           "each class is written inline where it is used",
	"access_map_reject_code":              "applied to the access-table replies",
	"access_map_defer_code":               "applied to the access-table replies",
	"reject_code":                         "applied to the restriction replies",
	"defer_code":                          "applied to the restriction replies",
	"relay_domains_reject_code":           "applied to the restriction replies",
	"maps_rbl_reject_code":                "applied to the restriction replies",
	"non_fqdn_reject_code":                "applied to the restriction replies",
	"invalid_hostname_reject_code":        "applied to the restriction replies",
	"unknown_address_reject_code":         "applied to the restriction replies",
	"unknown_client_reject_code":          "applied to the restriction replies",
	"unknown_hostname_reject_code":        "applied to the restriction replies",
	"plaintext_reject_code":               "applied to the restriction replies",
	"multi_recipient_bounce_reject_code":  "applied to the restriction replies",
	"smtpd_null_access_lookup_key":        "applied to check_sender_access",
	"smtp_sasl_auth_enable":               "smtp_sasl_password_maps alone turns AUTH on in larkpost",
	"disable_vrfy_command":                "larkpost never discloses users with VRFY",
	"strict_rfc821_envelopes":             "larkpost's address syntax check is its own",
	"swap_bangpath":                       "larkpost does not rewrite UUCP-style addresses",
	"allow_percent_hack":                  "larkpost does not rewrite user%domain addresses",
	"local_transport":                     "applied to local delivery",
	"virtual_transport":                   "applied to virtual delivery",
	"default_transport":                   "applied to routing",
	"relay_transport":                     "applied to routing",
	"mail_spool_directory":                "applied to mailbox_path",
	"home_mailbox":                        "applied to mailbox_path",
	"myhostname":                          "hostname",
	"stress":                              "set by Postfix itself",
}

// convertAll walks the parameters; what is left unhandled at the end goes
// to the report.
func (c *conv) convertAll() {
	c.identity()
	c.domainsAndNetworks()
	c.localDelivery()
	c.tls()
	c.listeners()
	for _, name := range sortedKeys(simpleParams) {
		if !c.isSet(name) {
			continue
		}
		c.simpleParam(name, simpleParams[name])
	}
	c.aliasesAndUsers()
	c.notify()
	c.milters()
	c.masquerade()
	c.smarthost()
	c.routing()
	c.rs = c.restrictions()
	if yes(c.get("smtpd_helo_required")) {
		c.heloRequired = true
		c.done("smtpd_helo_required", "the on_mail hook")
	}
	c.headerChecks()
	c.checkTransportTables()
	c.unusedPipes()
	c.leftovers()
}

func (c *conv) identity() {
	host := c.get("myhostname")
	c.set("hostname", q(host), "myhostname")
	if c.isSet("mydomain") {
		c.set("domain", q(c.get("mydomain")), "mydomain")
	}
	if c.isSet("myorigin") {
		v := c.get("myorigin")
		if strings.HasPrefix(v, "/") {
			first, err := firstLine(v)
			if err != nil {
				c.hand("myorigin", fmt.Sprintf("cannot read %s: %v", v, err), "set origin in config(...) by hand")
				return
			}
			v = first
		}
		c.set("origin", q(v), "myorigin")
	}
	if c.isSet("smtpd_banner") {
		raw, _ := c.env.Raw("smtpd_banner")
		raw = strings.ReplaceAll(strings.ReplaceAll(raw, "${myhostname}", "$myhostname"), "$(myhostname)", "$myhostname")
		parts := strings.Split(raw, "$myhostname")
		for i, p := range parts {
			if !c.isSet("mail_name") {
				p = strings.ReplaceAll(strings.ReplaceAll(p, "$mail_name", "larkpost"), "${mail_name}", "larkpost")
			}
			parts[i], _ = c.env.Expand(p)
		}
		c.set("smtpd_banner", q(strings.Join(parts, "{hostname}")), "smtpd_banner")
	}
}

func firstLine(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", errors.Unwrap(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && l[0] != '#' {
			return l, nil
		}
	}
	return "", fmt.Errorf("empty file")
}

// domainList expands a list of domains: names, /files of names, and
// type:tables whose keys are the domains (read once: a snapshot).
func (c *conv) domainList(name string) []string {
	var out []string
	seen := map[string]bool{}
	add := func(d string) {
		d = strings.ToLower(strings.TrimSuffix(d, "."))
		if d != "" && !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	for _, it := range splitList(c.get(name)) {
		switch {
		case strings.HasPrefix(it, "/"):
			data, err := os.ReadFile(it)
			if err != nil {
				c.hand(name, fmt.Sprintf("cannot read %s: %v", it, errors.Unwrap(err)), "add its domains by hand")
				continue
			}
			for _, w := range strings.Fields(stripComments(string(data))) {
				add(w)
			}
		case isTableSpec(it):
			keys, _, err := c.tableKeys(it)
			if err != nil {
				c.hand(name, fmt.Sprintf("%s: %v", it, err), "list its domains in config(...) by hand")
				continue
			}
			n := 0
			for _, k := range keys {
				if !strings.Contains(k.key, "@") && !strings.HasPrefix(k.key, "/") {
					add(k.key)
					n++
				}
			}
			c.noteParam(name, fmt.Sprintf("the %d domain(s) of %s were copied into the list: larkpost does not look domain lists up in tables; import again after changing it", n, it))
		case strings.HasPrefix(it, "!"):
			c.hand(name, "exclusions (!domain) have no equivalent", "remove the excluded domains by hand")
		default:
			add(it)
		}
	}
	return out
}

func stripComments(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if i := strings.IndexByte(l, '#'); i >= 0 {
			l = l[:i]
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

func isTableSpec(s string) bool {
	i := strings.IndexByte(s, ':')
	if i <= 0 {
		return false
	}
	for _, r := range s[:i] {
		if !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

func (c *conv) domainsAndNetworks() {
	c.myDest = c.domainList("mydestination")
	c.set("destinations", "MYDESTINATION", "mydestination")
	c.consts = append(c.consts, "MYDESTINATION = "+qlist(c.myDest))

	relay := c.domainList("relay_domains")
	sub := false
	for _, p := range splitList(c.get("parent_domain_matches_subdomains")) {
		sub = sub || p == "relay_domains"
	}
	for _, d := range relay {
		c.relayDomains = append(c.relayDomains, d)
		if sub && !strings.HasPrefix(d, ".") {
			c.relayDomains = append(c.relayDomains, "."+d)
		}
	}
	if len(c.relayDomains) > 0 || c.isSet("relay_domains") {
		c.set("relay_domains", "RELAY_DOMAINS", "relay_domains")
		if sub && len(relay) > 0 {
			c.note("", 0, "parent_domain_matches_subdomains = ...relay_domains...", "each relay domain is also listed with a leading dot: Postfix relays their subdomains too")
		}
	}
	c.consts = append(c.consts, "RELAY_DOMAINS = "+qlist(c.relayDomains))
	c.vaDomains = c.domainList("virtual_alias_domains")
	if len(c.vaDomains) > 0 {
		c.set("virtual_alias_domains", "VIRTUAL_ALIAS_DOMAINS", "virtual_alias_domains")
	} else {
		c.done("virtual_alias_domains", "no domains")
	}
	c.consts = append(c.consts, "VIRTUAL_ALIAS_DOMAINS = "+qlist(c.vaDomains))
	c.vmDomains = c.domainList("virtual_mailbox_domains")
	if len(c.vmDomains) > 0 {
		c.set("virtual_mailbox_domains", "VIRTUAL_MAILBOX_DOMAINS", "virtual_mailbox_domains")
	} else {
		c.done("virtual_mailbox_domains", "no domains")
	}
	c.consts = append(c.consts, "VIRTUAL_MAILBOX_DOMAINS = "+qlist(c.vmDomains))

	c.networks = c.networkList()
	var nets []string
	for _, n := range c.networks {
		nets = append(nets, n.String())
	}
	c.set("networks", qlist(nets), "mynetworks")
}

func (c *conv) networkList() []netip.Prefix {
	var out []netip.Prefix
	add := func(p netip.Prefix) {
		p = p.Masked()
		for _, x := range out {
			if x == p {
				return
			}
		}
		out = append(out, p)
	}
	if !c.isSet("mynetworks") {
		style := c.get("mynetworks_style")
		ifs := c.o.Interfaces
		if ifs == nil {
			ifs = interfaces
		}
		prefixes, err := ifs()
		if err != nil {
			c.hand("mynetworks", "cannot list this machine's interfaces: "+err.Error(), "set networks by hand")
		}
		v4only := strings.TrimSpace(c.get("inet_protocols")) == "ipv4"
		for _, p := range prefixes {
			if v4only && p.Addr().Is6() {
				continue
			}
			switch style {
			case "host":
				add(netip.PrefixFrom(p.Addr(), p.Addr().BitLen()))
			case "class":
				c.hand("mynetworks_style", "class-based networks are not computed", "set networks by hand")
				return out
			default:
				add(p)
			}
		}
		c.note("", 0, "mynetworks_style = "+style, "mynetworks was computed from this machine's interfaces, as Postfix does; import on the mail server itself, or set networks by hand")
		return out
	}
	for _, it := range splitList(c.get("mynetworks")) {
		switch {
		case strings.HasPrefix(it, "/"):
			data, err := os.ReadFile(it)
			if err != nil {
				c.hand("mynetworks", fmt.Sprintf("cannot read %s: %v", it, errors.Unwrap(err)), "add its networks to networks by hand")
				continue
			}
			for _, w := range strings.Fields(stripComments(string(data))) {
				if p, ok := parseNet(w); ok {
					add(p)
				} else {
					c.hand("mynetworks", fmt.Sprintf("%s: %q is not a network", it, w), "add it to networks by hand")
				}
			}
		case isTableSpec(it) && !strings.HasPrefix(it, "["):
			keys, _, err := c.tableKeys(it)
			if err != nil {
				c.hand("mynetworks", fmt.Sprintf("%s: %v", it, err), "list its networks in networks by hand")
				continue
			}
			for _, k := range keys {
				if p, ok := parseNet(k.key); ok {
					add(p)
				}
			}
			c.noteParam("mynetworks", "the networks of "+it+" were copied into networks; import again after changing it")
		case strings.HasPrefix(it, "!"):
			c.hand("mynetworks", "exclusions ("+it+") have no equivalent", "remove the excluded addresses from networks by hand, or refuse them in on_connect")
		default:
			if p, ok := parseNet(it); ok {
				add(p)
			} else {
				c.hand("mynetworks", fmt.Sprintf("%q is not an address or network (host names are not supported)", it), "replace it with its addresses in networks")
			}
		}
	}
	return out
}

func parseNet(s string) (netip.Prefix, bool) {
	t := strings.Replace(strings.Replace(s, "[", "", 1), "]", "", 1)
	if p, err := netip.ParsePrefix(t); err == nil {
		return p.Masked(), true
	}
	if a, err := netip.ParseAddr(t); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	return netip.Prefix{}, false
}

func interfaces() ([]netip.Prefix, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			ip, ok := netip.AddrFromSlice(n.IP)
			if !ok {
				continue
			}
			ones, _ := n.Mask.Size()
			ip = ip.Unmap()
			if ip.Is4() && ones > 32 {
				ones -= 96
			}
			out = append(out, netip.PrefixFrom(ip, ones).Masked())
		}
	}
	return out, nil
}

func (c *conv) simpleParam(name string, s simple) {
	v := strings.TrimSpace(c.get(name))
	switch s.kind {
	case kString:
		c.set(s.to, q(v), name)
	case kBool:
		c.set(s.to, pyBool(yes(v)), name)
	case kInt:
		if _, err := strconv.Atoi(v); err != nil {
			c.hand(name, fmt.Sprintf("%q is not a number", v), "set "+s.to+" by hand")
			return
		}
		if name == "default_process_limit" {
			c.set(s.to, v, name)
			c.note("", 0, "", "default_process_limit became delivery_workers: larkpost's SMTP sessions are not processes (smtpd_connection_limit bounds them)")
			return
		}
		c.set(s.to, v, name)
	case kSize:
		if _, err := strconv.ParseInt(v, 10, 64); err != nil {
			c.hand(name, fmt.Sprintf("%q is not a number of bytes", v), "set "+s.to+" by hand")
			return
		}
		c.set(s.to, v, name)
	case kDuration:
		d, ok := duration(v, s.unit)
		if !ok {
			c.hand(name, fmt.Sprintf("%q is not a time value", v), "set "+s.to+" by hand")
			return
		}
		c.set(s.to, d, name)
	case kTables:
		specs := c.tableList(name)
		if len(specs) == 0 {
			c.done(name, "empty")
			return
		}
		c.set(s.to, qlist(specs), name)
	}
}

// duration writes a Postfix time value ("300s", "5d", "3600") as larkpost's.
func duration(v, unit string) (string, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return "", false
	}
	last := v[len(v)-1]
	num := v
	if strings.ContainsRune("smhdw", rune(last)) {
		num, unit = v[:len(v)-1], string(last)
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 {
		return "", false
	}
	if n == 0 {
		return "0", true
	}
	return q(strconv.Itoa(n) + unit), true
}

// tableList converts a parameter's list of tables, reporting those that
// larkpost cannot read.
func (c *conv) tableList(name string) []string {
	var out []string
	for _, it := range splitList(c.get(name)) {
		if spec, ok := c.tableSpec(name, it); ok {
			out = append(out, spec)
		}
	}
	return out
}

// localDelivery: mailbox_path from home_mailbox / mail_spool_directory,
// forward_path, mailbox_command.
func (c *conv) localDelivery() {
	home := strings.TrimSpace(c.get("home_mailbox"))
	spool := strings.TrimSuffix(strings.TrimSpace(c.get("mail_spool_directory")), "/")
	switch {
	case home != "":
		c.set("mailbox_path", q("/home/{user}/"+strings.TrimPrefix(home, "/")), "home_mailbox")
		c.noteParam("home_mailbox", "$HOME is taken as /home/USER: larkpost does not look users up in /etc/passwd")
	default:
		path := spool + "/{user}"
		if strings.HasSuffix(c.get("mail_spool_directory"), "/") {
			path += "/"
		}
		c.set("mailbox_path", q(path), "mail_spool_directory")
	}
	if c.isSet("mailbox_command") && c.get("mailbox_command") != "" {
		c.hand("mailbox_command", "larkpost runs no command for each local delivery",
			"write a file hook (procmail's folders) or per-user filters (filter_path); see docs/guide/filters.md, or deliver with mailbox_transport to an LMTP server")
	}
	if fp := c.get("forward_path"); strings.TrimSpace(fp) != "" {
		c.set("forward_path", q("/home/{user}/.forward"), "forward_path")
		c.noteParam("forward_path", "larkpost reads one .forward per user, /home/USER/.forward ($home is taken as /home/USER; .forward+extension files are not read)")
	}
}

// aliasesAndUsers: alias_maps and local_recipient_maps.
func (c *conv) aliasesAndUsers() {
	for _, it := range splitList(c.get("alias_maps")) {
		typ, path := "", it
		if isTableSpec(it) {
			typ, path, _ = strings.Cut(it, ":")
		}
		switch typ {
		case "", "hash", "btree", "lmdb", "cdb", "dbm", "texthash":
		case "nis", "netinfo", "ldap", "mysql", "pgsql", "sqlite":
			if c.isSet("alias_maps") {
				c.hand("alias_maps", it+": larkpost reads aliases from files only", "export the aliases to a file and name it in alias_maps")
			} else {
				c.note("", 0, "alias_maps = "+c.get("alias_maps"), it+" (Postfix's default) was left out: larkpost reads aliases from files only")
			}
			continue
		default:
			c.hand("alias_maps", it+": not an aliases(5) file", "convert it to an aliases(5) file")
			continue
		}
		p, ok := c.sourceFile("alias_maps", path, true)
		if ok {
			c.aliasFiles = append(c.aliasFiles, p)
		}
	}
	if len(c.aliasFiles) > 0 {
		c.set("alias_maps", qlist(c.aliasFiles), "alias_maps")
	} else {
		c.done("alias_maps", "no aliases")
	}

	raw := strings.TrimSpace(c.get("local_recipient_maps"))
	if raw == "" {
		c.done("local_recipient_maps", "empty: every local part is a user")
		c.noteParam("local_recipient_maps", "empty: every local user name is accepted, as in Postfix")
		c.knownUser = "postmaster"
		return
	}
	aliasSpecs := map[string]bool{}
	for _, a := range splitList(c.get("alias_maps")) {
		aliasSpecs[a] = true
		aliasSpecs["proxy:"+a] = true
	}
	users := []string{}
	seen := map[string]bool{}
	add := func(u string) {
		u = strings.ToLower(strings.TrimSpace(u))
		if i := strings.IndexByte(u, '@'); i >= 0 {
			u = u[:i]
		}
		if u != "" && !seen[u] && validUser(u) {
			seen[u] = true
			users = append(users, u)
		}
	}
	for _, it := range splitList(raw) {
		switch strings.TrimPrefix(it, "proxy:") {
		case "unix:passwd.byname":
			passwd := c.o.Passwd
			if passwd == "" {
				passwd = "/etc/passwd"
			}
			names, err := passwdUsers(passwd)
			if err != nil {
				c.hand("local_recipient_maps", "cannot read "+passwd+": "+err.Error(), "list the users in local_recipients")
				continue
			}
			for _, n := range names {
				add(n)
			}
			c.noteParam("local_recipient_maps", fmt.Sprintf("the %d account names of %s were copied into local_recipients: larkpost does not read the passwd database; import again after adding users", len(names), passwd))
			continue
		}
		if aliasSpecs[it] {
			continue // aliases count as users in larkpost
		}
		keys, _, err := c.tableKeys(it)
		if err != nil {
			c.hand("local_recipient_maps", it+": "+err.Error(), "list the users in local_recipients")
			continue
		}
		for _, k := range keys {
			add(k.key)
		}
		c.noteParam("local_recipient_maps", "the keys of "+it+" were copied into local_recipients; import again after changing it")
	}
	if len(users) > 0 {
		c.set("local_recipients", qlist(users), "local_recipient_maps")
		c.localUsers = users
		c.knownUser = users[0]
		for _, u := range users {
			if u == "postmaster" || u == "root" {
				c.knownUser = u
				break
			}
		}
	} else {
		c.done("local_recipient_maps", "aliases only")
		c.knownUser = "postmaster"
	}
}

func validUser(u string) bool {
	if u == "" || len(u) > 64 || strings.IndexByte("._=+-", u[0]) >= 0 || strings.Contains(u, "..") {
		return false
	}
	for _, r := range u {
		if !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || strings.ContainsRune("._=+-", r)) {
			return false
		}
	}
	return true
}

func passwdUsers(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, errors.Unwrap(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' || l[0] == '+' || l[0] == '-' {
			continue
		}
		name, _, _ := strings.Cut(l, ":")
		out = append(out, name)
	}
	return out, sc.Err()
}

func (c *conv) tls() {
	cert := strings.TrimSpace(c.get("smtpd_tls_cert_file"))
	key := strings.TrimSpace(c.get("smtpd_tls_key_file"))
	chains := splitList(c.get("smtpd_tls_chain_files"))
	haveCert := false
	readable := func(name, f string) bool {
		if _, err := os.ReadFile(f); err != nil {
			c.hand(name, fmt.Sprintf("%s cannot be read here: %v", f, errors.Unwrap(err)), "make it readable by larkpost (or copy it), then set "+name+" in config(...); TLS stays off until then")
			return false
		}
		return true
	}
	if cert != "" {
		if key == "" {
			key = cert
		}
		if readable("smtpd_tls_cert_file", cert) && readable("smtpd_tls_key_file", key) {
			c.set("smtpd_tls_cert_file", q(cert), "smtpd_tls_cert_file")
			if c.isSet("smtpd_tls_key_file") {
				c.set("smtpd_tls_key_file", q(key), "smtpd_tls_key_file")
			}
			haveCert = true
		} else {
			c.handled["smtpd_tls_cert_file"], c.handled["smtpd_tls_key_file"] = true, true
		}
	} else if c.isSet("smtpd_tls_key_file") {
		c.noteParam("smtpd_tls_key_file", "no smtpd_tls_cert_file: ignored")
	}
	if len(chains) > 0 {
		ok := true
		for _, f := range chains {
			ok = readable("smtpd_tls_chain_files", f) && ok
		}
		if ok {
			c.set("smtpd_tls_chain_files", qlist(chains), "smtpd_tls_chain_files")
			haveCert = true
		}
	}
	level := strings.TrimSpace(c.get("smtpd_tls_security_level"))
	if level == "" {
		switch {
		case yes(c.get("smtpd_enforce_tls")):
			level = "encrypt"
		case yes(c.get("smtpd_use_tls")):
			level = "may"
		default:
			level = "none"
		}
	}
	c.handled["smtpd_use_tls"], c.handled["smtpd_enforce_tls"] = true, true
	switch {
	case !haveCert && level != "none":
		c.hand("smtpd_tls_security_level", "TLS needs a certificate larkpost can read", "set smtpd_tls_cert_file, then smtpd_tls_security_level = "+q(level))
	case !haveCert:
		c.done("smtpd_tls_security_level", "none")
		c.set("smtpd_tls_security_level", q("none"), "smtpd_tls_security_level")
	case level == "may" || level == "encrypt" || level == "none":
		c.set("smtpd_tls_security_level", q(level), "smtpd_tls_security_level")
	default:
		c.hand("smtpd_tls_security_level", "larkpost has none, may and encrypt", "choose one of them")
	}
	c.tlsOK = haveCert
	if c.isSet("smtpd_tls_CAfile") {
		if f := c.get("smtpd_tls_CAfile"); readable("smtpd_tls_CAfile", f) {
			c.set("smtpd_tls_CAfile", q(f), "smtpd_tls_CAfile")
		}
	}
	if c.isSet("smtpd_tls_auth_only") {
		c.set("smtpd_tls_auth_only", pyBool(yes(c.get("smtpd_tls_auth_only"))), "smtpd_tls_auth_only")
	}
	// SASL
	c.saslOK = c.get("smtpd_sasl_type") == "dovecot"
	if yes(c.get("smtpd_sasl_auth_enable")) {
		c.sasl = true
		if c.saslOK {
			c.set("smtpd_sasl_auth_enable", "True", "smtpd_sasl_auth_enable")
		} else {
			c.hand("smtpd_sasl_auth_enable", "AUTH stays off until smtpd_sasl_type is converted (below)", "then set smtpd_sasl_auth_enable = True")
		}
	} else if c.isSet("smtpd_sasl_auth_enable") {
		c.set("smtpd_sasl_auth_enable", "False", "smtpd_sasl_auth_enable")
	}
	for _, s := range c.master {
		if v, ok := s.Get("smtpd_sasl_auth_enable"); ok && yes(v) {
			c.sasl = true
		}
	}
	if c.sasl {
		if !c.isSet("smtpd_tls_auth_only") {
			c.set("smtpd_tls_auth_only", "False", "smtpd_tls_auth_only")
			c.note("", 0, "smtpd_tls_auth_only = no", "written explicitly: larkpost's own default is True")
		}
		switch t := c.get("smtpd_sasl_type"); t {
		case "dovecot":
			c.set("smtpd_sasl_type", q("dovecot"), "smtpd_sasl_type")
			path := c.get("smtpd_sasl_path")
			if !strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "inet:") {
				path = filepath.Join(c.queueDir, path)
			}
			c.set("smtpd_sasl_path", q(path), "smtpd_sasl_path")
		default:
			c.hand("smtpd_sasl_type", "larkpost checks passwords with Dovecot's auth service or a passwd-file, not Cyrus SASL ("+t+")",
				"set smtpd_sasl_type = \"dovecot\" and smtpd_sasl_path, or \"passwd-file\" with a Dovecot-format passwd file")
			c.handled["smtpd_sasl_path"] = true
		}
	} else {
		for _, n := range []string{"smtpd_sasl_type", "smtpd_sasl_path"} {
			if c.isSet(n) {
				c.noteParam(n, "SASL is not enabled: nothing to convert")
			}
		}
	}
	// outbound
	if c.isSet("smtp_tls_security_level") {
		switch l := c.get("smtp_tls_security_level"); l {
		case "none", "may", "encrypt", "dane":
			c.set("smtp_tls_security_level", q(l), "smtp_tls_security_level")
		case "verify", "secure", "fingerprint", "dane-only":
			c.set("smtp_tls_security_level", q("encrypt"), "smtp_tls_security_level")
			c.noteParam("smtp_tls_security_level", l+" became encrypt, which verifies the certificate against the system's roots")
		default:
			c.hand("smtp_tls_security_level", "unknown level "+q(l), "choose none, may, encrypt or dane")
		}
	}
	if c.isSet("smtp_tls_CAfile") {
		c.set("smtp_tls_CAfile", q(c.get("smtp_tls_CAfile")), "smtp_tls_CAfile")
	}
}

func (c *conv) notify() {
	if c.isSet("notify_classes") {
		c.set("notify_classes", qlist(splitList(c.get("notify_classes"))), "notify_classes")
	}
	var set []string
	for _, n := range []string{"bounce_notice_recipient", "2bounce_notice_recipient", "delay_notice_recipient", "error_notice_recipient"} {
		if c.isSet(n) {
			set = append(set, n)
		}
	}
	if len(set) == 0 {
		return
	}
	first := c.get(set[0])
	for _, n := range set[1:] {
		if c.get(n) != first {
			c.hand(n, "larkpost has one notify_recipient for every notice", "choose one recipient for notify_recipient")
		}
	}
	c.set("notify_recipient", q(first), set...)
}

func (c *conv) milters() {
	for _, name := range []string{"smtpd_milters", "non_smtpd_milters"} {
		if !c.isSet(name) {
			continue
		}
		var out []string
		for _, m := range splitList(c.get(name)) {
			if strings.HasPrefix(m, "{") {
				c.hand(name, "per-milter settings ("+m+") are not supported", "use the global milter_* settings")
				continue
			}
			if strings.HasPrefix(m, "unix:") && !strings.HasPrefix(m, "unix:/") {
				m = "unix:" + filepath.Join(c.queueDir, strings.TrimPrefix(m, "unix:"))
			} else if strings.HasPrefix(m, "unix:/") && yes(c.smtpdChroot()) {
				c.noteParam(name, "the smtpd service runs chrooted in Postfix: check that "+m+" is the socket's path outside the chroot")
			}
			out = append(out, m)
		}
		if len(out) > 0 {
			c.set(name, qlist(out), name)
		}
	}
	for _, n := range []string{"milter_connect_macros", "milter_helo_macros", "milter_mail_macros", "milter_rcpt_macros", "milter_data_macros", "milter_end_of_header_macros", "milter_end_of_data_macros"} {
		if c.isSet(n) {
			c.set(n, qlist(splitList(c.get(n))), n)
		}
	}
}

func (c *conv) smtpdChroot() string {
	for _, s := range c.master {
		if s.Type == "inet" && s.Command == "smtpd" {
			if s.Chroot == "-" {
				return "yes"
			}
			return s.Chroot
		}
	}
	return "no"
}

func (c *conv) masquerade() {
	if !c.isSet("masquerade_domains") {
		return
	}
	var out []string
	for _, d := range splitList(c.get("masquerade_domains")) {
		if strings.HasPrefix(d, "!") {
			c.hand("masquerade_domains", "exceptions ("+d+") are not supported", "remove the exception, or write a rewrite hook")
			continue
		}
		out = append(out, d)
	}
	c.set("masquerade_domains", qlist(out), "masquerade_domains")
	c.noteParam("masquerade_domains", "larkpost masquerades senders only (Postfix's default masquerade_classes also rewrites header recipients)")
	if c.isSet("masquerade_exceptions") {
		c.hand("masquerade_exceptions", "not supported", "write a rewrite hook that keeps these users' hosts")
	}
}

func (c *conv) smarthost() {
	if v := strings.TrimSpace(c.get("relayhost")); v != "" {
		c.set("relayhost", q(v), "relayhost")
	} else if c.isSet("relayhost") {
		c.done("relayhost", "empty: deliver by MX")
	}
	if c.isSet("smtp_sasl_password_maps") {
		specs := c.tableList("smtp_sasl_password_maps")
		if !yes(c.get("smtp_sasl_auth_enable")) {
			c.noteParam("smtp_sasl_password_maps", "smtp_sasl_auth_enable is no: the table is not used, as in Postfix")
		} else if len(specs) > 0 {
			c.set("smtp_sasl_password_maps", qlist(specs), "smtp_sasl_password_maps", "smtp_sasl_auth_enable")
		}
	}
}

// leftovers reports every main.cf parameter nothing handled.
func (c *conv) leftovers() {
	for _, name := range c.mc.Order {
		if c.handled[name] {
			continue
		}
		p := c.mc.Params[name]
		text := p.Name + " = " + p.Value
		if why, ok := ignored[name]; ok {
			c.res.Notes = append(c.res.Notes, Item{File: p.File, Line: p.Line, Text: text, Why: "nothing to convert: " + why})
			continue
		}
		if def, ok := postconfDefaults[name]; ok && normalize(def) == normalize(p.Value) {
			c.res.Notes = append(c.res.Notes, Item{File: p.File, Line: p.Line, Text: text, Why: "Postfix's default: nothing to convert"})
			continue
		}
		if why, ok := unsupported[name]; ok {
			c.res.Hand = append(c.res.Hand, Item{File: p.File, Line: p.Line, Text: text, Why: why[0], Todo: why[1]})
			continue
		}
		c.res.Hand = append(c.res.Hand, Item{File: p.File, Line: p.Line, Text: text,
			Why:  "the importer does not know this parameter, or larkpost has no equivalent",
			Todo: "check whether the setup needs it (postconf(5)); larkpost's settings are in docs/reference/settings.md"})
	}
}

// unsupported are parameters larkpost has no equivalent for: why, what to do.
var unsupported = map[string][2]string{
	"content_filter":                     {"content filters (amavis, a re-injecting SMTP filter) have no equivalent", "use a milter (smtpd_milters) or an on_data hook; rspamd and ClamAV have milters"},
	"header_checks":                      {"header_checks actions that larkpost cannot express", "see the on_data hook and the report lines above"},
	"body_checks":                        {"body_checks are not converted", "write an on_data hook that searches msg.body with re (docs/guide/migrating-from-postfix.md#header_checks)"},
	"mime_header_checks":                 {"mime_header_checks are not converted", "write an on_data hook"},
	"nested_header_checks":               {"nested_header_checks are not converted", "write an on_data hook"},
	"smtpd_helo_required":                {"larkpost does not require HELO before MAIL FROM", "refuse in on_mail when tx.conn.helo is None, if you need it"},
	"disable_vrfy_command":               {"larkpost answers VRFY with 252 and never discloses users", "nothing, unless you relied on VRFY"},
	"strict_rfc821_envelopes":            {"larkpost's address syntax check is its own", "nothing, usually"},
	"relay_recipient_maps":               {"larkpost does not check users of relay_domains", "refuse unknown relay recipients in on_rcpt with a table: maps.open(...).lookup(rcpt)"},
	"smtpd_reject_unlisted_sender":       {"reject_unlisted_sender is not converted", "check senders of your domains in on_rcpt"},
	"postscreen_dnsbl_sites":             {"postscreen is not converted", "score the client with dnsbl.score in on_connect (docs/reference/stdlib/dnsbl.md)"},
	"postscreen_access_list":             {"postscreen is not converted", "check the client in on_connect"},
	"smtpd_client_message_rate_limit":    {"anvil rate limits are not converted", "use the ratelimit module in on_mail (docs/reference/stdlib/ratelimit.md)"},
	"smtpd_client_connection_rate_limit": {"anvil rate limits are not converted", "use the ratelimit module in on_connect (docs/reference/stdlib/ratelimit.md)"},
	"smtpd_etrn_restrictions":            {"larkpost has no ETRN", "nothing: the command is refused"},
	"smtpd_end_of_data_restrictions":     {"smtpd_end_of_data_restrictions are not converted", "write them into on_data"},
	"smtpd_upstream_proxy_protocol":      {"the PROXY protocol is a listener option", "set upstream_proxy_protocol = \"haproxy\" on the listener and upstream_proxy_networks"},
	"smtpd_sasl_type":                    {"not converted", "see smtpd_sasl_type in docs/reference/settings.md"},
	"mailbox_command":                    {"larkpost runs no command per local delivery", "write a file hook or per-user filters"},
	"mailbox_transport":                  {"not converted", "write a route hook"},
}

func normalize(s string) string {
	return strings.Join(splitList(s), " ")
}

// sortItems orders report items by file and line.
func sortItems(items []Item) {
	sort.SliceStable(items, func(i, j int) bool {
		a, b := items[i], items[j]
		if a.File != b.File {
			return fileRank(a.File) < fileRank(b.File) || fileRank(a.File) == fileRank(b.File) && a.File < b.File
		}
		return a.Line < b.Line
	})
}

func fileRank(f string) int {
	switch f {
	case "main.cf":
		return 0
	case "master.cf":
		return 1
	case "":
		return 3
	}
	return 2
}

var _ = bytes.MinRead
