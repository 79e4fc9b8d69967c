package dkimsign

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// Algorithm names, as they appear in a= of a signature.
const (
	RSASHA256     = "rsa-sha256"
	Ed25519SHA256 = "ed25519-sha256"
)

// Limits on key files and key sizes.
const (
	maxKeyFileSize = 64 << 10 // a 4096-bit RSA PEM is about 3.3 KB
	minRSABits     = 1024     // RFC 8301: signers MUST NOT use less
	goodRSABits    = 2048     // RFC 8301: signers SHOULD use at least this
	maxRSABits     = 4096     // RFC 8301: verifiers need not handle more
	checkEvery     = time.Second
)

// KeyConfig names one signing key, as the settings give it.
type KeyConfig struct {
	// Domain is the signing domain, d= in the signature. A key signs mail
	// for this domain and for every subdomain without a key of its own.
	Domain string
	// Selector is s= in the signature; the public key is published as a
	// TXT record at TXTName(Selector, Domain).
	Selector string
	// File is the path of the PEM private key.
	File string
	// Algorithm is RSASHA256 or Ed25519SHA256; empty means whatever the
	// file holds. It is fixed at the first load: a reload that finds the
	// other kind of key is refused.
	Algorithm string
}

// Key is one loaded signing key. Domain, Selector, File and Algorithm are
// fixed; the private key itself is replaced when the file changes.
type Key struct {
	Domain    string
	Selector  string
	File      string
	Algorithm string

	mu      sync.Mutex
	signer  crypto.Signer
	checked time.Time   // last look at the file
	current os.FileInfo // the version the signer came from
	failed  os.FileInfo // a version that failed to load, not retried
	statErr bool        // the last stat failed and was logged
}

// TXT returns the DNS record value publishing the public half of the key
// in force, as Keygen does for a new key.
func (k *Key) TXT() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return txtRecord(k.signer.Public())
}

// get returns the private key to sign with, first looking at the file at
// most once a second. A version that fails to load is logged once and
// not tried again until it changes; the key in force stays meanwhile,
// because an unsigned message is worse than one signed with a key that
// is at worst about to be retired.
func (k *Key) get(now time.Time, log *slog.Logger) crypto.Signer {
	k.mu.Lock()
	defer k.mu.Unlock()
	if d := now.Sub(k.checked); d >= 0 && d < checkEvery {
		return k.signer
	}
	k.checked = now
	fi, err := os.Stat(k.File)
	if err != nil {
		if !k.statErr {
			k.statErr = true
			log.Error("dkim key file unusable; keeping the key in force",
				"domain", k.Domain, "selector", k.Selector, "err", err)
		}
		return k.signer
	}
	k.statErr = false
	if sameVersion(fi, k.current) || (k.failed != nil && sameVersion(fi, k.failed)) {
		return k.signer
	}
	if err := k.reloadLocked(); err != nil {
		log.Error("dkim key file changed but cannot be used; keeping the key in force",
			"domain", k.Domain, "selector", k.Selector, "err", err)
		return k.signer
	}
	log.Info("dkim key reloaded", "domain", k.Domain, "selector", k.Selector, "file", k.File)
	return k.signer
}

// reloadLocked loads the file; on error the key in force stays and the
// failed version is remembered.
func (k *Key) reloadLocked() error {
	fi, signer, _, err := loadKeyFile(k.File)
	if err == nil && algorithmOf(signer) != k.Algorithm {
		err = fmt.Errorf("%s: holds an %s key, was %s (publish a new selector to change algorithm)",
			k.File, algorithmOf(signer), k.Algorithm)
	}
	if err != nil {
		k.failed = fi
		return err
	}
	k.signer, k.current, k.failed = signer, fi, nil
	return nil
}

func sameVersion(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.Size() == b.Size() &&
		a.ModTime().Equal(b.ModTime()) && a.Mode() == b.Mode()
}

// loadKey loads c.File for a new Key. warn is non-empty for a key that
// works but should be replaced.
func loadKey(c KeyConfig) (k *Key, warn string, err error) {
	domain, err := normalizeName(c.Domain)
	if err != nil {
		return nil, "", fmt.Errorf("dkim key %q: domain: %w", c.File, err)
	}
	selector, err := normalizeName(c.Selector)
	if err != nil {
		return nil, "", fmt.Errorf("dkim key %q: selector: %w", c.File, err)
	}
	if c.File == "" {
		return nil, "", fmt.Errorf("dkim key for %s: no key file", TXTName(selector, domain))
	}
	switch c.Algorithm {
	case "", RSASHA256, Ed25519SHA256:
	default:
		return nil, "", fmt.Errorf("dkim key %s: unknown algorithm %q (want %s or %s)",
			c.File, c.Algorithm, RSASHA256, Ed25519SHA256)
	}
	fi, signer, warn, err := loadKeyFile(c.File)
	if err != nil {
		return nil, "", fmt.Errorf("dkim key: %w", err)
	}
	alg := algorithmOf(signer)
	if c.Algorithm != "" && c.Algorithm != alg {
		return nil, "", fmt.Errorf("dkim key: %s: holds an %s key, configured as %s", c.File, alg, c.Algorithm)
	}
	return &Key{
		Domain: domain, Selector: selector, File: c.File, Algorithm: alg,
		signer: signer, current: fi,
	}, warn, nil
}

