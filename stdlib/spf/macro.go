package spf

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// macroEnv holds what SPF macros (RFC 7208 section 7) expand to. The
// library expands them in the record; this is for the exp= modifier,
// which the library ignores.
type macroEnv struct {
	sender string // <sender>: the address checked
	local  string // its local part
	origin string // its domain
	domain string // <domain>: the domain of the record being evaluated
	helo   string
	ip     netip.Addr
	now    time.Time
}

// maxExpansion bounds an expansion: a record of a few kilobytes made of
// %{s} could otherwise grow a hundredfold.
const maxExpansion = 1024

var errMacro = errors.New("invalid macro")

// expand expands the macros of s. exp allows the letters c, r and t,
// which only explanation strings may use; it also allows spaces.
func (e *macroEnv) expand(s string, exp bool) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			// macro-literal (and SP in an explanation): visible US-ASCII.
			if c < ' ' || c > '~' || (c == ' ' && !exp) {
				return "", fmt.Errorf("%w: character %q", errMacro, c)
			}
			b.WriteByte(c)
		} else {
			i++
			if i == len(s) {
				return "", fmt.Errorf("%w: %% at the end", errMacro)
			}
			switch s[i] {
			case '%':
				b.WriteByte('%')
			case '_':
				b.WriteByte(' ')
			case '-':
				b.WriteString("%20")
			case '{':
				end := strings.IndexByte(s[i:], '}')
				if end < 0 {
					return "", fmt.Errorf("%w: unterminated %%{", errMacro)
				}
				v, err := e.macro(s[i+1:i+end], exp)
				if err != nil {
					return "", err
				}
				b.WriteString(v)
				i += end
			default:
				return "", fmt.Errorf("%w: %%%c", errMacro, s[i])
			}
		}
		if b.Len() > maxExpansion {
			return "", fmt.Errorf("%w: expands to more than %d bytes", errMacro, maxExpansion)
		}
	}
	return b.String(), nil
}

// macro expands the body of one %{...}: a letter, then digits, "r" and
// delimiters (RFC 7208 section 7.1).
func (e *macroEnv) macro(body string, exp bool) (string, error) {
	if body == "" {
		return "", fmt.Errorf("%w: %%{}", errMacro)
	}
	letter, rest := body[0], body[1:]
	var v string
	switch letter | 0x20 { // lower case
	case 's':
		v = e.sender
	case 'l':
		v = e.local
	case 'o':
		v = e.origin
	case 'd':
		v = e.domain
	case 'i':
		v = dotted(e.ip)
	case 'p':
		v = "unknown" // validated names cost lookups and are discouraged (section 7.3)
	case 'v':
		v = "in-addr"
		if e.ip.Is6() {
			v = "ip6"
		}
	case 'h':
		v = e.helo
	case 'c', 'r', 't':
		if !exp {
			return "", fmt.Errorf("%w: %%{%c} outside exp", errMacro, letter)
		}
		switch letter | 0x20 {
		case 'c':
			v = e.ip.String()
		case 'r':
			v = "unknown" // the receiving host's name is not known here
		case 't':
			v = strconv.FormatInt(e.now.Unix(), 10)
		}
	default:
		return "", fmt.Errorf("%w: %%{%s}", errMacro, body)
	}

	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	keep := 0
	if n > 0 {
		var err error
		if keep, err = strconv.Atoi(rest[:n]); err != nil || keep == 0 {
			return "", fmt.Errorf("%w: %%{%s}", errMacro, body)
		}
	}
	rest = rest[n:]
	reverse := rest != "" && rest[0]|0x20 == 'r'
	if reverse {
		rest = rest[1:]
	}
	delims := "."
	if rest != "" {
		if strings.Trim(rest, "-.+,/_=") != "" {
			return "", fmt.Errorf("%w: %%{%s}", errMacro, body)
		}
		delims = rest
	}

	parts := strings.FieldsFunc(v, func(r rune) bool { return strings.ContainsRune(delims, r) })
	if reverse {
		for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
			parts[i], parts[j] = parts[j], parts[i]
		}
	}
	if keep > 0 && keep < len(parts) {
		parts = parts[len(parts)-keep:]
	}
	v = strings.Join(parts, ".")
	if letter >= 'A' && letter <= 'Z' {
		v = escape(v)
	}
	return v, nil
}

// dotted is the "i" macro: an IPv4 address as is, an IPv6 one as 32
// dot-separated nibbles.
func dotted(ip netip.Addr) string {
	if ip.Is4() {
		return ip.String()
	}
	const hex = "0123456789abcdef"
	var b strings.Builder
	for i, x := range ip.As16() {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteByte(hex[x>>4])
		b.WriteByte('.')
		b.WriteByte(hex[x&0xf])
	}
	return b.String()
}

// escape is the URL escaping of upper-case macro letters: everything but
// RFC 3986 unreserved characters as %XX.
func escape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		}
	}
	return b.String()
}

// truncateName shortens an expanded domain name from the left, a label
// at a time, to 253 characters (RFC 7208 section 7.3).
func truncateName(s string) string {
	for len(s) > 253 {
		i := strings.IndexByte(s, '.')
		if i < 0 {
			break
		}
		s = s[i+1:]
	}
	return s
}
