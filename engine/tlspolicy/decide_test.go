package tlspolicy_test

import (
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/larkpost/larkpost/engine/resolver"
	"github.com/larkpost/larkpost/engine/tlspolicy"
)

// fixture is a small Internet: a DNS server that validates some names, an
// MTA-STS policy server, a CA and server certificates.
type fixture struct {
	dns  *dnsServer
	sts  *stsServer
	ca   *testCA
	good tls.Certificate // mx.dane.example and the MTA-STS MX names, from ca
	bad  tls.Certificate // the same names from another CA
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{ca: newCA(t, "test ca")}
	mxNames := []string{"mx.dane.example", "mx.enforce.example", "a.pool.enforce.example", "mx.testing.example", "mx.nosts.example"}
	f.good = f.ca.leaf(t, time.Time{}, mxNames...)
	f.bad = newCA(t, "untrusted ca").leaf(t, time.Time{}, mxNames...)

	tlsa := func(host string, r tlspolicy.TLSA) string {
		return fmt.Sprintf("_25._tcp.%s. 300 IN TLSA %d %d %d %s", host, r.Usage, r.Selector, r.MatchingType, hex.EncodeToString(r.Data))
	}
	ee := tlsaFor(3, 1, 1, f.good.Leaf)
	pkix := tlsaFor(1, 1, 1, f.good.Leaf)
	f.dns = newDNS(t,
		`_mta-sts.enforce.example. 300 IN TXT "v=STSv1; id=1;"`,
		`_mta-sts.testing.example. 300 IN TXT "v=STSv1; id=20260101;"`,
		`_mta-sts.none.example. 300 IN TXT "v=STSv1; id=n;"`,
		`_mta-sts.broken.example. 300 IN TXT "v=STSv1; id=b;"`,
		tlsa("mx.dane.example", ee),
		tlsa("mx.insecure.example", ee),
		tlsa("mx.pkix.example", pkix),
		tlsa("mx.mixed.example", pkix),
		tlsa("mx.mixed.example", ee),
		"mx.enforce.example. 300 IN A 192.0.2.1",
		"mx.nosts.example. 300 IN A 192.0.2.2",
		"mx.dane.example. 300 IN A 192.0.2.3",
		"mx.unsigned.example. 300 IN A 192.0.2.4",
		tlsa("mx.unsigned.example", ee),
		// An MX host that is an alias: the records at the expanded name
		// come first, those at the alias are the fallback.
		"mx.alias.example. 300 IN CNAME mx.target.example.",
		"mx.target.example. 300 IN A 192.0.2.5",
		tlsa("mx.target.example", ee),
		tlsa("mx.alias.example", pkix),
		"mx.alias2.example. 300 IN CNAME mx.nosts.example.",
		tlsa("mx.alias2.example", ee),
	)
	f.dns.Secure("_25._tcp.mx.dane.example", "_25._tcp.mx.pkix.example", "_25._tcp.mx.mixed.example",
		"_25._tcp.mx.enforce.example", "_25._tcp.mx.nosts.example", "_25._tcp.mx.fail.example",
		"_25._tcp.mx.unsigned.example", "_25._tcp.mx.target.example", "_25._tcp.mx.alias.example", "_25._tcp.mx.alias2.example",
		// The MX answers of the domains and the MX hosts' addresses.
		"nosts.example", "enforce.example",
		"mx.dane.example", "mx.pkix.example", "mx.mixed.example", "mx.insecure.example", "mx.fail.example",
		"mx.enforce.example", "mx.nosts.example", "mx.alias.example", "mx.alias2.example")
	f.dns.SetRcode("_25._tcp.mx.fail.example", dns.RcodeServerFailure)

	f.sts = newSTSServer(t, f.ca.leaf(t, time.Time{}, "mta-sts.enforce.example", "mta-sts.testing.example", "mta-sts.none.example", "mta-sts.broken.example"))
	f.sts.setPolicy("enforce.example", "version: STSv1\nmode: enforce\nmx: mx.enforce.example\nmx: *.pool.enforce.example\nmax_age: 86400\n")
	f.sts.setPolicy("testing.example", "version: STSv1\nmode: testing\nmx: mx.testing.example\nmax_age: 86400\n")
	f.sts.setPolicy("none.example", "version: STSv1\nmode: none\nmax_age: 86400\n")
	f.sts.set("broken.example", stsResponse{status: 500})
	return f
}