// loadKeyFile reads and parses a private key file. fi is returned even
// on a parse error, so that a broken version is not read again.
func loadKeyFile(path string) (fi os.FileInfo, signer crypto.Signer, warn string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, "", err
	}
	defer f.Close()
	// Checked on the open file, so the file checked is the file read.
	fi, err = f.Stat()
	if err != nil {
		return nil, nil, "", err
	}
	if !fi.Mode().IsRegular() {
		return fi, nil, "", fmt.Errorf("%s: not a regular file", path)
	}
	// opendkim warns about such keys; a private key anyone on the host
	// can read, or replace, is not private.
	if perm := fi.Mode().Perm(); perm&0o006 != 0 {
		return fi, nil, "", fmt.Errorf("%s: mode %04o lets other users read or write the private key; chmod o-rwx it", path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return fi, nil, "", fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxKeyFileSize {
		return fi, nil, "", fmt.Errorf("%s: larger than %d bytes, not a key", path, maxKeyFileSize)
	}
	signer, warn, err = parsePrivateKey(data)
	if err != nil {
		return fi, nil, "", fmt.Errorf("%s: %w", path, err)
	}
	if warn != "" {
		warn = path + ": " + warn
	}
	return fi, signer, warn, nil
}

// parsePrivateKey takes the first private key PEM block of data.
func parsePrivateKey(data []byte) (crypto.Signer, string, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, "", errors.New("no PEM private key (want RSA PRIVATE KEY or PRIVATE KEY)")
		}
		var key any
		var err error
		switch block.Type {
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, "", errors.New("encrypted private keys are not supported")
		default:
			continue // e.g. a certificate or EC PARAMETERS before the key
		}
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", block.Type, err)
		}
		return checkKey(key)
	}
}

func checkKey(key any) (crypto.Signer, string, error) {
	switch key := key.(type) {
	case *rsa.PrivateKey:
		bits := key.N.BitLen()
		switch {
		case bits < minRSABits:
			return nil, "", fmt.Errorf("%d-bit RSA key refused: DKIM needs at least %d bits (RFC 8301), use %d", bits, minRSABits, goodRSABits)
		case bits > maxRSABits:
			return nil, "", fmt.Errorf("%d-bit RSA key refused: verifiers need only handle up to %d bits (RFC 8301)", bits, maxRSABits)
		case bits < goodRSABits:
			return key, fmt.Sprintf("%d-bit RSA key is weak; RFC 8301 asks for at least %d bits", bits, goodRSABits), nil
		}
		return key, "", nil
	case ed25519.PrivateKey:
		return key, "", nil
	}
	return nil, "", fmt.Errorf("unsupported key type %T (want RSA or Ed25519)", key)
}

func algorithmOf(s crypto.Signer) string {
	if _, ok := s.Public().(ed25519.PublicKey); ok {
		return Ed25519SHA256
	}
	return RSASHA256
}

// txtRecord is the DNS record value for a public key: RFC 6376 3.6.1,
// with the RSA key as a SubjectPublicKeyInfo and the Ed25519 key as its
// raw 32 bytes (RFC 8463 4.2).
func txtRecord(pub crypto.PublicKey) string {
	switch pub := pub.(type) {
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return "" // cannot happen for a valid RSA key
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	}
	return ""
}

// Keygen makes a new private key and the DNS TXT record value to publish
// it at TXTName(selector, domain). algorithm is "rsa" (the default when
// empty) or "ed25519", with or without the "-sha256" suffix; bits is the
// RSA size, 0 meaning 2048, allowed 2048 to 4096. The private key is PKCS#8
// PEM ("PRIVATE KEY"), as openssl genpkey writes it; store it mode 0600
// or 0640.
func Keygen(algorithm string, bits int) (privatePEM []byte, dnsTXT string, err error) {
	var key crypto.Signer
	switch strings.ToLower(algorithm) {
	case "", "rsa", RSASHA256:
		if bits == 0 {
			bits = goodRSABits
		}
		if bits < goodRSABits || bits > maxRSABits {
			return nil, "", fmt.Errorf("dkim keygen: RSA size %d out of range %d-%d", bits, goodRSABits, maxRSABits)
		}
		key, err = rsa.GenerateKey(rand.Reader, bits)
	case "ed25519", Ed25519SHA256:
		if bits != 0 && bits != 256 {
			return nil, "", fmt.Errorf("dkim keygen: Ed25519 keys have no size choice (got %d bits)", bits)
		}
		_, key, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, "", fmt.Errorf("dkim keygen: unknown algorithm %q (want rsa or ed25519)", algorithm)
	}
	if err != nil {
		return nil, "", fmt.Errorf("dkim keygen: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, "", fmt.Errorf("dkim keygen: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), txtRecord(key.Public()), nil
}

// TXTName is the DNS name at which a selector's public key is published.
func TXTName(selector, domain string) string {
	return selector + "._domainkey." + domain
}

// normalizeName lower-cases a domain or selector, drops a final dot and
// checks it is a plain ASCII DNS name: the value goes into a header field
// and a DNS query, so anything else is refused rather than escaped.
// Internationalized domains must be given in their A-label (xn--) form.
func normalizeName(s string) (string, error) {
	s = strings.ToLower(strings.TrimSuffix(s, "."))
	if s == "" {
		return "", errors.New("empty")
	}
	if len(s) > 253 {
		return "", errors.New("longer than 253 characters")
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return "", fmt.Errorf("%q: bad label length", s)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Errorf("%q: character %q not allowed (use the xn-- form of international names)", s, c)
			}
		}
	}
	return s, nil
}
