package postfix

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/larkpost/larkpost/stdlib/maps"
)

// Tables are the lookup tables named in settings, opened once at load
// time; they reload themselves when their files change. The zero value
// has no tables.
type Tables struct {
	aliases         []*maps.Aliases
	virtualAlias    []maps.Table
	canonical       []maps.Table
	senderCanonical []maps.Table
	recipCanonical  []maps.Table
	relocated       []maps.Table
	virtualMailbox  []maps.Table
	virtualUID      []maps.Table
	virtualGID      []maps.Table
	senderLogin     []maps.Table
	transport       []maps.Table
	tlsPolicy       []maps.Table
	saslPasswords   []maps.Table
}

// Open opens every table setting of c. Relative paths are resolved
// against baseDir; logf gets tables that break on reload. A table that
// does not open is left out and reported to fail with the setting's name,
// once per table, in the order of the settings.
func Open(c *Config, baseDir string, logf func(string), fail func(setting string, err error)) *Tables {
	t := &Tables{}
	open := func(setting string, specs []string) []maps.Table {
		var out []maps.Table
		for _, spec := range specs {
			tbl, err := maps.Open(spec, baseDir, logf)
			if err != nil {
				fail(setting, err)
				continue
			}
			out = append(out, tbl)
		}
		return out
	}
	t.virtualAlias = open("virtual_alias_maps", c.VirtualAliasMaps)
	t.canonical = open("canonical_maps", c.CanonicalMaps)
	t.senderCanonical = open("sender_canonical_maps", c.SenderCanonicalMaps)
	t.recipCanonical = open("recipient_canonical_maps", c.RecipientCanonicalMaps)
	t.relocated = open("relocated_maps", c.RelocatedMaps)
	t.virtualMailbox = open("virtual_mailbox_maps", c.VirtualMailboxMaps)
	t.virtualUID = open("virtual_uid_maps", c.VirtualUIDMaps)
	t.virtualGID = open("virtual_gid_maps", c.VirtualGIDMaps)
	t.senderLogin = open("smtpd_sender_login_maps", c.SenderLoginMaps)
	t.transport = open("transport_maps", c.TransportMaps)
	t.tlsPolicy = open("smtp_tls_policy_maps", c.SMTPTLSPolicyMaps)
	t.saslPasswords = open("smtp_sasl_password_maps", c.SMTPSASLPasswordMaps)
	for _, path := range c.AliasMaps {
		path = strings.TrimPrefix(strings.TrimPrefix(path, "hash:"), "texthash:")
		if !filepath.IsAbs(path) {
			path = filepath.Join(baseDir, path)
		}
		a, err := maps.OpenAliases(path, logf)
		if err != nil {
			fail("alias_maps", err)
			continue
		}
		t.aliases = append(t.aliases, a)
	}
	return t
}

// lookupAddress searches tables in order, the first hit wins (Postfix's
// "table1, table2" list semantics). A table whose lookup fails stops the
// search with the error, a *maps.LookupError naming the table: the
// tables after it must not answer for it.
func lookupAddress(c *Config, tables []maps.Table, address string) (value, matched string, ok bool, err error) {
	for _, t := range tables {
		v, m, ok, err := maps.LookupAddress(t, address, c.AddrOptions())
		if err != nil {
			return "", "", false, err
		}
		if ok {
			return v, t.Name() + " " + m, true, nil
		}
	}
	return "", "", false, nil
}

// lookupKeys looks each key up in each table, the keys in order, and
// returns the first hit: the nexthop searches of smtp_tls_policy_maps
// and smtp_sasl_password_maps.
func lookupKeys(tables []maps.Table, keys []string) (value, key string, t maps.Table, err error) {
	for _, k := range keys {
		for _, t := range tables {
			v, ok, err := maps.Lookup(t, k)
			if err != nil {
				return "", "", nil, err
			}
			if ok {
				return v, k, t, nil
			}
		}
	}
	return "", "", nil, nil
}

// relocatedTo returns where a moved user went, from relocated_maps.
func (t *Tables) relocatedTo(c *Config, address string) (string, bool, error) {
	v, _, ok, err := lookupAddress(c, t.relocated, address)
	return v, ok, err
}

// QueryResult is one table's answer for `larkpost map query`.
type QueryResult struct {
	Table   string
	Value   string
	Matched string // the key form that matched
}

