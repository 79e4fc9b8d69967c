package arc

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"math/big"
	"strings"
	"testing"

	"github.com/larkpost/larkpost/stdlib/dns"
)

func TestKeyName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		domain, selector string
		want             string // "" for refused
	}{
		{"example.org", "s1", "s1._domainkey.example.org"},
		{"Example.ORG", "2024-01.sel_a", "2024-01.sel_a._domainkey.Example.ORG"},
		{"", "s1", ""},
		{"example.org", "", ""},
		{"example..org", "s1", ""},
		{".example.org", "s1", ""},
		{"example.org.", "s1", ""},
		{"example.org", "s 1", ""},
		{"example.org", "s1\r\nX: y", ""},
		{"exämple.org", "s1", ""},
		{strings.Repeat("a", 254), "s1", ""},
	}
	for _, tt := range tests {
		got, ok := keyName(tt.domain, tt.selector)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("keyName(%q, %q) = %q, %v, want %q", tt.domain, tt.selector, got, ok, tt.want)
		}
	}
}

func TestParseKey(t *testing.T) {
	t.Parallel()
	b64 := base64.StdEncoding.EncodeToString
	// A 512-bit modulus (not a real key: Go refuses to generate one).
	n := new(big.Int).Lsh(big.NewInt(1), 511)
	smallDER, err := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: n.Add(n, big.NewInt(1)), E: 65537})
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		record string
		want   string // the error, "" for a key
	}{
		{"v=DKIM1; k=ed25519; p=" + b64(edPub), ""},
		{"k=ed25519; p=" + b64(edPub) + "; s=email; h=sha256", ""},
		{"v=DKIM1; k=ed25519; p=" + b64(edPub[:31]), "ed25519 key of 31 bytes"},
		{"v=DKIM1; k=rsa; p=" + b64(smallDER), "key too short: 512 bits"},
		{"v=DKIM1; p=", "key revoked"},
		{"v=DKIM1; k=rsa", "no p="},
		{"v=DKIM2; p=" + b64(edPub), "incompatible key version"},
		{"v=DKIM1; k=ed25519; s=other; p=" + b64(edPub), "not for email"},
		{"v=DKIM1; k=dsa; p=AAAA", "unsupported key type"},
		{"v=DKIM1; p=!!!", "key record p="},
		{"v=DKIM1; v=DKIM1; p=AAAA", "duplicate tag"},
		{"garbage", "malformed tag list"},
	}
	for _, tt := range tests {
		_, err := parseKey(tt.record)
		if (err == nil) != (tt.want == "") || err != nil && !strings.Contains(err.Error(), tt.want) {
			t.Errorf("parseKey(%.40q) error %v, want %q", tt.record, err, tt.want)
		}
	}
}

func TestCheckAlgorithm(t *testing.T) {
	t.Parallel()
	rsaKey := &publicKey{algo: "rsa"}
	edOnly := &publicKey{algo: "ed25519", hashAlgos: []string{"sha1"}}
	tests := []struct {
		key  *publicKey
		a    string
		want string
	}{
		{rsaKey, "rsa-sha256", ""},
		{rsaKey, " RSA-SHA256 ", ""},
		{rsaKey, "rsa-sha1", "unsupported algorithm"},
		{rsaKey, "ed25519-sha256", "does not match the key"},
		{edOnly, "ed25519-sha256", "does not allow sha256"},
	}
	for _, tt := range tests {
		err := tt.key.checkAlgorithm(tt.a)
		if (err == nil) != (tt.want == "") || err != nil && !strings.Contains(err.Error(), tt.want) {
			t.Errorf("checkAlgorithm(%q) on %s: %v, want %q", tt.a, tt.key.algo, err, tt.want)
		}
	}
}

// TestKeyCache: a key is fetched once per verification, and a lookup
// that failed for now says so.
func TestKeyCache(t *testing.T) {
	t.Parallel()
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	queries := 0
	ks := keys{lookup: func(name string) dns.Result {
		queries++
		switch name {
		case "s._domainkey.example.org":
			return dns.Result{Status: dns.OK, Values: []string{"k=ed25519; p=" + base64.StdEncoding.EncodeToString(edPub)}}
		case "two._domainkey.example.org":
			return dns.Result{Status: dns.OK, Values: []string{"p=AAAA", "p=BBBB"}}
		case "slow._domainkey.example.org":
			return dns.Result{Status: dns.TempError, Err: "SERVFAIL"}
		}
		return dns.Result{Status: dns.NXDomain}
	}}
	for range 3 {
		if _, err := ks.get("Example.org", "s"); err != nil {
			t.Fatal(err)
		}
	}
	if queries != 1 {
		t.Errorf("%d queries for one key, want 1", queries)
	}
	if _, err := ks.get("example.org", "two"); err == nil || !strings.Contains(err.Error(), "2 key records") {
		t.Errorf("two records: %v", err)
	}
	_, err := ks.get("example.org", "slow")
	if err == nil || !strings.Contains(err.Error(), "temporary failure") {
		t.Errorf("SERVFAIL: %v", err)
	}
	if _, err := ks.get("example.org", "none"); err == nil || strings.Contains(err.Error(), "temporary") {
		t.Errorf("NXDOMAIN: %v", err)
	}
}
