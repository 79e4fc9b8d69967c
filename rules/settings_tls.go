package rules

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.starlark.net/starlark"

	"github.com/larkpost/larkpost/rules/certs"
)

// TLSSettings are the SMTP server's TLS and AUTH settings, with
// Postfix's smtpd_tls_* and smtpd_sasl_* names.
type TLSSettings struct {
	CertFile   string   // smtpd_tls_cert_file
	KeyFile    string   // smtpd_tls_key_file ("" = the cert file)
	ChainFiles []string // smtpd_tls_chain_files: PEM files each with a key and its chain
	// Level is smtpd_tls_security_level: "none", "may" or "encrypt";
	// "" until finish, then "may" when a certificate is configured.
	Level              string
	Protocols          string // smtpd_tls_protocols, for "may"
	MandatoryProtocols string // smtpd_tls_mandatory_protocols, for "encrypt"
	MandatoryCiphers   string // smtpd_tls_mandatory_ciphers: "medium" or "high"
	ReceivedHeader     bool   // smtpd_tls_received_header
	AskCCert           bool   // smtpd_tls_ask_ccert
	CAFile             string // smtpd_tls_CAfile: verifies client certificates
	AuthOnly           bool   // smtpd_tls_auth_only
}

// SASLSettings are the SMTP server's AUTH settings.
type SASLSettings struct {
	Type           string        // smtpd_sasl_type: "passwd-file" or "dovecot"
	Path           string        // smtpd_sasl_path: the passwd file, or Dovecot's auth socket
	FailureLimit   int           // smtpd_sasl_failure_limit: failures per client before it is blocked
	FailureBackoff time.Duration // smtpd_sasl_failure_backoff: the first block; it doubles, up to an hour
}

// HasCertificates reports whether a server certificate is configured.
func (t *TLSSettings) HasCertificates() bool { return t.CertFile != "" || len(t.ChainFiles) > 0 }

// ListenOptions are one listener's settings, master.cf's -o overrides:
// what is not set comes from the global settings.
type ListenOptions struct {
	Addr string
	// TLSLevel overrides smtpd_tls_security_level ("" = the global one).
	TLSLevel string
	// WrapperMode is implicit TLS from the first byte (port 465,
	// smtpd_tls_wrappermode).
	WrapperMode bool
	// SASLAuth overrides smtpd_sasl_auth_enable (nil = the global one).
	SASLAuth *bool
	// TLSAuthOnly overrides smtpd_tls_auth_only (nil = the global one).
	TLSAuthOnly *bool
	// RequireAuth refuses MAIL FROM until the client authenticated:
	// a submission port (smtpd_client_restrictions =
	// permit_sasl_authenticated, reject).
	RequireAuth bool
	// ProxyProtocol is smtpd_upstream_proxy_protocol: "haproxy" when the
	// listener sits behind a load balancer speaking PROXY v1/v2.
	ProxyProtocol string
}

// Listener is a listener's effective options.
type Listener struct {
	Name        string
	Addr        string
	TLSLevel    string // none, may or encrypt
	WrapperMode bool
	SASLAuth    bool
	TLSAuthOnly bool
	RequireAuth bool
	// ProxyProtocol: connections start with a PROXY header (v1 or v2),
	// accepted only from upstream_proxy_networks.
	ProxyProtocol bool
}

// Listener returns the effective options of the listener called name.
func (s *Settings) Listener(name string) Listener {
	o := s.ListenOpts[name]
	l := Listener{Name: name, Addr: s.Listen[name], TLSLevel: s.TLS.Level, WrapperMode: o.WrapperMode,
		SASLAuth: s.SASLAuthEnable, TLSAuthOnly: s.TLS.AuthOnly, RequireAuth: o.RequireAuth, ProxyProtocol: o.ProxyProtocol == "haproxy"}
	if o.TLSLevel != "" {
		l.TLSLevel = o.TLSLevel
	}
	if o.SASLAuth != nil {
		l.SASLAuth = *o.SASLAuth
	}
	if o.TLSAuthOnly != nil {
		l.TLSAuthOnly = *o.TLSAuthOnly
	}
	if l.WrapperMode {
		l.TLSLevel = "encrypt"
	}
	return l
}

