package tlspolicy

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/larkpost/larkpost/engine/resolver"
)

// TLSA is one TLSA record (RFC 6698).
type TLSA struct {
	Usage        uint8 // 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE
	Selector     uint8 // 0 full certificate, 1 SubjectPublicKeyInfo
	MatchingType uint8 // 0 exact, 1 SHA-256, 2 SHA-512
	Data         []byte
}

// String renders r in presentation format, as in "3 1 1 ab12...".
func (r TLSA) String() string {
	return fmt.Sprintf("%d %d %d %s", r.Usage, r.Selector, r.MatchingType, hex.EncodeToString(r.Data))
}

// TLSAAnswer is the outcome of a TLSA lookup that got an answer.
type TLSAAnswer struct {
	Name    string // the name queried, e.g. "_25._tcp.mx.example.com"
	Records []TLSA
	// Secure is the resolver's AD bit: it validated the answer with
	// DNSSEC. Records of an insecure answer must not be used: anyone on
	// the path could have written them.
	Secure bool
}

// TLSALookup is the DNS lookup DANE needs.
type TLSALookup interface {
	LookupTLSA(ctx context.Context, host string) (TLSAAnswer, error)
}

var _ TLSALookup = (*DNSSECResolver)(nil)

// DNSSECResolver asks validating recursive resolvers for TLSA records and
// reports their AD bit. The package resolver cannot do this: it neither
// sets DO nor returns the header. The AD bit is only as trustworthy as the
// path to the resolver, so Servers should be on the loopback or a trusted
// network (Postfix makes the same assumption with smtp_dns_support_level =
// dnssec).
type DNSSECResolver struct {
	Servers []string      // "host:port"
	Timeout time.Duration // per attempt; 0 means 5s
}

// Port 25 is where MX delivery goes; submission and LMTP have no DANE.
const smtpPort = 25

// LookupTLSA looks up _25._tcp.host. NXDOMAIN and NODATA give an answer
// without records (DANE does not apply). Every other failure is a
// temporary *resolver.Error: with DANE a failed lookup may be an attacker
// stripping records, so the caller must not fall back to plaintext.
func (r *DNSSECResolver) LookupTLSA(ctx context.Context, host string) (TLSAAnswer, error) {
	name := fmt.Sprintf("_%d._tcp.%s", smtpPort, displayName(host))
	ans := TLSAAnswer{Name: name}
	fail := func(rcode string, err error) error {
		return &resolver.Error{Name: name, Type: "TLSA", Rcode: rcode, Temporary: true, Err: err}
	}
	if _, ok := dns.IsDomainName(name + "."); !ok || !validHostname(displayName(host)) {
		return ans, &resolver.Error{Name: name, Type: "TLSA", Err: errors.New("invalid domain name")}
	}
	if len(r.Servers) == 0 {
		return ans, fail("", errors.New("no dns servers configured"))
	}

	m := new(dns.Msg)
	m.SetQuestion(name+".", dns.TypeTLSA)
	m.RecursionDesired = true
	// AD in the query asks for the AD bit in the reply (RFC 6840 section
	// 5.7); DO does too and is what older resolvers look at.
	m.AuthenticatedData = true
	m.SetEdns0(1232, true)

	var last error = fail("", nil)
	for _, server := range r.Servers {
		if err := ctx.Err(); err != nil {
			return ans, fail("", err)
		}
		in, err := r.exchange(ctx, m, server)
		if err != nil {
			last = fail("", fmt.Errorf("%s: %w", server, err))
			continue
		}
		switch in.Rcode {
		case dns.RcodeSuccess, dns.RcodeNameError:
			ans.Secure = in.AuthenticatedData
			for _, rr := range in.Answer {
				if t, ok := rr.(*dns.TLSA); ok {
					data, err := hex.DecodeString(t.Certificate)
					if err != nil {
						continue
					}
					ans.Records = append(ans.Records, TLSA{Usage: t.Usage, Selector: t.Selector, MatchingType: t.MatchingType, Data: data})
				}
			}
			return ans, nil
		default:
			// SERVFAIL is also what a validating resolver says for a
			// bogus answer; another server will not say otherwise, but
			// it may be the one that works.
			last = fail(rcodeName(in.Rcode), nil)
		}
	}
	return ans, last
}

func (r *DNSSECResolver) exchange(ctx context.Context, m *dns.Msg, server string) (*dns.Msg, error) {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return resolver.Exchange(ctx, m, server, timeout)
}

func rcodeName(rcode int) string {
	if s, ok := dns.RcodeToString[rcode]; ok {
		return s
	}
	return fmt.Sprintf("RCODE%d", rcode)
}

// NewDNSSECResolver returns a resolver for servers; one without a port
// gets :53.
func NewDNSSECResolver(servers []string, timeout time.Duration) *DNSSECResolver {
	r := &DNSSECResolver{Timeout: timeout}
	for _, s := range servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			s = net.JoinHostPort(strings.Trim(s, "[]"), "53")
		}
		r.Servers = append(r.Servers, s)
	}
	return r
}
