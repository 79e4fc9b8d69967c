package tlspolicy

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"
)

// TLSA certificate usages (RFC 7218 names).
const (
	UsagePKIXTA = 0
	UsagePKIXEE = 1
	UsageDANETA = 2
	UsageDANEEE = 3
)

// Usable reports why SMTP cannot use r, or nil when it can. RFC 7672
// section 3.1.3: an MTA has no list of trusted CAs that the server's
// operator could know, so the PKIX usages 0 and 1 are unusable.
func (r TLSA) Usable() error {
	switch r.Usage {
	case UsageDANETA, UsageDANEEE:
	case UsagePKIXTA, UsagePKIXEE:
		return fmt.Errorf("tlsa %d %d %d: pkix usage %d is unusable for smtp (rfc 7672 section 3.1.3)",
			r.Usage, r.Selector, r.MatchingType, r.Usage)
	default:
		return fmt.Errorf("tlsa %d %d %d: unknown usage %d", r.Usage, r.Selector, r.MatchingType, r.Usage)
	}
	if r.Selector > 1 {
		return fmt.Errorf("tlsa %d %d %d: unknown selector %d", r.Usage, r.Selector, r.MatchingType, r.Selector)
	}
	var size int // of the digest; 0 for exact matching
	switch r.MatchingType {
	case 0:
	case 1:
		size = sha256.Size
	case 2:
		size = sha512.Size
	default:
		return fmt.Errorf("tlsa %d %d %d: unknown matching type %d", r.Usage, r.Selector, r.MatchingType, r.MatchingType)
	}
	if len(r.Data) == 0 || size > 0 && len(r.Data) != size {
		// A digest of the wrong length can never match; saying so
		// beats a puzzling "no match" later.
		return fmt.Errorf("tlsa %d %d %d: association data of %d bytes", r.Usage, r.Selector, r.MatchingType, len(r.Data))
	}
	return nil
}

// Matches reports whether cert is the certificate or key r describes.
func (r TLSA) Matches(cert *x509.Certificate) bool {
	var data []byte
	switch r.Selector {
	case 0:
		data = cert.Raw
	case 1:
		data = cert.RawSubjectPublicKeyInfo
	default:
		return false
	}
	switch r.MatchingType {
	case 0:
		return bytes.Equal(data, r.Data)
	case 1:
		sum := sha256.Sum256(data)
		return bytes.Equal(sum[:], r.Data)
	case 2:
		sum := sha512.Sum512(data)
		return bytes.Equal(sum[:], r.Data)
	}
	return false
}

// SplitUsable separates the records SMTP may use from the others, and
// says why each of the others is unusable.
func SplitUsable(records []TLSA) (usable []TLSA, problems []string) {
	for _, r := range records {
		if err := r.Usable(); err != nil {
			problems = append(problems, err.Error())
			continue
		}
		usable = append(usable, r)
	}
	return usable, problems
}

var errNoUsableTLSA = errors.New("dane: no usable tlsa records")

// VerifyDANE checks a server's certificate chain (leaf first, as sent)
// against TLSA records (RFC 7672 section 3). A DANE-EE record that matches
// the leaf is enough: names and dates are deliberately not checked,
// because the DNSSEC-signed record binds the key to the host (section
// 3.1.1). A DANE-TA record must match a certificate of the chain, from
// which the leaf must chain with valid dates and carry one of names, the
// TLSA base domain or the MX host name (section 3.2.2). now is the time
// for the chain check.
func VerifyDANE(chain []*x509.Certificate, records []TLSA, names []string, now time.Time) error {
	if len(chain) == 0 {
		return errors.New("dane: no server certificate")
	}
	usable, _ := SplitUsable(records)
	if len(usable) == 0 {
		return errNoUsableTLSA
	}
	leaf := chain[0]
	for _, r := range usable {
		if r.Usage == UsageDANEEE && r.Matches(leaf) {
			return nil
		}
	}
	var taErr error
	for _, r := range usable {
		if r.Usage != UsageDANETA {
			continue
		}
		for _, ta := range chain {
			if !r.Matches(ta) {
				continue
			}
			if err := verifyToAnchor(chain, ta, names, now); err != nil {
				taErr = fmt.Errorf("dane: certificate chain to trust anchor %q (tlsa %s): %w", ta.Subject, r, err)
				continue
			}
			return nil
		}
	}
	if taErr != nil {
		return taErr
	}
	return fmt.Errorf("dane: no certificate of the chain (leaf %q) matches the %d usable tlsa records", leaf.Subject, len(usable))
}

// verifyToAnchor checks that the leaf chains up to ta, with the rest of
// the presented chain as intermediates, and that it names a reference
// identifier. Only ta is trusted, so no public CA can stand in for it.
func verifyToAnchor(chain []*x509.Certificate, ta *x509.Certificate, names []string, now time.Time) error {
	roots := x509.NewCertPool()
	roots.AddCert(ta)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		// Mail servers' certificates are not always marked for server
		// authentication; DANE does not ask for it.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}
	if _, err := chain[0].Verify(opts); err != nil {
		return err
	}
	for _, n := range names {
		if n != "" && chain[0].VerifyHostname(displayName(n)) == nil {
			return nil
		}
	}
	return fmt.Errorf("certificate is not valid for %s", strings.Join(names, " or "))
}

// DANEConfig returns a copy of base that verifies the server with records
// instead of the Web PKI. names are the reference identifiers (the TLSA
// base domain first, then the MX host name if different); the first is
// sent as SNI, which RFC 7672 section 8.1 requires.
func DANEConfig(base *tls.Config, records []TLSA, names []string) *tls.Config {
	cfg := cloneConfig(base)
	if len(names) > 0 {
		cfg.ServerName = displayName(names[0])
	}
	// The Web PKI check must not run: DANE-EE servers commonly present
	// self-signed certificates, and DANE-TA anchors are not in RootCAs.
	// VerifyConnection runs anyway and makes the decision.
	cfg.InsecureSkipVerify = true
	now := timeFunc(base)
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		return VerifyDANE(cs.PeerCertificates, records, names, now())
	}
	return cfg
}

func cloneConfig(base *tls.Config) *tls.Config {
	if base == nil {
		return new(tls.Config)
	}
	return base.Clone()
}

func timeFunc(base *tls.Config) func() time.Time {
	if base != nil && base.Time != nil {
		return base.Time
	}
	return time.Now
}

// VerifyPKIX checks the chain against roots (nil: the system roots) for
// host at now, the way crypto/tls would with verification on. It exists
// for report-only modes, where the handshake must succeed regardless.
func VerifyPKIX(chain []*x509.Certificate, roots *x509.CertPool, host string, now time.Time) error {
	if len(chain) == 0 {
		return errors.New("no server certificate")
	}
	opts := x509.VerifyOptions{DNSName: displayName(host), Roots: roots, Intermediates: x509.NewCertPool(), CurrentTime: now}
	for _, c := range chain[1:] {
		opts.Intermediates.AddCert(c)
	}
	_, err := chain[0].Verify(opts)
	return err
}

func rootsOf(base *tls.Config) *x509.CertPool {
	if base == nil {
		return nil
	}
	return base.RootCAs
}