func (f *fixture) decider(level tlspolicy.Level) *tlspolicy.Decider {
	return &tlspolicy.Decider{
		Level: level,
		DANE:  tlspolicy.NewDNSSECResolver([]string{f.dns.ADAddr}, time.Second),
		MTASTS: &tlspolicy.MTASTS{
			DNS:   resolver.New([]string{f.dns.Addr}, time.Second),
			HTTP:  f.sts.client(f.ca.pool),
			Cache: &tlspolicy.MemoryCache{},
		},
	}
}

func TestDecide(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	deciders := map[tlspolicy.Level]*tlspolicy.Decider{}
	for _, l := range []tlspolicy.Level{tlspolicy.LevelNone, tlspolicy.LevelMay, tlspolicy.LevelEncrypt, tlspolicy.LevelDANE, tlspolicy.LevelVerify} {
		deciders[l] = f.decider(l)
	}
	const (
		level = tlspolicy.MechLevel
		dane  = tlspolicy.MechDANE
		sts   = tlspolicy.MechMTASTS
		none  = tlspolicy.AuthNone
		pkix  = tlspolicy.AuthPKIX
		tlsa  = tlspolicy.AuthDANE
	)
	tests := []struct {
		name              string
		level             tlspolicy.Level
		domain, mx        string
		mech              tlspolicy.Mechanism
		require           bool
		auth              tlspolicy.Auth
		enforce, deferred bool
		why, report       string // substrings; report "" means no reports
	}{
		{"sts enforce, listed mx", "may", "enforce.example", "mx.enforce.example", sts, true, pkix, true, false, "mta-sts enforce policy of enforce.example (id 1", ""},
		{"sts enforce, wildcard mx", "may", "enforce.example", "A.Pool.Enforce.Example.", sts, true, pkix, true, false, "lists a.pool.enforce.example", ""},
		{"sts enforce, unlisted mx", "may", "enforce.example", "mx.evil.example", sts, true, pkix, true, true, "mx host mx.evil.example is not listed in the enforce policy of enforce.example (mx.enforce.example, *.pool.enforce.example): not delivering", ""},
		{"sts enforce, mx two labels below wildcard", "may", "enforce.example", "a.b.pool.enforce.example", sts, true, pkix, true, true, "not listed", ""},
		{"sts testing, unlisted mx", "may", "testing.example", "mx.evil.example", level, false, pkix, false, false, "failures only reported", "not listed in the testing policy"},
		{"sts testing, listed mx", "may", "testing.example", "mx.testing.example", level, false, pkix, false, false, "mta-sts testing policy of testing.example (id 20260101", ""},
		{"sts mode none", "may", "none.example", "mx.none.example", level, false, none, false, false, "opportunistic TLS", ""},
		{"sts fetch fails, nothing cached", "may", "broken.example", "mx.broken.example", level, false, none, false, false, "opportunistic", "status 500"},
		{"no sts", "may", "nosts.example", "mx.nosts.example", level, false, none, false, false, "smtp_tls_security_level=may", ""},
		{"dane-ee", "dane", "nosts.example", "mx.dane.example", dane, true, tlsa, true, false, "1 usable dnssec-validated tlsa records at _25._tcp.mx.dane.example", ""},
		{"dane beats sts", "dane", "enforce.example", "mx.dane.example", dane, true, tlsa, true, false, "dane:", ""},
		{"tlsa without ad ignored", "dane", "nosts.example", "mx.insecure.example", level, false, none, false, false, "opportunistic", "not dnssec-validated (ad bit not set), ignored"},
		{"pkix usage reported, tls still required", "dane", "nosts.example", "mx.pkix.example", dane, true, none, false, false, "all unusable", "pkix usage 1 is unusable"},
		{"usable and unusable records", "dane", "nosts.example", "mx.mixed.example", dane, true, tlsa, true, false, "1 usable", "pkix usage 1"},
		{"tlsa lookup fails", "dane", "nosts.example", "mx.fail.example", dane, true, none, false, true, "tlsa lookup failed", ""},
		{"no tlsa, sts enforce applies", "dane", "enforce.example", "mx.enforce.example", sts, true, pkix, true, false, "lists mx.enforce.example", ""},
		{"no tlsa, no sts", "dane", "nosts.example", "mx.nosts.example", level, false, none, false, false, "no tlsa records at _25._tcp.mx.nosts.example", ""},
		{"mx answer not validated", "dane", "unsigned.example", "mx.dane.example", level, false, none, false, false, "opportunistic", "mx records of unsigned.example are not dnssec-validated"},
		{"mx host address not validated", "dane", "nosts.example", "mx.unsigned.example", level, false, none, false, false, "opportunistic", "address records of mx.unsigned.example are not dnssec-validated"},
		{"mx host alias: expanded name first", "dane", "nosts.example", "mx.alias.example", dane, true, tlsa, true, false, "records at _25._tcp.mx.target.example", ""},
		{"mx host alias: alias name as fallback", "dane", "nosts.example", "mx.alias2.example", dane, true, tlsa, true, false, "records at _25._tcp.mx.alias2.example", ""},
		{"level none overrides sts", "none", "enforce.example", "mx.evil.example", level, false, none, false, false, "no TLS", ""},
		{"level verify", "verify", "nosts.example", "mx.nosts.example", level, true, pkix, true, false, "must be valid for mx.nosts.example", ""},
		{"level encrypt with sts testing", "encrypt", "testing.example", "mx.testing.example", level, true, pkix, false, false, "encrypt", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := deciders[tt.level].Decide(t.Context(), tt.domain, tt.mx)
			t.Log(d)
			if d.Mechanism != tt.mech || d.RequireTLS != tt.require || d.Auth != tt.auth || d.Enforce != tt.enforce || d.Defer != tt.deferred {
				t.Errorf("Decide = mech %s require %v auth %s enforce %v defer %v, want %s %v %s %v %v\n%s",
					d.Mechanism, d.RequireTLS, d.Auth, d.Enforce, d.Defer, tt.mech, tt.require, tt.auth, tt.enforce, tt.deferred, d)
			}
			if !strings.Contains(d.Why, tt.why) {
				t.Errorf("Why = %q, want it to contain %q", d.Why, tt.why)
			}
			reports := strings.Join(d.Reports, "; ")
			if (tt.report == "") != (reports == "") || !strings.Contains(reports, tt.report) {
				t.Errorf("Reports = %q, want %q", reports, tt.report)
			}
		})
	}
}

