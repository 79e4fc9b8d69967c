package importer

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/larkpost/larkpost/rules"
	"github.com/larkpost/larkpost/rules/startest"
)

func TestParseMainCF(t *testing.T) {
	src := "# comment\n" +
		"myhostname = mx.example.com\n" +
		"mydestination = $myhostname,\n" +
		"    localhost\n" +
		"# a comment inside a continued line\n" +
		"\texample.com\n" +
		"\n" +
		"relayhost =\n" +
		"relayhost = [smtp.example.net]:587\n"
	m, err := ParseMainCF("main.cf", "main.cf", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, value string
		line        int
	}{
		{"myhostname", "mx.example.com", 2},
		{"mydestination", "$myhostname, localhost example.com", 3},
		{"relayhost", "[smtp.example.net]:587", 9},
	} {
		p := m.Params[tc.name]
		if p == nil || p.Value != tc.value || p.Line != tc.line {
			t.Errorf("%s = %+v, want %q at line %d", tc.name, p, tc.value, tc.line)
		}
	}
	if len(m.Dups) != 1 || m.Dups[0].Line != 8 {
		t.Errorf("Dups = %+v, want the relayhost of line 8", m.Dups)
	}
	for _, bad := range []struct{ src, want string }{
		{"  indented = 1\n", "main.cf:1: logical line must not start with whitespace"},
		{"a = 1\nnot a parameter\n", "main.cf:2: missing '='"},
	} {
		if _, err := ParseMainCF("main.cf", "main.cf", []byte(bad.src)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: err = %v, want %q", bad.src, err, bad.want)
		}
	}
}