var tlsLevels = []string{"none", "may", "encrypt"}

func setTLSLevel(dst *string, v starlark.Value) error {
	var s string
	if err := setString(&s, v); err != nil {
		return err
	}
	if !slices.Contains(tlsLevels, s) {
		return fmt.Errorf("want \"none\", \"may\" or \"encrypt\", got %q", s)
	}
	*dst = s
	return nil
}

func setProtocols(dst *string, v starlark.Value) error {
	var s string
	if err := setString(&s, v); err != nil {
		return err
	}
	if _, _, err := ParseTLSProtocols(s); err != nil {
		return err
	}
	*dst = s
	return nil
}

var tlsVersions = []struct {
	name string
	v    uint16
}{{"TLSv1", tls.VersionTLS10}, {"TLSv1.1", tls.VersionTLS11}, {"TLSv1.2", tls.VersionTLS12}, {"TLSv1.3", tls.VersionTLS13}}

// ParseTLSProtocols reads Postfix's protocol syntax: ">=TLSv1.2",
// "<=TLSv1.2", a list of names, or exclusions ("!SSLv2, !SSLv3, !TLSv1").
// It returns the lowest and highest version allowed. SSLv2 and SSLv3 may
// be named only to exclude them (Go speaks neither).
func ParseTLSProtocols(s string) (lo, hi uint16, err error) {
	allowed := map[uint16]bool{}
	for _, t := range tlsVersions {
		allowed[t.v] = true
	}
	version := func(name string) (uint16, bool, error) {
		name = strings.TrimSpace(name)
		for _, t := range tlsVersions {
			if strings.EqualFold(name, t.name) {
				return t.v, true, nil
			}
		}
		if strings.EqualFold(name, "SSLv2") || strings.EqualFold(name, "SSLv3") {
			return 0, false, nil
		}
		return 0, false, fmt.Errorf("unknown TLS protocol %q (want TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3)", name)
	}
	var named []uint16
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == ':' }) {
		switch {
		case strings.HasPrefix(f, ">="):
			v, ok, err := version(f[2:])
			if err != nil || !ok {
				return 0, 0, cmpErr(err, f)
			}
			for k := range allowed {
				if k < v {
					allowed[k] = false
				}
			}
		case strings.HasPrefix(f, "<="):
			v, ok, err := version(f[2:])
			if err != nil || !ok {
				return 0, 0, cmpErr(err, f)
			}
			for k := range allowed {
				if k > v {
					allowed[k] = false
				}
			}
		case strings.HasPrefix(f, "!"):
			v, ok, err := version(f[1:])
			if err != nil {
				return 0, 0, err
			}
			if ok {
				allowed[v] = false
			}
		default:
			v, ok, err := version(f)
			if err != nil {
				return 0, 0, err
			}
			if !ok {
				return 0, 0, fmt.Errorf("%s is not supported; exclude it with !%s", f, f)
			}
			named = append(named, v)
		}
	}
	if len(named) > 0 {
		for k := range allowed {
			allowed[k] = allowed[k] && slices.Contains(named, k)
		}
	}
	for _, t := range tlsVersions {
		if allowed[t.v] {
			if lo == 0 {
				lo = t.v
			}
			hi = t.v
		}
	}
	if lo == 0 {
		return 0, 0, fmt.Errorf("%q allows no TLS protocol", s)
	}
	for v := lo; v <= hi; v++ {
		if !allowed[v] {
			return 0, 0, fmt.Errorf("%q leaves a gap between versions; Go sets a minimum and a maximum only", s)
		}
	}
	return lo, hi, nil
}

func cmpErr(err error, f string) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("bad protocol bound %q", f)
}