// TestDecisionTLS drives real handshakes with the configurations that
// decisions produce, and checks what CheckTLS says afterwards.
func TestDecisionTLS(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	base := &tls.Config{RootCAs: f.ca.pool}
	decide := func(level tlspolicy.Level, domain, mx string) tlspolicy.Decision {
		return f.decider(level).Decide(t.Context(), domain, mx)
	}
	tests := []struct {
		name       string
		d          tlspolicy.Decision
		server     tls.Certificate
		handshake  bool // the handshake succeeds
		reported   bool // the report callback ran
		peerOK     bool // CheckPeer accepts the server
		deliver    bool // CheckTLS of the failure lets the mail go
		checkMatch string
	}{
		{"dane match", decide("dane", "nosts.example", "mx.dane.example"), f.good, true, false, true, true, ""},
		{"dane mismatch defers", decide("dane", "nosts.example", "mx.dane.example"), f.bad, false, false, false, false, "dane requires TLS with mx.dane.example"},
		{"sts enforce trusted", decide("may", "enforce.example", "mx.enforce.example"), f.good, true, false, true, true, ""},
		{"sts enforce untrusted defers", decide("may", "enforce.example", "mx.enforce.example"), f.bad, false, false, false, false, "mta-sts requires TLS"},
		{"sts testing untrusted is reported", decide("may", "testing.example", "mx.testing.example"), f.bad, true, true, false, true, "reported only"},
		{"may accepts anything", decide("may", "nosts.example", "mx.nosts.example"), f.bad, true, false, true, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var (
				mu       sync.Mutex
				reported error
			)
			cfg := tt.d.TLSConfig(base, func(err error) { mu.Lock(); reported = err; mu.Unlock() })
			_, err := handshake(t, tt.server, cfg)
			if (err == nil) != tt.handshake {
				t.Fatalf("handshake error = %v, want success %v", err, tt.handshake)
			}
			mu.Lock()
			if (reported != nil) != tt.reported {
				t.Errorf("reported = %v, want %v", reported, tt.reported)
			}
			mu.Unlock()

			// The single-handshake path the SMTP client uses: accept
			// any certificate, then judge the session.
			loose := base.Clone()
			loose.InsecureSkipVerify = true
			loose.ServerName = tt.d.MXHost
			cs, err := handshake(t, tt.server, loose)
			if err != nil {
				t.Fatal(err)
			}
			peerErr := tt.d.CheckPeer(base, cs)
			if (peerErr == nil) != tt.peerOK {
				t.Errorf("CheckPeer = %v, want ok %v", peerErr, tt.peerOK)
			}
			v := tt.d.CheckTLS(peerErr)
			if v.Deliver != tt.deliver || !strings.Contains(v.Report, tt.checkMatch) {
				t.Errorf("CheckTLS = %+v, want deliver %v, report containing %q", v, tt.deliver, tt.checkMatch)
			}
		})
	}
}

