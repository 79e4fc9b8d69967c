package importer

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/larkpost/larkpost/rules/postfix"
	"github.com/larkpost/larkpost/stdlib/maps"
)

// tcase is one SMTP dialog of the generated tests.
type tcase struct {
	ip, rdns, helo, sender, rcpt, user string
	listener                           string // "" is the main smtp listener
}

// listsFor are the restriction lists of a case's listener.
func (c *conv) listsFor(tc tcase) map[string][]string {
	if l, ok := c.rs.lists[tc.listener]; ok && tc.listener != "" {
		return l
	}
	return c.rs.lists[""]
}

// outcome is what Postfix answers to a tcase's RCPT TO, as the evaluator
// below computes it from the restriction lists and the tables.
type outcome struct {
	kind string // "accept", "reject", "defer"; "" when the evaluator cannot tell
	code int
	text string // a part of the reply text
}

const (
	testSender = "sender@example.net"
	testHelo   = "mail.example.net"
	testRDNS   = "mail.example.net"
	elsewhere  = "elsewhere.example"
)

// eval computes Postfix's answer with the main.cf lists. It knows the
// restrictions whose outcome the test dialog determines; for the others
// it gives up (kind "").
func (c *conv) eval(tc tcase) outcome {
	lists := c.listsFor(tc)
	for _, name := range listNames[:5] {
		o, permit := c.evalList(name, lists[name], tc, 0)
		if o.kind == "" && !permit && o.code < 0 {
			return outcome{}
		}
		if o.kind == "reject" || o.kind == "defer" {
			return o
		}
	}
	ours := c.isOurs(domainOf(tc.rcpt))
	if !c.rs.relayControl {
		if ours || c.inNetworks(tc.ip) || tc.user != "" {
			return c.userCheck(tc)
		}
		return outcome{kind: "reject", code: 554, text: "Relay access denied"}
	}
	if !yes(c.get("smtpd_reject_unlisted_recipient")) {
		return outcome{kind: "accept"} // on_rcpt returns accept(): no user check
	}
	if o, ok := c.errorOutcome(tc.rcpt); ok {
		return o
	}
	if ours {
		return c.userCheck(tc)
	}
	return outcome{kind: "accept"}
}

// userCheck is the default policy's check of a recipient of our domains.
func (c *conv) userCheck(tc tcase) outcome {
	d := domainOf(tc.rcpt)
	local, _, _ := strings.Cut(tc.rcpt, "@")
	if !containsStr(c.myDest, d) {
		if !containsStr(c.vaDomains, d) && !containsStr(c.vmDomains, d) && strings.TrimSpace(c.get("relay_recipient_maps")) == "" {
			return outcome{kind: "accept"} // relay_domains: no user check
		}
		return outcome{} // virtual domains: the tests choose their addresses
	}
	if c.localUsers == nil || local == c.knownUser {
		return outcome{kind: "accept"}
	}
	if containsStr(c.localUsers, strings.ToLower(local)) {
		return outcome{kind: "accept"}
	}
	return outcome{} // an alias or a virtual alias may know it
}

