package rules

import (
	"reflect"
	"testing"
)

// TestParseTransport: the nexthop is read once, into the fields delivery
// uses, and bad ones are refused with a reason.
func TestParseTransport(t *testing.T) {
	tests := []struct {
		in   string
		want Transport
		err  bool
	}{
		{in: "local", want: Transport{Kind: "local"}},
		{in: "virtual", want: Transport{Kind: "local"}},
		{in: "smtp:example.com", want: Transport{Kind: "smtp", Nexthop: "example.com", Host: "example.com"}},
		{in: "relay:[mx.example.net]:587", want: Transport{Kind: "smtp", Nexthop: "[mx.example.net]:587", Host: "mx.example.net", Port: 587, NoMX: true}},
		{in: "smtp:[192.0.2.1]", want: Transport{Kind: "smtp", Nexthop: "[192.0.2.1]", Host: "192.0.2.1", NoMX: true}},
		{in: "smtp:mx.example.net:2525", want: Transport{Kind: "smtp", Nexthop: "mx.example.net:2525", Host: "mx.example.net", Port: 2525}},
		{in: "lmtp:unix:/run/dovecot/lmtp", want: Transport{Kind: "lmtp", Nexthop: "unix:/run/dovecot/lmtp", Unix: "/run/dovecot/lmtp"}},
		{in: "lmtp:inet:127.0.0.1:24", want: Transport{Kind: "lmtp", Nexthop: "127.0.0.1:24", Host: "127.0.0.1", Port: 24, NoMX: true}},
		{in: "pipe:/usr/bin/cmd -f ${sender} ${recipient}", want: Transport{Kind: "pipe", Nexthop: "/usr/bin/cmd -f ${sender} ${recipient}",
			Argv: []string{"/usr/bin/cmd", "-f", "${sender}", "${recipient}"}}},
		{in: "error:5.1.1 user has left", want: Transport{Kind: "error", Nexthop: "5.1.1 user has left", Status: "5.1.1", Text: "user has left"}},
		{in: "error:gone", want: Transport{Kind: "error", Nexthop: "5.0.0 gone", Status: "5.0.0", Text: "gone"}},
		{in: "hold:quarantine", want: Transport{Kind: "hold", Nexthop: "quarantine", Text: "quarantine"}},
		{in: "smtp:[mx.example.net", err: true},
		{in: "smtp:mx.example.net:99999", err: true},
		{in: "lmtp:", err: true},
		{in: "uucp:host", err: true},
	}
	for _, tt := range tests {
		got, err := ParseTransport(tt.in)
		if (err != nil) != tt.err {
			t.Errorf("%q: err %v", tt.in, err)
			continue
		}
		if !tt.err && !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%q:\ngot  %+v\nwant %+v", tt.in, got, tt.want)
		}
	}
}

// TestPostfixConfigOnce: the table code's view of the settings is built
// once, not at each of the dozen calls a message makes, and a Policy given
// other Settings (a rule test's) gets a view of those.
func TestPostfixConfigOnce(t *testing.T) {
	p, err := Load("main.star", []byte(`config(hostname = "mx.example.com", destinations = ["example.com"], mailbox_path = "/srv/{user}/")`))
	if err != nil {
		t.Fatal(err)
	}
	a, b := p.postfixConfig(), p.postfixConfig()
	if a != b {
		t.Error("built again for the same settings")
	}
	if got := a.ExpandMailboxPath("ann", "example.com"); got != "/srv/ann/" {
		t.Errorf("mailbox path %q", got)
	}
	s := *p.Settings
	s.MailboxPath = "/other/{user}/"
	p.Settings = &s
	if got := p.postfixConfig().ExpandMailboxPath("ann", "example.com"); got != "/other/ann/" {
		t.Errorf("after new settings, mailbox path %q, want /other/ann/", got)
	}
}
