package importer

import (
	"bytes"
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/larkpost/larkpost/rules"
	"github.com/larkpost/larkpost/rules/startest"
)

// rcptReply is the reply to a dialog's RCPT TO: "accept", or
// "reject 550 5.1.1 TEXT".
func rcptReply(p *rules.Policy, d dialog) string {
	listener := d.listener
	if listener == "" {
		listener = "smtp"
	}
	res := p.DryRun(context.Background(), &rules.Envelope{Conn: rules.Conn{IP: netip.MustParseAddr(d.ip), RDNS: d.rdns, Helo: "mail.example.net", User: d.user, Listener: listener},
		From: d.from, To: []string{d.to}})
	for _, s := range res.Steps {
		if s.Stage != rules.StageRcpt && s.Kind.String() != "accept" {
			return s.Kind.String() + " " + itoa(s.Code) + " at " + string(s.Stage)
		}
		if s.Stage == rules.StageRcpt {
			if s.Kind.String() == "accept" {
				return "accept"
			}
			return s.Kind.String() + " " + itoa(s.Code) + " " + s.Status + " " + s.Text
		}
	}
	return "no rcpt step"
}

// TestPostfixParity checks behaviours found by .ci/interop-import.sh
// against the real Postfix: each dialog's want is a prefix of the reply
// Postfix gives (code, status, text).
func TestPostfixParity(t *testing.T) {
	base := "compatibility_level = 3.6\nmyhostname = mx.example.com\nmydomain = example.com\nmydestination = $myhostname, $mydomain, localhost\n" +
		"mynetworks = 127.0.0.0/8\nlocal_recipient_maps = hash:$config_directory/users\n"
	debianRelay := "smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated defer_unauth_destination\n"
	for _, tc := range []struct {
		name      string
		main      string
		tables    map[string]string
		dialogs   []dialog
		inTests   []string // lines postfix_import_test.star must have
		notInStar []string
	}{
		{
			// smtpd refuses recipients that resolve to the error transport
			name: "Debian Local only: default_transport = error",
			main: debianRelay + "default_transport = error\nrelay_transport = error\n",
			dialogs: []dialog{
				{ip: "127.0.0.1", from: "a@example.net", to: "user@foreign.example", want: "reject 550 5.1.1 <user@foreign.example>: Recipient address rejected: foreign.example"},
				{ip: "127.0.0.1", from: "a@example.net", to: "alice@example.com", want: "accept"},
				{ip: "127.0.0.1", from: "a@example.net", to: "nobody@example.com", want: "reject 550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown"},
				{ip: "203.0.113.5", from: "a@example.net", to: "user@foreign.example", want: "defer 454 4.7.1 <user@foreign.example>: Relay access denied"},
				// local submission: no smtpd checks (the error transport bounces it later)
				{ip: "127.0.0.1", from: "a@example.net", to: "user@foreign.example", listener: "sendmail", want: "accept"},
			},
			inTests: []string{`assert.rejected(r, rcpt = "someone@elsewhere.example", code = 550, text = "elsewhere.example")`},
		},
		{
			name: "transport_maps error entries; canonical and virtual keys pass",
			main: "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n" +
				"transport_maps = hash:$config_directory/transport\ncanonical_maps = hash:$config_directory/canonical\n" +
				"virtual_alias_maps = hash:$config_directory/virtual\nvirtual_alias_domains =\n",
			tables: map[string]string{
				"transport": "nomail.example error:no mail for this domain\nbounce.example error:5.7.1 go away\n" +
					"carol@example.com error:carol has left\nfast.example smtp:[192.0.2.200]\n",
				"canonical": "olduser@example.com alice@example.com\nold@bounce.example alice@example.com\n",
				"virtual":   "x@nomail.example bob@example.com\n",
			},
			dialogs: []dialog{
				{ip: "127.0.0.1", from: "a@example.net", to: "u@nomail.example", want: "reject 550 5.1.1 <u@nomail.example>: Recipient address rejected: no mail for this domain"},
				{ip: "127.0.0.1", from: "a@example.net", to: "u@bounce.example", want: "reject 550 5.7.1 <u@bounce.example>: Recipient address rejected: go away"},
				{ip: "203.0.113.5", from: "a@example.net", to: "carol@example.com", want: "reject 550 5.1.1 <carol@example.com>: Recipient address rejected: carol has left"},
				{ip: "127.0.0.1", from: "a@example.net", to: "u@fast.example", want: "accept"},
				{ip: "127.0.0.1", from: "a@example.net", to: "x@nomail.example", want: "accept"},
				{ip: "127.0.0.1", from: "a@example.net", to: "old@bounce.example", want: "accept"},
				{ip: "203.0.113.5", from: "a@example.net", to: "u@nomail.example", want: "reject 554 5.7.1"},
				// canonical_maps keys are known recipients (smtpd's check_rcpt_maps)
				{ip: "203.0.113.5", from: "a@example.net", to: "olduser@example.com", want: "accept"},
				{ip: "203.0.113.5", from: "a@example.net", to: "olduser2@example.com", want: "reject 550 5.1.1"},
			},
			inTests: []string{
				`assert.rejected(r, rcpt = "someone@nomail.example", code = 550, text = "no mail for this domain")`,
				`assert.eq(r.transports.get("someone@fast.example"), "smtp:[192.0.2.200]")`,
			},
		},
		{
			name: "smtpd_reject_unlisted_recipient = no: error routes are accepted",
			main: "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\nsmtpd_reject_unlisted_recipient = no\n" +
				"transport_maps = hash:$config_directory/transport\n",
			tables: map[string]string{"transport": "nomail.example error:no mail for this domain\n"},
			dialogs: []dialog{
				{ip: "127.0.0.1", from: "a@example.net", to: "u@nomail.example", want: "accept"},
			},
			// the expectation is the transport as larkpost's route gives it
			inTests:   []string{`assert.eq(r.transports.get("someone@nomail.example"), "error:5.0.0 no mail for this domain")`},
			notInStar: []string{"_error_transport"},
		},
		{
			// reject_unknown_*_domain skip the final destinations only:
			// relay_domains (and their subdomains) are looked up
			name: "reject_unknown_sender_domain and reject_unknown_recipient_domain",
			main: "relay_domains = relay.example\n" +
				"smtpd_sender_restrictions = reject_unknown_sender_domain\n" +
				"smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n" +
				"smtpd_recipient_restrictions = reject_unknown_recipient_domain, permit\n",
			dialogs: []dialog{
				{ip: "203.0.113.5", from: "root@example.com", to: "alice@example.com", want: "accept"},
				{ip: "203.0.113.5", from: "root@mx.example.com", to: "alice@example.com", want: "accept"},
				{ip: "203.0.113.5", from: "root@example.com", to: "user@relay.example", want: "defer 450 4.1.2 <user@relay.example>: Recipient address rejected: Domain not found"},
				{ip: "203.0.113.5", from: "root@example.com", to: "user@sub.relay.example", want: "defer 450 4.1.2"},
				{ip: "203.0.113.5", from: "a@unknown.example", to: "alice@example.com", want: "defer 450 4.1.8 <a@unknown.example>: Sender address rejected: Domain not found"},
			},
			notInStar: []string{"_error_transport"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{"main.cf": base + tc.main, "master.cf": masterSMTP, "users": "alice OK\nbob OK\ncarol OK\n", "passwd": ""}
			for k, v := range tc.tables {
				files[k] = v
			}
			res, p, out := importAndLoad(t, postfixDir(t, files))
			for _, d := range tc.dialogs {
				if got := rcptReply(p, d); !strings.HasPrefix(got, d.want) {
					t.Errorf("%s (%s) <%s> to <%s>: %s\n\twant %s", d.ip, d.listener, d.from, d.to, got, d.want)
				}
			}
			for _, s := range tc.inTests {
				if !bytes.Contains(res.Test, []byte(s)) {
					t.Errorf("postfix_import_test.star has no %s", s)
				}
			}
			for _, s := range tc.notInStar {
				if bytes.Contains(res.Star, []byte(s)) {
					t.Errorf("larkpost.star has %s", s)
				}
			}
			var buf bytes.Buffer
			sum, err := startest.Run(p, startest.Options{Out: &buf, Paths: []string{filepath.Join(out, "postfix_import_test.star")}})
			if err != nil || sum.Failed > 0 || sum.Passed == 0 {
				t.Errorf("generated tests: %+v %v\n%s\n%s", sum, err, buf.String(), res.Test)
			}
			if t.Failed() {
				t.Logf("larkpost.star:\n%s", res.Star)
			}
		})
	}
}
