package smtp

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
)

// tlsConfig is the configuration for one STARTTLS handshake with host name.
func (c *Client) tlsConfig(name string) *tls.Config {
	cfg := new(tls.Config)
	if c.TLSConfig != nil {
		cfg = c.TLSConfig.Clone()
	}
	cfg.ServerName = name
	// An untrusted certificate still gives an encrypted session, which
	// opportunistic TLS prefers to plaintext; verifyPeer decides afterwards
	// whether the session counts as verified. This needs one handshake
	// where verifying first would need a second connection.
	cfg.InsecureSkipVerify = true
	return cfg
}

// verifyPeer checks the server's chain the way crypto/tls would have with
// InsecureSkipVerify off: against base's RootCAs (nil = the system roots)
// for host name, at base's Time.
func verifyPeer(base *tls.Config, name string, cs tls.ConnectionState) error {
	if base != nil && base.InsecureSkipVerify {
		return errors.New("certificate verification is turned off")
	}
	certs := cs.PeerCertificates
	if len(certs) == 0 {
		return errors.New("no server certificate")
	}
	opts := x509.VerifyOptions{DNSName: name, Intermediates: x509.NewCertPool()}
	if base != nil {
		opts.Roots = base.RootCAs
		if base.Time != nil {
			opts.CurrentTime = base.Time()
		}
	}
	for _, cert := range certs[1:] {
		opts.Intermediates.AddCert(cert)
	}
	_, err := certs[0].Verify(opts)
	return err
}
