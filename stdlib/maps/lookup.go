package maps

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/larkpost/larkpost/stdlib/addr"
)

// AddrOptions says how an address table is searched.
type AddrOptions struct {
	Delims  string                   // recipient_delimiter characters, "" = none
	IsLocal func(domain string) bool // for the bare "user" forms: only when the domain is local ($myorigin/$mydestination), nil = never
}

// nullKey is what Postfix looks up for the null sender
// (smtpd_null_access_lookup_key), because an empty key is not possible
// with every table type.
const nullKey = "<>"

// try looks the keys up in order and returns the first hit. A key whose
// lookup fails ends the search with the error, as in Postfix's
// maps_find(): trying the next, less specific key instead could find
// "@domain" for a user whose own entry is only unreachable.
func try(t Table, keys ...string) (value, matched string, ok bool, err error) {
	for _, k := range keys {
		v, ok, err := Lookup(t, k)
		if err != nil {
			return "", "", false, err
		}
		if ok {
			return v, k, true, nil
		}
	}
	return "", "", false, nil
}

// once is how pattern tables are searched: the whole input, once.
func once(t Table, key string) (string, string, bool, error) {
	v, ok, err := Lookup(t, key)
	if err != nil || !ok {
		return "", "", false, err
	}
	return v, key, true, nil
}

// cleanAddress strips what surrounds an address in SMTP and headers.
func cleanAddress(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '<' && s[len(s)-1] == '>' {
		s = strings.TrimSpace(s[1 : len(s)-1])
	}
	return s
}

// addrParts is an address split for table lookups, in lower case, with
// the local part quoted as in the address's external form, because that
// is how an admin writes such an address in a table: "a,b"@example.com.
type addrParts struct {
	local  string // user+ext
	user   string // user, when there is an extension
	domain string // "" when the address has none
	hasAt  bool
	hasExt bool
}

func splitAddress(s, delims string) addrParts {
	var p addrParts
	if a, err := addr.Parse(s); err == nil && !a.IsNull() {
		p.local, p.domain, p.hasAt = a.Local, a.Domain, true
	} else if at := strings.LastIndexByte(s, '@'); at >= 0 {
		// Tables must still work for addresses addr.Parse rejects:
		// an access table is often exactly what should reject them.
		p.local, p.domain, p.hasAt = s[:at], s[at+1:], true
		if len(p.local) >= 2 && p.local[0] == '"' && p.local[len(p.local)-1] == '"' {
			p.local = p.local[1 : len(p.local)-1]
		}
	} else {
		p.local = s
	}
	user, _, found := addr.Split(p.local, delims)
	if found {
		p.user, p.hasExt = lowerKey(quoteLocal(user)), true
	}
	p.local = lowerKey(quoteLocal(p.local))
	p.domain = lowerKey(p.domain)
	return p
}

// quoteLocal quotes a local part that is not a dot-atom, as
// addr.Address.String does.
func quoteLocal(local string) string {
	if local == "" {
		return ""
	}
	s := addr.Address{Local: local, Domain: "x"}.String()
	return s[:len(s)-2]
}

// LookupAddress searches an address the way canonical(5), virtual(5) and relocated(5) do:
//
//	user+ext@domain, user@domain, (if IsLocal(domain)) user+ext, user, then @domain.
//
// (with delims "": user@domain, user, @domain). Regexp/cidr tables are queried once with the whole address.
//
// An address without a domain is looked up as user+ext and then user,
// because Postfix would have qualified it with $myorigin, a local domain.
// The null address finds nothing: Postfix does not rewrite it.
func LookupAddress(t Table, address string, o AddrOptions) (value, matched string, ok bool, err error) {
	address = cleanAddress(address)
	if address == "" {
		return "", "", false, nil
	}
	if isPattern(t) {
		return once(t, address)
	}
	p := splitAddress(address, o.Delims)
	keys := make([]string, 0, 5)
	if p.hasAt {
		keys = append(keys, p.local+"@"+p.domain)
		if p.hasExt {
			keys = append(keys, p.user+"@"+p.domain)
		}
	}
	if !p.hasAt || o.IsLocal != nil && o.IsLocal(p.domain) {
		keys = append(keys, p.local)
		if p.hasExt {
			keys = append(keys, p.user)
		}
	}
	if p.hasAt {
		keys = append(keys, "@"+p.domain)
	}
	return try(t, keys...)
}

