package tlspolicy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Mode is an MTA-STS policy mode (RFC 8461 section 5).
type Mode string

// The policy modes. ModeNone is how a domain withdraws a policy: it is
// cached like the others so that a stale enforce policy is not used again.
const (
	ModeEnforce Mode = "enforce"
	ModeTesting Mode = "testing"
	ModeNone    Mode = "none"
)

// MaxMaxAge is the largest max_age RFC 8461 allows (about one year).
const MaxMaxAge = 31557600 * time.Second

// Policy is a parsed MTA-STS policy.
type Policy struct {
	Mode   Mode
	MX     []string      // patterns, lower-case, without trailing dot; "*.example.com" matches one label
	MaxAge time.Duration // whole seconds, at most MaxMaxAge
}

var (
	errPolicyVersion = errors.New("mta-sts policy: version is not STSv1")
	errPolicyMode    = errors.New("mta-sts policy: mode is not enforce, testing or none")
	errPolicyMaxAge  = errors.New("mta-sts policy: max_age is not a number of seconds up to 31557600")
	errPolicyNoMX    = errors.New("mta-sts policy: no mx field")
	errPolicyMissing = errors.New("mta-sts policy: version, mode and max_age are required")
)

// ParsePolicy parses the body of an mta-sts.txt file. Lines end in LF or
// CRLF; unknown keys are ignored (they are extensions); when a key repeats,
// the first value counts, except mx, which accumulates. Anything else is an
// error rather than a guess, because a misread enforce policy would either
// block mail or silently drop protection.
func ParsePolicy(b []byte) (*Policy, error) {
	var (
		p                          Policy
		seenVer, seenMode, seenAge bool
	)
	for n, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if strings.TrimSpace(line) == "" {
			// A trailing newline, or a blank line some editors leave.
			continue
		}
		key, value, ok := strings.Cut(line, ":")
		if !ok || key == "" || !isFieldKey(key) {
			return nil, fmt.Errorf("mta-sts policy: line %d: not a key: value pair", n+1)
		}
		value = strings.Trim(value, " \t")
		switch key {
		case "version":
			if seenVer {
				continue
			}
			seenVer = true
			if value != "STSv1" {
				return nil, errPolicyVersion
			}
		case "mode":
			if seenMode {
				continue
			}
			seenMode = true
			switch m := Mode(value); m {
			case ModeEnforce, ModeTesting, ModeNone:
				p.Mode = m
			default:
				return nil, errPolicyMode
			}
		case "max_age":
			if seenAge {
				continue
			}
			seenAge = true
			// The grammar is 1*10DIGIT: no sign, no spaces, no hex.
			if value == "" || len(value) > 10 || strings.TrimLeft(value, "0123456789") != "" {
				return nil, errPolicyMaxAge
			}
			secs, err := strconv.ParseInt(value, 10, 64)
			if err != nil || time.Duration(secs)*time.Second > MaxMaxAge {
				return nil, errPolicyMaxAge
			}
			p.MaxAge = time.Duration(secs) * time.Second
		case "mx":
			pat := strings.ToLower(strings.TrimSuffix(value, "."))
			if !validMXPattern(pat) {
				return nil, fmt.Errorf("mta-sts policy: line %d: invalid mx pattern %q", n+1, value)
			}
			p.MX = append(p.MX, pat)
		}
	}
	if !seenVer || !seenMode || !seenAge {
		return nil, errPolicyMissing
	}
	if p.Mode != ModeNone && len(p.MX) == 0 {
		return nil, errPolicyNoMX
	}
	return &p, nil
}

