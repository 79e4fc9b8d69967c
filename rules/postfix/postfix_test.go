package postfix

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/larkpost/larkpost/stdlib/addr"
)

// testConfig is a small site: example.com delivered here, "+" extensions,
// vmail.example for virtual mailboxes.
func testConfig() *Config {
	return &Config{
		RecipientDelimiter:    "+",
		IsLocalDomain:         func(d string) bool { return strings.EqualFold(d, "example.com") },
		IsRelayDomain:         func(d string) bool { return strings.EqualFold(d, "relay.example") },
		DataDir:               "/var/lib/larkpost/",
		MailboxPath:           "{data_dir}/mail/{domain}/{user}/",
		VirtualMailboxDomains: []string{"vmail.example"},
		VirtualMailboxBase:    "{data_dir}/vmail",
		SMTPTLSLevel:          "may",
	}
}

func mustParse(t *testing.T, s string) addr.Address {
	t.Helper()
	a, err := addr.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestNexthopKeys: a nexthop is looked up as written, then as the bare
// host; a bare domain has only itself.
func TestNexthopKeys(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"example.com", []string{"example.com"}},
		{"[smtp.example.net]:587", []string{"[smtp.example.net]:587", "smtp.example.net"}},
		{"[smtp.example.net]", []string{"[smtp.example.net]", "smtp.example.net"}},
		{"mx.example.net:2525", []string{"mx.example.net:2525", "mx.example.net"}},
		{"[broken", []string{"[broken"}},
	}
	for _, tt := range tests {
		if got := nexthopKeys(tt.in); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("nexthopKeys(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestTargets: table values split at commas and blanks; a .forward line
// that is quoted or a pipe is one target.
func TestTargets(t *testing.T) {
	tests := []struct {
		fn   func(string) []string
		name string
		in   string
		want []string
	}{
		{splitTargets, "split", "a@x, b@y", []string{"a@x", "b@y"}},
		{splitTargets, "split", "a@x,,b@y\tc@z ", []string{"a@x", "b@y", "c@z"}},
		{splitTargets, "split", " , ", nil},
		{forwardTargets, "forward", "bob@example.net, \\bob", []string{"bob@example.net", "\\bob"}},
		{forwardTargets, "forward", "|/usr/bin/procmail -f-", []string{"|/usr/bin/procmail -f-"}},
		{forwardTargets, "forward", `"/home/bob/mail archive"`, []string{"/home/bob/mail archive"}},
		{forwardTargets, "forward", `"`, []string{`"`}},
	}
	for _, tt := range tests {
		if got := tt.fn(tt.in); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s(%q) = %q, want %q", tt.name, tt.in, got, tt.want)
		}
	}
}

// TestMasquerade: only subdomains of a masquerade domain lose their
// labels; the domain itself and others are kept, the local part as written.
func TestMasquerade(t *testing.T) {
	domains := []string{".Example.com", "example.org"}
	tests := []struct{ in, want string }{
		{"Bob@host.example.com", "Bob@example.com"},
		{"bob@a.b.EXAMPLE.COM", "bob@example.com"},
		{"bob@example.com", "bob@example.com"},
		{"bob@notexample.com", "bob@notexample.com"},
		{"bob@mail.example.org", "bob@example.org"},
		{"bob", "bob"},
	}
	for _, tt := range tests {
		if got := masquerade(domains, tt.in); got != tt.want {
			t.Errorf("masquerade(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestMailbox: the mailbox is the lower-cased local part without its
// extension, refused when it could climb out of the mail directory; its
// path fills in mailbox_path.
func TestMailbox(t *testing.T) {
	c := testConfig()
	tests := []struct {
		rcpt, box string
		valid     bool
		path      string
	}{
		{"Bob+lists@example.com", "bob", true, "/var/lib/larkpost/mail/example.com/bob/"},
		{"josé@example.com", "josé", true, "/var/lib/larkpost/mail/example.com/josé/"},
		{".hidden@example.com", ".hidden", false, ""},
		{"a..b@example.com", "a..b", false, ""},
		{strings.Repeat("x", 65) + "@example.com", strings.Repeat("x", 65), false, ""},
	}
	for _, tt := range tests {
		box, valid := c.Mailbox(mustParse(t, tt.rcpt))
		if box != tt.box || valid != tt.valid {
			t.Errorf("Mailbox(%s) = %q, %v; want %q, %v", tt.rcpt, box, valid, tt.box, tt.valid)
		}
		if valid {
			if got := c.ExpandMailboxPath(box, "example.com"); got != tt.path {
				t.Errorf("ExpandMailboxPath(%q) = %q, want %q", box, got, tt.path)
			}
		}
	}
	if !c.IsLocalUser("anyone") {
		t.Error("without local_recipients every user is local")
	}
	c.LocalRecipients = []string{"Bob"}
	if !c.IsLocalUser("bob") || c.IsLocalUser("alice") {
		t.Error("local_recipients: want bob (any case) and not alice")
	}
}

// openTest opens tables from c, failing the test on any error.
func openTest(t *testing.T, c *Config, baseDir string) *Tables {
	t.Helper()
	return Open(c, baseDir, nil, func(setting string, err error) { t.Fatalf("%s: %v", setting, err) })
}

// TestOpenFailures: every table that does not open is reported under its
// setting, in the order of the settings, and the others are still opened.
func TestOpenFailures(t *testing.T) {
	c := testConfig()
	c.TransportMaps = []string{"inline:{example.net=smtp:[mx.example.net]}", "nosuch:x"}
	c.CanonicalMaps = []string{"hash:missing"}
	c.AliasMaps = []string{"hash:aliases-missing"}
	var got []string
	tb := Open(c, t.TempDir(), nil, func(setting string, err error) { got = append(got, setting) })
	if want := []string{"canonical_maps", "transport_maps", "alias_maps"}; !reflect.DeepEqual(got, want) {
		t.Errorf("failures reported for %q, want %q", got, want)
	}
	if r, err := tb.Route(c, mustParse(t, "a@example.net")); err != nil || r.String() != "smtp:[mx.example.net]" {
		t.Errorf("the table that opened is not used: %v, %v", r, err)
	}
}

// TestNexthopTables: TLS levels and SASL logins are found by the nexthop
// as written, then by the bare host; an unknown TLS level demands encryption.
func TestNexthopTables(t *testing.T) {
	c := testConfig()
	c.SMTPTLSPolicyMaps = []string{"inline:{[smtp.example.net]:587=encrypt, example.org=none, typo.example=verfy}"}
	c.SMTPSASLPasswordMaps = []string{"inline:{smtp.example.net=user:pa:ss}"}
	tb := openTest(t, c, t.TempDir())
	for nexthop, want := range map[string]string{
		"[smtp.example.net]:587": "encrypt",
		"[example.org]:25":       "none",
		"typo.example":           "encrypt",
		"elsewhere.example":      "may",
	} {
		if got, err := tb.TLSLevel(c, nexthop); got != want || err != nil {
			t.Errorf("TLSLevel(%s) = %q, want %q", nexthop, got, want)
		}
	}
	if u, p, ok, _ := tb.SASLCredentials("[smtp.example.net]:587"); !ok || u != "user" || p != "pa:ss" {
		t.Errorf("SASLCredentials = %q, %q, %v", u, p, ok)
	}
	res, _, _ := tb.Query(c, "smtp_sasl_password_maps", "[smtp.example.net]:587")
	if len(res) != 1 || res[0].Value != "user:********" || res[0].Matched != "smtp.example.net" {
		t.Errorf("query shows %+v, want the password hidden", res)
	}
}

// TestRewriteExpand: canonical tables rewrite, masquerading applies to
// senders only, and expansion goes through virtual aliases, aliases and
// .forward.
func TestRewriteExpand(t *testing.T) {
	dir := t.TempDir()
	c := testConfig()
	c.DataDir = dir
	c.CanonicalMaps = []string{"inline:{bob@example.com=robert@example.com}"}
	c.MasqueradeDomains = []string{"example.com"}
	c.VirtualAliasMaps = []string{"inline:{ { sales@example.com = ann@example.com, |/bin/true } }"}
	c.ForwardPath = "{data_dir}/{user}.forward"
	if err := os.WriteFile(filepath.Join(dir, "aliases"), []byte("postmaster: root\nann+lists: lists\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "carl.forward"), []byte("# away\ncarl@example.net, \\carl\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.AliasMaps = []string{"hash:aliases"}
	tb := openTest(t, c, dir)

	if out, how, _ := tb.Rewrite(c, "bob@example.com", false); out != "robert@example.com" || !strings.HasSuffix(how, " bob@example.com") {
		t.Errorf("Rewrite = %q by %q", out, how)
	}
	if out, how, _ := tb.Rewrite(c, "ann@host.example.com", true); out != "ann@example.com" || how != "masquerade_domains" {
		t.Errorf("sender Rewrite = %q by %q", out, how)
	}
	if out, _, _ := tb.Rewrite(c, "ann@host.example.com", false); out != "ann@host.example.com" {
		t.Errorf("recipients are not masqueraded, got %q", out)
	}
	if !tb.RewritesHeaders(c) {
		t.Error("RewritesHeaders = false with canonical_maps")
	}

	tests := []struct {
		rcpt string
		want []string
		via  string
	}{
		{"sales@example.com", []string{"ann@example.com", "|/bin/true"}, ""},
		{"postmaster@example.com", []string{"root"}, filepath.Join(dir, "aliases")},
		{"ann+lists@example.com", []string{"lists"}, filepath.Join(dir, "aliases")},
		{"carl@example.com", []string{"carl@example.net", "carl@example.com"}, filepath.Join(dir, "carl.forward")},
		{"dave@example.com", nil, ""},
		{"postmaster@example.net", nil, ""}, // aliases are for local domains only
	}
	for _, tt := range tests {
		got, via, err := tb.Expand(c, mustParse(t, tt.rcpt))
		if err != nil {
			t.Errorf("Expand(%s): %v", tt.rcpt, err)
		}
		if !reflect.DeepEqual(got, tt.want) || tt.via != "" && via != tt.via {
			t.Errorf("Expand(%s) = %q via %q, want %q via %q", tt.rcpt, got, via, tt.want, tt.via)
		}
	}
}

// TestRouteAndRecipients: the default routes and recipient checks.
func TestRouteAndRecipients(t *testing.T) {
	c := testConfig()
	c.TransportMaps = []string{"inline:{partner.example=smtp:}"}
	c.RelocatedMaps = []string{"inline:{old@example.com=new@example.org}"}
	c.VirtualMailboxMaps = []string{"inline:{ann@vmail.example=ann/, evil@vmail.example=../x}"}
	c.LocalRecipients = []string{"bob"}
	c.CanonicalMaps = []string{"inline:{olduser@example.com=bob@example.com}"}
	c.RecipientCanonicalMaps = []string{"inline:{oldann@vmail.example=ann@vmail.example}"}
	tb := openTest(t, c, t.TempDir())

	routes := map[string]string{
		"a@partner.example": "smtp:partner.example",
		"bob@example.com":   "local",
		"ann@vmail.example": "local",
		"a@elsewhere.net":   "smtp:elsewhere.net",
	}
	for rcpt, want := range routes {
		if r, err := tb.Route(c, mustParse(t, rcpt)); err != nil || r.String() != want {
			t.Errorf("Route(%s) = %v, %v; want %s", rcpt, r, err, want)
		}
	}
	c.Relayhost = "[smarthost.example]:587"
	if r, _ := tb.Route(c, mustParse(t, "a@elsewhere.net")); r.String() != "smtp:[smarthost.example]:587" || r.Source != "relayhost" {
		t.Errorf("with relayhost: %v from %s", r, r.Source)
	}

	if p, ok, _ := tb.VirtualMailbox(c, "ann@vmail.example"); !ok || p != "/var/lib/larkpost/vmail/ann/" {
		t.Errorf("VirtualMailbox = %q, %v", p, ok)
	}
	if _, ok, _ := tb.VirtualMailbox(c, "evil@vmail.example"); ok {
		t.Error("a virtual mailbox may not climb out of the base")
	}

	checks := []struct {
		rcpt     string
		mayRelay bool
		code     int // 0: accepted
	}{
		{"bob@example.com", false, 0},
		{"carol@example.com", false, 550},
		{"olduser@example.com", false, 0}, // canonical_maps: cleanup rewrites it to bob
		{"oldann@vmail.example", false, 0},
		{"olduser@elsewhere.net", false, 554},
		{"old@example.com", false, 550},
		{"ann@vmail.example", false, 0},
		{"nobody@vmail.example", false, 550},
		{"a@relay.example", false, 0},
		{"a@elsewhere.net", false, 554},
		{"a@elsewhere.net", true, 0},
	}
	for _, tt := range checks {
		r := tb.CheckRecipient(c, mustParse(t, tt.rcpt), tt.mayRelay)
		code := 0
		if r != nil {
			code = r.Code
			if !strings.HasPrefix(r.Text, "<"+tt.rcpt+">: ") {
				t.Errorf("refusal text %q does not name the recipient", r.Text)
			}
		}
		if code != tt.code {
			t.Errorf("CheckRecipient(%s, relay %v) = %+v, want code %d", tt.rcpt, tt.mayRelay, r, tt.code)
		}
	}
}

// TestForwardUnavailable: a .forward that cannot be read now (a split
// server's parent is gone) fails the expansion, to be tried again, rather
// than delivering to the mailbox what the user sends elsewhere.
func TestForwardUnavailable(t *testing.T) {
	tb := Open(&Config{}, ".", nil, func(string, error) {})
	c := &Config{IsLocalDomain: func(string) bool { return true }, ForwardPath: "/nonexistent/{user}.forward",
		ReadForward: func(user, path string) ([]byte, error) { return nil, fmt.Errorf("parent gone: %w", ErrTemporary) }}
	if targets, _, err := tb.Expand(c, mustParse(t, "bob@example.com")); err == nil || !errors.Is(err, ErrTemporary) {
		t.Errorf("Expand = %v, %v; want a temporary error", targets, err)
	}
}