// listenOption sets one key of a listener's dict.
func listenOption(o *ListenOptions, key string, v starlark.Value) error {
	boolPtr := func(dst **bool) error {
		var b bool
		if err := setBool(&b, v); err != nil {
			return err
		}
		*dst = &b
		return nil
	}
	switch strings.TrimPrefix(key, "smtpd_") {
	case "addr":
		return setString(&o.Addr, v)
	case "tls_security_level":
		return setTLSLevel(&o.TLSLevel, v)
	case "tls_wrappermode":
		return setBool(&o.WrapperMode, v)
	case "sasl_auth_enable":
		return boolPtr(&o.SASLAuth)
	case "tls_auth_only":
		return boolPtr(&o.TLSAuthOnly)
	case "require_auth":
		return setBool(&o.RequireAuth, v)
	case "upstream_proxy_protocol":
		if err := setString(&o.ProxyProtocol, v); err != nil {
			return err
		}
		if o.ProxyProtocol != "haproxy" && o.ProxyProtocol != "" {
			return fmt.Errorf("want \"haproxy\" (PROXY protocol v1 and v2) or \"\", got %q", o.ProxyProtocol)
		}
		return nil
	}
	return fmt.Errorf("unknown listener option %q (want addr, tls_security_level, tls_wrappermode, sasl_auth_enable, tls_auth_only, require_auth, upstream_proxy_protocol)", key)
}