// evalList evaluates one list: the outcome, or permit; an outcome with
// code -1 means the evaluator cannot tell.
func (c *conv) evalList(name string, words []string, tc tcase, depth int) (outcome, bool) {
	unknown := outcome{code: -1}
	classes := map[string]bool{}
	for _, cl := range splitList(c.get("smtpd_restriction_classes")) {
		classes[cl] = true
	}
	rcptDomain := domainOf(tc.rcpt)
	for i := 0; i < len(words); i++ {
		w := strings.ToLower(words[i])
		next := func() string {
			if i+1 < len(words) {
				i++
				return words[i]
			}
			return ""
		}
		switch w {
		case "permit", "ok":
			return outcome{}, true
		case "reject":
			return outcome{kind: "reject", code: 554, text: "Access denied"}, false
		case "defer":
			return outcome{kind: "defer", code: 450}, false
		case "permit_mynetworks":
			if c.inNetworks(tc.ip) {
				return outcome{}, true
			}
		case "permit_sasl_authenticated":
			if tc.user != "" {
				return outcome{}, true
			}
		case "reject_unauth_destination", "check_relay_domains":
			if !c.isOurs(rcptDomain) {
				return outcome{kind: "reject", code: 554, text: "Relay access denied"}, false
			}
		case "defer_unauth_destination":
			if !c.isOurs(rcptDomain) {
				return outcome{kind: "defer", code: 454, text: "Relay access denied"}, false
			}
		case "permit_auth_destination":
			if c.isOurs(rcptDomain) {
				return outcome{}, true
			}
		case "reject_unlisted_recipient", "check_recipient_maps", "reject_unauth_pipelining",
			"reject_multi_recipient_bounce", "reject_sender_login_mismatch":
			// the test dialogs pass these: one recipient, no login
		case "reject_invalid_helo_hostname", "reject_invalid_hostname":
			if tc.helo != "" && !validHostname(tc.helo) {
				return outcome{kind: "reject", code: 501, text: "Invalid name"}, false
			}
		case "reject_unknown_helo_hostname", "reject_unknown_hostname":
			if tc.helo != "" && !strings.HasPrefix(tc.helo, "[") && !c.testDNS()[strings.ToLower(tc.helo)] {
				return outcome{kind: "defer", code: 450, text: "Host not found"}, false
			}
		case "reject_unknown_sender_domain":
			if d := domainOf(tc.sender); tc.sender != "" && !c.isFinal(d) && !strings.HasPrefix(d, "[") && !c.testDNS()[d] {
				return outcome{kind: "defer", code: 450, text: "Domain not found"}, false
			}
		case "reject_unknown_recipient_domain":
			if !c.isFinal(rcptDomain) && !strings.HasPrefix(rcptDomain, "[") && !c.testDNS()[rcptDomain] {
				return outcome{kind: "defer", code: 450, text: "Domain not found"}, false
			}
		case "reject_unknown_client_hostname", "reject_unknown_client":
			if tc.rdns == "unknown" {
				return outcome{kind: "defer", code: 450, text: "cannot find your hostname"}, false
			}
		case "reject_unknown_reverse_client_hostname":
			if tc.rdns == "unknown" && tc.ip != c.outsideIP() {
				return outcome{kind: "defer", code: 450, text: "cannot find your reverse hostname"}, false
			}
		case "reject_non_fqdn_sender":
			if tc.sender != "" && !strings.Contains(domainOf(tc.sender), ".") {
				return outcome{kind: "reject", code: 504, text: "need fully-qualified address"}, false
			}
		case "reject_non_fqdn_recipient":
			if !strings.Contains(rcptDomain, ".") {
				return outcome{kind: "reject", code: 504, text: "need fully-qualified address"}, false
			}
		case "reject_non_fqdn_helo_hostname", "reject_non_fqdn_hostname":
			if !strings.Contains(tc.helo, ".") {
				return outcome{kind: "reject", code: 504, text: "need fully-qualified hostname"}, false
			}
		case "reject_plaintext_session":
			return outcome{kind: "defer", code: 450}, false
		case "reject_rbl_client", "reject_rhsbl_client", "reject_rhsbl_reverse_client", "reject_rhsbl_sender", "reject_rhsbl_helo", "reject_rhsbl_recipient", "permit_dnswl_client", "permit_rhswl_client", "sleep":
			next() // not listed in the tests' DNS
		case "check_policy_service":
			next()
			// unreachable in the tests: smtpd_policy_service_default_action
			return outcome{kind: "defer", code: 451}, false
		case "check_client_access", "check_helo_access", "check_sender_access", "check_recipient_access":
			spec := next()
			t, err := maps.Open(c.specFor(spec), c.o.OutDir, nil)
			if err != nil {
				return unknown, false
			}
			var action string
			var found bool
			opts := maps.AddrOptions{Delims: c.get("recipient_delimiter"), IsLocal: func(d string) bool { return containsStr(c.myDest, d) }}
			switch w {
			case "check_client_access":
				action, _, found, _ = maps.LookupDomain(t, tc.rdns)
				if found && strings.EqualFold(strings.TrimSpace(action), "dunno") {
					found = false
				}
				if !found {
					action, _, found, _ = maps.LookupIP(t, tc.ip)
				}
			case "check_helo_access":
				action, _, found, _ = maps.LookupDomain(t, tc.helo)
			case "check_sender_access":
				key := tc.sender
				if key == "" {
					key = "<>"
				}
				action, _, found, _ = maps.LookupAccess(t, key, opts)
			case "check_recipient_access":
				action, _, found, _ = maps.LookupAccess(t, tc.rcpt, opts)
			}
			if !found {
				continue
			}
			o, permit, ok := accessOutcome(action)
			if !ok {
				return unknown, false
			}
			if permit {
				return outcome{}, true
			}
			if o.kind != "" {
				return o, false
			}
		case "warn_if_reject", "defer_if_permit", "defer_if_reject":
			return unknown, false
		default:
			if classes[words[i]] && depth < 10 {
				o, permit := c.evalList(name, splitList(c.get(words[i])), tc, depth+1)
				if o.kind != "" || permit || o.code < 0 {
					return o, permit
				}
				continue
			}
			return unknown, false
		}
	}
	return outcome{}, false
}

