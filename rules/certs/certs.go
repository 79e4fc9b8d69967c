// Package certs loads the SMTP server's certificates and keeps them
// current: a Store hands crypto/tls the certificate for each handshake,
// chosen by the client's SNI name, and reloads the files when they change
// (a certbot renewal), so neither a restart nor a dropped session is
// needed. Sessions keep the certificate they started with.
package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// Source is one certificate: a PEM certificate chain and its key, or one
// file holding both (Key == "", Postfix's smtpd_tls_chain_files).
type Source struct {
	Cert string
	Key  string
}

func (s Source) files() []string {
	if s.Key == "" || s.Key == s.Cert {
		return []string{s.Cert}
	}
	return []string{s.Cert, s.Key}
}

func (s Source) String() string { return strings.Join(s.files(), " and ") }

// Load reads one certificate and checks that its key matches.
func Load(src Source) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(src.Cert)
	if err != nil {
		return nil, err
	}
	keyPEM := certPEM
	if src.Key != "" && src.Key != src.Cert {
		if keyPEM, err = os.ReadFile(src.Key); err != nil {
			return nil, err
		}
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%s: %w", src.Cert, err)
		}
	}
	return &c, nil
}

// Check reports what is wrong with a loaded certificate for a server
// called hostname at time now: not yet valid, expired (or expiring within
// a week), or not naming hostname.
func Check(c *tls.Certificate, hostname string, now time.Time) []string {
	var out []string
	leaf := c.Leaf
	switch {
	case now.Before(leaf.NotBefore):
		out = append(out, "not valid before "+leaf.NotBefore.UTC().Format(time.RFC3339))
	case now.After(leaf.NotAfter):
		out = append(out, "expired on "+leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Add(7 * 24 * time.Hour).After(leaf.NotAfter):
		out = append(out, "expires on "+leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if hostname != "" {
		if err := leaf.VerifyHostname(hostname); err != nil {
			out = append(out, fmt.Sprintf("does not name the hostname %q (it names %s)", hostname, names(leaf)))
		}
	}
	return out
}

func names(leaf *x509.Certificate) string {
	n := leaf.DNSNames
	if len(n) == 0 && leaf.Subject.CommonName != "" {
		n = []string{leaf.Subject.CommonName}
	}
	if len(n) == 0 {
		return "no name"
	}
	return strings.Join(n, ", ")
}

// Store holds the server's certificates and reloads them when their
// files change, checking at most once per Interval.
type Store struct {
	// Log gets a line per reload and per failed reload (the last good
	// certificates stay in use). nil logs nothing.
	Log func(msg string)
	// Interval is how often a handshake may look at the files; 0 means
	// 5 seconds.
	Interval time.Duration

	srcs []Source

	mu      sync.Mutex
	certs   []*tls.Certificate
	stamps  []string
	checked time.Time
}

// NewStore loads every source; any failure is an error.
func NewStore(srcs []Source) (*Store, error) {
	s := &Store{srcs: srcs}
	if len(srcs) == 0 {
		return nil, errors.New("no certificate configured")
	}
	certs, stamps, err := s.load()
	if err != nil {
		return nil, err
	}
	s.certs, s.stamps, s.checked = certs, stamps, time.Now()
	return s, nil
}

func (s *Store) load() ([]*tls.Certificate, []string, error) {
	var certs []*tls.Certificate
	var stamps []string
	for _, src := range s.srcs {
		c, err := Load(src)
		if err != nil {
			return nil, nil, err
		}
		certs = append(certs, c)
		stamps = append(stamps, stamp(src))
	}
	return certs, stamps, nil
}

// stamp identifies the files' current versions: a renewal changes the
// inode, size or time of at least one (certbot swaps symbolic links;
// Stat follows them).
func stamp(src Source) string {
	var b strings.Builder
	for _, f := range src.files() {
		fi, err := os.Stat(f)
		if err != nil {
			b.WriteString("missing;")
			continue
		}
		fmt.Fprintf(&b, "%d:%d:%d;", fi.Size(), fi.ModTime().UnixNano(), inode(fi))
	}
	return b.String()
}

// Reload looks at the files now and loads them if any changed. A broken
// renewal (a key that no longer matches, a half-written file) keeps the
// certificates in use and is reported.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checked = time.Now()
	changed := false
	for i, src := range s.srcs {
		if stamp(src) != s.stamps[i] {
			changed = true
		}
	}
	if !changed {
		return nil
	}
	certs, stamps, err := s.load()
	if err != nil {
		if s.Log != nil {
			s.Log("warning: TLS certificates changed but cannot be loaded, keeping the ones in use: " + err.Error())
		}
		return err
	}
	s.certs, s.stamps = certs, stamps
	if s.Log != nil {
		s.Log("TLS certificates reloaded: " + s.describe())
	}
	return nil
}

func (s *Store) describe() string {
	var out []string
	for _, c := range s.certs {
		out = append(out, names(c.Leaf)+" until "+c.Leaf.NotAfter.UTC().Format("2006-01-02"))
	}
	return strings.Join(out, "; ")
}

// Certificates are the certificates in use now.
func (s *Store) Certificates() []*tls.Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*tls.Certificate(nil), s.certs...)
}

// GetCertificate is tls.Config.GetCertificate: the first certificate
// that suits the client (its SNI name, its signature algorithms), else
// the first one, as Postfix serves its default certificate to clients
// without SNI.
func (s *Store) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	due := time.Since(s.checked) >= s.interval()
	s.mu.Unlock()
	if due {
		s.Reload()
	}
	certs := s.Certificates()
	for _, c := range certs {
		if hello.SupportsCertificate(c) == nil {
			return c, nil
		}
	}
	return certs[0], nil
}

func (s *Store) interval() time.Duration {
	if s.Interval > 0 {
		return s.Interval
	}
	return 5 * time.Second
}