// LookupAccess searches like access(5) for an envelope address (check_sender_access / check_recipient_access):
//
//	user+ext@domain, user@domain, domain, then parent domains (with the parent_domain_matches_subdomains
//	behaviour: "example.com" also matches "sub.example.com"; and ".example.com" matches subdomains only),
//	then user+ext@, user@.   For the null sender Postfix looks up "<>" (smtpd_null_access_lookup_key): do that.
//
// The domain and its parents are searched as LookupDomain does. An
// address without a domain is looked up only as user+ext@ and user@. An
// address literal domain such as [192.0.2.1] is looked up as it is, with
// no parents. Regexp and cidr tables are queried once with the whole
// address ("<>" for the null sender).
func LookupAccess(t Table, address string, o AddrOptions) (value, matched string, ok bool, err error) {
	address = cleanAddress(address)
	if address == "" || address == nullKey {
		return once(t, nullKey)
	}
	if isPattern(t) {
		return once(t, address)
	}
	p := splitAddress(address, o.Delims)
	keys := make([]string, 0, 12)
	if p.hasAt {
		keys = append(keys, p.local+"@"+p.domain)
		if p.hasExt {
			keys = append(keys, p.user+"@"+p.domain)
		}
		keys = domainKeys(keys, p.domain)
	}
	keys = append(keys, p.local+"@")
	if p.hasExt {
		keys = append(keys, p.user+"@")
	}
	return try(t, keys...)
}

// normalizeName lower-cases a host or domain name and drops the trailing
// dot HELO names may have and the leading dot of a pattern-like input.
func normalizeName(name string) string {
	name = strings.TrimSpace(name)
	name = strings.TrimSuffix(name, ".")
	name = strings.TrimPrefix(name, ".")
	return lowerKey(name)
}

// domainKeys appends the forms LookupDomain tries for name.
func domainKeys(keys []string, name string) []string {
	if name == "" {
		return keys
	}
	keys = append(keys, name)
	// Postfix applies no subdomain magic to numeric host names, and
	// the "parents" of an address literal would be nonsense.
	if name[0] == '[' {
		return keys
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return keys
	}
	for rest := name; ; {
		i := strings.IndexByte(rest, '.')
		if i < 0 || i == len(rest)-1 {
			return keys
		}
		rest = rest[i+1:]
		keys = append(keys, "."+rest, rest)
	}
}

// LookupDomain searches a host or domain name like access(5)/transport(5): the name, then each parent
// (as ".parent" first and then "parent" — transport(5): ".example.com" matches subdomains; with
// parent_domain_matches_subdomains "example.com" matches them too — document exactly which forms you try and why).
//
// For "mail.sub.example.com" the keys are, in this order:
//
//	mail.sub.example.com
//	.sub.example.com   sub.example.com
//	.example.com       example.com
//	.com               com
//
// Postfix tries either the ".parent" or the "parent" forms, depending on
// whether the table's setting is listed in parent_domain_matches_subdomains
// (smtpd_access_maps is by default, transport_maps is not). Trying both
// makes a table written for either style work: "example.com" matches its
// subdomains as in a default access table, and ".example.com" matches
// only subdomains, which a default access table would ignore. ".parent"
// comes first because it is the more specific entry. An IP address or
// address literal is looked up only as it is, as Postfix does.
func LookupDomain(t Table, name string) (value, matched string, ok bool, err error) {
	name = normalizeName(name)
	if name == "" {
		return "", "", false, nil
	}
	if isPattern(t) {
		return once(t, name)
	}
	return try(t, domainKeys(make([]string, 0, 8), name)...)
}

// LookupTransport searches like transport(5): the full address user@domain (and user+ext@domain first),
// then the domain, then parent domains as ".parent", then "*".
//
// Here "example.com" does not match subdomains, since transport_maps is
// not in Postfix's default parent_domain_matches_subdomains. An address
// without a domain, or the null address, is looked up as it is and then
// as "*". Regexp and cidr tables are queried once with the whole address.
func LookupTransport(t Table, address string, o AddrOptions) (value, matched string, ok bool, err error) {
	address = cleanAddress(address)
	if isPattern(t) {
		return once(t, address)
	}
	keys := make([]string, 0, 8)
	if address != "" {
		p := splitAddress(address, o.Delims)
		if !p.hasAt {
			keys = append(keys, p.local)
		} else {
			keys = append(keys, p.local+"@"+p.domain)
			if p.hasExt {
				keys = append(keys, p.user+"@"+p.domain)
			}
			if d := normalizeName(p.domain); d != "" {
				keys = append(keys, d)
				// Like Postfix's find_transport: from each name, the
				// next key starts at its next dot.
				for name := d; d[0] != '['; {
					i := strings.IndexByte(name[1:], '.')
					if i < 0 {
						break
					}
					name = name[i+1:]
					keys = append(keys, name)
				}
			}
		}
	}
	keys = append(keys, "*")
	return try(t, keys...)
}