func init() {
	tlsSettings := map[string]setting{
		"smtpd_tls_cert_file": {"string", func(s *Settings, v starlark.Value) error { return setString(&s.TLS.CertFile, v) },
			"PEM file with the server certificate and its chain (relative to the config file); default: none (no TLS)"},
		"smtpd_tls_key_file": {"string", func(s *Settings, v starlark.Value) error { return setString(&s.TLS.KeyFile, v) },
			"PEM file with the private key of smtpd_tls_cert_file; default: the cert file itself"},
		"smtpd_tls_chain_files": {"list of files", func(s *Settings, v starlark.Value) error {
			return setList(&s.TLS.ChainFiles, v, func(string) error { return nil })
		},
			"PEM files each holding a private key and its certificate chain, as Postfix's; several give several certificates, chosen by the client's SNI name (or key type); used with or instead of smtpd_tls_cert_file; default: none"},
		"smtpd_tls_security_level": {"\"none\", \"may\" or \"encrypt\"", func(s *Settings, v starlark.Value) error { return setTLSLevel(&s.TLS.Level, v) },
			"STARTTLS: none (not offered), may (offered) or encrypt (required before MAIL FROM); a listener may override it; default: may when a certificate is configured, else none"},
		"smtpd_tls_protocols": {"string", func(s *Settings, v starlark.Value) error { return setProtocols(&s.TLS.Protocols, v) },
			"TLS versions at level may, Postfix's syntax (\">=TLSv1.2\", \"!SSLv2, !SSLv3, !TLSv1\"); default \">=TLSv1\""},
		"smtpd_tls_mandatory_protocols": {"string", func(s *Settings, v starlark.Value) error { return setProtocols(&s.TLS.MandatoryProtocols, v) },
			"TLS versions at level encrypt (and on wrapper-mode listeners); default \">=TLSv1.2\""},
		"smtpd_tls_mandatory_ciphers": {"\"medium\" or \"high\"", func(s *Settings, v starlark.Value) error {
			var c string
			if err := setString(&c, v); err != nil {
				return err
			}
			if c != "medium" && c != "high" {
				return fmt.Errorf("want \"medium\" or \"high\", got %q", c)
			}
			s.TLS.MandatoryCiphers = c
			return nil
		}, "TLS 1.2 cipher suites at level encrypt: medium (Go's defaults, all AEAD or CBC with ECDHE) or high (AES-256-GCM and ChaCha20-Poly1305 only); TLS 1.3 suites are always Go's; default medium"},
		"smtpd_tls_received_header": {"bool", func(s *Settings, v starlark.Value) error { return setBool(&s.TLS.ReceivedHeader, v) },
			"the Received header names the TLS version and cipher of the client's session, as Postfix's; default True (Postfix: no)"},
		"smtpd_tls_ask_ccert": {"bool", func(s *Settings, v starlark.Value) error { return setBool(&s.TLS.AskCCert, v) },
			"ask TLS clients for a certificate; conn.tls shows its subject and fingerprint (verified against smtpd_tls_CAfile when set); default False"},
		"smtpd_tls_CAfile": {"string", func(s *Settings, v starlark.Value) error { return setString(&s.TLS.CAFile, v) },
			"PEM file of CAs that client certificates are verified against (with smtpd_tls_ask_ccert); default: none (certificates are shown, not verified)"},
		"smtpd_tls_auth_only": {"bool", func(s *Settings, v starlark.Value) error { return setBool(&s.TLS.AuthOnly, v) },
			"AUTH is offered only over TLS; a listener may override it; default True (Postfix: no)"},
		"smtpd_sasl_auth_enable": {"bool", func(s *Settings, v starlark.Value) error { return setBool(&s.SASLAuthEnable, v) },
			"offer SMTP AUTH (PLAIN, LOGIN) with smtpd_sasl_type's backend; a listener may override it; default False"},
		"smtpd_sasl_type": {"\"passwd-file\" or \"dovecot\"", func(s *Settings, v starlark.Value) error {
			var t string
			if err := setString(&t, v); err != nil {
				return err
			}
			if t != "passwd-file" && t != "dovecot" {
				return fmt.Errorf("want \"passwd-file\" or \"dovecot\", got %q", t)
			}
			s.SASL.Type = t
			return nil
		}, "where AUTH checks passwords: a passwd-file in Dovecot's format ({SHA512-CRYPT}, {BLF-CRYPT}, {ARGON2ID}; {PLAIN} for tests), or Dovecot's auth service, as Postfix's smtpd_sasl_type = dovecot; default \"passwd-file\""},
		"smtpd_sasl_path": {"string", func(s *Settings, v starlark.Value) error { return setString(&s.SASL.Path, v) },
			"the passwd file (relative to the config file), or Dovecot's auth socket: a path such as \"/var/spool/postfix/private/auth\" or \"inet:127.0.0.1:12345\"; default: none"},
		"smtpd_sasl_failure_limit": {"int", func(s *Settings, v starlark.Value) error { return setInt(&s.SASL.FailureLimit, v, 1) },
			"failed AUTH attempts from one client address (IPv6: its /64) within 10 minutes before it is refused AUTH and its session ends with 421 4.7.0; default 5"},
		"smtpd_sasl_failure_backoff": {"duration", func(s *Settings, v starlark.Value) error { return setDuration(&s.SASL.FailureBackoff, v) },
			"how long such a client is refused AUTH; each new block doubles it, up to an hour; default \"1m\""},
		"smtp_tls_CAfile": {"string", func(s *Settings, v starlark.Value) error { return setString(&s.SMTPTLSCAFile, v) },
			"PEM file of CAs that outbound TLS verifies servers against, instead of the system's roots (a private relayhost's CA); default: the system's roots"},
		"smtp_mta_sts": {"bool", func(s *Settings, v starlark.Value) error { return setBool(&s.SMTPMTASTS, v) },
			"apply recipient domains' MTA-STS policies (RFC 8461) at levels may and dane: in enforce mode an MX must be listed and present a valid certificate, or the mail waits; policies are fetched over HTTPS and cached for their max_age; default True"},
		"upstream_proxy_networks": {"list of CIDR", func(s *Settings, v starlark.Value) error { return setNetworks(&s.ProxyNetworks, v) },
			"the load balancers a listener with upstream_proxy_protocol = \"haproxy\" takes a PROXY header from; a connection from anywhere else is closed unanswered; default: loopback only"},
		"smtpd_sender_login_maps": {"list of table specs", tableList(func(s *Settings) *[]string { return &s.SenderLoginMaps }),
			"sender address or @domain -> the logins that may use it (comma separated), as Postfix's, for reject_sender_login_mismatch; default: none"},
		"reject_sender_login_mismatch": {"bool", func(s *Settings, v starlark.Value) error { return setBool(&s.RejectSenderLoginMismatch, v) },
			"Postfix's restriction: an authenticated client may only send as an address smtpd_sender_login_maps gives its login, and a client that did not authenticate may not use an address that belongs to a login (553 5.7.1); default False"},
	}
	for name, st := range tlsSettings {
		settingTable[name] = st
		bindings[name] = BindRestart
	}
	bindings["smtpd_sender_login_maps"] = BindSession
	bindings["reject_sender_login_mismatch"] = BindSession
	for _, name := range []string{"smtpd_tls_cert_file", "smtpd_tls_key_file", "smtpd_tls_chain_files", "smtpd_tls_security_level",
		"smtpd_tls_protocols", "smtpd_tls_mandatory_protocols", "smtpd_tls_mandatory_ciphers", "smtpd_tls_received_header",
		"smtpd_tls_ask_ccert", "smtpd_tls_CAfile", "smtpd_tls_auth_only", "smtpd_sasl_auth_enable", "smtpd_sasl_type",
		"smtpd_sasl_path", "smtpd_sender_login_maps", "reject_sender_login_mismatch", "smtp_tls_CAfile"} {
		postfixEquivalents[name] = name
	}
	maps := map[string]string{
		"smtpd_tls_cert_file":           `"certs/fullchain.pem", smtpd_tls_key_file = "certs/privkey.pem"`,
		"smtpd_tls_key_file":            `"certs/privkey.pem", smtpd_tls_cert_file = "certs/fullchain.pem"`,
		"smtpd_tls_chain_files":         `["certs/rsa.pem", "certs/ecdsa.pem"]`,
		"smtpd_tls_security_level":      `"encrypt", smtpd_tls_chain_files = ["certs/mx.pem"]`,
		"smtpd_tls_protocols":           `">=TLSv1.2"`,
		"smtpd_tls_mandatory_protocols": `">=TLSv1.3"`,
		"smtpd_tls_mandatory_ciphers":   `"high"`,
		"smtpd_tls_received_header":     `False`,
		"smtpd_tls_ask_ccert":           `True`,
		"smtpd_tls_CAfile":              `"certs/clients-ca.pem"`,
		"smtpd_tls_auth_only":           `False`,
		"smtpd_sasl_auth_enable":        `True, smtpd_sasl_path = "users.passwd"`,
		"smtpd_sasl_type":               `"dovecot", smtpd_sasl_path = "inet:127.0.0.1:12345"`,
		"smtpd_sasl_path":               `"/var/spool/postfix/private/auth", smtpd_sasl_type = "dovecot"`,
		"smtpd_sasl_failure_limit":      `3`,
		"smtpd_sasl_failure_backoff":    `"5m"`,
		"smtpd_sender_login_maps":       `"hash:sender_logins"`,
		"reject_sender_login_mismatch":  `True, smtpd_sender_login_maps = "hash:sender_logins"`,
		"upstream_proxy_networks":       `["10.0.0.0/24"]`,
		"smtp_mta_sts":                  `False`,
		"smtp_tls_CAfile":               `"certs/clients-ca.pem"`,
	}
	for k, v := range maps {
		settingExamples[k] = v
	}
}