func TestCheckTLSWithoutSTARTTLS(t *testing.T) {
	t.Parallel()
	tests := []struct {
		d       tlspolicy.Decision
		deliver bool
	}{
		{tlspolicy.Decision{Mechanism: tlspolicy.MechLevel, Auth: tlspolicy.AuthNone}, true},
		{tlspolicy.Decision{Mechanism: tlspolicy.MechLevel, Auth: tlspolicy.AuthPKIX}, true},
		{tlspolicy.Decision{Mechanism: tlspolicy.MechLevel, RequireTLS: true}, false},
		{tlspolicy.Decision{Mechanism: tlspolicy.MechDANE, RequireTLS: true, Auth: tlspolicy.AuthDANE, Enforce: true}, false},
	}
	for i, tt := range tests {
		v := tt.d.CheckTLS(tlspolicy.ErrNoSTARTTLS)
		if v.Deliver != tt.deliver || !tt.deliver && !strings.Contains(v.Report, "STARTTLS") {
			t.Errorf("case %d: CheckTLS = %+v, want deliver %v", i, v, tt.deliver)
		}
	}
}

func TestLookupTLSA(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := tlspolicy.NewDNSSECResolver([]string{f.dns.ADAddr}, time.Second)
	tests := []struct {
		host      string
		n         int
		secure    bool
		temporary bool
	}{
		{"mx.dane.example", 1, true, false},
		{"MX.Dane.Example.", 1, true, false},
		{"mx.insecure.example", 1, false, false},
		{"mx.mixed.example", 2, true, false},
		{"mx.nosts.example", 0, true, false},
		{"mx.fail.example", 0, false, true},
	}
	for _, tt := range tests {
		ans, err := r.LookupTLSA(t.Context(), tt.host)
		if resolver.IsTemporary(err) != tt.temporary || (err != nil) != tt.temporary {
			t.Errorf("LookupTLSA(%s) error = %v, want temporary %v", tt.host, err, tt.temporary)
		}
		if len(ans.Records) != tt.n || ans.Secure != tt.secure {
			t.Errorf("LookupTLSA(%s) = %d records secure %v, want %d %v", tt.host, len(ans.Records), ans.Secure, tt.n, tt.secure)
		}
	}
	// The plain zone server never validates: the same records are insecure.
	plain := tlspolicy.NewDNSSECResolver([]string{f.dns.Addr}, time.Second)
	if ans, err := plain.LookupTLSA(t.Context(), "mx.dane.example"); err != nil || ans.Secure {
		t.Errorf("LookupTLSA without validation = %+v, %v; want insecure", ans, err)
	}
	if _, err := r.LookupTLSA(t.Context(), "bad name"); err == nil || resolver.IsTemporary(err) {
		t.Errorf("LookupTLSA(bad name) error = %v, want a permanent error", err)
	}
}
