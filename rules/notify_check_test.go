package rules

import (
	"strings"
	"testing"
)

// TestCheckNotify: check warns when postmaster notices would go out by
// MX to a name that is not a mail domain, and not otherwise.
func TestCheckNotify(t *testing.T) {
	tests := []struct {
		name, config string
		warn         bool
	}{
		{"hostname is a destination (the default)", `config(hostname = "mx.example.com")`, false},
		{"hostname outside destinations", `config(hostname = "mx1.example.com", destinations = ["example.com"])`, true},
		{"notify_recipient at a destination", `config(hostname = "mx1.example.com", destinations = ["example.com"], notify_recipient = "hostmaster@example.com")`, false},
		{"notify_recipient elsewhere by MX", `config(hostname = "mx1.example.com", destinations = ["example.com"], notify_recipient = "noc@elsewhere.example")`, true},
		{"a relayhost takes it", `config(hostname = "mx1.example.com", destinations = ["example.com"], relayhost = "[smarthost.example.com]")`, false},
		{"a virtual alias domain", `config(hostname = "mx1.example.com", destinations = ["example.com"], virtual_alias_domains = ["mx1.example.com"])`, false},
		{"a route hook takes it", `config(hostname = "mx1.example.com", destinations = ["example.com"])
def route(rcpt, msg):
    return "lmtp:unix:/run/dovecot/lmtp"`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustLoad(t, tt.config)
			var got []string
			for _, w := range p.Warnings {
				if strings.Contains(w.Msg, "postmaster notices") {
					got = append(got, w.String())
				}
			}
			if (len(got) > 0) != tt.warn {
				t.Errorf("warnings %q, want a postmaster warning: %v", got, tt.warn)
			}
		})
	}
}