// testDNS are the names the generated tests' fake DNS resolves.
func (c *conv) testDNS() map[string]bool {
	if c.dnsNames == nil {
		c.dnsNames = map[string]bool{"example.net": true, "mail.example.net": true, elsewhere: true}
	}
	return c.dnsNames
}

// validHostname is the generated _valid_hostname.
func validHostname(name string) bool {
	if strings.HasPrefix(name, "[") && strings.HasSuffix(name, "]") {
		return true
	}
	if len(name) > 255 {
		return false
	}
	for _, l := range strings.Split(strings.TrimRight(name, "."), ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// specFor is the larkpost spec of a table as written in larkpost.star.
func (c *conv) specFor(spec string) string {
	if t := c.tableByKey[strings.TrimPrefix(spec, "proxy:")]; t != nil {
		return t.Spec
	}
	return spec
}

// accessOutcome reads an access(5) action as Postfix replies to it.
func accessOutcome(action string) (o outcome, permit, ok bool) {
	f := strings.Fields(action)
	if len(f) == 0 {
		return outcome{}, false, false
	}
	text := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(action), f[0]))
	switch strings.ToUpper(f[0]) {
	case "OK", "PERMIT":
		return outcome{}, true, true
	case "DUNNO":
		return outcome{}, false, true
	case "REJECT":
		if text == "" {
			text = "Access denied"
		}
		return outcome{kind: "reject", code: 554, text: stripStatus(text)}, false, true
	case "DEFER":
		return outcome{kind: "defer", code: 450, text: stripStatus(text)}, false, true
	}
	if n, err := strconv.Atoi(f[0]); err == nil && len(f[0]) == 3 {
		switch f[0][0] {
		case '5':
			return outcome{kind: "reject", code: n, text: stripStatus(text)}, false, true
		case '4':
			return outcome{kind: "defer", code: n, text: stripStatus(text)}, false, true
		}
	}
	return outcome{}, false, false
}

func stripStatus(t string) string {
	f := strings.Fields(t)
	if len(f) > 0 && len(f[0]) >= 5 && (f[0][0] == '4' || f[0][0] == '5') && f[0][1] == '.' {
		return strings.TrimSpace(strings.TrimPrefix(t, f[0]))
	}
	return t
}

