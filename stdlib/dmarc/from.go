package dmarc

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"

	"github.com/emersion/go-message/textproto"
	mdns "github.com/miekg/dns"
	"golang.org/x/net/publicsuffix"
)

// addressParser reads From without decoding display names, which DMARC
// does not need: a charset Go does not know must not make a valid
// address unreadable.
var addressParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
}}

// fromDomain returns the domain of the RFC5322.From address. DMARC needs
// exactly one (RFC 7489 section 6.6.1): a message with no From, several
// From fields or several addresses gets an error, which the check
// reports as permerror.
func fromDomain(h textproto.Header) (string, error) {
	var values []string
	for f := h.FieldsByKey("From"); f.Next(); {
		values = append(values, f.Value())
		if len(values) > 1 {
			return "", errors.New("several From header fields")
		}
	}
	if len(values) == 0 {
		return "", errors.New("no From header field")
	}
	list, err := addressParser.ParseList(values[0])
	if err != nil {
		// Some senders write display names net/mail refuses; the
		// address in angle brackets is still plain.
		a, err2 := angleAddr(values[0])
		if err2 != nil {
			return "", fmt.Errorf("cannot read the From header field: %v", err)
		}
		list = []*mail.Address{a}
	}
	switch len(list) {
	case 0:
		return "", errors.New("no address in the From header field")
	case 1:
	default:
		return "", fmt.Errorf("%d addresses in the From header field", len(list))
	}
	at := strings.LastIndexByte(list[0].Address, '@')
	if at < 0 {
		return "", fmt.Errorf("the From address %q has no domain", list[0].Address)
	}
	d, err := normalize(list[0].Address[at+1:])
	if err != nil {
		return "", fmt.Errorf("the From address %q: %v", list[0].Address, err)
	}
	return d, nil
}

// angleAddr reads "anything <local@domain>" when that is the only pair
// of angle brackets.
func angleAddr(s string) (*mail.Address, error) {
	i, j := strings.IndexByte(s, '<'), strings.IndexByte(s, '>')
	if i < 0 || j < i || strings.Count(s, "<") != 1 || strings.Count(s, ">") != 1 {
		return nil, errors.New("no single address in angle brackets")
	}
	return mail.ParseAddress(s[i : j+1])
}

// normalize returns a domain as DNS and the public suffix list take it:
// lower case, A-labels, no trailing dot.
func normalize(d string) (string, error) {
	d = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
	if !isASCII(d) {
		a, err := toASCII(d)
		if err != nil {
			return "", fmt.Errorf("invalid domain %q: %v", d, err)
		}
		d = a
	}
	if _, ok := mdns.IsDomainName(d); !ok || d == "" || strings.ContainsAny(d, "[]\\ ") {
		return "", fmt.Errorf("invalid domain %q", d)
	}
	return d, nil
}

// orgDomain is the organizational domain of d (RFC 7489 section 3.2):
// its public suffix and one label more; d itself when d is a public
// suffix or not a valid name.
func orgDomain(d string) string {
	org, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		return d
	}
	return org
}
