package rules

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"go.starlark.net/syntax"

	"github.com/larkpost/larkpost/rules/postfix"
	"github.com/larkpost/larkpost/stdlib/maps"
)

// The lookup tables named in settings and what they mean are package
// postfix's; a Policy holds them opened (p.tables) and delegates to them.

// postfixConfig is what package postfix reads of the settings. It is built at
// each use from p.Settings, so that it always says what they say.
func (p *Policy) postfixConfig() *postfix.Config {
	// Asked for a dozen times a message; built once per Settings (a
	// rule test that swaps p.Settings gets a new one).
	if p.pfc == nil {
		return p.newPostfixConfig()
	}
	if c := p.pfc.Load(); c != nil && c.settings == p.Settings {
		return c.cfg
	}
	c := &postfixConfig{settings: p.Settings, cfg: p.newPostfixConfig()}
	p.pfc.Store(c)
	return c.cfg
}

// postfixConfig is the table code's view of one Settings.
type postfixConfig struct {
	settings *Settings
	cfg      *postfix.Config
}

func (p *Policy) newPostfixConfig() *postfix.Config {
	s := p.Settings
	return &postfix.Config{
		RecipientDelimiter:     s.RecipientDelimiter,
		IsLocalDomain:          s.IsLocalDomain,
		IsRelayDomain:          s.IsRelayDomain,
		Relayhost:              s.Relayhost,
		DataDir:                s.DataDir,
		MailboxPath:            s.MailboxPath,
		LocalRecipients:        s.LocalRecipients,
		ForwardPath:            s.ForwardPath,
		MasqueradeDomains:      s.MasqueradeDomains,
		VirtualAliasDomains:    s.VirtualAliasDomains,
		VirtualMailboxDomains:  s.VirtualMailboxDomains,
		VirtualMailboxBase:     s.VirtualMailboxBase,
		SMTPTLSLevel:           s.SMTPTLSLevel,
		AliasMaps:              s.AliasMaps,
		VirtualAliasMaps:       s.VirtualAliasMaps,
		CanonicalMaps:          s.CanonicalMaps,
		SenderCanonicalMaps:    s.SenderCanonicalMaps,
		RecipientCanonicalMaps: s.RecipientCanonicalMaps,
		RelocatedMaps:          s.RelocatedMaps,
		VirtualMailboxMaps:     s.VirtualMailboxMaps,
		VirtualUIDMaps:         s.VirtualUIDMaps,
		SenderLoginMaps:        s.SenderLoginMaps,
		VirtualGIDMaps:         s.VirtualGIDMaps,
		TransportMaps:          s.TransportMaps,
		SMTPTLSPolicyMaps:      s.SMTPTLSPolicyMaps,
		SMTPSASLPasswordMaps:   s.SMTPSASLPasswordMaps,
		Warn:                   func(msg string) { p.log.Warn("warning: " + msg) },
		ReadForward:            p.readFwd,
	}
}

// baseDir is where relative table paths in a config are resolved: the
// config file's directory, as admins write "access" next to main.cf.
func (p *Policy) baseDir() string {
	if p.File == DefaultConfigName {
		return "."
	}
	return filepath.Dir(p.File)
}

// logTable reports a table that broke on reload; the last good version
// stays in use. Warnings (a duplicate key, a database that does not
// answer) are logged as they are.
func (p *Policy) logTable(msg string) {
	if strings.Contains(msg, "warning: ") {
		p.log.Warn("table: " + msg)
		return
	}
	p.log.Warn("table: " + msg + "; keeping the last good version")
}

// openTables opens every table setting, reporting each failure at the
// setting's position with the table's own FILE:LINE diagnostics.
func (l *loader) openTables(p *Policy) {
	p.tables = postfix.Open(p.newPostfixConfig(), p.baseDir(), p.logTable, func(setting string, err error) {
		l.errorf(l.settingPos(p, setting), "%s: %s", setting, tableErr(err))
	})
	if s := p.Settings; s.VirtualMailboxOwner != "" && len(s.VirtualUIDMaps)+len(s.VirtualGIDMaps) > 0 {
		l.errorf(l.settingPos(p, "virtual_mailbox_owner"),
			"virtual_mailbox_owner: not used with virtual_uid_maps and virtual_gid_maps; set one or the other")
	}
}

// tableErr puts a table's diagnostics on one line each, under the setting.
func tableErr(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "\n\t")
}

func (l *loader) settingPos(p *Policy, name string) syntax.Position {
	if pos, ok := l.setPos[name]; ok {
		return pos
	}
	return syntax.MakePosition(&p.File, 1, 1)
}

// QueryResult is one table's answer for `larkpost map query`.
type QueryResult = postfix.QueryResult