// isFieldKey follows RFC 8461's field-name: 1*32(ALPHA / DIGIT / "_" / "-"
// / "."), which keeps a stray HTML page from parsing as a policy.
func isFieldKey(k string) bool {
	if len(k) > 32 {
		return false
	}
	for _, c := range []byte(k) {
		if !isAlnum(c) && c != '_' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// validMXPattern accepts a host name, optionally with a leading "*."
// label. The wildcard anywhere else is not in the grammar and would make
// MatchMX ambiguous.
func validMXPattern(p string) bool {
	return validHostname(strings.TrimPrefix(p, "*."))
}

// validHostname checks LDH labels (underscores too, as real MX names have
// them) without the trailing dot, at least two labels: a single label in a
// policy or a URL is never a mail host on the Internet.
func validHostname(h string) bool {
	if len(h) == 0 || len(h) > 253 || !strings.Contains(h, ".") {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !isAlnum(c) && c != '-' && c != '_' {
				return false
			}
		}
	}
	return true
}

// String renders p in the mta-sts.txt format; ParsePolicy(p.String())
// gives p back, which is how a caller may store it.
func (p *Policy) String() string {
	var b strings.Builder
	b.WriteString("version: STSv1\r\nmode: ")
	b.WriteString(string(p.Mode))
	b.WriteString("\r\n")
	for _, mx := range p.MX {
		b.WriteString("mx: ")
		b.WriteString(mx)
		b.WriteString("\r\n")
	}
	fmt.Fprintf(&b, "max_age: %d\r\n", int64(p.MaxAge/time.Second))
	return b.String()
}

// MatchMX reports whether host is one of the policy's mx patterns. A
// "*.example.com" pattern matches exactly one more label, so neither
// example.com nor a.b.example.com (RFC 8461 section 4.1).
func (p *Policy) MatchMX(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, pat := range p.MX {
		if rest, ok := strings.CutPrefix(pat, "*."); ok {
			label, parent, found := strings.Cut(host, ".")
			if found && label != "" && parent == rest {
				return true
			}
			continue
		}
		if host == pat {
			return true
		}
	}
	return false
}

// Verdict is what an MTA-STS policy says about one MX host.
type Verdict struct {
	// Deliver is false when the mail must not go to this host now
	// (enforce mode and a failed check): defer, never bounce, because the
	// policy or the host may be fixed before the mail expires.
	Deliver bool
	// Report is set when a check failed but the mode lets the mail go
	// (testing), or when it failed under enforce; it is the reason.
	Report string
}

// CheckMX applies the policy's mx list to host before connecting.
func (p *Policy) CheckMX(domain, host string) Verdict {
	if p == nil || p.Mode == ModeNone || p.MatchMX(host) {
		return Verdict{Deliver: true}
	}
	why := fmt.Sprintf("mta-sts: mx host %s is not listed in the %s policy of %s (%s)",
		displayName(host), p.Mode, displayName(domain), strings.Join(p.MX, ", "))
	return Verdict{Deliver: p.Mode != ModeEnforce, Report: why}
}

// CheckTLS applies the policy to the outcome of STARTTLS with host:
// tlsErr is nil when TLS was negotiated and the certificate verified for
// host, and otherwise says what went wrong (including "no STARTTLS").
func (p *Policy) CheckTLS(domain, host string, tlsErr error) Verdict {
	if p == nil || p.Mode == ModeNone || tlsErr == nil {
		return Verdict{Deliver: true}
	}
	why := fmt.Sprintf("mta-sts: %s policy of %s requires verified TLS with %s: %v",
		p.Mode, displayName(domain), displayName(host), tlsErr)
	return Verdict{Deliver: p.Mode != ModeEnforce, Report: why}
}

// ParseRecord parses the _mta-sts TXT record ("v=STSv1; id=...;") and
// returns its id. Extension fields are ignored.
func ParseRecord(txt string) (id string, err error) {
	fields := strings.Split(txt, ";")
	if strings.Trim(fields[0], " \t") != "v=STSv1" {
		return "", errors.New("mta-sts record: does not start with v=STSv1")
	}
	for _, f := range fields[1:] {
		f = strings.Trim(f, " \t")
		if f == "" {
			continue
		}
		k, v, ok := strings.Cut(f, "=")
		if !ok || k == "" {
			return "", fmt.Errorf("mta-sts record: malformed field %q", f)
		}
		if k != "id" || id != "" {
			continue
		}
		if len(v) == 0 || len(v) > 32 || strings.IndexFunc(v, func(r rune) bool { return r > 0x7f || !isAlnum(byte(r)) }) >= 0 {
			return "", fmt.Errorf("mta-sts record: invalid id %q", v)
		}
		id = v
	}
	if id == "" {
		return "", errors.New("mta-sts record: no id")
	}
	return id, nil
}

// displayName is how names appear in reasons: lower-case, no trailing dot.
func displayName(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}
