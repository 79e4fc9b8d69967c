package tlspolicy_test

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/tlspolicy"
)

// tlsaFor computes the record a zone would publish for cert.
func tlsaFor(usage, selector, mtype uint8, cert *x509.Certificate) tlspolicy.TLSA {
	data := cert.Raw
	if selector == 1 {
		data = cert.RawSubjectPublicKeyInfo
	}
	switch mtype {
	case 1:
		sum := sha256.Sum256(data)
		data = sum[:]
	case 2:
		sum := sha512.Sum512(data)
		data = sum[:]
	}
	return tlspolicy.TLSA{Usage: usage, Selector: selector, MatchingType: mtype, Data: data}
}

// TestDANEHandshake runs real handshakes with DANEConfig.
func TestDANEHandshake(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "dane ca")
	other := newCA(t, "other ca")
	good := ca.leaf(t, time.Time{}, "mx.example.com")
	expired := ca.leaf(t, time.Now().Add(-time.Hour), "mx.example.com")
	wrongName := ca.leaf(t, time.Time{}, "other.example.org")
	stranger := other.leaf(t, time.Time{}, "mx.example.com")

	tests := []struct {
		name    string
		server  tls.Certificate
		records []tlspolicy.TLSA
		wantErr string
	}{
		{name: "dane-ee spki sha256", server: good, records: []tlspolicy.TLSA{tlsaFor(3, 1, 1, good.Leaf)}},
		{name: "dane-ee full certificate sha256", server: good, records: []tlspolicy.TLSA{tlsaFor(3, 0, 1, good.Leaf)}},
		{name: "dane-ee spki sha512", server: good, records: []tlspolicy.TLSA{tlsaFor(3, 1, 2, good.Leaf)}},
		{name: "dane-ee exact", server: good, records: []tlspolicy.TLSA{tlsaFor(3, 0, 0, good.Leaf)}},
		// RFC 7672 section 3.1.1: the record vouches for the key.
		{name: "dane-ee ignores expiry", server: expired, records: []tlspolicy.TLSA{tlsaFor(3, 1, 1, expired.Leaf)}},
		{name: "dane-ee ignores names", server: wrongName, records: []tlspolicy.TLSA{tlsaFor(3, 1, 1, wrongName.Leaf)}},
		{name: "dane-ee mismatch", server: stranger, records: []tlspolicy.TLSA{tlsaFor(3, 1, 1, good.Leaf)}, wantErr: "matches the 1 usable tlsa records"},
		{name: "second record matches", server: good, records: []tlspolicy.TLSA{tlsaFor(3, 1, 1, stranger.Leaf), tlsaFor(3, 1, 1, good.Leaf)}},
		{name: "dane-ta", server: good, records: []tlspolicy.TLSA{tlsaFor(2, 0, 1, ca.cert)}},
		{name: "dane-ta spki", server: good, records: []tlspolicy.TLSA{tlsaFor(2, 1, 1, ca.cert)}},
		{name: "dane-ta checks the name", server: wrongName, records: []tlspolicy.TLSA{tlsaFor(2, 0, 1, ca.cert)}, wantErr: "not valid for mx.example.com"},
		{name: "dane-ta checks expiry", server: expired, records: []tlspolicy.TLSA{tlsaFor(2, 0, 1, ca.cert)}, wantErr: "expired"},
		{name: "dane-ta other anchor", server: stranger, records: []tlspolicy.TLSA{tlsaFor(2, 0, 1, ca.cert)}, wantErr: "matches the 1 usable"},
		{name: "pkix-ee is unusable", server: good, records: []tlspolicy.TLSA{tlsaFor(1, 1, 1, good.Leaf)}, wantErr: "no usable tlsa records"},
		{name: "pkix-ta is unusable", server: good, records: []tlspolicy.TLSA{tlsaFor(0, 0, 1, ca.cert)}, wantErr: "no usable tlsa records"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := tlspolicy.DANEConfig(nil, tt.records, []string{"mx.example.com"})
			_, err := handshake(t, tt.server, cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("handshake: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("handshake error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestTLSAUsable(t *testing.T) {
	t.Parallel()
	sha := make([]byte, 32)
	tests := []struct {
		r       tlspolicy.TLSA
		wantErr string
	}{
		{tlspolicy.TLSA{Usage: 3, Selector: 1, MatchingType: 1, Data: sha}, ""},
		{tlspolicy.TLSA{Usage: 2, Selector: 0, MatchingType: 0, Data: []byte{1}}, ""},
		{tlspolicy.TLSA{Usage: 1, Selector: 1, MatchingType: 1, Data: sha}, "pkix usage 1 is unusable"},
		{tlspolicy.TLSA{Usage: 0, Selector: 1, MatchingType: 1, Data: sha}, "pkix usage 0 is unusable"},
		{tlspolicy.TLSA{Usage: 4, Selector: 1, MatchingType: 1, Data: sha}, "unknown usage"},
		{tlspolicy.TLSA{Usage: 3, Selector: 2, MatchingType: 1, Data: sha}, "unknown selector"},
		{tlspolicy.TLSA{Usage: 3, Selector: 1, MatchingType: 3, Data: sha}, "unknown matching type"},
		{tlspolicy.TLSA{Usage: 3, Selector: 1, MatchingType: 2, Data: sha}, "association data of 32 bytes"},
	}
	for _, tt := range tests {
		err := tt.r.Usable()
		if (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%v.Usable() = %v, want %q", tt.r, err, tt.wantErr)
		}
	}
}
