package postfix

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/larkpost/larkpost/stdlib/addr"
	"github.com/larkpost/larkpost/stdlib/maps"
)

// This file is cleanup(8)'s default half: canonical rewriting by tables
// and masquerading, and recipient expansion by virtual aliases, aliases
// and .forward. The rewrite and expand hooks, origin and the recursion
// are package rules'.

// Rewrite returns the canonical form of a parsed address a by the tables:
// sender/recipient_canonical_maps, then canonical_maps, then
// masquerade_domains for senders. how says what rewrote it: the table and
// key that matched, "masquerade_domains", or "canonical tables" when
// nothing did. err is a table that failed: the address is then left as it
// was, and the caller must not pass it on as canonical, as Postfix's
// cleanup defers the message rather than keep an address a table would
// have rewritten.
func (t *Tables) Rewrite(c *Config, a string, sender bool) (out, how string, err error) {
	out = a
	specific, name := t.recipCanonical, "recipient_canonical_maps"
	if sender {
		specific, name = t.senderCanonical, "sender_canonical_maps"
	}
	how = "canonical tables"
	for i, tables := range [][]maps.Table{specific, t.canonical} {
		v, matched, ok, err := lookupAddress(c, tables, out)
		if err != nil {
			if i == 1 {
				name = "canonical_maps"
			}
			return a, "", fmt.Errorf("%s: %w", name, err)
		}
		if ok {
			if na, err := addr.Parse(strings.TrimSpace(v)); err == nil {
				out, how = na.String(), matched
			}
		}
	}
	if sender {
		if m := masquerade(c.MasqueradeDomains, out); m != out {
			out, how = m, "masquerade_domains"
		}
	}
	return out, how, nil
}

// RewritesHeaders reports whether the tables or masquerade_domains
// rewrite addresses at all, so that header addresses need a look.
func (t *Tables) RewritesHeaders(c *Config) bool {
	return len(t.canonical)+len(t.senderCanonical)+len(t.recipCanonical) > 0 ||
		len(c.MasqueradeDomains) > 0
}

// masquerade strips subdomains: user@host.example.com becomes
// user@example.com when example.com is in masquerade_domains.
func masquerade(domains []string, a string) string {
	at := strings.LastIndexByte(a, '@')
	if at < 0 {
		return a
	}
	domain := strings.ToLower(a[at+1:])
	for _, m := range domains {
		m = strings.ToLower(strings.TrimPrefix(m, "."))
		if strings.HasSuffix(domain, "."+m) {
			return a[:at+1] + m
		}
	}
	return a
}

// Expand finds what a expands to by default: virtual_alias_maps (any
// domain), then for local domains aliases and .forward. Targets are
// addresses, "/files" and "|commands"; nil when a is final. via names
// what expanded it: the table and key, the aliases file, the .forward.
//
// A virtual alias table that fails is an error: expanding without it
// would deliver to the alias itself, or bounce it as unknown.
func (t *Tables) Expand(c *Config, parsed addr.Address) (targets []string, via string, err error) {
	v, matched, ok, err := lookupAddress(c, t.virtualAlias, parsed.String())
	if err != nil {
		return nil, "", fmt.Errorf("virtual_alias_maps: %w", err)
	}
	if ok {
		return splitTargets(v), matched, nil
	}
	if !c.IsLocalDomain(parsed.Domain) {
		return nil, "", nil
	}
	user, ext, hasExt := addr.Split(strings.ToLower(parsed.Local), c.RecipientDelimiter)
	for _, al := range t.aliases {
		// local(8) tries user+ext first, then user.
		if hasExt {
			if ts, ok := al.Lookup(user + c.RecipientDelimiter[:1] + ext); ok {
				return aliasTargets(ts), al.Path(), nil
			}
		}
		if ts, ok := al.Lookup(user); ok {
			return aliasTargets(ts), al.Path(), nil
		}
	}
	if fp := c.ForwardPath; fp != "" {
		if box, ok := c.Mailbox(parsed); ok {
			path := strings.NewReplacer("{data_dir}", c.dataDir(), "{user}", box).Replace(fp)
			read := c.ReadForward
			if read == nil {
				read = readForward
			}
			if b, err := read(box, path); err != nil {
				if errors.Is(err, ErrTemporary) {
					// Ignoring it would deliver to the mailbox mail the
					// user sends elsewhere: try again later instead.
					return nil, "", fmt.Errorf("%s: %w", path, err)
				}
				if c.Warn != nil && !errors.Is(err, fs.ErrNotExist) {
					c.Warn(path + ": ignored: " + err.Error())
				}
			} else {
				var out []string
				for _, line := range strings.Split(string(b), "\n") {
					if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
						for _, target := range forwardTargets(line) {
							// "\user" in .forward means "and my own mailbox".
							if strings.HasPrefix(target, "\\") {
								target = parsed.String()
							}
							out = append(out, target)
						}
					}
				}
				if len(out) > 0 {
					return out, path, nil
				}
			}
		}
	}
	return nil, "", nil
}

// ErrTemporary is wrapped by a .forward reader's error when the file could
// not be read now (a split server's parent is unavailable): the expansion
// is retried, never done without the .forward.
var ErrTemporary = errors.New("temporarily unavailable")

// splitTargets splits a table value "a@x, b@y" into its addresses.
func splitTargets(v string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
		if f != "" {
			out = append(out, f)
		}
	}
	return out
}

// aliasTargets renders aliases(5) targets the way expand handles them.
func aliasTargets(ts []maps.Target) []string {
	out := make([]string, 0, len(ts))
	for _, t := range ts {
		switch t.Kind {
		case maps.TargetPipe:
			out = append(out, "|"+t.Value)
		default:
			out = append(out, t.Value)
		}
	}
	return out
}

// forwardTargets reads one .forward line: a quoted target or a pipe is the
// whole line ("|/usr/bin/procmail -f-"); otherwise addresses separated by
// commas or spaces.
func forwardTargets(line string) []string {
	if strings.HasPrefix(line, "\"") && strings.HasSuffix(line, "\"") && len(line) > 1 {
		return []string{line[1 : len(line)-1]}
	}
	if strings.HasPrefix(line, "|") {
		return []string{line}
	}
	return splitTargets(line)
}
