package postfix

import (
	"strings"

	"github.com/larkpost/larkpost/stdlib/maps"
)

// DefaultSource marks decisions made by the built-in policy.
const DefaultSource = "default policy"

// Config is what of the settings Postfix's semantics read. Package rules
// builds it from its Settings (main.cf names in the comments).
type Config struct {
	RecipientDelimiter string                   // recipient_delimiter
	IsLocalDomain      func(domain string) bool // mydestination
	IsRelayDomain      func(domain string) bool // relay_domains
	Relayhost          string                   // relayhost
	DataDir            string                   // replaces {data_dir} in the path templates

	MailboxPath           string   // mailbox_path: {data_dir}, {user}, {domain}
	LocalRecipients       []string // local_recipients: known local users; empty accepts any
	ForwardPath           string   // forward_path: {data_dir}, {user}
	MasqueradeDomains     []string // masquerade_domains
	VirtualAliasDomains   []string // virtual_alias_domains
	VirtualMailboxDomains []string // virtual_mailbox_domains
	VirtualMailboxBase    string   // virtual_mailbox_base: {data_dir}
	SMTPTLSLevel          string   // smtp_tls_security_level

	// Warn reports a file local(8) would ignore with a warning (a .forward
	// that is not safe to follow); nil drops the line.
	Warn func(string)
	// ReadForward reads a .forward for user (a split server asks its root
	// parent); nil reads it here with the user's rights (ReadForward).
	ReadForward func(user, path string) ([]byte, error)

	// The table settings, each a list of table specs as written; Open
	// reads them.
	AliasMaps              []string // alias_maps: aliases(5) files
	VirtualAliasMaps       []string // virtual_alias_maps
	CanonicalMaps          []string // canonical_maps
	SenderCanonicalMaps    []string // sender_canonical_maps
	RecipientCanonicalMaps []string // recipient_canonical_maps
	RelocatedMaps          []string // relocated_maps
	VirtualMailboxMaps     []string // virtual_mailbox_maps
	VirtualUIDMaps         []string // virtual_uid_maps
	VirtualGIDMaps         []string // virtual_gid_maps
	SenderLoginMaps        []string // smtpd_sender_login_maps
	TransportMaps          []string // transport_maps
	SMTPTLSPolicyMaps      []string // smtp_tls_policy_maps
	SMTPSASLPasswordMaps   []string // smtp_sasl_password_maps
}

// AddrOptions is how address tables are searched.
func (c *Config) AddrOptions() maps.AddrOptions {
	return maps.AddrOptions{Delims: c.RecipientDelimiter, IsLocal: c.IsLocalDomain}
}

// isVirtualAliasDomain reports a domain listed in virtual_alias_domains.
func (c *Config) isVirtualAliasDomain(domain string) bool {
	return containsFold(c.VirtualAliasDomains, domain)
}

// IsVirtualMailboxDomain reports a domain in virtual_mailbox_domains.
func (c *Config) IsVirtualMailboxDomain(domain string) bool {
	return containsFold(c.VirtualMailboxDomains, domain)
}

// dataDir is data_dir as the path templates put it in.
func (c *Config) dataDir() string { return strings.TrimSuffix(c.DataDir, "/") }

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}