// TLSSources are the server's certificates, with paths relative to the
// config file's folder made absolute.
func (p *Policy) TLSSources() []certs.Source {
	abs := func(f string) string {
		if f == "" || filepath.IsAbs(f) {
			return f
		}
		return filepath.Join(p.baseDir(), f)
	}
	t := p.Settings.TLS
	var out []certs.Source
	if t.CertFile != "" {
		out = append(out, certs.Source{Cert: abs(t.CertFile), Key: abs(t.KeyFile)})
	}
	for _, f := range t.ChainFiles {
		out = append(out, certs.Source{Cert: abs(f)})
	}
	return out
}

// checkTLS loads the certificates as serve will: a file that cannot be
// read or a key that does not match is an error at the setting; an
// expired certificate or one not naming hostname is a warning. A
// listener that wants TLS without a certificate is an error.
func (l *loader) checkTLS(p *Policy) {
	s := p.Settings
	t := s.TLS
	for name := range s.Listen {
		ln := s.Listener(name)
		if (ln.TLSLevel != "none" && ln.TLSLevel != "") && !t.HasCertificates() {
			pos := l.settingPos(p, "listen")
			if s.ListenOpts[name].TLSLevel == "" && !ln.WrapperMode {
				pos = l.settingPos(p, "smtpd_tls_security_level")
			}
			l.errorf(pos, "listener %s: TLS (%s) needs a certificate: set smtpd_tls_cert_file and smtpd_tls_key_file, or smtpd_tls_chain_files", name, ln.TLSLevel)
		}
	}
	if t.KeyFile != "" && t.CertFile == "" {
		l.errorf(l.settingPos(p, "smtpd_tls_key_file"), "smtpd_tls_key_file without smtpd_tls_cert_file")
	}
	if t.CAFile != "" {
		if _, err := ClientCAs(p); err != nil {
			l.errorf(l.settingPos(p, "smtpd_tls_CAfile"), "smtpd_tls_CAfile: %v", err)
		}
	}
	if s.SMTPTLSCAFile != "" {
		if _, err := readCAs(p, s.SMTPTLSCAFile); err != nil {
			l.errorf(l.settingPos(p, "smtp_tls_CAfile"), "smtp_tls_CAfile: %v", err)
		}
	}
	hostname := s.Hostname
	if hostname == "" {
		hostname = osHostname()
	}
	now := time.Now()
	for _, src := range p.TLSSources() {
		setting := "smtpd_tls_chain_files"
		if src.Key != "" || (t.CertFile != "" && src.Cert == p.TLSSources()[0].Cert) {
			setting = "smtpd_tls_cert_file"
		}
		c, err := certs.Load(src)
		if err != nil {
			l.errorf(l.settingPos(p, setting), "%s: %v", setting, err)
			continue
		}
		for _, problem := range certs.Check(c, hostname, now) {
			p.Warnings = append(p.Warnings, Diagnostic{Pos: l.settingPos(p, setting), Msg: fmt.Sprintf("%s: %s: certificate %s", setting, src.Cert, problem)})
		}
	}
}