func TestExpand(t *testing.T) {
	m, err := ParseMainCF("main.cf", "main.cf", []byte(
		"myhostname = mx.example.com\n"+
			"empty =\n"+
			"loop1 = $loop2\n"+
			"loop2 = x $loop1\n"+
			"compatibility_level = 3.6\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{Main: m, Defaults: map[string]string{"mydomain": "example.com", "mail_name": "Postfix"}, Undefined: map[string]bool{}}
	for _, tc := range []struct{ in, want string }{
		{"$myhostname", "mx.example.com"},
		{"${myhostname} $(mydomain)", "mx.example.com example.com"},
		{"localhost.$mydomain,", "localhost.example.com,"},
		{"${myhostname?yes}", "yes"},
		{"${empty?yes}", ""},
		{"${empty:no}", "no"},
		{"${myhostname:no}", ""},
		{"${empty?{a}:{b}}", "b"},
		{"${myhostname?{a $mydomain}:{b}}", "a example.com"},
		{"$$myhostname", "$myhostname"},
		{"$undefined x", " x"},
		{"${{$compatibility_level} <level {2} ? {subnet} : {host}}", "host"},
		{"${{$compatibility_level} <level {3.10} ? {old} : {new}}", "old"},
		{"${{$mail_name} == {Postfix} ? {same} : {other}}", "same"},
		{"${{a} != {b} ? {differ}}", "differ"},
	} {
		got, err := e.Expand(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Expand(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if !e.Undefined["undefined"] {
		t.Errorf("undefined names not recorded: %v", e.Undefined)
	}
	if _, err := e.Expand("$loop1"); err == nil || !strings.Contains(err.Error(), "loop") {
		t.Errorf("a loop: err = %v", err)
	}
	if _, err := e.Expand("${myhostname"); err == nil {
		t.Errorf("unbalanced brace: no error")
	}
}

func TestParseMasterCF(t *testing.T) {
	src := "smtp      inet  n       -       y       -       -       smtpd\n" +
		"submission inet n       -       y       -       -       smtpd\n" +
		"  -o syslog_name=postfix/submission\n" +
		"  -o smtpd_tls_security_level=encrypt\n" +
		"  -o { smtpd_client_restrictions = permit_sasl_authenticated, reject }\n" +
		"dovecot   unix  -       n       n       -       -       pipe\n" +
		"  flags=DRhu user=vmail:vmail argv=/usr/lib/dovecot/deliver -f ${sender} -d ${recipient}\n"
	svcs, err := ParseMasterCF("master.cf", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 3 {
		t.Fatalf("%d services", len(svcs))
	}
	sub := svcs[1]
	if v, _ := sub.Get("smtpd_tls_security_level"); v != "encrypt" || sub.Line != 2 {
		t.Errorf("submission: %+v", sub)
	}
	if v, _ := sub.Get("smtpd_client_restrictions"); v != "permit_sasl_authenticated, reject" {
		t.Errorf("-o { ... } = %q", v)
	}
	if svcs[2].Command != "pipe" || !strings.Contains(svcs[2].Raw, "argv=/usr/lib/dovecot/deliver") {
		t.Errorf("pipe: %+v", svcs[2])
	}
	if _, err := ParseMasterCF("master.cf", []byte("smtp inet n - y\n")); err == nil || !strings.Contains(err.Error(), "master.cf:1:") {
		t.Errorf("short line: %v", err)
	}
}

// postfixDir writes a Postfix configuration folder.
func postfixDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const masterSMTP = "smtp      inet  n       -       y       -       -       smtpd\n"

// importAndLoad imports dir, writes the result and loads it as larkpost does.
func importAndLoad(t *testing.T, dir string) (*Result, *rules.Policy, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	res, err := Import(Options{Dir: dir, OutDir: out, Version: "test", Now: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC),
		Hostname: "mx.example.com", Passwd: filepath.Join(dir, "passwd"),
		Interfaces: func() ([]netip.Prefix, error) {
			return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.9.8.0/24")}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Write(out, false); err != nil {
		t.Fatal(err)
	}
	p, err := rules.LoadFile(filepath.Join(out, "larkpost.star"))
	if err != nil {
		t.Fatalf("the imported config does not load:\n%v\n%s", err, res.Star)
	}
	return res, p, out
}

type dialog struct {
	ip, rdns, helo, from, to, user, listener string
	want                                     string // "accept", or "reject 554", "defer 450": the RCPT decision
}

func (d dialog) run(t *testing.T, p *rules.Policy) string {
	t.Helper()
	helo := d.helo
	if helo == "" {
		helo = "mail.example.net"
	}
	listener := d.listener
	if listener == "" {
		listener = "smtp"
	}
	res := p.DryRun(context.Background(), &rules.Envelope{Conn: rules.Conn{IP: netip.MustParseAddr(d.ip), RDNS: d.rdns, Helo: helo, User: d.user, Listener: listener},
		From: d.from, To: []string{d.to}})
	for _, s := range res.Steps {
		if s.Stage != rules.StageRcpt && s.Kind.String() != "accept" {
			return s.Kind.String() + " " + itoa(s.Code) + " at " + string(s.Stage)
		}
		if s.Stage == rules.StageRcpt {
			if s.Kind.String() == "accept" {
				return "accept"
			}
			return s.Kind.String() + " " + itoa(s.Code)
		}
	}
	return "no rcpt step"
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestRestrictions checks each restriction's translation by running
// dialogs through the imported config, against Postfix's replies.
func TestRestrictions(t *testing.T) {
	base := "myhostname = mx.example.com\nmydomain = example.com\nmydestination = $myhostname, $mydomain, localhost\n" +
		"mynetworks = 127.0.0.0/8, 192.168.1.0/24\nlocal_recipient_maps = hash:$config_directory/users\n"
	users := "alice OK\nbob OK\n"
	for _, tc := range []struct {
		name    string
		main    string
		tables  map[string]string
		dialogs []dialog
	}{
		{
			name: "default relay control (compatibility_level 3.6)",
			main: "compatibility_level = 3.6\n",
			dialogs: []dialog{
				{ip: "127.0.0.1", from: "a@example.net", to: "x@elsewhere.example", want: "accept"},
				{ip: "203.0.113.5", from: "a@example.net", to: "x@elsewhere.example", want: "defer 454"},
				{ip: "203.0.113.5", from: "a@example.net", to: "x@elsewhere.example", user: "alice", want: "accept"},
				{ip: "203.0.113.5", from: "a@example.net", to: "alice@example.com", want: "accept"},
				{ip: "203.0.113.5", from: "a@example.net", to: "nobody@example.com", want: "reject 550"},
			},
		},
		{
			name: "permit_mynetworks still checks local users",
			main: "smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination\n",
			dialogs: []dialog{
				{ip: "192.168.1.7", from: "a@example.net", to: "nobody@example.com", want: "reject 550"},
				{ip: "192.168.1.7", from: "a@example.net", to: "bob@example.com", want: "accept"},
				{ip: "192.168.1.7", from: "a@example.net", to: "x@elsewhere.example", want: "accept"},
				{ip: "198.51.100.1", from: "a@example.net", to: "x@elsewhere.example", want: "reject 554"},
			},
		},
		{
			name: "delayed client helo and sender access tables",
			main: "smtpd_client_restrictions = check_client_access hash:$config_directory/clients\n" +
				"smtpd_helo_restrictions = reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname\n" +
				"smtpd_sender_restrictions = reject_non_fqdn_sender, check_sender_access proxy:hash:$config_directory/senders\n" +
				"smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n",
			tables: map[string]string{
				"clients": "1.2.3 REJECT\n1.2.3.4 OK\nbad.example REJECT go away\n",
				"senders": "spam@example.org 550 5.7.0 no spam\nexample.org DEFER later\n<> REJECT no bounces\n",
			},
			dialogs: []dialog{
				{ip: "1.2.3.9", from: "a@example.net", to: "alice@example.com", want: "reject 554"},
				{ip: "1.2.3.4", from: "a@example.net", to: "alice@example.com", want: "accept"},
				{ip: "1.2.3.4", from: "a@example.net", to: "nobody@example.com", want: "reject 550"},
				{ip: "203.0.113.5", rdns: "host.bad.example", from: "a@example.net", to: "alice@example.com", want: "reject 554"},
				{ip: "203.0.113.5", helo: "bad_name!", from: "a@example.net", to: "alice@example.com", want: "reject 501"},
				{ip: "203.0.113.5", helo: "localhost", from: "a@example.net", to: "alice@example.com", want: "reject 504"},
				{ip: "203.0.113.5", from: "a@localhost", to: "alice@example.com", want: "reject 504"},
				{ip: "203.0.113.5", from: "spam@example.org", to: "alice@example.com", want: "reject 550"},
				{ip: "203.0.113.5", from: "other@example.org", to: "alice@example.com", want: "defer 450"},
				{ip: "203.0.113.5", from: "", to: "alice@example.com", want: "reject 554"},
			},
		},
		{
			name: "smtpd_delay_reject = no",
			main: "smtpd_delay_reject = no\nsmtpd_client_restrictions = check_client_access cidr:$config_directory/nets\n" +
				"smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n",
			tables: map[string]string{"nets": "192.0.2.0/24 REJECT\n"},
			dialogs: []dialog{
				{ip: "192.0.2.9", from: "a@example.net", to: "alice@example.com", want: "reject 554 at connect"},
				{ip: "198.51.100.9", from: "a@example.net", to: "alice@example.com", want: "accept"},
			},
		},
		{
			name: "recipient access warn_if_reject permit and reject",
			main: "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n" +
				"smtpd_recipient_restrictions = warn_if_reject reject_non_fqdn_recipient, check_recipient_access hash:$config_directory/rcpts, permit_auth_destination, reject\n",
			tables: map[string]string{"rcpts": "all@example.com REJECT internal\nbob@example.com OK\n"},
			dialogs: []dialog{
				{ip: "203.0.113.5", from: "a@example.net", to: "all@example.com", want: "reject 554"},
				{ip: "203.0.113.5", from: "a@example.net", to: "bob@example.com", want: "accept"},
				{ip: "203.0.113.5", from: "a@example.net", to: "nobody@example.com", want: "reject 550"},
				{ip: "127.0.0.1", from: "a@example.net", to: "x@elsewhere.example", want: "reject 554"},
			},
		},
		{
			name: "policy service and DNSBL",
			main: "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n" +
				"smtpd_recipient_restrictions = permit_mynetworks, reject_rbl_client zen.spamhaus.org, check_policy_service inet:127.0.0.1:1\n",
			dialogs: []dialog{
				{ip: "127.0.0.1", from: "a@example.net", to: "alice@example.com", want: "accept"},
				// nothing listens: smtpd_policy_service_default_action
				{ip: "203.0.113.5", from: "a@example.net", to: "alice@example.com", want: "defer 451"},
			},
		},
		{
			name: "DNS checks",
			main: "smtpd_client_restrictions = reject_unknown_client_hostname, check_client_access hash:$config_directory/clients\n" +
				"smtpd_helo_restrictions = reject_unknown_helo_hostname, check_helo_access hash:$config_directory/helos\n" +
				"smtpd_sender_restrictions = reject_unknown_sender_domain, reject_rhsbl_sender dbl.example, check_sender_access hash:$config_directory/senders\n" +
				"smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n" +
				"smtpd_recipient_restrictions = reject_unknown_recipient_domain, reject_rbl_client zen.example=127.0.0.2\n",
			tables: map[string]string{
				"clients": "1.2.3.4 OK\nhost.example.org REJECT\n",
				"helos":   "bad.example REJECT no\n",
				"senders": "x@example.net REJECT no\nother.example OK\n",
			},
			dialogs: []dialog{
				{ip: "203.0.113.5", from: "a@example.net", to: "alice@example.com", want: "defer 450"},
				{ip: "203.0.113.5", rdns: "host.example.org", from: "a@example.net", to: "alice@example.com", want: "reject 554"},
			},
		},
		{
			name: "restriction class",
			main: "smtpd_restriction_classes = strict\nstrict = reject_non_fqdn_sender, reject_unauth_destination\n" +
				"smtpd_relay_restrictions = permit_mynetworks, strict\n",
			dialogs: []dialog{
				{ip: "203.0.113.5", from: "a@localhost", to: "alice@example.com", want: "reject 504"},
				{ip: "203.0.113.5", from: "a@example.net", to: "x@elsewhere.example", want: "reject 554"},
				{ip: "127.0.0.1", from: "a@example.net", to: "x@elsewhere.example", want: "accept"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{"main.cf": base + tc.main, "master.cf": masterSMTP, "users": users, "passwd": ""}
			for k, v := range tc.tables {
				files[k] = v
			}
			res, p, out := importAndLoad(t, postfixDir(t, files))
			for _, d := range tc.dialogs {
				if got := d.run(t, p); got != d.want {
					t.Errorf("%s from %s <%s> to <%s> (user %q): %s, want %s", d.ip, d.helo, d.from, d.to, d.user, got, d.want)
				}
			}
			if t.Failed() {
				t.Logf("larkpost.star:\n%s", res.Star)
			}
			// the generated tests pass on the generated config
			var buf bytes.Buffer
			sum, err := startest.Run(p, startest.Options{Out: &buf, Paths: []string{filepath.Join(out, "postfix_import_test.star")}})
			if err != nil || sum.Failed > 0 || sum.Passed == 0 {
				t.Errorf("generated tests: %+v %v\n%s\n%s", sum, err, buf.String(), res.Test)
			}
		})
	}
}

func TestListenersAndOverrides(t *testing.T) {
	master := masterSMTP +
		"submission inet n       -       y       -       -       smtpd\n" +
		"  -o syslog_name=postfix/submission\n" +
		"  -o smtpd_sasl_auth_enable=yes\n" +
		"  -o smtpd_client_restrictions=permit_sasl_authenticated,reject\n" +
		"  -o smtpd_mystery=1\n" +
		"127.0.0.1:10025 inet n - n - - smtpd\n" +
		"  -o smtpd_recipient_restrictions=permit_mynetworks,reject\n"
	dir := postfixDir(t, map[string]string{
		"main.cf":   "myhostname = mx.example.com\nmydestination = mx.example.com\nmynetworks = 127.0.0.0/8\ninet_interfaces = loopback-only\ninet_protocols = ipv4\nsmtpd_sasl_type = dovecot\nsmtpd_sasl_path = private/auth\nlocal_recipient_maps =\n",
		"master.cf": master, "passwd": "",
	})
	res, p, _ := importAndLoad(t, dir)
	s := p.Settings
	if s.Listen["smtp"] != "127.0.0.1:25" || s.Listen["submission"] != "127.0.0.1:587" || s.Listen["smtpd_10025"] != "127.0.0.1:10025" {
		t.Errorf("listen = %v", s.Listen)
	}
	if o := s.ListenOpts["submission"]; o.SASLAuth == nil || !*o.SASLAuth {
		t.Errorf("submission options = %+v", o)
	}
	if s.SASL.Path != "/var/spool/postfix/private/auth" {
		t.Errorf("smtpd_sasl_path = %q", s.SASL.Path)
	}
	for _, d := range []dialog{
		{ip: "203.0.113.5", from: "a@example.net", to: "bob@mx.example.com", listener: "submission", want: "reject 554"},
		{ip: "203.0.113.5", from: "a@example.net", to: "bob@mx.example.com", listener: "submission", user: "bob", want: "accept"},
		{ip: "203.0.113.5", from: "a@example.net", to: "bob@mx.example.com", listener: "smtp", want: "accept"},
		{ip: "127.0.0.1", from: "a@example.net", to: "x@elsewhere.example", listener: "smtpd_10025", want: "accept"},
	} {
		if got := d.run(t, p); got != d.want {
			t.Errorf("%+v: %s", d, got)
		}
	}
	found := false
	for _, it := range res.Hand {
		if it.File == "master.cf" && it.Line == 2 && strings.Contains(it.Why, "smtpd_mystery") {
			found = true
		}
	}
	if !found {
		t.Errorf("the unknown -o is not in the report: %+v", res.Hand)
	}
}

// TestReport checks what goes to the report, with FILE:LINE.
func TestReport(t *testing.T) {
	dir := postfixDir(t, map[string]string{
		"main.cf": "myhostname = mx.example.com\n" +
			"mydestination = mx.example.com\n" +
			"mynetworks = 127.0.0.0/8\n" +
			"local_recipient_maps =\n" +
			"some_unknown_parameter = 1\n" +
			"virtual_alias_maps = hash:$config_directory/onlydb, ldap:/etc/postfix/ldap.cf\n" +
			"canonical_maps = proxy:hash:$config_directory/canonical\n" +
			"smtpd_recipient_restrictions = permit_mynetworks, reject_unverified_recipient, reject_unauth_destination\n" +
			"mailbox_command = /usr/bin/procmail\n" +
			"biff = no\n",
		"master.cf": masterSMTP + "amavis unix - - n - 2 lmtp\nspamd inet n - n - - spawn\n",
		"onlydb.db": "\x00binary",
		"canonical": "a@example.com b@example.com\n",
		"passwd":    "",
	})
	res, p, out := importAndLoad(t, dir)
	want := map[string]string{
		"main.cf:5":   "does not know this parameter",
		"main.cf:6":   "only the indexed file",
		"main.cf:8":   "reject_unverified_recipient",
		"main.cf:9":   "no command",
		"master.cf:3": "no spawn service",
	}
	got := map[string]string{}
	for _, it := range res.Hand {
		got[it.Where()] += it.Why + " | " + it.Todo + "\n"
	}
	for where, w := range want {
		if !strings.Contains(got[where], w) {
			t.Errorf("report for %s: %q, want %q", where, got[where], w)
		}
	}
	if !strings.Contains(got["main.cf:6"], "ldap") {
		t.Errorf("ldap: table not reported: %q", got["main.cf:6"])
	}
	if !res.NeedsHandWork() {
		t.Error("NeedsHandWork = false")
	}
	if n := len(p.Settings.CanonicalMaps); n != 1 || p.Settings.CanonicalMaps[0] != "hash:"+filepath.Join(dir, "canonical") {
		t.Errorf("canonical_maps = %v (proxy: unwrapped, the path kept)", p.Settings.CanonicalMaps)
	}
	report, _ := os.ReadFile(filepath.Join(out, "IMPORT-REPORT.md"))
	for _, w := range []string{"main.cf:5 `some_unknown_parameter = 1`", "main.cf:10 `biff = no`", "Needs hand work"} {
		if !bytes.Contains(report, []byte(w)) {
			t.Errorf("IMPORT-REPORT.md lacks %q", w)
		}
	}
	// the generated tests pass
	var buf bytes.Buffer
	if sum, err := startest.Run(p, startest.Options{Out: &buf, Paths: []string{filepath.Join(out, "postfix_import_test.star")}}); err != nil || sum.Failed > 0 {
		t.Errorf("generated tests: %v\n%s", err, buf.String())
	}
	// refusing a non-empty folder
	if err := res.Write(out, false); err == nil {
		t.Error("Write into a non-empty folder: no error")
	}
	if err := res.Write(out, true); err != nil {
		t.Errorf("Write with force: %v", err)
	}
}

func TestImportErrors(t *testing.T) {
	if _, err := Import(Options{Dir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "main.cf") {
		t.Errorf("missing main.cf: %v", err)
	}
	dir := postfixDir(t, map[string]string{"main.cf": "a = 1\n b\nc = $d\nd = $c\n"})
	if _, err := Import(Options{Dir: dir}); err == nil || !strings.Contains(err.Error(), "main.cf:3: c:") {
		t.Errorf("a loop: %v", err)
	}
	dir = postfixDir(t, map[string]string{"main.cf": "myhostname = x.example\n", "master.cf": "smtp inet n\n"})
	if _, err := Import(Options{Dir: dir}); err == nil || !strings.Contains(err.Error(), "master.cf:1:") {
		t.Errorf("bad master.cf: %v", err)
	}
}

// TestDebianDist imports Debian's main.cf.dist and master.cf.dist: a
// stock configuration needs no hand work.
func TestDebianDist(t *testing.T) {
	mainDist, err1 := os.ReadFile("/usr/share/postfix/main.cf.dist")
	masterDist, err2 := os.ReadFile("/usr/share/postfix/master.cf.dist")
	if err1 != nil || err2 != nil {
		t.Skip("Debian's Postfix is not installed")
	}
	dir := postfixDir(t, map[string]string{"main.cf": string(mainDist), "master.cf": string(masterDist), "passwd": "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n"})
	res, p, out := importAndLoad(t, dir)
	if res.NeedsHandWork() {
		t.Errorf("hand work for a stock configuration:\n%s", res.Report)
	}
	if p.Settings.Listen["smtp"] != "0.0.0.0:25" {
		t.Errorf("listen = %v", p.Settings.Listen)
	}
	var buf bytes.Buffer
	if sum, err := startest.Run(p, startest.Options{Out: &buf, Paths: []string{filepath.Join(out, "postfix_import_test.star")}}); err != nil || sum.Failed > 0 || sum.Passed == 0 {
		t.Errorf("generated tests: %+v %v\n%s", sum, err, buf.String())
	}
}

// TestRouting: the *_transport parameters and master.cf pipe services
// become a route hook that transport_maps still overrides.
func TestRouting(t *testing.T) {
	dir := postfixDir(t, map[string]string{
		"main.cf": "compatibility_level = 3.6\nmyhostname = mx.example.com\nmydestination = mx.example.com\nmynetworks = 127.0.0.0/8\n" +
			"local_recipient_maps =\nalias_maps =\n" +
			"mailbox_transport = lmtp:unix:private/dovecot-lmtp\n" +
			"virtual_mailbox_domains = vmail.example\nvirtual_mailbox_maps = hash:$config_directory/vmailbox\nvirtual_transport = dovecot\n" +
			"transport_maps = hash:$config_directory/transport\n" +
			"header_checks = regexp:$config_directory/header_checks\n",
		"master.cf": masterSMTP + "dovecot   unix  -       n       n       -       -       pipe\n" +
			"  flags=DRhu user=vmail:vmail argv=/usr/lib/dovecot/deliver -f ${sender} -d ${recipient}\n",
		"vmailbox":      "bob@vmail.example vmail.example/bob/\n",
		"transport":     "special@mx.example.com smtp:[relay.example.net]\n",
		"header_checks": "/^Subject:.*lottery/ REJECT no lotteries\n/^X-Bad:/ IGNORE\n",
		"passwd":        "",
	})
	res, p, _ := importAndLoad(t, dir)
	for _, tc := range []struct{ rcpt, kind, nexthop string }{
		{"alice@mx.example.com", "lmtp", "unix:/var/spool/postfix/private/dovecot-lmtp"},
		{"bob@vmail.example", "pipe", "/usr/lib/dovecot/deliver -f ${sender} -d ${recipient}"},
		{"special@mx.example.com", "smtp", "[relay.example.net]"},
		{"x@elsewhere.example", "smtp", "elsewhere.example"},
	} {
		tr, err := p.Route(context.Background(), tc.rcpt, nil)
		if err != nil || tr.Kind != tc.kind || tr.Nexthop != tc.nexthop {
			t.Errorf("route %s = %s:%s (%v), want %s:%s", tc.rcpt, tr.Kind, tr.Nexthop, err, tc.kind, tc.nexthop)
		}
	}
	found := false
	for _, it := range res.Hand {
		found = found || strings.Contains(it.Why, "IGNORE") && it.Line == 2
	}
	if !found {
		t.Errorf("header_checks IGNORE not reported: %+v", res.Hand)
	}
	if !bytes.Contains(res.Star, []byte("return header_checks(msg)")) {
		t.Errorf("no header_checks in on_data:\n%s", res.Star)
	}
}
