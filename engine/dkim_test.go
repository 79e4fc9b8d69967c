package engine

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"github.com/larkpost/larkpost/engine/dkimsign"
)

// TestDKIMSigning: mail from networks is signed with the From domain's
// key (a subdomain with its parent's), mail from outside is not unless a
// hook says sign(), and sign(False) leaves ours unsigned; every signature
// verifies with go-msgauth against the record Keygen prints.
func TestDKIMSigning(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key, txt, err := dkimsign.Keygen("rsa", 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "example.com.key")
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	lookup := func(name string) ([]string, error) {
		if name == "s1._domainkey.example.com" {
			return []string{txt}, nil
		}
		return nil, fmt.Errorf("no record for %s", name)
	}
	tests := []struct {
		name, networks, hook, from string
		signed                     bool
	}{
		{"from networks", "127.0.0.0/8", "", "ann@example.com", true},
		{"subdomain, parent key", "127.0.0.0/8", "", "news@lists.example.com", true},
		{"no key for the domain", "127.0.0.0/8", "", "ann@example.org", false},
		{"from outside", "192.0.2.0/24", "", "ann@example.com", false},
		{"outside, sign()", "192.0.2.0/24", "return sign()", "ann@example.com", true},
		{"networks, sign(False)", "127.0.0.0/8", "return sign(False)", "ann@example.com", false},
		{"sign(domain)", "192.0.2.0/24", `return sign("example.com")`, "ann@example.org", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			hook := ""
			if tt.hook != "" {
				hook = "\ndef on_data(tx, msg):\n    " + tt.hook + "\n"
			}
			h := start(t, fmt.Sprintf(`config(networks = [%q], destinations = ["mx.test"],
    dkim_keys = [{"domain": "example.com", "selector": "s1", "key_file": %q}])`, tt.networks, keyFile)+hook)
			body := "From: Ann <" + tt.from + ">\r\nTo: alice@mx.test\r\nSubject: signed?\r\nMessage-ID: <1@example.com>\r\n\r\nHello.\r\n"
			if _, err := send(t, h.addr, tt.from, []string{"alice@mx.test"}, body); err != nil {
				t.Fatal(err)
			}
			msgs := h.waitMailbox("alice", 1)
			if len(msgs) != 1 {
				t.Fatalf("alice has %d messages", len(msgs))
			}
			got := bytes.ReplaceAll(bytes.ReplaceAll(msgs[0], []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
			signed := bytes.Contains(got, []byte("DKIM-Signature:"))
			if signed != tt.signed {
				t.Fatalf("signed = %v, want %v:\n%s", signed, tt.signed, got)
			}
			if !signed {
				return
			}
			vs, err := msgdkim.VerifyWithOptions(bytes.NewReader(got), &msgdkim.VerifyOptions{LookupTXT: lookup})
			if err != nil || len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "example.com" {
				t.Fatalf("verify = %+v, %v\n%s", vs, err, got)
			}
			if !strings.Contains(h.log.String(), "dkim: signed (d=example.com s=s1 a=rsa-sha256)") {
				t.Error("signature not logged")
			}
		})
	}
}
