package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDKIMKeygen: keygen writes a private key only its owner can read,
// never over an existing one, and prints the record; dkim dns prints the
// records of a config's keys, the same one for the same key.
func TestDKIMKeygen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key := filepath.Join(dir, "k.key")
	var out, errb bytes.Buffer
	if code := run([]string{"dkim", "keygen", "-o", key, "example.com", "s1"}, &out, &errb); code != 0 {
		t.Fatalf("keygen: exit %d: %s", code, errb.String())
	}
	fi, err := os.Stat(key)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, fi.Mode())
	}
	rec := out.String()
	if !strings.Contains(rec, `s1._domainkey.example.com. IN TXT ( "v=DKIM1; k=rsa; p=`) {
		t.Errorf("keygen printed:\n%s", rec)
	}
	before, _ := os.ReadFile(key)
	if code := run([]string{"dkim", "keygen", "-o", key, "example.com", "s1"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "not overwriting") {
		t.Errorf("second keygen: exit %d, %q", code, errb.String())
	}
	if after, _ := os.ReadFile(key); !bytes.Equal(before, after) {
		t.Error("existing key overwritten")
	}
	cfg := filepath.Join(dir, "larkpost.star")
	os.WriteFile(cfg, []byte(`config(dkim_keys = [{"domain": "example.com", "selector": "s1", "key_file": "k.key"}])`+"\n"), 0o600)
	var dns bytes.Buffer
	if code := run([]string{"dkim", "dns", "-c", cfg}, &dns, &errb); code != 0 {
		t.Fatalf("dkim dns: exit %d: %s", code, errb.String())
	}
	record := rec[strings.Index(rec, "s1._domainkey"):]
	if !strings.Contains(dns.String(), record) {
		t.Errorf("dkim dns printed:\n%s\nwant the record keygen printed:\n%s", dns.String(), record)
	}
	os.Chmod(key, 0o644)
	errb.Reset()
	if code := run([]string{"check", "-c", cfg}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "larkpost.star:1:8: dkim_keys:") || !strings.Contains(errb.String(), "other users") {
		t.Errorf("check with a world-readable key: exit %d, %q", code, errb.String())
	}
}