// Query looks key up in the tables of a table setting
// (virtual_alias_maps, canonical_maps, relocated_maps, alias_maps, ...)
// exactly as the router does. ok is false when name is no table setting.
// err is a table whose lookup failed; res has the answers of the tables
// before it.
func (t *Tables) Query(c *Config, name, key string) (res []QueryResult, ok bool, err error) {
	var tables []maps.Table
	switch name {
	case "virtual_alias_maps":
		tables = t.virtualAlias
	case "canonical_maps":
		tables = t.canonical
	case "sender_canonical_maps":
		tables = t.senderCanonical
	case "recipient_canonical_maps":
		tables = t.recipCanonical
	case "relocated_maps":
		tables = t.relocated
	case "virtual_mailbox_maps":
		tables = t.virtualMailbox
	case "virtual_uid_maps":
		tables = t.virtualUID
	case "virtual_gid_maps":
		tables = t.virtualGID
	case "smtpd_sender_login_maps":
		tables = t.senderLogin
	case "transport_maps":
		for _, tbl := range t.transport {
			v, m, found, err := maps.LookupTransport(tbl, key, c.AddrOptions())
			if err != nil {
				return res, true, err
			}
			if found {
				res = append(res, QueryResult{Table: tbl.Name(), Value: v, Matched: m})
			}
		}
		return res, true, nil
	case "smtp_tls_policy_maps", "smtp_sasl_password_maps":
		ts := t.tlsPolicy
		if name == "smtp_sasl_password_maps" {
			ts = t.saslPasswords
		}
		for _, k := range nexthopKeys(key) {
			for _, tbl := range ts {
				v, found, err := maps.Lookup(tbl, k)
				if err != nil {
					return res, true, err
				}
				if found {
					if name == "smtp_sasl_password_maps" {
						if u, _, ok := strings.Cut(v, ":"); ok {
							v = u + ":********" // never print the password
						}
					}
					res = append(res, QueryResult{Table: tbl.Name(), Value: v, Matched: k})
				}
			}
		}
		return res, true, nil
	case "alias_maps":
		user, _, _ := strings.Cut(key, "@")
		for _, a := range t.aliases {
			if ts, found := a.Lookup(user); found {
				res = append(res, QueryResult{Table: a.Path(), Value: strings.Join(aliasTargets(ts), ", "), Matched: strings.ToLower(user)})
			}
		}
		return res, true, nil
	default:
		return nil, false, nil
	}
	for _, tbl := range tables {
		v, m, found, err := maps.LookupAddress(tbl, key, c.AddrOptions())
		if err != nil {
			return res, true, err
		}
		if found {
			res = append(res, QueryResult{Table: tbl.Name(), Value: v, Matched: m})
		}
	}
	return res, true, nil
}

// VirtualMailbox returns the mailbox path of a virtual mailbox user:
// virtual_mailbox_base joined with the table's value, which must stay
// inside the base. ok is false for an unknown user; err is a table that
// failed, which must not be taken for an unknown user.
func (t *Tables) VirtualMailbox(c *Config, address string) (path string, ok bool, err error) {
	v, _, found, err := lookupAddress(c, t.virtualMailbox, address)
	if err != nil {
		return "", false, fmt.Errorf("virtual_mailbox_maps: %w", err)
	}
	if !found {
		return "", false, nil
	}
	v = strings.TrimSpace(v)
	base := strings.ReplaceAll(c.VirtualMailboxBase, "{data_dir}", c.dataDir())
	clean := filepath.Clean("/" + v)
	if strings.Contains(v, "..") || clean == "/" {
		return "", false, nil
	}
	path = filepath.Join(base, clean)
	if strings.HasSuffix(v, "/") {
		path += "/"
	}
	return path, true, nil
}

// VirtualIDs looks a virtual mailbox user up in virtual_uid_maps and
// virtual_gid_maps as virtual(8) does (the address, then @domain): each
// value as written, and where it was found ("TABLE KEY"); a missing
// value is "" with where "". err is a table that failed.
func (t *Tables) VirtualIDs(c *Config, address string) (uid, uidWhere, gid, gidWhere string, err error) {
	if uid, uidWhere, _, err = lookupAddress(c, t.virtualUID, address); err != nil {
		return "", "", "", "", fmt.Errorf("virtual_uid_maps: %w", err)
	}
	if gid, gidWhere, _, err = lookupAddress(c, t.virtualGID, address); err != nil {
		return "", "", "", "", fmt.Errorf("virtual_gid_maps: %w", err)
	}
	return strings.TrimSpace(uid), uidWhere, strings.TrimSpace(gid), gidWhere, nil
}

// TLSLevel is the outbound TLS level for a nexthop: smtp_tls_policy_maps
// (the nexthop as written, then the bare domain), else smtp_tls_security_level.
// A table that fails is an error, never the default level: that could
// send in the clear what the table demands be encrypted.
func (t *Tables) TLSLevel(c *Config, nexthop string) (string, error) {
	v, _, tbl, err := lookupKeys(t.tlsPolicy, nexthopKeys(nexthop))
	switch {
	case err != nil:
		return "", fmt.Errorf("smtp_tls_policy_maps: %w", err)
	case tbl == nil:
		return c.SMTPTLSLevel, nil
	}
	// Postfix's verify, secure and dane all demand a checked
	// certificate; anything but none and may is read so, so a
	// typo can never weaken TLS.
	switch level := strings.ToLower(strings.Fields(v + " may")[0]); level {
	case "none", "may", "dane":
		// dane: TLSA records decide, else may, as Postfix.
		return level, nil
	}
	return "encrypt", nil
}

// SASLCredentials returns the smarthost login for a nexthop, looked up as
// Postfix's smtp_sasl_password_maps: "[host]:port", then "host". err is a
// table that failed: sending without the login would be refused or, worse,
// relayed differently.
func (t *Tables) SASLCredentials(nexthop string) (user, password string, ok bool, err error) {
	v, _, tbl, err := lookupKeys(t.saslPasswords, nexthopKeys(nexthop))
	if err != nil {
		return "", "", false, fmt.Errorf("smtp_sasl_password_maps: %w", err)
	}
	if tbl == nil {
		return "", "", false, nil
	}
	user, password, ok = strings.Cut(strings.TrimSpace(v), ":")
	return user, password, ok, nil
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

// LookupSenderLogins looks a sender address up in smtpd_sender_login_maps
// as Postfix does (the address, then @domain): the logins that own it (a
// comma or space separated list) and where it was found; found is false
// when no table has the address, and err is a table that failed.
func (t *Tables) LookupSenderLogins(c *Config, address string) (logins []string, where string, found bool, err error) {
	v, where, found, err := lookupAddress(c, t.senderLogin, address)
	if err != nil {
		return nil, "", false, fmt.Errorf("smtpd_sender_login_maps: %w", err)
	}
	if !found {
		return nil, "", false, nil
	}
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }), where, true, nil
}
