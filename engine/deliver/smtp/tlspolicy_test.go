package smtp

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/tlspolicy"
)

type fakeTXT map[string][]string

func (f fakeTXT) LookupTXT(_ context.Context, name string) ([]string, error) { return f[name], nil }

type fakeTLSA struct{ ans tlspolicy.TLSAAnswer }

func (f fakeTLSA) LookupTLSA(context.Context, string) (tlspolicy.TLSAAnswer, error) {
	return f.ans, nil
}

func (f fakeTLSA) MXSecure(context.Context, string) (bool, error) { return f.ans.Secure, nil }

// stsPolicy is an MTA-STS setup for example.com that needs no fetch: the
// TXT id matches a fresh cached policy.
func stsPolicy(mode tlspolicy.Mode, mx ...string) *tlspolicy.MTASTS {
	cache := &tlspolicy.MemoryCache{}
	cache.Put(context.Background(), "example.com", tlspolicy.CacheEntry{
		Policy: tlspolicy.Policy{Mode: mode, MX: mx, MaxAge: 24 * time.Hour}, ID: "20261204", Fetched: time.Now()})
	return &tlspolicy.MTASTS{DNS: fakeTXT{"_mta-sts.example.com": {"v=STSv1; id=20261204;"}}, Cache: cache}
}

// spkiSHA256 is a DANE-EE 3 1 1 record's data for a certificate.
func spkiSHA256(t *testing.T, der []byte) []byte {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return sum[:]
}

// TestTLSPolicy: MX delivery under MTA-STS and DANE, through the real
// STARTTLS path: an MX an enforce policy does not list, or one whose
// certificate does not verify, gets nothing and the mail waits; testing
// mode only reports; DANE-EE records decide the certificate, names and
// CAs aside.
func TestTLSPolicy(t *testing.T) {
	t.Parallel()
	c := certs()
	mx := []string{"example.com. 300 IN MX 10 mx1.test."}
	tests := []struct {
		name   string
		policy func(t *testing.T) *tlspolicy.Decider
		level  string
		cfg    serverConfig
		status string
		reply  string
		tls    string
		wantTx bool
	}{
		{"sts enforce, listed, verified", func(*testing.T) *tlspolicy.Decider {
			return &tlspolicy.Decider{MTASTS: stsPolicy(tlspolicy.ModeEnforce, "mx1.test")}
		}, "may", serverConfig{cert: &c.trusted}, "2.0.0", "250", tlsVerified, true},
		{"sts enforce, MX not listed", func(*testing.T) *tlspolicy.Decider {
			return &tlspolicy.Decider{MTASTS: stsPolicy(tlspolicy.ModeEnforce, "mx.elsewhere.test")}
		}, "may", serverConfig{cert: &c.trusted}, "4.7.5", "mta-sts", tlsNone, false},
		{"sts enforce, untrusted certificate", func(*testing.T) *tlspolicy.Decider {
			return &tlspolicy.Decider{MTASTS: stsPolicy(tlspolicy.ModeEnforce, "*.test")}
		}, "may", serverConfig{cert: &c.untrusted}, "4.7.5", "requires TLS", tlsUnverified, false},
		{"sts enforce, no STARTTLS", func(*testing.T) *tlspolicy.Decider {
			return &tlspolicy.Decider{MTASTS: stsPolicy(tlspolicy.ModeEnforce, "mx1.test")}
		}, "may", serverConfig{}, "4.7.5", "TLS", tlsNone, false},
		{"sts testing, untrusted certificate: reported, delivered", func(*testing.T) *tlspolicy.Decider {
			return &tlspolicy.Decider{MTASTS: stsPolicy(tlspolicy.ModeTesting, "mx1.test")}
		}, "may", serverConfig{cert: &c.untrusted}, "2.0.0", "250", tlsUnverified, true},
		{"dane-ee matches an untrusted certificate", func(t *testing.T) *tlspolicy.Decider {
			rec := tlspolicy.TLSA{Usage: 3, Selector: 1, MatchingType: 1, Data: spkiSHA256(t, c.untrusted.Certificate[0])}
			return &tlspolicy.Decider{DANE: fakeTLSA{tlspolicy.TLSAAnswer{Name: "_25._tcp.mx1.test", Records: []tlspolicy.TLSA{rec}, Secure: true}}}
		}, "dane", serverConfig{cert: &c.untrusted}, "2.0.0", "250", tlsVerified, true},
		{"dane-ee does not match: no plaintext fallback", func(t *testing.T) *tlspolicy.Decider {
			rec := tlspolicy.TLSA{Usage: 3, Selector: 1, MatchingType: 1, Data: spkiSHA256(t, c.untrusted.Certificate[0])}
			return &tlspolicy.Decider{DANE: fakeTLSA{tlspolicy.TLSAAnswer{Name: "_25._tcp.mx1.test", Records: []tlspolicy.TLSA{rec}, Secure: true}}}
		}, "dane", serverConfig{cert: &c.trusted}, "4.7.5", "dane", tlsUnverified, false},
		{"tlsa without the AD bit is ignored", func(t *testing.T) *tlspolicy.Decider {
			rec := tlspolicy.TLSA{Usage: 3, Selector: 1, MatchingType: 1, Data: make([]byte, 32)}
			return &tlspolicy.Decider{DANE: fakeTLSA{tlspolicy.TLSAAnswer{Name: "_25._tcp.mx1.test", Records: []tlspolicy.TLSA{rec}, Secure: false}}}
		}, "dane", serverConfig{cert: &c.untrusted}, "2.0.0", "250", tlsUnverified, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, mx...)
			e.client.Policy = tt.policy(t)
			s := e.serve("mx1.test", "192.0.2.1", tt.cfg)
			res := e.deliver(Destination{Host: "example.com", TLSLevel: tt.level}, request("x@example.com"))
			if res[0].Status.Enhanced != tt.status || !strings.Contains(res[0].Status.Text, tt.reply) {
				t.Errorf("status %s %q, want %s with %q", res[0].Status.Enhanced, res[0].Status.Text, tt.status, tt.reply)
			}
			if tt.wantTx && res[0].TLS != tt.tls {
				t.Errorf("TLS = %q, want %q", res[0].TLS, tt.tls)
			}
			if got := len(s.transactions()) == 1; got != tt.wantTx {
				t.Errorf("server saw a transaction: %v, want %v", got, tt.wantTx)
			}
		})
	}
}
