package rules

import (
	"sort"

	"go.starlark.net/starlark"
)

// Binding says when a changed setting takes effect after `larkpost
// reload` (or SIGHUP).
type Binding string

// The bindings.
const (
	// BindRestart: read once when the server starts (listeners, the
	// queue, the delivery workers, go-smtp's limits): a change needs a
	// restart, and reload says so.
	BindRestart Binding = "restart"
	// BindSession: read by each new SMTP session (and each message
	// pickup takes), from the policy it starts with; sessions in progress
	// keep the old value. Cleanup (rewriting, expansion) runs with the
	// policy current when the message is queued.
	BindSession Binding = "new sessions"
	// BindDelivery: read at each delivery attempt, so it applies to mail
	// already queued.
	BindDelivery Binding = "next delivery"
)

// bindings is when each setting takes effect; TestEverySettingHasABinding
// keeps it complete.
var bindings = map[string]Binding{
	"listen": BindRestart, "data_dir": BindRestart, "delivery_workers": BindRestart,
	"qmgr_message_active_limit": BindRestart, "control_group": BindRestart,
	"message_size_limit": BindRestart, "smtpd_recipient_limit": BindRestart, "smtpd_line_length_limit": BindRestart,
	"resolvers": BindRestart, "hostname": BindRestart, "mail_owner": BindRestart, "allow_root": BindRestart,

	"domain": BindSession, "origin": BindSession, "destinations": BindSession, "networks": BindSession,
	"relay_domains": BindSession, "recipient_delimiter": BindSession, "smtpd_banner": BindSession,
	"smtpd_connection_limit": BindSession, "smtpd_client_connection_count_limit": BindSession,
	"smtpd_timeout": BindSession, "smtpd_data_timeout": BindSession, "smtpd_session_timeout": BindSession,
	"smtpd_forbid_bare_newline": BindSession, "smtpd_peername_lookup": BindSession,
	"header_size_limit": BindSession, "header_total_limit": BindSession, "body_checks_size_limit": BindSession,
	"smtpd_inflight_bytes": BindSession, "queue_minfree": BindSession, "smtpd_min_data_rate": BindSession,
	"smtpd_stress_timeout": BindSession, "smtpd_stress_threshold": BindSession, "smtpd_networks_reserve": BindSession,
	"hook_max_steps": BindSession, "hook_timeout": BindSession, "hook_max_memory": BindSession,
	"dns_timeout": BindSession, "dns_max_queries": BindSession,
	"local_recipients": BindSession, "relocated_maps": BindSession, "virtual_alias_domains": BindSession,
	"virtual_alias_maps": BindSession, "alias_maps": BindSession, "canonical_maps": BindSession,
	"sender_canonical_maps": BindSession, "recipient_canonical_maps": BindSession,
	"masquerade_domains": BindSession, "forward_path": BindSession,
	"virtual_alias_expansion_limit": BindSession, "virtual_alias_recursion_limit": BindSession,
	"soft_bounce": BindSession, "always_add_missing_headers": BindSession, "virtual_mailbox_domains": BindSession, "virtual_mailbox_maps": BindSession,

	"relayhost": BindDelivery, "mailbox_path": BindDelivery, "mailbox_size_limit": BindDelivery,
	"minimal_backoff": BindDelivery, "maximal_backoff": BindDelivery, "maximal_queue_lifetime": BindDelivery,
	"bounce_queue_lifetime": BindDelivery, "delay_warning_time": BindDelivery,
	"local_destination_concurrency_limit": BindDelivery, "default_destination_concurrency_limit": BindDelivery,
	"notify_classes": BindDelivery, "notify_recipient": BindDelivery,
	"filter_path": BindDelivery, "filter_max_steps": BindDelivery, "filter_timeout": BindDelivery,
	"filter_max_memory": BindDelivery, "transport_maps": BindDelivery, "smtp_tls_security_level": BindDelivery,
	"smtp_tls_policy_maps": BindDelivery, "smtp_sasl_password_maps": BindDelivery,
	"virtual_mailbox_base": BindDelivery, "default_privs": BindDelivery, "command_time_limit": BindDelivery,
	"allow_min_user": BindDelivery, "virtual_uid_maps": BindDelivery, "virtual_gid_maps": BindDelivery,
	"virtual_minimum_uid": BindDelivery, "virtual_mailbox_owner": BindDelivery,
}

// SettingBinding says when a setting takes effect after a reload.
func SettingBinding(name string) Binding { return bindings[name] }

// RestartNeeded lists the settings whose change between old and new
// needs a restart to take effect.
func RestartNeeded(old, new *Settings) []string {
	var out []string
	for name, b := range bindings {
		if b == BindRestart && old.raw[name] != new.raw[name] {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// noteRaw keeps what the script set a setting to, to compare on reload.
func (s *Settings) noteRaw(name string, v starlark.Value) {
	if s.raw == nil {
		s.raw = map[string]string{}
	}
	s.raw[name] = v.String()
}

// Raw is what the script set setting name to, as Starlark writes the
// value; ok is false for a setting left at its default.
func (s *Settings) Raw(name string) (value string, ok bool) {
	value, ok = s.raw[name]
	return value, ok
}