// ClientCAs reads smtpd_tls_CAfile.
func ClientCAs(p *Policy) (*x509.CertPool, error) { return readCAs(p, p.Settings.TLS.CAFile) }

// ServerCAs reads smtp_tls_CAfile: nil (the system's roots) when unset.
func ServerCAs(p *Policy) (*x509.CertPool, error) {
	if p.Settings.SMTPTLSCAFile == "" {
		return nil, nil
	}
	return readCAs(p, p.Settings.SMTPTLSCAFile)
}

func readCAs(p *Policy, f string) (*x509.CertPool, error) {
	if !filepath.IsAbs(f) {
		f = filepath.Join(p.baseDir(), f)
	}
	b, err := os.ReadFile(f)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificate", f)
	}
	return pool, nil
}

// loginSource marks reject_sender_login_mismatch's refusals.
const loginSource = "reject_sender_login_mismatch"

// SASLPath is smtpd_sasl_path, a passwd file's path made absolute against
// the config file's folder (a socket path or inet: address as written).
func (p *Policy) SASLPath() string {
	f := p.Settings.SASL.Path
	if f == "" || filepath.IsAbs(f) || strings.HasPrefix(f, "inet:") || strings.HasPrefix(f, "unix:") {
		return f
	}
	return filepath.Join(p.baseDir(), f)
}

// checkSASL: AUTH needs a backend; a passwd file must be readable.
func (l *loader) checkSASL(p *Policy) {
	s := p.Settings
	offered := false
	for name := range s.Listen {
		offered = offered || s.Listener(name).SASLAuth
	}
	if !offered {
		return
	}
	if s.SASL.Path == "" {
		l.errorf(l.settingPos(p, "smtpd_sasl_auth_enable"), "AUTH is enabled, but smtpd_sasl_path names no passwd file or Dovecot auth socket")
		return
	}
	if s.SASL.Type == "passwd-file" {
		if f, err := os.Open(p.SASLPath()); err != nil {
			l.errorf(l.settingPos(p, "smtpd_sasl_path"), "smtpd_sasl_path: %v", err)
		} else {
			f.Close()
		}
	}
}
