package tlspolicy

import "fmt"

// Level is the default outbound TLS policy, as Postfix's
// smtp_tls_security_level.
type Level string

// The levels. Postfix's dane-only, fingerprint and secure are not offered:
// per-destination pinning belongs to the routing script.
const (
	LevelNone    Level = "none"    // never STARTTLS
	LevelMay     Level = "may"     // STARTTLS if offered, certificate not checked, plaintext fallback
	LevelEncrypt Level = "encrypt" // TLS required, certificate not checked
	LevelDANE    Level = "dane"    // DANE when usable TLSA records exist, otherwise may
	LevelVerify  Level = "verify"  // TLS required, certificate valid for the MX host name
)

// ParseLevel parses a level; "" gives LevelMay, Postfix's usual choice for
// MX delivery.
func ParseLevel(s string) (Level, error) {
	switch l := Level(s); l {
	case "":
		return LevelMay, nil
	case LevelNone, LevelMay, LevelEncrypt, LevelDANE, LevelVerify:
		return l, nil
	}
	return "", fmt.Errorf("tls security level %q is not none, may, encrypt, dane or verify", s)
}
