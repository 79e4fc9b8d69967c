package rules

import (
	"github.com/larkpost/larkpost/engine/dkimsign"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/larkpost/larkpost/rules/certs/certstest"
)

// exampleTables are the table files the settings' examples name, as an
// admin would have them beside the config.
var exampleTables = map[string]string{
	"aliases":             "postmaster: root\nroot: alice\n",
	"canonical":           "alice@host.example.com alice@example.com\n",
	"sender_canonical":    "bob alice\n",
	"recipient_canonical": "info@example.com alice@example.com\n",
	"relocated":           "carol@example.com carol@example.org\n",
	"transport":           "example.org lmtp:unix:/run/dovecot/lmtp\n",
	"tls_policy":          "[smtp.example.net]:587 encrypt\n",
	"sasl_passwd":         "[smtp.example.net]:587 user:secret\n",
	"sender_logins":       "alice@example.com alice\n@example.org bob, carol\n",
	"users.passwd":        "alice@example.com:{BLF-CRYPT}$2y$05$Yd2mxw5ER5Kd9eTUhXt6S.MRBNvkNpJvAT3fObnnnsZHnudh93J5i\n",
	"virtual":             "info@example.org alice\n",
	"vmailbox":            "bob@example.net example.net/bob/\n",
}

// writeExampleCerts writes the certificate files the TLS settings'
// examples name, under dir/certs.
func writeExampleCerts(t *testing.T, dir string) {
	t.Helper()
	certDir := filepath.Join(dir, "certs")
	if err := os.MkdirAll(certDir, 0o755); err != nil {
		t.Fatal(err)
	}
	ca, err := certstest.NewCA("Example CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(time.Time{}, time.Time{}, "mx.example.com")
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(leaf.WriteFiles(filepath.Join(certDir, "fullchain.pem"), filepath.Join(certDir, "privkey.pem")))
	for _, f := range []string{"rsa.pem", "ecdsa.pem", "mx.pem"} {
		must(leaf.WriteChain(filepath.Join(certDir, f)))
	}
	must(os.WriteFile(filepath.Join(certDir, "clients-ca.pem"), ca.PEM, 0o644))
}

func TestSettingDocs(t *testing.T) {
	dir := t.TempDir()
	writeExampleCerts(t, dir)
	key, _, err := dkimsign.Keygen("ed25519", 0)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "dkim"), 0o700)
	if err := os.WriteFile(filepath.Join(dir, "dkim", "example.com.s2026.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, text := range exampleTables {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	docs := SettingDocs()
	byName := map[string]SettingDoc{}
	var names []string
	for _, d := range docs {
		byName[d.Name] = d
		names = append(names, d.Name)
	}
	if !slices.IsSorted(names) {
		t.Errorf("SettingDocs is not sorted by name: %v", names)
	}
	for _, name := range SettingNames() {
		d, ok := byName[name]
		if !ok {
			t.Errorf("%s: no SettingDoc", name)
			continue
		}
		if d.Type == "" || d.Doc == "" || d.Default == "" || d.Binding == "" {
			t.Errorf("%s: empty field in %+v", name, d)
		}
		if strings.Contains(d.Doc, "; default") {
			t.Errorf("%s: the default was not split from the doc text: %q", name, d.Doc)
		}
		if d.Example == "" {
			t.Errorf("%s: no example in settingExamples (rules/docs.go)", name)
			continue
		}
		file := filepath.Join(dir, "larkpost.star")
		p, err := Load(file, []byte(d.Example+"\n"))
		if err != nil {
			t.Errorf("%s: example %s does not load:\n%v", name, d.Example, err)
			continue
		}
		if !p.Settings.IsSet(name) {
			t.Errorf("%s: example %s does not set it", name, d.Example)
		}
	}
	for name := range settingExamples {
		if _, ok := settingTable[name]; !ok {
			t.Errorf("example for %s, which is no setting", name)
		}
	}
	for name := range postfixEquivalents {
		if _, ok := settingTable[name]; !ok {
			t.Errorf("Postfix equivalent for %s, which is no setting", name)
		}
	}
}

func TestSplitDefault(t *testing.T) {
	for _, c := range []struct{ in, text, def string }{
		{"longest SMTP session; default 1h", "longest SMTP session", "1h"},
		{"DNS servers; default: from /etc/resolv.conf", "DNS servers", "from /etc/resolv.conf"},
		{"a; b; default: none (deliver by MX)", "a; b", "none (deliver by MX)"},
		{"x; default False: such recipients bounce", "x", "False (such recipients bounce)"},
		{"listeners; default: {\"smtp\": \"127.0.0.1:2525\"}", "listeners", "{\"smtp\": \"127.0.0.1:2525\"}"},
		{"no default here", "no default here", ""},
	} {
		text, def := splitDefault(c.in)
		if text != c.text || def != c.def {
			t.Errorf("splitDefault(%q) = %q, %q; want %q, %q", c.in, text, def, c.text, c.def)
		}
	}
}
