package rules

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/larkpost/larkpost/rules/certs/certstest"
)

func TestParseTLSProtocols(t *testing.T) {
	for _, c := range []struct {
		in     string
		lo, hi uint16
		err    string
	}{
		{">=TLSv1", tls.VersionTLS10, tls.VersionTLS13, ""},
		{">=TLSv1.2", tls.VersionTLS12, tls.VersionTLS13, ""},
		{"!SSLv2, !SSLv3, !TLSv1, !TLSv1.1", tls.VersionTLS12, tls.VersionTLS13, ""},
		{"TLSv1.2 TLSv1.3", tls.VersionTLS12, tls.VersionTLS13, ""},
		{"<=TLSv1.2", tls.VersionTLS10, tls.VersionTLS12, ""},
		{">=TLSv1.2, <=TLSv1.2", tls.VersionTLS12, tls.VersionTLS12, ""},
		{"TLSv1.4", 0, 0, "unknown TLS protocol"},
		{"SSLv3", 0, 0, "not supported"},
		{"!TLSv1.2", 0, 0, "gap"},
		{">=TLSv1.3, <=TLSv1.2", 0, 0, "allows no TLS protocol"},
	} {
		lo, hi, err := ParseTLSProtocols(c.in)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%q: error %v, want %q", c.in, err, c.err)
		case c.err == "" && (err != nil || lo != c.lo || hi != c.hi):
			t.Errorf("%q: %x..%x, %v; want %x..%x", c.in, lo, hi, err, c.lo, c.hi)
		}
	}
}

// TestTLSSettingsChecked: check loads the certificates as serve will,
// and says what is wrong at the setting's line.
func TestTLSSettingsChecked(t *testing.T) {
	dir := t.TempDir()
	ca, err := certstest.NewCA("CA")
	if err != nil {
		t.Fatal(err)
	}
	good, _ := ca.Issue(time.Time{}, time.Time{}, "mx.example.com")
	other, _ := ca.Issue(time.Time{}, time.Time{}, "mx.example.com")
	expired, _ := ca.Issue(time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour), "mx.example.com")
	wrongName, _ := ca.Issue(time.Time{}, time.Time{}, "other.example.com")
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o600)
		return p
	}
	good.WriteFiles(filepath.Join(dir, "good.crt"), filepath.Join(dir, "good.key"))
	write("other.key", other.KeyPEM)
	expired.WriteChain(filepath.Join(dir, "expired.pem"))
	wrongName.WriteChain(filepath.Join(dir, "name.pem"))
	write("garbage.pem", []byte("not a certificate\n"))
	for _, c := range []struct {
		name, cfg string
		err, warn string
	}{
		{"good", `smtpd_tls_cert_file = "good.crt", smtpd_tls_key_file = "good.key"`, "", ""},
		{"key does not match", `smtpd_tls_cert_file = "good.crt",
    smtpd_tls_key_file = "other.key"`, "p.star:2:6: smtpd_tls_cert_file: ", ""},
		{"missing file", `smtpd_tls_cert_file = "nope.crt"`, "p.star:2:6: smtpd_tls_cert_file: open ", ""},
		{"garbage", `smtpd_tls_chain_files = ["garbage.pem"]`, "p.star:2:6: smtpd_tls_chain_files: ", ""},
		{"expired", `smtpd_tls_chain_files = ["expired.pem"]`, "", "p.star:2:6: smtpd_tls_chain_files: " + filepath.Join(dir, "expired.pem") + ": certificate expired on "},
		{"wrong name", `smtpd_tls_chain_files = ["name.pem"]`, "", `certificate does not name the hostname "mx.example.com" (it names other.example.com)`},
		{"TLS without a certificate", `smtpd_tls_security_level = "may"`, "p.star:2:6: listener smtp: TLS (may) needs a certificate", ""},
		{"wrapper mode without a certificate", `listen = {"smtps": {"addr": "127.0.0.1:465", "tls_wrappermode": True}}`, "listener smtps: TLS (encrypt) needs a certificate", ""},
		{"bad listener option", `listen = {"smtp": {"addr": "127.0.0.1:25", "tls_level": "may"}}`, `unknown listener option "tls_level"`, ""},
		{"bad level", `smtpd_tls_security_level = "dane"`, `want "none", "may" or "encrypt"`, ""},
		{"bad protocols", `smtpd_tls_protocols = ">=TLSv2"`, `unknown TLS protocol "TLSv2"`, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := fmt.Sprintf("config(hostname = \"mx.example.com\", resolvers = [],\n     %s)\n", c.cfg)
			p, err := Load(filepath.Join(dir, "p.star"), []byte(src))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var warns []string
			for _, w := range p.Warnings {
				warns = append(warns, w.String())
			}
			got := strings.Join(warns, "\n")
			if c.warn == "" && got != "" || c.warn != "" && !strings.Contains(got, c.warn) {
				t.Errorf("warnings %q, want %q", got, c.warn)
			}
		})
	}
}

func TestListenerOptions(t *testing.T) {
	_, err := Load("p.star", []byte(`config(hostname = "mx.example.com", resolvers = [], smtpd_tls_security_level = "none", smtpd_sasl_auth_enable = False,
    listen = {"smtp": "0.0.0.0:25",
              "submission": {"addr": "0.0.0.0:587", "tls_security_level": "encrypt", "smtpd_sasl_auth_enable": True, "require_auth": True},
              "smtps": {"addr": "0.0.0.0:465", "tls_wrappermode": True, "sasl_auth_enable": True, "tls_auth_only": False}})
`))
	if err == nil {
		t.Fatal("TLS without a certificate loaded")
	}
	if !strings.Contains(err.Error(), "listener submission: TLS (encrypt) needs a certificate") {
		t.Fatal(err)
	}
	s := DefaultSettings()
	s.Listen = map[string]string{"smtp": "0.0.0.0:25", "submission": "0.0.0.0:587", "smtps": "0.0.0.0:465"}
	yes, no := true, false
	s.ListenOpts = map[string]ListenOptions{"submission": {TLSLevel: "encrypt", SASLAuth: &yes, RequireAuth: true},
		"smtps": {WrapperMode: true, SASLAuth: &yes, TLSAuthOnly: &no}}
	s.TLS.Level = "may"
	for _, c := range []struct {
		name string
		want Listener
	}{
		{"smtp", Listener{Name: "smtp", Addr: "0.0.0.0:25", TLSLevel: "may", TLSAuthOnly: true}},
		{"submission", Listener{Name: "submission", Addr: "0.0.0.0:587", TLSLevel: "encrypt", SASLAuth: true, TLSAuthOnly: true, RequireAuth: true}},
		{"smtps", Listener{Name: "smtps", Addr: "0.0.0.0:465", TLSLevel: "encrypt", WrapperMode: true, SASLAuth: true}},
	} {
		if got := s.Listener(c.name); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
}
