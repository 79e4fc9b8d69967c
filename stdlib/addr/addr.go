package addr

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"
)

const (
	// maxAddressLen is 64 octets of local part, the "@" and 255 octets of
	// domain, the figure most MTAs enforce even though RFC 5321 would only
	// allow a 256-octet path. It applies to the unquoted form so that an
	// address and its quoted String() are either both accepted or both not.
	maxAddressLen = 320

	// maxInputLen bounds the work done on hostile input: quoting at most
	// doubles the local part and adds two quotes.
	maxInputLen = 2*maxAddressLen + 2

	// maxDomainLen leaves room for the length octets of the first label and
	// the root label within the 255-octet wire limit of RFC 1035.
	maxDomainLen = 253
	maxLabelLen  = 63
)

// ErrSyntax is wrapped by every error Parse returns, so callers can tell a
// malformed address from other failures with errors.Is.
var ErrSyntax = errors.New("bad address syntax")

// Parse errors are allocated once because rejecting junk is a hot path for a
// server under attack.
var (
	errNoAt          = syntaxError("missing @")
	errEmptyLocal    = syntaxError("empty local part")
	errEmptyDomain   = syntaxError("empty domain")
	errTooLong       = syntaxError("address too long")
	errControl       = syntaxError("control character")
	errUTF8          = syntaxError("invalid utf-8")
	errAngle         = syntaxError("angle bracket in local part")
	errDomainTooLong = syntaxError("domain too long")
	errEmptyLabel    = syntaxError("empty domain label")
	errTrailingDot   = syntaxError("trailing dot in domain")
	errLabelTooLong  = syntaxError("domain label too long")
	errLabelHyphen   = syntaxError("domain label starts or ends with hyphen")
	errDomainChar    = syntaxError("invalid character in domain")
	errLiteral       = syntaxError("bad address literal")
)

func syntaxError(reason string) error {
	return fmt.Errorf("%w: %s", ErrSyntax, reason)
}

// Address is an RFC 5321 mailbox. The zero Address is the null sender "<>".
type Address struct {
	// Local is the local part in unquoted form, as go-smtp hands it over:
	// `"a b"@x` arrives as `a b@x`.
	Local string
	// Domain is lower-cased; address literals keep their brackets, as in
	// "[192.0.2.1]" or "[IPv6:2001:db8::1]".
	Domain string
}

// Parse parses an address as go-smtp's server passes it to Mail and Rcpt:
// angle brackets already removed and a quoted local part already unquoted.
// A local part that is itself a valid quoted-string is unquoted as well, so
// that Parse accepts everything String produces. The empty string gives the
// null Address and no error.
//
// The local part may hold any printable character except '<' and '>',
// including UTF-8 (SMTPUTF8); it is not limited to 64 octets because Postfix
// accepts longer ones. The domain is either an address literal ("[192.0.2.1]"
// or "[IPv6:2001:db8::1]", stored in canonical form) or a host name of
// dot-separated labels of letters, digits and hyphens, UTF-8 letters
// included. Control characters (C0, DEL and C1) and invalid UTF-8 are
// rejected anywhere, and the address may be at most 320 octets long with
// the local part unquoted. A domain-less local part such as "postmaster" is
// an error; callers handle postmaster specially.
func Parse(s string) (Address, error) {
	if s == "" {
		return Address{}, nil
	}
	if len(s) > maxInputLen {
		return Address{}, errTooLong
	}
	chars, err := checkChars(s)
	if err != nil {
		return Address{}, err
	}
	// The domain cannot contain '@' but an unquoted local part can.
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return Address{}, errNoAt
	}
	local, domain := s[:at], s[at+1:]
	if local == "" {
		return Address{}, errEmptyLocal
	}
	if domain == "" {
		return Address{}, errEmptyDomain
	}
	if len(local) >= 2 && local[0] == '"' && local[len(local)-1] == '"' {
		if u, ok := unquote(local); ok {
			local = u
			if local == "" {
				return Address{}, errEmptyLocal
			}
		}
	}
	if chars&hasAngle != 0 && strings.ContainsAny(local, "<>") {
		return Address{}, errAngle
	}
	domain, err = parseDomain(domain, chars&hasNonASCII != 0)
	if err != nil {
		return Address{}, err
	}
	if len(local)+1+len(domain) > maxAddressLen {
		return Address{}, errTooLong
	}
	return Address{Local: local, Domain: domain}, nil
}

// charFlags records what checkChars saw, so that later stages can skip
// work the common plain-ASCII address does not need.
type charFlags uint8

const (
	hasNonASCII charFlags = 1 << iota
	hasAngle
)

// checkChars rejects control characters and invalid UTF-8.
func checkChars(s string) (charFlags, error) {
	var f charFlags
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c == 0x7f:
			return 0, errControl
		case c == '<' || c == '>':
			f |= hasAngle
		case c >= utf8.RuneSelf:
			f |= hasNonASCII
		}
	}
	if f&hasNonASCII == 0 {
		return f, nil
	}
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return 0, errUTF8
		}
		// C1 controls (U+0080-U+009F) include NEL, a line break to some
		// software, so they are as unwelcome as their C0 cousins.
		if r >= 0x80 && r <= 0x9f {
			return 0, errControl
		}
		i += size
	}
	return f, nil
}