func domainOf(a string) string {
	if i := strings.LastIndexByte(a, '@'); i >= 0 {
		return strings.ToLower(a[i+1:])
	}
	return ""
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

func (c *conv) isOurs(d string) bool {
	return c.isFinal(d) || c.isRelayDomain(d)
}

// isFinal is the generated _is_final: mydestination and the virtual domains.
func (c *conv) isFinal(d string) bool {
	return containsStr(c.myDest, d) || containsStr(c.vaDomains, d) || containsStr(c.vmDomains, d)
}

func (c *conv) inNetworks(ip string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	for _, p := range c.networks {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// insideIP is an address in mynetworks, outsideIP one outside.
func (c *conv) insideIP() string {
	for _, p := range c.networks {
		if p.Addr().Is4() {
			if p.Bits() == 32 {
				return p.Addr().String()
			}
			return p.Addr().Next().String()
		}
	}
	return ""
}

func (c *conv) outsideIP() string {
	for _, ip := range []string{"203.0.113.9", "198.51.100.9", "192.0.2.9", "100.64.0.9"} {
		if !c.inNetworks(ip) {
			return ip
		}
	}
	return "203.0.113.9"
}

// testWriter collects the generated test functions.
type testWriter struct {
	b     strings.Builder
	names map[string]int
	n     int
}

func (tw *testWriter) name(base string) string {
	base = strings.ToLower(varName(base))
	tw.names[base]++
	if n := tw.names[base]; n > 1 {
		return fmt.Sprintf("%s_%d", base, n)
	}
	return base
}

// call writes the run(...) call for a case, leaving out the defaults.
func (c *conv) call(tc tcase) string {
	args := []string{}
	if tc.ip != c.outsideIP() {
		args = append(args, "client_ip = "+q(tc.ip))
	}
	if tc.rdns != testRDNS {
		args = append(args, "rdns = "+q(tc.rdns))
	}
	if tc.helo != testHelo {
		args = append(args, "helo = "+q(tc.helo))
	}
	if tc.sender != testSender {
		args = append(args, "sender = "+q(tc.sender))
	}
	if tc.user != "" {
		args = append(args, "user = "+q(tc.user))
	}
	if tc.listener != "" {
		args = append(args, "listener = "+q(tc.listener))
	}
	args = append(args, "to = "+q(tc.rcpt))
	return "run(" + strings.Join(args, ", ") + ")"
}

// expect writes the assertions of an outcome.
func (c *conv) expect(tw *testWriter, tc tcase, o outcome) {
	switch o.kind {
	case "accept":
		fmt.Fprintf(&tw.b, "    assert.accepted(r, rcpt = %s)\n", q(tc.rcpt))
	case "reject", "defer":
		fn := "rejected"
		if o.kind == "defer" {
			fn = "deferred"
		}
		args := fmt.Sprintf("r, rcpt = %s, code = %d", q(tc.rcpt), o.code)
		if !c.rs.delay {
			args = fmt.Sprintf("r, code = %d", o.code)
		}
		if o.text != "" {
			args += ", text = " + q(o.text)
		}
		fmt.Fprintf(&tw.b, "    assert.%s(%s)\n", fn, args)
	}
}

func (c *conv) testCase(tw *testWriter, name, comment string, tc tcase) bool {
	o := c.eval(tc)
	if o.kind == "" {
		return false
	}
	if !c.rs.delay && o.kind != "accept" {
		// with smtpd_delay_reject = no the stage differs: keep to RCPT outcomes
		if !c.refusedAtRcpt(tc) {
			return false
		}
	}
	fmt.Fprintf(&tw.b, "\ndef test_%s():\n", tw.name(name))
	if comment != "" {
		fmt.Fprintf(&tw.b, "    # %s\n", comment)
	}
	fmt.Fprintf(&tw.b, "    r = %s\n", c.call(tc))
	c.expect(tw, tc, o)
	tw.n++
	return true
}

// refusedAtRcpt reports whether, with smtpd_delay_reject = no, the
// refusal comes from the relay or recipient lists.
func (c *conv) refusedAtRcpt(tc tcase) bool {
	lists := c.listsFor(tc)
	for _, name := range listNames[:3] {
		if o, _ := c.evalList(name, lists[name], tc, 0); o.kind != "" || o.code < 0 {
			return false
		}
	}
	return true
}

func (c *conv) base() tcase {
	return tcase{ip: c.outsideIP(), rdns: testRDNS, helo: testHelo, sender: testSender}
}

// testsSrc writes postfix_import_test.star.
func (c *conv) testsSrc() string {
	tw := &testWriter{names: map[string]int{}}
	local := "localhost"
	if len(c.myDest) > 0 {
		local = c.myDest[0]
	}
	known := c.knownUser
	if known == "" {
		known = "postmaster"
	}
	if c.rs != nil {
		// relay control
		in := c.insideIP()
		if in != "" {
			tc := c.base()
			tc.ip, tc.rcpt = in, "someone@"+elsewhere
			c.testCase(tw, "mynetworks_relay", "a client in mynetworks ("+in+") sending elsewhere", tc)
		}
		tc := c.base()
		tc.rcpt = "someone@" + elsewhere
		c.testCase(tw, "outside_relay", "a client outside mynetworks sending elsewhere", tc)
		if c.sasl {
			tc := c.base()
			tc.user, tc.rcpt = "alice", "someone@"+elsewhere
			c.testCase(tw, "authenticated_relay", "a client that logged in (SMTP AUTH) sending elsewhere", tc)
		}
		tc = c.base()
		tc.rcpt = known + "@" + local
		c.testCase(tw, "local_user", "mail from outside to a local user", tc)
		if c.localUsers != nil && yes(c.get("smtpd_reject_unlisted_recipient")) {
			tc := c.base()
			tc.rcpt = "no-such-user-x@" + local
			if o := c.eval(tc); o.kind == "accept" || o.kind == "" {
				// the lists let it through: the default policy refuses the unknown user
				if c.evalListsPass(tc) {
					fmt.Fprintf(&tw.b, "\ndef test_%s():\n    # local_recipient_maps: an unknown local user is refused (550)\n", tw.name("unknown_local_user"))
					fmt.Fprintf(&tw.b, "    r = %s\n", c.call(tc))
					fmt.Fprintf(&tw.b, "    assert.rejected(r, rcpt = %s, code = 550, text = \"User unknown\")\n", q(tc.rcpt))
					tw.n++
				}
			}
		}
		c.accessTests(tw, local, known)
		c.listenerTests(tw, local, known)
	}
	c.transportTests(tw)
	c.virtualTests(tw)
	c.relocatedTests(tw)

	var b strings.Builder
	b.WriteString("# postfix_import_test.star: the old Postfix behaviour, derived from main.cf\n")
	b.WriteString("# and its tables by `larkpost import postfix`. Run it with\n")
	b.WriteString("#     larkpost test -c larkpost.star postfix_import_test.star\n")
	b.WriteString("# Each test is one SMTP dialog and Postfix's answer to its RCPT TO.\n\n")
	fmt.Fprintf(&b, "OUTSIDE = %s  # a client outside mynetworks\n\n", q(c.outsideIP()))
	b.WriteString("# The test dialogs' names resolve, so that the reject_unknown_* restrictions pass.\n")
	b.WriteString("DNS = {\n")
	for _, n := range sortedKeys(c.testDNS()) {
		fmt.Fprintf(&b, "    %s: {\"A\": \"192.0.2.25\", \"MX\": \"10 mail.example.net\"},\n", q(n))
	}
	if a, err := netip.ParseAddr(c.outsideIP()); err == nil && a.Is4() {
		o := a.As4()
		fmt.Fprintf(&b, "    \"%d.%d.%d.%d.in-addr.arpa\": {\"PTR\": \"mail.example.net\"},\n", o[3], o[2], o[1], o[0])
	}
	b.WriteString("}\n\n")
	main := "smtp"
	if len(c.ls) > 0 {
		main = c.ls[0].name
	}
	fmt.Fprintf(&b, "def run(to, client_ip = OUTSIDE, rdns = %s, helo = %s, sender = %s, user = \"\", listener = %s):\n", q(testRDNS), q(testHelo), q(testSender), q(main))
	b.WriteString("    return testing.run(client_ip = client_ip, rdns = rdns, helo = helo, sender = sender, user = user,\n")
	b.WriteString("                       listener = listener, to = to, dns = DNS)\n")
	if tw.n == 0 {
		b.WriteString("\ndef test_config_loads():\n    # nothing to derive a dialog from: the config loads\n    assert.true(policy.MYDESTINATION != None)\n")
	}
	b.WriteString(tw.b.String())
	return b.String()
}

// evalListsPass reports whether the lists let a case through to the
// default policy's user check.
func (c *conv) evalListsPass(tc tcase) bool {
	lists := c.listsFor(tc)
	for _, name := range listNames[:5] {
		o, _ := c.evalList(name, lists[name], tc, 0)
		if o.kind != "" || o.code < 0 {
			return false
		}
	}
	return c.rs.relayControl
}

// accessTests: each entry of the access tables the lists use.
func (c *conv) accessTests(tw *testWriter, local, known string) {
	seen := map[string]bool{}
	for _, name := range listNames[:5] {
		words := c.rs.lists[""][name]
		for i := 0; i+1 < len(words); i++ {
			w := strings.ToLower(words[i])
			switch w {
			case "check_client_access", "check_helo_access", "check_sender_access", "check_recipient_access":
			default:
				continue
			}
			spec := words[i+1]
			if seen[w+spec] {
				continue
			}
			seen[w+spec] = true
			es, fs, err := c.tableKeys(spec)
			if err != nil {
				continue
			}
			n := 0
			for _, e := range es {
				if n >= 25 {
					break
				}
				tc := c.base()
				tc.rcpt = known + "@" + local
				if !c.caseFor(w, e.key, &tc) {
					continue
				}
				comment := fmt.Sprintf("%s:%d %s %s (%s)", fs, e.line, e.key, e.value, w)
				// access-table OK entries for recipients are left to the user check
				if w == "check_recipient_access" {
					if o := c.eval(tc); o.kind == "accept" {
						continue
					}
				}
				if c.testCase(tw, strings.TrimPrefix(w, "check_")+"_"+e.key, comment, tc) {
					n++
				}
			}
		}
	}
}

// listenerTests: the listeners whose master.cf -o overrides change the
// restriction lists.
func (c *conv) listenerTests(tw *testWriter, local, known string) {
	for _, l := range c.ls {
		if _, ok := c.rs.lists[l.name]; !ok {
			continue
		}
		tc := c.base()
		tc.listener, tc.rcpt = l.name, known+"@"+local
		c.testCase(tw, l.name+"_outside", fmt.Sprintf("master.cf:%d %s: a client outside mynetworks", l.svc.Line, l.name), tc)
		if in := c.insideIP(); in != "" {
			tc.ip = in
			c.testCase(tw, l.name+"_mynetworks", fmt.Sprintf("master.cf:%d %s: a client in mynetworks", l.svc.Line, l.name), tc)
		}
		if c.sasl {
			tc.ip, tc.user = c.outsideIP(), "alice"
			c.testCase(tw, l.name+"_authenticated", fmt.Sprintf("master.cf:%d %s: a client that logged in", l.svc.Line, l.name), tc)
		}
	}
}

// caseFor makes tc match an access-table key for the given check.
func (c *conv) caseFor(check, key string, tc *tcase) bool {
	switch check {
	case "check_client_access":
		if p, ok := parseNet(key); ok {
			if p.Bits() == p.Addr().BitLen() {
				tc.ip = p.Addr().String()
			} else {
				tc.ip = p.Addr().Next().String()
			}
			return true
		}
		if parts := strings.Split(key, "."); len(parts) < 4 && isNumber(strings.ReplaceAll(key, ".", "")) {
			for len(parts) < 4 {
				parts = append(parts, "1")
			}
			tc.ip = strings.Join(parts, ".")
			return true
		}
		if strings.Contains(key, "@") || strings.Contains(key, ":") {
			return false
		}
		tc.rdns = strings.TrimPrefix(key, ".")
		if strings.HasPrefix(key, ".") {
			tc.rdns = "host" + key
		}
		return true
	case "check_helo_access":
		if strings.Contains(key, "@") || strings.Contains(key, "/") {
			return false
		}
		tc.helo = key
		if strings.HasPrefix(key, ".") {
			tc.helo = "host" + key
		}
		c.testDNS()[strings.ToLower(tc.helo)] = true
		return true
	case "check_sender_access", "check_recipient_access":
		a := addrFor(key)
		if a == "" {
			return false
		}
		if check == "check_sender_access" {
			if key == "<>" {
				a = ""
			}
			tc.sender = a
			if a != "" {
				c.testDNS()[domainOf(a)] = true
			}
		} else {
			if key == "<>" {
				return false
			}
			tc.rcpt = a
			c.testDNS()[domainOf(a)] = true
		}
		return true
	}
	return false
}

// addrFor is an address an access(5) key matches.
func addrFor(key string) string {
	switch {
	case key == "<>":
		return "<>"
	case strings.HasSuffix(key, "@"):
		return key + "example.net"
	case strings.HasPrefix(key, "@"):
		return "someone" + key
	case strings.Contains(key, "@"):
		return key
	case strings.HasPrefix(key, "."):
		return "someone@host" + key
	case strings.Contains(key, "."):
		if _, err := netip.ParseAddr(key); err == nil || isNumber(strings.ReplaceAll(key, ".", "")) {
			return ""
		}
		return "someone@" + key
	}
	return ""
}

// transportTests: each transport_maps entry routes there.
func (c *conv) transportTests(tw *testWriter) {
	for _, spec := range splitList(c.get("transport_maps")) {
		es, fs, err := c.tableKeys(spec)
		if err != nil {
			continue
		}
		n := 0
		for _, e := range es {
			if n >= 25 {
				break
			}
			name, nexthop, _ := strings.Cut(e.value, ":")
			if name != "smtp" && name != "lmtp" && name != "error" || nexthop == "" {
				continue
			}
			a := addrFor(e.key)
			if a == "" || a == "<>" {
				continue
			}
			want, err := postfix.ParseTransport(e.value)
			if err != nil {
				continue
			}
			tc, ok := c.acceptingCase(a)
			refused, isErr := outcome{}, false
			if !ok && name == "error" {
				// refused at RCPT TO (smtpd_reject_unlisted_recipient)
				for _, ip := range []string{c.outsideIP(), c.insideIP()} {
					if ip == "" {
						continue
					}
					tc.ip = ip
					if o, e := c.errorOutcome(a); e && c.eval(tc) == o {
						refused, isErr = o, true
						break
					}
				}
				ok = isErr
			}
			if !ok {
				continue
			}
			fmt.Fprintf(&tw.b, "\ndef test_%s():\n    # %s:%d %s %s (transport_maps)\n", tw.name("transport_"+e.key), fs, e.line, e.key, e.value)
			fmt.Fprintf(&tw.b, "    r = %s\n", c.call(tc))
			if isErr {
				c.expect(tw, tc, refused)
			} else {
				// as larkpost writes the transport: "error:5.0.0 text", "lmtp:[host]:24"
				fmt.Fprintf(&tw.b, "    assert.eq(r.transports.get(%s), %s)\n", q(a), q(want.String()))
			}
			tw.n++
			n++
		}
	}
}

// acceptingCase finds a client whose mail to a is accepted: from outside,
// from mynetworks, or logged in.
func (c *conv) acceptingCase(a string) (tcase, bool) {
	tc := c.base()
	tc.rcpt = a
	if c.eval(tc).kind == "accept" {
		return tc, true
	}
	if in := c.insideIP(); in != "" {
		tc.ip = in
		if c.eval(tc).kind == "accept" {
			return tc, true
		}
	}
	return tc, false
}

// virtualTests: each virtual alias expands to its targets.
func (c *conv) virtualTests(tw *testWriter) {
	origin := c.get("myorigin")
	if strings.HasPrefix(origin, "/") {
		origin, _ = firstLine(origin)
	}
	for _, spec := range splitList(c.get("virtual_alias_maps")) {
		es, fs, err := c.tableKeys(spec)
		if err != nil {
			continue
		}
		keys := map[string]bool{}
		for _, e := range es {
			keys[e.key] = true
		}
		n := 0
		for _, e := range es {
			if n >= 25 || !strings.Contains(e.key, "@") || strings.HasSuffix(e.key, "@") {
				continue
			}
			a := e.key
			if strings.HasPrefix(a, "@") {
				a = "someone-else" + a
			}
			var targets []string
			ok := true
			for _, t := range splitList(e.value) {
				if !strings.Contains(t, "@") {
					t += "@" + origin
				}
				t = strings.ToLower(t)
				user, dom, _ := strings.Cut(t, "@")
				// a target that is itself expanded further is left out
				if keys[t] || keys["@"+dom] || containsStr(c.myDest, dom) && c.isAlias(user) || strings.HasPrefix(t, "|") || strings.HasPrefix(t, "/") {
					ok = false
				}
				targets = append(targets, t)
			}
			if !ok || len(targets) == 0 {
				continue
			}
			tc := c.base()
			tc.rcpt = a
			// the alias domain must accept the address
			if c.eval(tc).kind != "accept" && !containsStr(c.vaDomains, domainOf(a)) && !containsStr(c.myDest, domainOf(a)) {
				var found bool
				if tc, found = c.acceptingCase(a); !found {
					continue
				}
			} else if o := c.eval(tc); o.kind == "reject" || o.kind == "defer" {
				continue
			}
			fmt.Fprintf(&tw.b, "\ndef test_%s():\n    # %s:%d %s %s (virtual_alias_maps)\n", tw.name("virtual_"+e.key), fs, e.line, e.key, e.value)
			fmt.Fprintf(&tw.b, "    r = %s\n", c.call(tc))
			fmt.Fprintf(&tw.b, "    assert.accepted(r, rcpt = %s)\n", q(a))
			for _, t := range targets {
				fmt.Fprintf(&tw.b, "    assert.contains(r.delivered_to, %s)\n", q(t))
			}
			tw.n++
			n++
		}
	}
}

func (c *conv) isAlias(user string) bool {
	for _, f := range c.aliasFiles {
		es, err := readEntries(c.aliasPath(f))
		if err != nil {
			return true // cannot tell: assume it is
		}
		for _, e := range es {
			if strings.TrimSuffix(e.key, ":") == user {
				return true
			}
		}
	}
	return false
}

// aliasPath is an alias file as this process opens it.
func (c *conv) aliasPath(written string) string {
	if strings.HasPrefix(written, "/") {
		return written
	}
	return filepath.Join(c.o.OutDir, written)
}

// relocatedTests: each relocated user is refused with the new address.
func (c *conv) relocatedTests(tw *testWriter) {
	if c.rs == nil {
		return
	}
	for _, spec := range splitList(c.get("relocated_maps")) {
		es, fs, err := c.tableKeys(spec)
		if err != nil {
			continue
		}
		n := 0
		for _, e := range es {
			if n >= 25 || !strings.Contains(e.key, "@") {
				continue
			}
			a := e.key
			if strings.HasPrefix(a, "@") {
				a = "someone" + a
			}
			tc := c.base()
			tc.rcpt = a
			if !c.isOurs(domainOf(a)) || !c.evalListsPass(tc) {
				continue
			}
			fmt.Fprintf(&tw.b, "\ndef test_%s():\n    # %s:%d %s %s (relocated_maps)\n", tw.name("relocated_"+e.key), fs, e.line, e.key, e.value)
			fmt.Fprintf(&tw.b, "    r = %s\n", c.call(tc))
			fmt.Fprintf(&tw.b, "    assert.rejected(r, rcpt = %s, code = 550, status = \"5.1.6\", text = %s)\n", q(a), q(e.value))
			tw.n++
			n++
		}
	}
}
