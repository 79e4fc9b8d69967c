package dnsbl

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

const (
	// maxName is the longest domain name in presentation form, without
	// the trailing dot (RFC 1035 section 2.3.4: 255 octets on the wire).
	maxName = 253
	// maxZone leaves room in front of a zone for the longest prefix, the
	// 32 nibbles of an IPv6 address and their dots (64 characters), so
	// that every query name of a valid zone is a valid name.
	maxZone = maxName - 64
)

// NormalizeZone checks that zone is a DNS name a list can be asked under
// and returns it lowercased, without a trailing dot.
func NormalizeZone(zone string) (string, error) {
	z, err := normalizeZone(zone)
	if err != nil {
		return "", fmt.Errorf("invalid zone %q: %w", zone, err)
	}
	return z, nil
}

func normalizeZone(zone string) (string, error) {
	z := strings.ToLower(strings.TrimSuffix(zone, "."))
	if err := checkName(z); err != nil {
		return "", err
	}
	if len(z) > maxZone {
		return "", fmt.Errorf("longer than %d characters", maxZone)
	}
	return z, nil
}

// checkName accepts names of letters, digits, hyphens and underscores
// (some private zones use them) with labels of 1 to 63 characters: what
// can be asked without quoting, and nothing a client could use to reach
// another zone.
func checkName(name string) error {
	if name == "" {
		return errors.New("empty name")
	}
	if len(name) > maxName {
		return fmt.Errorf("longer than %d characters", maxName)
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" {
			return errors.New("empty label")
		}
		if len(label) > 63 {
			return errors.New("label longer than 63 characters")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("character %q not allowed", c)
			}
		}
	}
	return nil
}

// QueryName returns the name under which zone lists ip: the four octets
// of an IPv4 address reversed ("2.0.0.192.zen.spamhaus.org"), the 32
// nibbles of an IPv6 address reversed, as Spamhaus documents for its
// IPv6 lists. An IPv4-mapped IPv6 address is asked as IPv4. zone must be
// normalized (NormalizeZone).
func QueryName(ip netip.Addr, zone string) string {
	ip = ip.Unmap()
	var b strings.Builder
	if ip.Is4() {
		a := ip.As4()
		fmt.Fprintf(&b, "%d.%d.%d.%d.", a[3], a[2], a[1], a[0])
	} else {
		const hex = "0123456789abcdef"
		a := ip.As16()
		for i := len(a) - 1; i >= 0; i-- {
			b.WriteByte(hex[a[i]&0xf])
			b.WriteByte('.')
			b.WriteByte(hex[a[i]>>4])
			b.WriteByte('.')
		}
	}
	b.WriteString(zone)
	return b.String()
}

// DomainName returns the name under which zone lists domain (an RHSBL
// such as dbl.spamhaus.org): "example.com.dbl.spamhaus.org". domain
// comes from the client (a HELO name, a sender's domain), so anything
// that is not a host name in ASCII is an error, not a query (an
// internationalized name must be given in its A-label form,
// "xn--..."). zone must be normalized.
func DomainName(domain, zone string) (string, error) {
	d := strings.ToLower(strings.TrimSuffix(domain, "."))
	if err := checkName(d); err != nil {
		return "", fmt.Errorf("not a domain name: %q: %w", domain, err)
	}
	name := d + "." + zone
	if len(name) > maxName {
		return "", fmt.Errorf("%q under %s is longer than %d characters", domain, zone, maxName)
	}
	return name, nil
}