// unquote decodes an RFC 5321 quoted-string. It reports false when q is not
// one, in which case the caller takes the quotes literally, as go-smtp
// would have produced them from an escaped quoted-string.
func unquote(q string) (string, bool) {
	inner := q[1 : len(q)-1]
	if strings.IndexByte(inner, '\\') < 0 {
		if strings.IndexByte(inner, '"') >= 0 {
			return "", false
		}
		return inner, true
	}
	var b strings.Builder
	b.Grow(len(inner))
	for i := 0; i < len(inner); i++ {
		c := inner[i]
		switch c {
		case '"':
			return "", false
		case '\\':
			i++
			if i == len(inner) {
				return "", false
			}
			c = inner[i]
		}
		b.WriteByte(c)
	}
	return b.String(), true
}

func parseDomain(d string, nonASCII bool) (string, error) {
	if d[0] == '[' {
		return parseLiteral(d)
	}
	if nonASCII {
		// Validate the lower-cased form, because that is what gets stored
		// and Unicode lower-casing may change the length.
		d = strings.ToLower(d)
	}
	if len(d) > maxDomainLen {
		return "", errDomainTooLong
	}
	upper := false
	label := 0 // start of the current label
	for i := 0; ; {
		if i == len(d) || d[i] == '.' {
			if err := checkLabel(d[label:i]); err != nil {
				if err == errEmptyLabel && i == len(d) && i > 0 {
					return "", errTrailingDot
				}
				return "", err
			}
			if i == len(d) {
				break
			}
			i++
			label = i
			continue
		}
		c := d[i]
		switch {
		case 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-':
			i++
		case 'A' <= c && c <= 'Z':
			upper = true
			i++
		case c < utf8.RuneSelf:
			return "", errDomainChar
		default:
			r, size := utf8.DecodeRuneInString(d[i:])
			// Marks are needed for scripts such as Devanagari, digits
			// for non-Latin numerals. Punctuation like U+3002 (a full
			// stop in disguise) stays out.
			if !unicode.In(r, unicode.L, unicode.M, unicode.N) {
				return "", errDomainChar
			}
			i += size
		}
	}
	if upper {
		// Only ASCII letters are left to lower, which keeps the length.
		d = strings.ToLower(d)
	}
	return d, nil
}

func checkLabel(l string) error {
	switch {
	case l == "":
		return errEmptyLabel
	case len(l) > maxLabelLen:
		return errLabelTooLong
	case l[0] == '-' || l[len(l)-1] == '-':
		return errLabelHyphen
	}
	return nil
}

// parseLiteral canonicalises address literals so that Equal and string
// comparison treat different spellings of one IP address alike.
func parseLiteral(d string) (string, error) {
	if len(d) < 2 || d[len(d)-1] != ']' {
		return "", errLiteral
	}
	inner := d[1 : len(d)-1]
	const tag = "IPv6:"
	if len(inner) > len(tag) && strings.EqualFold(inner[:len(tag)], tag) {
		ip, err := netip.ParseAddr(inner[len(tag):])
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return "", errLiteral
		}
		canon := ip.String()
		if inner[:len(tag)] == tag && canon == inner[len(tag):] {
			return d, nil
		}
		return "[" + tag + canon + "]", nil
	}
	ip, err := netip.ParseAddr(inner)
	if err != nil || !ip.Is4() {
		return "", errLiteral
	}
	// netip accepts only the canonical dotted quad, so d needs no rewriting.
	return d, nil
}

// IsNull reports whether a is the null sender "<>".
func (a Address) IsNull() bool {
	return a.Local == "" && a.Domain == ""
}

// String returns local@domain, quoting the local part as an RFC 5321
// quoted-string (backslash-escaping '"' and '\\') when it is not a dot-atom.
// UTF-8 counts as atext, as in RFC 6531. The null address gives "".
func (a Address) String() string {
	if a.IsNull() {
		return ""
	}
	if isDotAtom(a.Local) {
		return a.Local + "@" + a.Domain
	}
	n := len(a.Local) + 3 + len(a.Domain)
	for i := 0; i < len(a.Local); i++ {
		if c := a.Local[i]; c == '"' || c == '\\' {
			n++
		}
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteByte('"')
	for i := 0; i < len(a.Local); i++ {
		c := a.Local[i]
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteString(`"@`)
	b.WriteString(a.Domain)
	return b.String()
}

// atext marks the ASCII characters RFC 5322 allows in an atom.
var atext = func() (t [utf8.RuneSelf]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "!#$%&'*+-/=?^_`{|}~" {
		t[c] = true
	}
	return t
}()

func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= utf8.RuneSelf:
		case c == '.':
			if s[i-1] == '.' {
				return false
			}
		case !atext[c]:
			return false
		}
	}
	return true
}

// IsASCII reports whether the address needs no SMTPUTF8.
func (a Address) IsASCII() bool {
	return isASCII(a.Local) && isASCII(a.Domain)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// Split splits a local part at the first occurrence of any character in
// delims, which may hold several delimiters like Postfix's
// recipient_delimiter (e.g. "+-"). With delims "" or no delimiter present,
// user is local, ext is "" and found is false. Like Postfix, a local part
// that starts with a delimiter (e.g. "+foo") is not split, so that user is
// never empty. A trailing delimiter ("foo+") gives an empty ext with found
// true.
func Split(local, delims string) (user, ext string, found bool) {
	if delims == "" {
		return local, "", false
	}
	i := strings.IndexAny(local, delims)
	if i <= 0 {
		return local, "", false
	}
	_, size := utf8.DecodeRuneInString(local[i:])
	return local[:i], local[i+size:], true
}

// Equal compares addresses the way mail routers do. RFC 5321 makes the
// local part case-sensitive, but like Postfix (and every mailbox provider
// in practice) Equal ignores case in both parts, using Unicode simple case
// folding.
func (a Address) Equal(b Address) bool {
	return strings.EqualFold(a.Local, b.Local) && strings.EqualFold(a.Domain, b.Domain)
}
