package rules

import (
	"sort"
	"strings"
)

// SettingDoc documents one config(...) setting for the settings reference
// (docs/reference/settings.md, written by cmd/docgen).
type SettingDoc struct {
	Name string
	// Type is the value the setting takes ("duration", "list of domains", ...).
	Type string
	// Doc is the setting's description, without its default.
	Doc string
	// Default is the default value, as text ("300s", "none (deliver by MX)").
	Default string
	// Postfix names the main.cf parameters (or master.cf fields) the
	// setting replaces, separated by ", "; empty when Postfix has none.
	Postfix string
	// Example is a config(...) call setting it that `larkpost check`
	// accepts; table files it names are relative to the config file.
	Example string
	// Binding is when a change takes effect after a reload.
	Binding Binding
}

// SettingDocs documents every setting, sorted by name.
func SettingDocs() []SettingDoc {
	names := SettingNames()
	out := make([]SettingDoc, 0, len(names))
	for _, name := range names {
		doc, def := splitDefault(settingTable[name].doc)
		ex := ""
		if v, ok := settingExamples[name]; ok {
			ex = "config(" + name + " = " + v + ")"
		}
		out = append(out, SettingDoc{
			Name:    name,
			Type:    settingTable[name].kind,
			Doc:     doc,
			Default: def,
			Postfix: postfixEquivalents[name],
			Example: ex,
			Binding: SettingBinding(name),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// splitDefault cuts a setting's doc text at its last "; default": the
// text before, and the default without the word "default" and its colon.
func splitDefault(doc string) (text, def string) {
	i := strings.LastIndex(doc, "; default")
	if i < 0 {
		return doc, ""
	}
	def = strings.TrimSpace(strings.TrimPrefix(doc[i+len("; default"):], ":"))
	// "False: such recipients bounce" reads "False (such recipients bounce)".
	if v, rest, ok := strings.Cut(def, ": "); ok && v != "" && strings.IndexFunc(v, notAlnum) < 0 {
		def = v + " (" + rest + ")"
	}
	return strings.TrimSpace(doc[:i]), def
}

func notAlnum(r rune) bool {
	return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9')
}

// postfixEquivalents is the main.cf parameter each setting replaces, as
// the README's "Migrating from Postfix" table lists them. A setting
// missing here has no Postfix counterpart.
var postfixEquivalents = map[string]string{
	"alias_maps":                            "alias_maps",
	"allow_min_user":                        "allow_min_user",
	"mail_owner":                            "mail_owner",
	"always_add_missing_headers":            "always_add_missing_headers",
	"body_checks_size_limit":                "body_checks_size_limit",
	"bounce_queue_lifetime":                 "bounce_queue_lifetime",
	"canonical_maps":                        "canonical_maps",
	"command_time_limit":                    "command_time_limit",
	"data_dir":                              "queue_directory",
	"default_destination_concurrency_limit": "default_destination_concurrency_limit",
	"default_privs":                         "default_privs",
	"delay_warning_time":                    "delay_warning_time",
	"delivery_workers":                      "default_process_limit",
	"destinations":                          "mydestination",
	"domain":                                "mydomain",
	"filter_path":                           "mailbox_command",
	"forward_path":                          "forward_path",
	"header_size_limit":                     "header_size_limit",
	"hostname":                              "myhostname",
	"listen":                                "inet_interfaces, master.cf smtp inet",
	"local_destination_concurrency_limit":   "local_destination_concurrency_limit",
	"local_recipients":                      "local_recipient_maps",
	"mailbox_path":                          "home_mailbox, mail_spool_directory",
	"mailbox_size_limit":                    "mailbox_size_limit",
	"masquerade_domains":                    "masquerade_domains",
	"maximal_backoff":                       "maximal_backoff_time",
	"maximal_queue_lifetime":                "maximal_queue_lifetime",
	"message_size_limit":                    "message_size_limit",
	"minimal_backoff":                       "minimal_backoff_time",
	"networks":                              "mynetworks",
	"notify_classes":                        "notify_classes",
	"notify_recipient":                      "bounce_notice_recipient, 2bounce_notice_recipient, delay_notice_recipient, error_notice_recipient",
	"origin":                                "myorigin",
	"qmgr_message_active_limit":             "qmgr_message_active_limit",
	"queue_minfree":                         "queue_minfree",
	"recipient_canonical_maps":              "recipient_canonical_maps",
	"recipient_delimiter":                   "recipient_delimiter",
	"relay_domains":                         "relay_domains",
	"relayhost":                             "relayhost",
	"relocated_maps":                        "relocated_maps",
	"sender_canonical_maps":                 "sender_canonical_maps",
	"smtp_sasl_password_maps":               "smtp_sasl_password_maps, smtp_sasl_auth_enable",
	"smtp_tls_policy_maps":                  "smtp_tls_policy_maps",
	"smtp_tls_security_level":               "smtp_tls_security_level",
	"smtpd_banner":                          "smtpd_banner",
	"smtpd_client_connection_count_limit":   "smtpd_client_connection_count_limit",
	"smtpd_connection_limit":                "master.cf smtp process limit",
	"smtpd_forbid_bare_newline":             "smtpd_forbid_bare_newline",
	"smtpd_min_data_rate":                   "smtpd_min_data_rate",
	"smtpd_peername_lookup":                 "smtpd_peername_lookup",
	"smtpd_recipient_limit":                 "smtpd_recipient_limit",
	"smtpd_timeout":                         "smtpd_timeout",
	"soft_bounce":                           "soft_bounce",
	"transport_maps":                        "transport_maps",
	"virtual_alias_domains":                 "virtual_alias_domains",
	"virtual_alias_expansion_limit":         "virtual_alias_expansion_limit",
	"virtual_alias_maps":                    "virtual_alias_maps",
	"virtual_alias_recursion_limit":         "virtual_alias_recursion_limit",
	"virtual_mailbox_base":                  "virtual_mailbox_base",
	"virtual_mailbox_domains":               "virtual_mailbox_domains",
	"virtual_mailbox_maps":                  "virtual_mailbox_maps",
	"virtual_uid_maps":                      "virtual_uid_maps",
	"virtual_gid_maps":                      "virtual_gid_maps",
	"virtual_minimum_uid":                   "virtual_minimum_uid",
}

// settingExamples is the value, in Starlark, each setting's example sets.
// TestSettingDocs loads every example; the table files they name are
// relative to the config file's directory.
var settingExamples = map[string]string{
	"alias_maps":                            `["aliases"]`,
	"allow_min_user":                        `True`,
	"allow_root":                            `True`,
	"mail_owner":                            `"postfix"`,
	"always_add_missing_headers":            `True`,
	"body_checks_size_limit":                `"256KB"`,
	"bounce_queue_lifetime":                 `"2d"`,
	"canonical_maps":                        `["hash:canonical"]`,
	"command_time_limit":                    `"5m"`,
	"control_group":                         `"mailadm"`,
	"data_dir":                              `"/var/spool/larkpost"`,
	"default_destination_concurrency_limit": `10`,
	"default_privs":                         `"nobody"`,
	"delay_warning_time":                    `"4h"`,
	"delivery_workers":                      `50`,
	"destinations":                          `["example.com", "mx.example.com", "localhost"]`,
	"dns_max_queries":                       `40`,
	"dns_timeout":                           `"3s"`,
	"domain":                                `"example.com"`,
	"filter_max_memory":                     `"16MB"`,
	"filter_max_steps":                      `50000`,
	"filter_path":                           `"filters/{user}.star"`,
	"filter_timeout":                        `"1s"`,
	"forward_path":                          `"/home/{user}/.forward"`,
	"header_size_limit":                     `"200KB"`,
	"header_total_limit":                    `"2MB"`,
	"hook_max_memory":                       `"32MB"`,
	"hook_max_steps":                        `500000`,
	"hook_timeout":                          `"5s"`,
	"hostname":                              `"mx.example.com"`,
	"listen":                                `{"smtp": "0.0.0.0:25", "submission": "0.0.0.0:587"}`,
	"local_destination_concurrency_limit":   `1`,
	"local_recipients":                      `["alice", "bob", "postmaster"]`,
	"mailbox_path":                          `"/home/{user}/Maildir/"`,
	"mailbox_size_limit":                    `"1GB"`,
	"masquerade_domains":                    `["example.com"]`,
	"maximal_backoff":                       `"2h"`,
	"maximal_queue_lifetime":                `"3d"`,
	"message_size_limit":                    `"50MB"`,
	"minimal_backoff":                       `"5m"`,
	"networks":                              `["127.0.0.0/8", "::1/128", "192.0.2.0/24"]`,
	"notify_classes":                        `["bounce", "resource", "software"]`,
	"notify_recipient":                      `"hostmaster@example.com"`,
	"origin":                                `"example.com"`,
	"qmgr_message_active_limit":             `5000`,
	"queue_minfree":                         `"1GB"`,
	"recipient_canonical_maps":              `["hash:recipient_canonical"]`,
	"recipient_delimiter":                   `"+"`,
	"relay_domains":                         `["example.net", ".example.net"]`,
	"relayhost":                             `"[smtp.example.net]:587"`,
	"relocated_maps":                        `["hash:relocated"]`,
	"resolvers":                             `["127.0.0.1", "[::1]:53"]`,
	"sender_canonical_maps":                 `["hash:sender_canonical"]`,
	"smtp_sasl_password_maps":               `["hash:sasl_passwd"]`,
	"smtp_tls_policy_maps":                  `["hash:tls_policy"]`,
	"smtp_tls_security_level":               `"encrypt"`,
	"smtpd_banner":                          `"{hostname} ESMTP"`,
	"smtpd_client_connection_count_limit":   `20`,
	"smtpd_connection_limit":                `200`,
	"smtpd_data_timeout":                    `"5m"`,
	"smtpd_forbid_bare_newline":             `"normalize"`,
	"smtpd_inflight_bytes":                  `"256MB"`,
	"smtpd_line_length_limit":               `"16KB"`,
	"smtpd_min_data_rate":                   `1000`,
	"smtpd_networks_reserve":                `20`,
	"smtpd_peername_lookup":                 `False`,
	"smtpd_recipient_limit":                 `100`,
	"smtpd_session_timeout":                 `"30m"`,
	"smtpd_stress_threshold":                `150`,
	"smtpd_stress_timeout":                  `"5s"`,
	"smtpd_timeout":                         `"60s"`,
	"soft_bounce":                           `True`,
	"transport_maps":                        `["hash:transport"]`,
	"virtual_alias_domains":                 `["example.org"]`,
	"virtual_alias_expansion_limit":         `500`,
	"virtual_alias_maps":                    `["hash:virtual"]`,
	"virtual_alias_recursion_limit":         `100`,
	"virtual_mailbox_base":                  `"/var/vmail"`,
	"virtual_mailbox_domains":               `["example.net"]`,
	"virtual_mailbox_maps":                  `["hash:vmailbox"]`,
	"virtual_uid_maps":                      `["static:5000"]`,
	"virtual_gid_maps":                      `["static:5000"]`,
	"virtual_minimum_uid":                   `1000`,
	"virtual_mailbox_owner":                 `"vmail"`,
}