// QuerySetting looks key up in the tables of a table setting
// (virtual_alias_maps, canonical_maps, relocated_maps, alias_maps, ...)
// exactly as the router does. ok is false when name is no table setting.
// A table that fails is logged, and the answers of the tables before it
// are returned; LookupSetting returns the failure.
func (p *Policy) QuerySetting(name, key string) (res []QueryResult, ok bool) {
	res, ok, err := p.LookupSetting(name, key)
	if err != nil {
		p.log.Warn("table: " + err.Error())
	}
	return res, ok
}

// LookupSetting is QuerySetting that returns a table's failure, a
// *maps.LookupError, as err.
func (p *Policy) LookupSetting(name, key string) (res []QueryResult, ok bool, err error) {
	res, ok, err = p.tables.Query(p.postfixConfig(), name, key)
	if err != nil {
		err = fmt.Errorf("%s: %w", name, err)
	}
	return res, ok, err
}

// AddrOptions is how this policy searches address tables, for the CLI.
func (p *Policy) AddrOptions() maps.AddrOptions { return p.postfixConfig().AddrOptions() }

// BaseDir is where relative table paths are resolved.
func (p *Policy) BaseDir() string { return p.baseDir() }

// IsVirtualMailboxDomain reports a domain in virtual_mailbox_domains.
func (p *Policy) IsVirtualMailboxDomain(domain string) bool {
	return p.postfixConfig().IsVirtualMailboxDomain(domain)
}

// VirtualMailbox returns the mailbox path of a virtual mailbox user:
// virtual_mailbox_base joined with the table's value, which must stay
// inside the base. ok is false for an unknown user; err is a table that
// failed (temporary).
func (p *Policy) VirtualMailbox(address string) (path string, ok bool, err error) {
	return p.tables.VirtualMailbox(p.postfixConfig(), address)
}

// VirtualOwner is who writes a virtual mailbox user's mailbox, as
// virtual(8) decides it: the uid and gid virtual_uid_maps and
// virtual_gid_maps give for the address (then @domain), or, when both are
// empty, virtual_mailbox_owner (an account's uid and primary group, or
// "UID:GID"). ok is false when none is set: the mailbox is the server's.
// err, a temporary failure, is a missing or bad entry, an unknown
// account, a uid below virtual_minimum_uid or gid 0.
func (p *Policy) VirtualOwner(address string) (uid, gid int, ok bool, err error) {
	s := p.Settings
	var from string
	switch {
	case len(s.VirtualUIDMaps)+len(s.VirtualGIDMaps) > 0:
		u, uWhere, g, gWhere, err := p.tables.VirtualIDs(p.postfixConfig(), address)
		if err != nil {
			return 0, 0, false, err
		}
		if uWhere == "" {
			return 0, 0, false, fmt.Errorf("no uid for %s in virtual_uid_maps", address)
		}
		if gWhere == "" {
			return 0, 0, false, fmt.Errorf("no gid for %s in virtual_gid_maps", address)
		}
		if uid, err = parseID(u, "uid"); err != nil {
			return 0, 0, false, fmt.Errorf("virtual_uid_maps: %s: %v", uWhere, err)
		}
		if gid, err = parseID(g, "gid"); err != nil {
			return 0, 0, false, fmt.Errorf("virtual_gid_maps: %s: %v", gWhere, err)
		}
		from = "virtual_uid_maps (" + uWhere + ")"
	case s.VirtualMailboxOwner != "":
		o := s.VirtualMailboxOwner
		if us, gs, numeric := strings.Cut(o, ":"); numeric {
			uid, _ = parseID(us, "uid") // checked when it was set
			gid, _ = parseID(gs, "gid")
		} else {
			acct, found := postfix.LookupAccount(o)
			if !found {
				return 0, 0, false, fmt.Errorf("virtual_mailbox_owner: no account %q", o)
			}
			uid, gid = acct.UID, acct.GID
		}
		from = "virtual_mailbox_owner " + strconv.Quote(o)
	default:
		return 0, 0, false, nil
	}
	if uid < s.VirtualMinimumUID {
		return 0, 0, false, fmt.Errorf("virtual mailbox owner uid %d of %s, from %s, is below virtual_minimum_uid (%d)", uid, address, from, s.VirtualMinimumUID)
	}
	if gid == 0 {
		return 0, 0, false, fmt.Errorf("virtual mailbox owner gid 0 of %s, from %s: root's group may not own virtual mailboxes", address, from)
	}
	return uid, gid, true, nil
}

// TLSLevel is the outbound TLS level for a nexthop: smtp_tls_policy_maps
// (the nexthop as written, then the bare domain), else smtp_tls_security_level.
// err is a table that failed (temporary).
func (p *Policy) TLSLevel(nexthop string) (string, error) {
	return p.tables.TLSLevel(p.postfixConfig(), nexthop)
}

// SASLCredentials returns the smarthost login for a nexthop, looked up as
// Postfix's smtp_sasl_password_maps: "[host]:port", then "host". err is
// a table that failed (temporary).
func (p *Policy) SASLCredentials(nexthop string) (user, password string, ok bool, err error) {
	return p.tables.SASLCredentials(nexthop)
}
