package arc

// Public keys of ARC signers, published as DKIM keys (RFC 8617 section
// 4.1.2: "as DKIM", TXT records at selector._domainkey.domain).
//
// parseKey follows parsePublicKey of github.com/emersion/go-msgauth
// v0.7.0, dkim/query.go (MIT License, Copyright (c) 2017 emersion; see
// canonical.go for the notice), which keeps it internal.

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/larkpost/larkpost/stdlib/dns"
)

// errTemporary marks a failure that may not recur: a key that could not
// be fetched now, a message that could not be read before the deadline.
var errTemporary = errors.New("temporary failure")

// publicKey is a parsed key record.
type publicKey struct {
	algo      string   // k=: "rsa" or "ed25519"
	hashAlgos []string // h=, nil for any
	rsa       *rsa.PublicKey
	ed25519   ed25519.PublicKey
}

// verify checks sig over a SHA-256 digest.
func (k *publicKey) verify(digest, sig []byte) error {
	switch k.algo {
	case "rsa":
		return rsa.VerifyPKCS1v15(k.rsa, crypto.SHA256, digest, sig)
	case "ed25519":
		// RFC 8463: Ed25519 signs the SHA-256 digest.
		if !ed25519.Verify(k.ed25519, digest, sig) {
			return errors.New("ed25519: invalid signature")
		}
		return nil
	}
	return fmt.Errorf("unsupported key algorithm %q", k.algo)
}

// keyName is the DNS name of a key; ok is false for a domain or
// selector that is not a plain ASCII name (letters, digits, '-', '_',
// dots between labels), so that nothing else reaches DNS, nor the
// reasons written into the Authentication-Results header.
func keyName(domain, selector string) (string, bool) {
	for _, s := range []string{domain, selector} {
		if s == "" || len(s) > 253 || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, "..") {
			return "", false
		}
		for i := 0; i < len(s); i++ {
			c := s[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
				return "", false
			}
		}
	}
	return selector + "._domainkey." + domain, true
}

// keys fetches and caches the keys of one verification: the same signer
// usually seals and signs each of its sets.
type keys struct {
	lookup func(name string) dns.Result
	cache  map[string]keyEntry
}

type keyEntry struct {
	key *publicKey
	err error
}

// get returns the key of selector at domain. Its errors wrap
// errTemporary when the lookup may work later.
func (ks *keys) get(domain, selector string) (*publicKey, error) {
	name, ok := keyName(domain, selector)
	if !ok {
		return nil, fmt.Errorf("invalid key name (d=%.60q, s=%.60q)", domain, selector)
	}
	name = strings.ToLower(name)
	if e, ok := ks.cache[name]; ok {
		return e.key, e.err
	}
	key, err := ks.fetch(name)
	if ks.cache == nil {
		ks.cache = map[string]keyEntry{}
	}
	ks.cache[name] = keyEntry{key, err}
	return key, err
}

func (ks *keys) fetch(name string) (*publicKey, error) {
	r := ks.lookup(name)
	switch r.Status {
	case dns.OK:
	case dns.NoData, dns.NXDomain:
		return nil, fmt.Errorf("no key at %s (%s)", name, r.Status)
	case dns.TempError:
		return nil, fmt.Errorf("%w: key lookup for %s: %s", errTemporary, name, r.Err)
	default:
		return nil, fmt.Errorf("key lookup for %s: %s", name, r.Err)
	}
	// RFC 6376 section 3.6.2.2: several records make the result
	// undefined; go-msgauth refuses them too.
	if len(r.Values) != 1 {
		return nil, fmt.Errorf("%d key records at %s, want one", len(r.Values), name)
	}
	key, err := parseKey(r.Values[0])
	if err != nil {
		return nil, fmt.Errorf("key at %s: %w", name, err)
	}
	return key, nil
}

// parseKey parses a DKIM key record (RFC 6376 section 3.6.1).
func parseKey(s string) (*publicKey, error) {
	params, err := parseHeaderParams(s)
	if err != nil {
		return nil, fmt.Errorf("key record: %w", err)
	}
	if v, ok := params["v"]; ok && v != "DKIM1" {
		return nil, errors.New("incompatible key version")
	}
	p, ok := params["p"]
	if !ok {
		return nil, errors.New("key record has no p=")
	}
	p = stripWhitespace(p)
	if p == "" {
		return nil, errors.New("key revoked")
	}
	b, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return nil, fmt.Errorf("key record p=: %w", err)
	}
	key := &publicKey{}
	switch stripWhitespace(params["k"]) {
	case "rsa", "":
		pub, err := x509.ParsePKIXPublicKey(b)
		if err != nil {
			// RFC 6376 is inconsistent about whether RSA public keys
			// are RSAPublicKey or SubjectPublicKeyInfo; erratum 3017
			// allows both.
			pub, err = x509.ParsePKCS1PublicKey(b)
			if err != nil {
				return nil, fmt.Errorf("key record p=: %w", err)
			}
		}
		rsaPub, ok := pub.(*rsa.PublicKey)
		if !ok {
			return nil, errors.New("key record p= is not an RSA key")
		}
		// RFC 8301 section 3.2: keys under 1024 bits MUST NOT be
		// considered valid.
		if bits := rsaPub.Size() * 8; bits < 1024 {
			return nil, fmt.Errorf("key too short: %d bits, want 1024 or more", bits)
		}
		key.algo, key.rsa = "rsa", rsaPub
	case "ed25519":
		if len(b) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("ed25519 key of %d bytes, want %d", len(b), ed25519.PublicKeySize)
		}
		key.algo, key.ed25519 = "ed25519", ed25519.PublicKey(b)
	default:
		return nil, fmt.Errorf("unsupported key type k=%.40q", params["k"])
	}
	if h, ok := params["h"]; ok {
		key.hashAlgos = parseTagList(h)
	}
	if s, ok := params["s"]; ok {
		services := parseTagList(s)
		if !slices.Contains(services, "*") && !slices.Contains(services, "email") {
			return nil, errors.New("key not for email (s=)")
		}
	}
	return key, nil
}

// checkAlgorithm checks a signature's a= against its key: ARC signs
// with SHA-256, RSA (RFC 8617) or Ed25519 (RFC 8463, as DKIM).
func (k *publicKey) checkAlgorithm(a string) error {
	keyAlgo, hashAlgo, _ := strings.Cut(strings.ToLower(stripWhitespace(a)), "-")
	if hashAlgo != "sha256" {
		return fmt.Errorf("unsupported algorithm a=%.40q", a)
	}
	if keyAlgo != k.algo {
		return fmt.Errorf("algorithm a=%.40q does not match the key (k=%s)", a, k.algo)
	}
	if k.hashAlgos != nil && !slices.Contains(k.hashAlgos, hashAlgo) {
		return errors.New("the key does not allow sha256 (h=)")
	}
	return nil
}
