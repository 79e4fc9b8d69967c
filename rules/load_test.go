package rules

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/larkpost/larkpost/stdlib/addr"
)

func TestLoadDiagnostics(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // each a full diagnostic line
	}{
		{"syntax error", "config(hostname = \"a\"\n", []string{
			"p.star:2:1: syntax error: got end of file, want ')'"}},
		{"undefined name", "x = frobnicate()\n", []string{
			"p.star:1:5: undefined: frobnicate"}},
		{"unknown setting", "config(hostnme = \"mx.example.com\")\n", []string{
			`p.star:1:8: unknown setting "hostnme" (did you mean "hostname"?)`}},
		{"wrong type", "config(\n    message_size_limit = True,\n    destinations = 3,\n)\n", []string{
			"p.star:2:5: message_size_limit: want size (int or string like \"10MB\"), got bool",
			"p.star:3:5: destinations: want list of strings, got int"}},
		{"bad cidr", "config(networks = [\"10.0.0.0/8\", \"10.1.2.3/16\", \"300.1.1.1/8\"])\n", []string{
			`p.star:1:34: networks: bad CIDR "10.1.2.3/16": host bits set (did you mean 10.1.0.0/16?)`,
			`p.star:1:49: networks: bad CIDR "300.1.1.1/8"`}},
		{"bad cidr on its own line", "config(\n    networks = [\"127.0.0.0/8\",\n        \"10.0.0.0/33\"],\n)\n", []string{
			`p.star:3:9: networks: bad CIDR "10.0.0.0/33"`}},
		{"def without its colon", "config(hostname = \"a\")\n\ndef on_rcpt(tx, rcpt)\n    return None\n", []string{
			"p.star:3:22: syntax error: got newline, want ':'"}},
		{"bad cidr syntax", "config(networks = \"192.168.1.0/33\")\n", []string{
			`p.star:1:8: networks: bad CIDR "192.168.1.0/33"`}},
		{"not a hook", "def on_rcpts(tx, rcpt):\n    pass\n", []string{
			"p.star:1:5: on_rcpts is not a hook (did you mean on_rcpt?); hooks are on_connect, on_helo, on_auth, on_mail, on_rcpt, on_data, rewrite, expand, route, file, on_delivered, on_deferred, on_bounced"}},
		{"hook arity", "def on_rcpt(rcpt):\n    pass\ndef on_data(tx, msg, extra):\n    pass\n", []string{
			"p.star:1:5: on_rcpt takes 2 parameters (tx, rcpt), not 1",
			"p.star:3:5: on_data takes 2 parameters (tx, msg), not 3"}},
		{"hook not a function", "on_connect = 3\n", []string{
			"p.star:1:1: on_connect must be a function on_connect(conn), got int"}},
		{"runtime error at top level", "x = {}\ny = x[\"nope\"]\n", []string{
			`p.star:2:6: key "nope" not in dict`}},
		{"bad duration and listen", "config(smtpd_timeout = \"5 minutes\", listen = {\"smtp\": \"127.0.0.1\"})\n", []string{
			`p.star:1:8: smtpd_timeout: bad duration "5 minutes" (want e.g. "300s", "5m", "5d")`,
			`p.star:1:37: listen: listener "smtp": bad address "127.0.0.1" (want host:port)`}},
		{"positional config", "config(\"x\")\n", []string{
			"p.star:1:7: config: settings are keyword arguments, e.g. config(hostname=\"mx.example.com\")"}},
		{"bad decision", "x = reject(\"no\", code = 250)\n", []string{
			"p.star:1:11: reject: code 250 is not a 5xx reply code"}},
		{"several at once", "config(hostname = 1, relayhost = 2)\ndef on_hello(conn, name):\n    pass\n", []string{
			"p.star:1:8: hostname: want string, got int",
			"p.star:1:22: relayhost: want string, got int",
			"p.star:2:5: on_hello is not a hook (did you mean on_helo?); hooks are on_connect, on_helo, on_auth, on_mail, on_rcpt, on_data, rewrite, expand, route, file, on_delivered, on_deferred, on_bounced"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load("p.star", []byte(tt.src))
			var ds Diagnostics
			if !errors.As(err, &ds) {
				t.Fatalf("Load error = %v, want Diagnostics", err)
			}
			got := strings.Split(ds.Error(), "\n")
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("diagnostics:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestLoadSettingsAndDefaults(t *testing.T) {
	p, err := Load("p.star", []byte(`
config(
    hostname = "MX1.Example.COM.",
    networks = "10.0.0.0/8, [::1]/128 192.0.2.7",
    relay_domains = [".example.net"],
    message_size_limit = "20MB",
    smtpd_timeout = 60,
    smtpd_session_timeout = "1d",
    resolvers = ["127.0.0.1:5353", "::1"],
)
`))
	if err != nil {
		t.Fatal(err)
	}
	s := p.Settings
	checks := []struct {
		name      string
		got, want any
	}{
		{"hostname", s.Hostname, "mx1.example.com"},
		{"domain", s.Domain, "example.com"},
		{"origin", s.Origin, "mx1.example.com"},
		{"destinations", strings.Join(s.Destinations, " "), "mx1.example.com localhost.example.com localhost"},
		{"size", s.MessageSizeLimit, int64(20 << 20)},
		{"timeout", s.Timeout, 60 * time.Second},
		{"session", s.SessionTimeout, 24 * time.Hour},
		{"resolvers", strings.Join(s.Resolvers, " "), "127.0.0.1:5353 [::1]:53"},
		{"banner", s.Banner, "mx1.example.com ESMTP larkpost"},
		{"in networks", s.InNetworks(netip.MustParseAddr("10.9.8.7")), true},
		{"mapped v4 in networks", s.InNetworks(netip.MustParseAddr("::ffff:10.9.8.7")), true},
		{"single address", s.InNetworks(netip.MustParseAddr("192.0.2.7")), true},
		{"not in networks", s.InNetworks(netip.MustParseAddr("192.0.2.8")), false},
		{"relay subdomain", s.IsRelayDomain("a.example.net"), true},
		{"relay parent not matched by dot form", s.IsRelayDomain("example.net"), false},
		{"local", s.IsLocalDomain("LOCALHOST"), true},
		{"recipient limit default", s.RecipientLimit, 1000},
		{"bare newline default", s.ForbidBareNewline, "reject"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestEmbeddedDefault(t *testing.T) {
	p, err := LoadDefault()
	if err != nil {
		t.Fatal(err)
	}
	s := p.Settings
	wantDir, _ := filepath.Abs("./larkpost-data")
	if s.Listen["smtp"] != "127.0.0.1:2525" || s.DataDir != wantDir || s.RecipientDelimiter != "+" {
		t.Errorf("embedded default settings: listen %v, data_dir %q, delimiter %q", s.Listen, s.DataDir, s.RecipientDelimiter)
	}
	host, _ := os.Hostname()
	if !s.IsLocalDomain(host) || !s.IsLocalDomain("localhost") {
		t.Errorf("default destinations %v lack localhost or the OS host name %q", s.Destinations, host)
	}
	if s.MessageSizeLimit != 10240000 {
		t.Errorf("message_size_limit %d, want Postfix's 10240000", s.MessageSizeLimit)
	}
}

func TestLoadModules(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "lib.star"), []byte("BLOCKED = [\"spam.example\"]\ndef blocked(d):\n    return d in BLOCKED\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "bad.star"), []byte("x = undefined_name\n"), 0o600)
	main := filepath.Join(dir, "main.star")
	os.WriteFile(main, []byte("load(\"lib.star\", \"blocked\")\ndef on_mail(tx, sender):\n    if blocked(sender.domain):\n        return reject(\"blocked\")\n"), 0o600)
	p, err := LoadFile(main)
	if err != nil {
		t.Fatal(err)
	}
	tx := &Tx{Conn: &Conn{}}
	d := p.Mail(context.Background(), tx, addr.Address{Local: "a", Domain: "spam.example"})
	if d.Kind != Reject || d.Source != main+":4" {
		t.Errorf("decision %v from %s, want reject from %s:4", d, d.Source, main)
	}
	os.WriteFile(main, []byte("load(\"bad.star\", \"x\")\n"), 0o600)
	_, err = LoadFile(main)
	if err == nil || !strings.Contains(err.Error(), "bad.star:1:5: undefined: undefined_name") {
		t.Errorf("error from a broken module = %v, want its own position", err)
	}
}

func TestConfigOnlyAtLoadTime(t *testing.T) {
	p, err := Load("p.star", []byte("def on_mail(tx, sender):\n    config(hostname = \"evil\")\n"))
	if err != nil {
		t.Fatal(err)
	}
	d := p.Mail(context.Background(), &Tx{Conn: &Conn{}}, addr.Address{})
	if !d.Failed() || !strings.Contains(d.Err.Error(), "only be called at load time") || d.Code != 451 {
		t.Errorf("config() from a hook: %v (%v), want a 451 failure", d, d.Err)
	}
	if p.Settings.Hostname == "evil" {
		t.Error("hook changed a setting")
	}
}

func TestFrozenGlobals(t *testing.T) {
	p, err := Load("p.star", []byte("SEEN = []\ndef on_mail(tx, sender):\n    SEEN.append(sender)\n"))
	if err != nil {
		t.Fatal(err)
	}
	d := p.Mail(context.Background(), &Tx{Conn: &Conn{}}, addr.Address{Local: "a", Domain: "b.example"})
	if !d.Failed() || !strings.Contains(d.Err.Error(), "frozen") {
		t.Errorf("mutating a global: %v (%v), want a failure about frozen values", d, d.Err)
	}
}

func TestParseSizeAndDuration(t *testing.T) {
	sizes := map[string]int64{"0": 0, "1000": 1000, "10MB": 10 << 20, "512k": 512 << 10, "1GiB": 1 << 30, " 2 mb ": 2 << 20}
	for in, want := range sizes {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "10XB", "MB", "99999999999999999999"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
	durs := map[string]time.Duration{"300": 300 * time.Second, "300s": 300 * time.Second, "5m": 5 * time.Minute, "5d": 120 * time.Hour, "1w": 168 * time.Hour, "1h30m": 90 * time.Minute}
	for in, want := range durs {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-5s", "5 minutes", "d"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) accepted", bad)
		}
	}
}

// FuzzLoad feeds arbitrary scripts to the loader: it must return a Policy
// or Diagnostics with positions, never panic or hang.
func FuzzLoad(f *testing.F) {
	for _, s := range []string{
		"config(hostname = \"mx.example.com\")\n",
		"config(networks = [\"10.0.0.0/8\"], listen = {\"smtp\": \"127.0.0.1:25\"})\n",
		"def on_rcpt(tx, rcpt):\n    return reject(\"no\", code = 554)\n",
		"def on_connect(conn):\n    while True:\n        pass\n",
		"load(\"x.star\", \"y\")\n",
		"x = [i for i in range(10)]\nconfig(message_size_limit = \"1MB\")\n",
		"def on_data(tx, msg):\n    if msg.header(\"Subject\"):\n        return hold(\"x\")\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		p, err := Load("fuzz.star", []byte(src))
		if err == nil {
			if p == nil || p.Settings == nil {
				t.Fatal("nil policy without error")
			}
			return
		}
		var ds Diagnostics
		if !errors.As(err, &ds) || len(ds) == 0 {
			t.Fatalf("error %v is not Diagnostics", err)
		}
		for _, d := range ds {
			if d.Pos.Line < 1 || d.Msg == "" {
				t.Fatalf("diagnostic without position or message: %q", d.String())
			}
		}
	})
}

func TestEverySettingHasABinding(t *testing.T) {
	for _, name := range SettingNames() {
		if SettingBinding(name) == "" {
			t.Errorf("setting %s has no binding in rules/binding.go", name)
		}
	}
	for name := range bindings {
		if _, ok := settingTable[name]; !ok {
			t.Errorf("binding for %s, which is no setting", name)
		}
	}
}

func TestRestartNeeded(t *testing.T) {
	load := func(src string) *Settings {
		p, err := Load("p.star", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return p.Settings
	}
	old := load(`config(listen = {"smtp": "127.0.0.1:2525"}, message_size_limit = "10MB", relayhost = "[a.example]")`)
	new := load(`config(listen = {"smtp": "127.0.0.1:2526"}, message_size_limit = "10MB", relayhost = "[b.example]", delivery_workers = 5)`)
	if got := RestartNeeded(old, new); strings.Join(got, ",") != "delivery_workers,listen" {
		t.Errorf("RestartNeeded = %v, want [delivery_workers listen]", got)
	}
}
