package rules

import (
	"path/filepath"
	"strings"

	"go.starlark.net/syntax"

	"github.com/larkpost/larkpost/stdlib/maps"
)

// policyTables are the lookup tables named in settings, opened once at
// load time; they reload themselves when their files change.
type policyTables struct {
	aliases         []*maps.Aliases
	virtualAlias    []maps.Table
	canonical       []maps.Table
	senderCanonical []maps.Table
	recipCanonical  []maps.Table
	relocated       []maps.Table
	virtualMailbox  []maps.Table
	transport       []maps.Table
	tlsPolicy       []maps.Table
	saslPasswords   []maps.Table
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
// stays in use.
func (p *Policy) logTable(msg string) {
	p.log.Warn("table: " + msg + "; keeping the last good version")
}

// openTables opens every table setting, reporting each failure at the
// setting's position with the table's own FILE:LINE diagnostics.
func (l *loader) openTables(p *Policy) {
	s := p.Settings
	open := func(setting string, specs []string) []maps.Table {
		var out []maps.Table
		for _, spec := range specs {
			t, err := maps.Open(spec, p.baseDir(), p.logTable)
			if err != nil {
				l.errorf(l.settingPos(p, setting), "%s: %s", setting, tableErr(err))
				continue
			}
			out = append(out, t)
		}
		return out
	}
	p.tables.virtualAlias = open("virtual_alias_maps", s.VirtualAliasMaps)
	p.tables.canonical = open("canonical_maps", s.CanonicalMaps)
	p.tables.senderCanonical = open("sender_canonical_maps", s.SenderCanonicalMaps)
	p.tables.recipCanonical = open("recipient_canonical_maps", s.RecipientCanonicalMaps)
	p.tables.relocated = open("relocated_maps", s.RelocatedMaps)
	p.tables.virtualMailbox = open("virtual_mailbox_maps", s.VirtualMailboxMaps)
	p.tables.transport = open("transport_maps", s.TransportMaps)
	p.tables.tlsPolicy = open("smtp_tls_policy_maps", s.SMTPTLSPolicyMaps)
	p.tables.saslPasswords = open("smtp_sasl_password_maps", s.SMTPSASLPasswordMaps)
	for _, path := range s.AliasMaps {
		path = strings.TrimPrefix(strings.TrimPrefix(path, "hash:"), "texthash:")
		if !filepath.IsAbs(path) {
			path = filepath.Join(p.baseDir(), path)
		}
		a, err := maps.OpenAliases(path, p.logTable)
		if err != nil {
			l.errorf(l.settingPos(p, "alias_maps"), "alias_maps: %s", tableErr(err))
			continue
		}
		p.tables.aliases = append(p.tables.aliases, a)
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

// addrOptions is how this policy searches address tables.
func (p *Policy) addrOptions() maps.AddrOptions {
	return maps.AddrOptions{Delims: p.Settings.RecipientDelimiter, IsLocal: p.Settings.IsLocalDomain}
}

// lookupAddress searches tables in order, the first hit wins (Postfix's
// "table1, table2" list semantics).
func (p *Policy) lookupAddress(tables []maps.Table, address string) (value, matched string, ok bool) {
	for _, t := range tables {
		if v, m, ok := maps.LookupAddress(t, address, p.addrOptions()); ok {
			return v, t.Name() + " " + m, true
		}
	}
	return "", "", false
}

// relocatedTo returns where a moved user went, from relocated_maps.
func (p *Policy) relocatedTo(address string) (string, bool) {
	v, _, ok := p.lookupAddress(p.tables.relocated, address)
	return v, ok
}

// isVirtualAliasDomain reports a domain listed in virtual_alias_domains.
func (p *Policy) isVirtualAliasDomain(domain string) bool {
	return containsFold(p.Settings.VirtualAliasDomains, domain)
}

// QueryResult is one table's answer for `larkpost map query`.
type QueryResult struct {
	Table   string
	Value   string
	Matched string // the key form that matched
}

// QuerySetting looks key up in the tables of a table setting
// (virtual_alias_maps, canonical_maps, relocated_maps, alias_maps, ...)
// exactly as the router does. ok is false when name is no table setting.
func (p *Policy) QuerySetting(name, key string) (res []QueryResult, ok bool) {
	var tables []maps.Table
	switch name {
	case "virtual_alias_maps":
		tables = p.tables.virtualAlias
	case "canonical_maps":
		tables = p.tables.canonical
	case "sender_canonical_maps":
		tables = p.tables.senderCanonical
	case "recipient_canonical_maps":
		tables = p.tables.recipCanonical
	case "relocated_maps":
		tables = p.tables.relocated
	case "virtual_mailbox_maps":
		tables = p.tables.virtualMailbox
	case "transport_maps":
		for _, t := range p.tables.transport {
			if v, m, found := maps.LookupTransport(t, key, p.addrOptions()); found {
				res = append(res, QueryResult{Table: t.Name(), Value: v, Matched: m})
			}
		}
		return res, true
	case "smtp_tls_policy_maps", "smtp_sasl_password_maps":
		ts := p.tables.tlsPolicy
		if name == "smtp_sasl_password_maps" {
			ts = p.tables.saslPasswords
		}
		for _, k := range nexthopKeys(key) {
			for _, t := range ts {
				if v, found := t.Get(k); found {
					if name == "smtp_sasl_password_maps" {
						if u, _, ok := strings.Cut(v, ":"); ok {
							v = u + ":********" // never print the password
						}
					}
					res = append(res, QueryResult{Table: t.Name(), Value: v, Matched: k})
				}
			}
		}
		return res, true
	case "alias_maps":
		user, _, _ := strings.Cut(key, "@")
		for _, a := range p.tables.aliases {
			if ts, found := a.Lookup(user); found {
				res = append(res, QueryResult{Table: a.Path(), Value: strings.Join(aliasTargets(ts), ", "), Matched: strings.ToLower(user)})
			}
		}
		return res, true
	default:
		return nil, false
	}
	for _, t := range tables {
		if v, m, found := maps.LookupAddress(t, key, p.addrOptions()); found {
			res = append(res, QueryResult{Table: t.Name(), Value: v, Matched: m})
		}
	}
	return res, true
}

// AddrOptions is how this policy searches address tables, for the CLI.
func (p *Policy) AddrOptions() maps.AddrOptions { return p.addrOptions() }

// BaseDir is where relative table paths are resolved.
func (p *Policy) BaseDir() string { return p.baseDir() }

// IsVirtualMailboxDomain reports a domain in virtual_mailbox_domains.
func (p *Policy) IsVirtualMailboxDomain(domain string) bool {
	return containsFold(p.Settings.VirtualMailboxDomains, domain)
}

// VirtualMailbox returns the mailbox path of a virtual mailbox user:
// virtual_mailbox_base joined with the table's value, which must stay
// inside the base. ok is false for an unknown user.
func (p *Policy) VirtualMailbox(address string) (path string, ok bool) {
	v, _, found := p.lookupAddress(p.tables.virtualMailbox, address)
	if !found {
		return "", false
	}
	v = strings.TrimSpace(v)
	base := strings.ReplaceAll(p.Settings.VirtualMailboxBase, "{data_dir}", strings.TrimSuffix(p.Settings.DataDir, "/"))
	clean := filepath.Clean("/" + v)
	if strings.Contains(v, "..") || clean == "/" {
		return "", false
	}
	path = filepath.Join(base, clean)
	if strings.HasSuffix(v, "/") {
		path += "/"
	}
	return path, true
}

// TLSLevel is the outbound TLS level for a nexthop: smtp_tls_policy_maps
// (the nexthop as written, then the bare domain), else smtp_tls_security_level.
func (p *Policy) TLSLevel(nexthop string) string {
	for _, key := range nexthopKeys(nexthop) {
		for _, t := range p.tables.tlsPolicy {
			if v, ok := t.Get(key); ok {
				// Postfix's verify, secure and dane all demand a checked
				// certificate; anything but none and may is read so, so a
				// typo can never weaken TLS.
				switch level := strings.ToLower(strings.Fields(v + " may")[0]); level {
				case "none", "may":
					return level
				}
				return "encrypt"
			}
		}
	}
	return p.Settings.SMTPTLSLevel
}

// SASLCredentials returns the smarthost login for a nexthop, looked up as
// Postfix's smtp_sasl_password_maps: "[host]:port", then "host".
func (p *Policy) SASLCredentials(nexthop string) (user, password string, ok bool) {
	for _, key := range nexthopKeys(nexthop) {
		for _, t := range p.tables.saslPasswords {
			if v, found := t.Get(key); found {
				user, password, ok = strings.Cut(strings.TrimSpace(v), ":")
				return user, password, ok
			}
		}
	}
	return "", "", false
}

// nexthopKeys are the forms a nexthop is looked up by: as written, then
// without brackets and port.
func nexthopKeys(n string) []string {
	keys := []string{n}
	h := n
	if strings.HasPrefix(h, "[") {
		if end := strings.IndexByte(h, ']'); end > 0 {
			h = h[1:end]
		}
	} else if i := strings.LastIndexByte(h, ':'); i > 0 {
		h = h[:i]
	}
	if h != n {
		keys = append(keys, h)
	}
	return keys
}