// cleanIP strips brackets and the IPv6: tag of an address literal.
func cleanIP(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' {
		s = s[1 : len(s)-1]
	}
	if len(s) > 5 && strings.EqualFold(s[:5], "IPv6:") {
		s = s[5:]
	}
	return s
}

// parseIP parses a client address as LookupIP accepts it, in the form
// Postfix's SMTP server uses: IPv4-mapped IPv6 addresses become IPv4.
func parseIP(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(cleanIP(s))
	if err != nil {
		return netip.Addr{}, false
	}
	return a.WithZone("").Unmap(), true
}

// LookupIP searches a client address like access(5): "1.2.3.4", "1.2.3", "1.2", "1" for IPv4
// (IPv6: the full address, then shorter ":"-separated prefixes as Postfix does); cidr/regexp tables: once.
//
// The address is first put in the form Postfix prints: brackets and an
// "IPv6:" tag removed, IPv4-mapped IPv6 unmapped, IPv6 compressed in
// lower case. Like Postfix, the IPv6 prefixes are made by cutting at the
// last ":" again and again, so 2001:db8::1 is looked up as 2001:db8::1,
// 2001:db8:, 2001:db8 and 2001; a table entry must be written the same
// way. Input that is not an IP address is looked up once as it is.
func LookupIP(t Table, ip string) (value, matched string, ok bool, err error) {
	a, valid := parseIP(ip)
	if !valid {
		s := strings.TrimSpace(ip)
		if s == "" {
			return "", "", false, nil
		}
		return once(t, s)
	}
	s := a.String()
	if isPattern(t) {
		return once(t, s)
	}
	delim := byte('.')
	if a.Is6() {
		delim = ':'
	}
	keys := make([]string, 0, 8)
	for s != "" {
		keys = append(keys, s)
		i := strings.LastIndexByte(s, delim)
		if i < 0 {
			break
		}
		s = s[:i]
	}
	return try(t, keys...)
}

// Query modes, the ways `larkpost map query` and table.match can search.
const (
	ModeGet       = "get"       // Table.Get, exactly as postmap -q does
	ModeAddress   = "address"   // LookupAddress
	ModeAccess    = "access"    // LookupAccess
	ModeAccessIP  = "access-ip" // LookupIP
	ModeDomain    = "domain"    // LookupDomain
	ModeTransport = "transport" // LookupTransport
)

// QueryModes returns the modes QueryAs accepts, besides "auto".
func QueryModes() []string {
	return []string{ModeGet, ModeAddress, ModeAccess, ModeAccessIP, ModeDomain, ModeTransport}
}

// Query looks key up in t with the search that suits its shape, for
// `larkpost map query TABLE KEY`: an address (with "@") as canonical(5)
// and virtual(5) do (how = "address"), the null sender "" or "<>" as
// access(5) does ("access"), an IP address or address literal as a client
// address in access(5) ("access-ip"), and anything else as a domain
// ("domain"). matched is the key form that matched.
//
// A lookup that fails is reported as not found; use QueryAs with mode
// "auto" to tell the two apart.
func Query(t Table, key string, o AddrOptions) (value, matched, how string, ok bool) {
	how = QueryMode(key)
	value, matched, ok, _ = QueryAs(t, how, key, o)
	return value, matched, how, ok
}

// QueryMode returns the mode Query picks for key.
func QueryMode(key string) string {
	k := cleanAddress(key)
	switch {
	case k == "" || k == nullKey:
		return ModeAccess
	case strings.Contains(k, "@"):
		return ModeAddress
	}
	if _, ok := parseIP(k); ok {
		return ModeAccessIP
	}
	return ModeDomain
}

// QueryAs is Query with an explicit mode, one of QueryModes or "auto"
// (or "ip", another name for "access-ip"). err is an unknown mode or a
// lookup that failed (a *LookupError).
func QueryAs(t Table, mode, key string, o AddrOptions) (value, matched string, ok bool, err error) {
	switch mode {
	case "auto", "":
		return QueryAs(t, QueryMode(key), key, o)
	case ModeGet:
		v, ok, err := Lookup(t, key)
		if err != nil || !ok {
			return "", "", false, err
		}
		if !isPattern(t) {
			key = lowerKey(key)
		}
		return v, key, true, nil
	case ModeAddress:
		return LookupAddress(t, key, o)
	case ModeAccess:
		return LookupAccess(t, key, o)
	case ModeAccessIP, "ip":
		return LookupIP(t, key)
	case ModeDomain:
		return LookupDomain(t, key)
	case ModeTransport:
		return LookupTransport(t, key, o)
	}
	return "", "", false, fmt.Errorf("unknown query mode %q (want auto, %s)", mode, strings.Join(QueryModes(), ", "))
}
