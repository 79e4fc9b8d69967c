package importer

import (
	"bytes"
	"flag"
	"fmt"
	"go/format"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite defaults.go from postconf -d")

// defaultNames are the parameters whose Postfix defaults the importer
// needs; defaults.go holds their `postconf -d` values.
var defaultNames = strings.Fields(`
myorigin mydestination mynetworks_style relay_domains relayhost inet_interfaces
inet_protocols queue_directory config_directory home_mailbox mail_spool_directory
mailbox_command mailbox_transport local_transport virtual_transport default_transport
relay_transport local_recipient_maps alias_maps alias_database forward_path mailbox_size_limit
message_size_limit header_size_limit recipient_delimiter soft_bounce maximal_queue_lifetime
bounce_queue_lifetime minimal_backoff_time maximal_backoff_time delay_warning_time
qmgr_message_active_limit local_destination_concurrency_limit default_destination_concurrency_limit
default_destination_rate_delay smtp_destination_rate_delay relay_destination_rate_delay
lmtp_destination_rate_delay local_destination_rate_delay default_process_limit
smtpd_banner mail_name smtpd_recipient_limit smtpd_client_connection_count_limit
smtpd_timeout smtpd_forbid_bare_newline smtpd_peername_lookup canonical_maps
sender_canonical_maps recipient_canonical_maps masquerade_domains masquerade_exceptions
virtual_alias_maps virtual_alias_domains relocated_maps virtual_mailbox_domains
virtual_mailbox_maps virtual_mailbox_base virtual_uid_maps virtual_gid_maps
virtual_minimum_uid transport_maps smtp_sasl_auth_enable smtp_sasl_password_maps
smtp_tls_security_level smtp_tls_policy_maps smtp_tls_CAfile default_privs command_time_limit
notify_classes bounce_notice_recipient 2bounce_notice_recipient delay_notice_recipient
error_notice_recipient virtual_alias_expansion_limit virtual_alias_recursion_limit
allow_min_user always_add_missing_headers body_checks_size_limit queue_minfree
smtpd_min_data_rate smtpd_milters non_smtpd_milters milter_default_action
milter_protocol milter_connect_macros milter_helo_macros milter_mail_macros
milter_rcpt_macros milter_data_macros milter_end_of_header_macros milter_end_of_data_macros
milter_command_timeout milter_connect_timeout milter_content_timeout smtpd_tls_cert_file
smtpd_tls_key_file smtpd_tls_chain_files smtpd_tls_security_level smtpd_tls_auth_only
smtpd_tls_CAfile smtpd_tls_ask_ccert smtpd_tls_protocols smtpd_tls_mandatory_protocols
smtpd_tls_mandatory_ciphers smtpd_tls_received_header smtpd_tls_wrappermode smtpd_use_tls
smtpd_enforce_tls smtpd_sasl_auth_enable smtpd_sasl_type smtpd_sasl_path smtpd_sender_login_maps
smtpd_delay_reject smtpd_client_restrictions smtpd_helo_restrictions smtpd_sender_restrictions
smtpd_relay_restrictions smtpd_recipient_restrictions smtpd_data_restrictions
smtpd_end_of_data_restrictions smtpd_etrn_restrictions smtpd_restriction_classes
smtpd_reject_unlisted_recipient smtpd_reject_unlisted_sender parent_domain_matches_subdomains
compatibility_level access_map_reject_code access_map_defer_code reject_code defer_code
relay_domains_reject_code unknown_address_reject_code unknown_client_reject_code
unknown_hostname_reject_code non_fqdn_reject_code invalid_hostname_reject_code
maps_rbl_reject_code unknown_local_recipient_reject_code unknown_virtual_alias_reject_code
unknown_virtual_mailbox_reject_code unknown_relay_recipient_reject_code
multi_recipient_bounce_reject_code plaintext_reject_code unverified_recipient_reject_code
unverified_sender_reject_code relay_recipient_maps smtpd_null_access_lookup_key header_checks
body_checks mime_header_checks nested_header_checks content_filter smtpd_helo_required
disable_vrfy_command strict_rfc821_envelopes smtpd_upstream_proxy_protocol
mail_owner smtpd_policy_service_timeout smtpd_policy_service_default_action
postscreen_dnsbl_sites postscreen_access_list smtp_tls_CApath smtp_tls_session_cache_database
smtpd_tls_session_cache_database biff append_dot_mydomain readme_directory html_directory
manpage_directory sample_directory sendmail_path newaliases_path mailq_path setgid_group
debugger_command command_directory daemon_directory data_directory meta_directory
shlib_directory smtputf8_enable smtpd_tls_loglevel smtp_tls_loglevel smtpd_sasl_local_domain
broken_sasl_auth_clients smtpd_sasl_security_options smtpd_sasl_tls_security_options maillog_file
syslog_name syslog_facility swap_bangpath allow_percent_hack smtpd_tls_dh1024_param_file
smtp_tls_note_starttls_offer smtpd_tls_exclude_ciphers smtp_tls_mandatory_protocols
smtp_tls_protocols unknown_helo_hostname_tempfail_action reject_tempfail_action
unknown_address_tempfail_action milter_macro_daemon_name smtpd_client_message_rate_limit
smtpd_client_connection_rate_limit anvil_rate_time_unit myhostname mydomain mynetworks
`)

// computed are defaults postconf derives from the machine.
var computed = map[string]bool{"myhostname": true, "mydomain": true, "mynetworks": true}

func postconfD(t *testing.T) map[string]string {
	pc, err := exec.LookPath("postconf")
	if err != nil {
		if _, err2 := os.Stat("/usr/sbin/postconf"); err2 != nil {
			t.Skip("postconf is not installed")
		}
		pc = "/usr/sbin/postconf"
	}
	out, err := exec.Command(pc, append([]string{"-d"}, defaultNames...)...).Output()
	if err != nil {
		t.Skipf("postconf -d: %v", err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		name, value, ok := strings.Cut(line, " =")
		if !ok {
			continue
		}
		got[name] = strings.TrimPrefix(value, " ")
	}
	return got
}

// TestDefaults compares defaults.go with the installed Postfix's
// postconf -d (skipped without postconf); -update rewrites defaults.go.
func TestDefaults(t *testing.T) {
	pd := postconfD(t)
	if *update {
		var b bytes.Buffer
		ver, _ := exec.Command("postconf", "-dh", "mail_version").Output()
		fmt.Fprintf(&b, "// Code generated from postconf -d (Postfix %s) by TestDefaults; DO NOT EDIT.\n", strings.TrimSpace(string(ver)))
		b.WriteString("// Regenerate: go test ./rules/postfix/importer -run TestDefaults -update\n\npackage importer\n\n")
		b.WriteString("// postconfDefaults are the postconf -d values of the parameters the\n// importer reads; machine-dependent ones (myhostname, mydomain,\n// mynetworks) are computed at import time instead.\nvar postconfDefaults = map[string]string{\n")
		names := make([]string, 0, len(pd))
		for n := range pd {
			if !computed[n] {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(&b, "\t%q: %q,\n", n, pd[n])
		}
		b.WriteString("}\n")
		src, err := format.Source(b.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("defaults.go", src, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	for _, n := range defaultNames {
		if computed[n] {
			continue
		}
		want, ok := pd[n]
		if !ok {
			t.Errorf("postconf -d has no %s", n)
			continue
		}
		if got, ok := postconfDefaults[n]; !ok || got != want {
			t.Errorf("default of %s = %q, postconf -d says %q (go test -run TestDefaults -update)", n, got, want)
		}
	}
}

// TestExpandMatchesPostconf compares the expansion of main.cf parameters
// with postconf -x on the same folder (skipped without postconf).
func TestExpandMatchesPostconf(t *testing.T) {
	pc, err := exec.LookPath("postconf")
	if err != nil {
		if _, err := os.Stat("/usr/sbin/postconf"); err != nil {
			t.Skip("postconf is not installed")
		}
		pc = "/usr/sbin/postconf"
	}
	names := []string{"mydestination", "mydomain", "myorigin", "relay_domains", "mynetworks_style", "smtpd_relay_restrictions",
		"smtpd_timeout", "local_recipient_maps", "smtpd_banner", "virtual_alias_domains", "alias_maps", "custom"}
	for _, mainCF := range []string{
		"myhostname = mx.example.com\n",
		"compatibility_level = 3.6\nmyhostname = mail.example.org\nmydomain = example.org\nmyorigin = $mydomain\n" +
			"mydestination = $myhostname, localhost.$mydomain, ${mydomain}\ncustom = ${mydomain?{has $(mydomain)}:{none}} $$x\n" +
			"virtual_alias_maps = hash:/etc/postfix/virtual\n",
		"compatibility_level = 2\nmyhostname = a.b.c.example\nsmtpd_banner = $myhostname ESMTP $mail_name ($mail_version)\nrelay_domains = $mydestination, other.example\n",
	} {
		dir := t.TempDir()
		os.WriteFile(dir+"/main.cf", []byte(mainCF), 0o644)
		out, err := exec.Command(pc, append([]string{"-c", dir, "-x"}, names...)...).Output()
		if err != nil {
			t.Skipf("postconf -x: %v", err)
		}
		want := map[string]string{}
		for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
			n, v, _ := strings.Cut(l, " =")
			want[n] = strings.TrimPrefix(v, " ")
		}
		m, err := ParseMainCF(dir+"/main.cf", "main.cf", []byte(mainCF))
		if err != nil {
			t.Fatal(err)
		}
		c := &conv{o: Options{Dir: dir, Hostname: "vm"}, mc: m}
		e := &Env{Main: m, Defaults: c.defaults()}
		e.Defaults["mail_version"] = strings.TrimSpace(mustRun(pc, "-dh", "mail_version"))
		if _, rest, ok := strings.Cut(e.Get("myhostname"), "."); ok {
			e.Defaults["mydomain"] = rest
		}
		for _, n := range names {
			w, ok := want[n]
			if !ok {
				continue
			}
			if got := e.Get(n); got != w {
				t.Errorf("%q: %s = %q, postconf -x says %q", mainCF, n, got, w)
			}
		}
	}
}

func mustRun(name string, args ...string) string {
	out, _ := exec.Command(name, args...).Output()
	return string(out)
}
