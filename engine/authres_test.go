package engine

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/resolver/dnstest"
)

// TestAuthenticationResults: what the hooks checked becomes one
// Authentication-Results field with the hostname as authserv-id; a field
// a client forged with that authserv-id is removed, one from another
// server is kept; a client in networks keeps its own.
func TestAuthenticationResults(t *testing.T) {
	t.Parallel()
	dns := dnstest.NewServer(t,
		"1.0.0.127.in-addr.arpa. 300 IN PTR client.test.",
		"client.test. 300 IN A 127.0.0.1",
	)
	body := "From: ann@example.org\r\n" +
		"Authentication-Results: mx.test; spf=pass smtp.mailfrom=ann@example.org\r\n" +
		"Authentication-Results: MX.TEST 1;\r\n dkim=pass header.d=example.org\r\n" +
		"Authentication-Results: other.example; dkim=pass header.d=example.org\r\n" +
		"Subject: hi\r\n\r\nbody\r\n"
	tests := []struct {
		name, networks string
		forgedKept     bool
	}{
		{"outside networks", "192.0.2.0/24", false},
		{"in networks", "127.0.0.0/8", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := start(t, fmt.Sprintf(`config(resolvers = [%q], networks = [%q], destinations = ["mx.test"])
def on_connect(conn):
    dns.fcrdns(conn.ip)
`, dns.Addr, tt.networks))
			if _, err := send(t, h.addr, "ann@example.org", []string{"alice@mx.test"}, body); err != nil {
				t.Fatal(err)
			}
			msgs := h.waitMailbox("alice", 1)
			if len(msgs) != 1 {
				t.Fatalf("alice has %d messages", len(msgs))
			}
			got := strings.ReplaceAll(string(msgs[0]), "\r\n", "\n") // Maildir files have LF line ends
			t.Log(got)
			ours := "Authentication-Results: mx.test;\n\tiprev=pass reason=client.test policy.iprev=127.0.0.1\n"
			if !strings.Contains(got, ours) {
				t.Errorf("no field %q", ours)
			}
			if strings.Index(got, ours) > strings.Index(got, "From: ann") {
				t.Error("our field is not above the client's header")
			}
			if !strings.Contains(got, "Authentication-Results: other.example; dkim=pass") {
				t.Error("another server's field was removed")
			}
			forged := strings.Contains(got, "smtp.mailfrom=ann@example.org") || strings.Contains(got, "MX.TEST 1")
			if forged != tt.forgedKept {
				t.Errorf("forged fields kept = %v, want %v", forged, tt.forgedKept)
			}
			if !tt.forgedKept && !h.log.WaitFor(`removed 2 Authentication-Results header\(s\) claiming to be from mx\.test`, time.Second) {
				t.Error("removal not logged")
			}
		})
	}
}
