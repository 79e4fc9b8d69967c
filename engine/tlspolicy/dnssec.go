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
	// AddrInsecure says the MX host's own address records were not
	// validated, so its TLSA records were not asked for.
	AddrInsecure bool
}

// TLSALookup is the DNS lookup DANE needs.
type TLSALookup interface {
	// LookupTLSA returns the TLSA records of an MX host.
	LookupTLSA(ctx context.Context, host string) (TLSAAnswer, error)
	// MXSecure reports whether the domain's MX records, or their proven
	// absence, were DNSSEC-validated. RFC 7672 section 2.2.1: a host
	// name from an insecure MX answer could be an attacker's, and its
	// own TLSA records would then prove nothing.
	MXSecure(ctx context.Context, domain string) (bool, error)
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

// LookupTLSA looks up the TLSA records of host. When host is an alias
// whose expansion is DNSSEC-validated, the records at the expanded name
// are preferred and those at host are the fallback (RFC 7672 section
// 2.2.2); the Name of the answer says which one was used. NXDOMAIN and
// NODATA give an answer without records (DANE does not apply). Every
// other failure is a temporary *resolver.Error: with DANE a failed lookup
// may be an attacker stripping records, so the caller must not fall back
// to plaintext.
func (r *DNSSECResolver) LookupTLSA(ctx context.Context, host string) (TLSAAnswer, error) {
	host = displayName(host)
	name := fmt.Sprintf("_%d._tcp.%s", smtpPort, host)
	if _, ok := dns.IsDomainName(name + "."); !ok || !validHostname(host) {
		return TLSAAnswer{Name: name}, &resolver.Error{Name: name, Type: "TLSA", Err: errors.New("invalid domain name")}
	}
	target, secure, err := r.expand(ctx, host)
	if err != nil {
		return TLSAAnswer{Name: name}, err
	}
	if !secure {
		// Postfix's rule: an MX host whose address records are not
		// validated is not a DANE destination (its TLSA records would
		// authenticate a host that an attacker may have chosen).
		return TLSAAnswer{Name: name, AddrInsecure: true}, nil
	}
	if target != "" && target != host {
		ans, err := r.lookupTLSA(ctx, fmt.Sprintf("_%d._tcp.%s", smtpPort, target))
		if err != nil || len(ans.Records) > 0 {
			return ans, err
		}
	}
	return r.lookupTLSA(ctx, name)
}

// expand asks for host's address records and returns whether the answer
// was DNSSEC-validated and, if host is an alias, the name it expands to.
func (r *DNSSECResolver) expand(ctx context.Context, host string) (target string, secure bool, err error) {
	in, err := r.query(ctx, host, dns.TypeA)
	if err != nil || !in.AuthenticatedData {
		return "", false, err
	}
	owner := strings.ToLower(host) + "."
	// Follow the chain in order: a resolver lists it from the name
	// asked for, but nothing forces that order on a hostile one.
	for range len(in.Answer) {
		found := false
		for _, rr := range in.Answer {
			if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, owner) {
				owner, target, found = strings.ToLower(c.Target), displayName(c.Target), true
				break
			}
		}
		if !found {
			break
		}
	}
	if target != "" && !validHostname(target) {
		target = ""
	}
	return target, true, nil
}

// MXSecure asks for domain's MX records with DNSSEC and returns the AD
// bit of the answer. NODATA and NXDOMAIN count: a validated denial is as
// good as validated records.
func (r *DNSSECResolver) MXSecure(ctx context.Context, domain string) (bool, error) {
	in, err := r.query(ctx, displayName(domain), dns.TypeMX)
	if err != nil {
		return false, err
	}
	return in.AuthenticatedData, nil
}

func (r *DNSSECResolver) lookupTLSA(ctx context.Context, name string) (TLSAAnswer, error) {
	ans := TLSAAnswer{Name: name}
	in, err := r.query(ctx, name, dns.TypeTLSA)
	if err != nil {
		return ans, err
	}
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
}

// query asks the servers in turn with DNSSEC requested and returns the
// first NOERROR or NXDOMAIN answer; anything else is a temporary
// *resolver.Error.
func (r *DNSSECResolver) query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	fail := func(rcode string, err error) error {
		return &resolver.Error{Name: name, Type: dns.TypeToString[qtype], Rcode: rcode, Temporary: true, Err: err}
	}
	if len(r.Servers) == 0 {
		return nil, fail("", errors.New("no dns servers configured"))
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	// AD in the query asks for the AD bit in the reply (RFC 6840 section
	// 5.7); DO does too and is what older resolvers look at.
	m.AuthenticatedData = true
	m.SetEdns0(1232, true)

	var last error = fail("", nil)
	for _, server := range r.Servers {
		if err := ctx.Err(); err != nil {
			return nil, fail("", err)
		}
		in, err := r.exchange(ctx, m, server)
		if err != nil {
			last = fail("", fmt.Errorf("%s: %w", server, err))
			continue
		}
		switch in.Rcode {
		case dns.RcodeSuccess, dns.RcodeNameError:
			return in, nil
		default:
			// SERVFAIL is also what a validating resolver says for a
			// bogus answer; another server will not say otherwise, but
			// it may be the one that works.
			last = fail(rcodeName(in.Rcode), nil)
		}
	}
	return nil, last
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
