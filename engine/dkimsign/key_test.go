//go:debug rsa1024min=0

// The directive above lets the test make a 512-bit RSA key, and lets
// crypto/x509 parse it, so that the refusal tested is this package's own.

package dkimsign

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
)

func pemOf(t *testing.T, typ string, der []byte) []byte {
	t.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func pkcs8(t *testing.T, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemOf(t, "PRIVATE KEY", der)
}

func rsaKey(t *testing.T, bits int) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestLoadKeyFormats(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rk := rsaKey(t, 2048)
	_, ek, _ := ed25519.GenerateKey(rand.Reader)
	for _, tc := range []struct {
		name string
		data []byte
		mode os.FileMode
		alg  string
	}{
		{"pkcs1 rsa", pemOf(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk)), 0o600, RSASHA256},
		{"pkcs8 rsa", pkcs8(t, rk), 0o640, RSASHA256},
		{"pkcs8 ed25519", pkcs8(t, ek), 0o400, Ed25519SHA256},
		{"certificate first", append(pemOf(t, "CERTIFICATE", []byte("not parsed")), pkcs8(t, ek)...), 0o600, Ed25519SHA256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeKey(t, dir, tc.name, tc.data, tc.mode)
			s, err := New([]KeyConfig{{Domain: "example.com", Selector: "sel", File: path}}, Options{Log: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			k, _ := s.KeyFor("example.com")
			if k.Algorithm != tc.alg || k.File != path {
				t.Errorf("key = %+v", k)
			}
			field, err := s.Sign("example.com", []byte(testHeader), strings.NewReader(testBody))
			if err != nil {
				t.Fatal(err)
			}
			verifyOK(t, field+testHeader+"\r\n"+testBody, records{"sel._domainkey.example.com": k.TXT()}, 1)
		})
	}
}

func TestLoadKeyErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := writeKey(t, dir, "good.pem", edA().pem, 0o600)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key := func(name string, data []byte, mode os.FileMode) string { return writeKey(t, dir, name, data, mode) }
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		keys []KeyConfig
		want []string // all must appear in the error
	}{
		{"world readable", []KeyConfig{{"example.com", "s", key("wr.pem", edA().pem, 0o644), ""}}, []string{"wr.pem", "0644", "other users"}},
		{"world writable", []KeyConfig{{"example.com", "s", key("ww.pem", edA().pem, 0o602), ""}}, []string{"ww.pem", "0602"}},
		{"512-bit rsa", []KeyConfig{{"example.com", "s", key("512.pem", pemOf(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey(t, 512))), 0o600), ""}}, []string{"512.pem", "512-bit RSA key refused"}},
		{"missing", []KeyConfig{{"example.com", "s", filepath.Join(dir, "missing.pem"), ""}}, []string{"missing.pem", "no such file"}},
		{"directory", []KeyConfig{{"example.com", "s", filepath.Join(dir, "adir"), ""}}, []string{"adir", "not a regular file"}},
		{"not pem", []KeyConfig{{"example.com", "s", key("text.pem", []byte("hello"), 0o600), ""}}, []string{"text.pem", "no PEM private key"}},
		{"bad der", []KeyConfig{{"example.com", "s", key("der.pem", pemOf(t, "PRIVATE KEY", []byte("junk")), 0o600), ""}}, []string{"der.pem", "PRIVATE KEY"}},
		{"ecdsa", []KeyConfig{{"example.com", "s", key("ec.pem", pkcs8(t, ec), 0o600), ""}}, []string{"ec.pem", "unsupported key type"}},
		{"encrypted", []KeyConfig{{"example.com", "s", key("enc.pem", pemOf(t, "ENCRYPTED PRIVATE KEY", []byte("x")), 0o600), ""}}, []string{"enc.pem", "encrypted"}},
		{"too big", []KeyConfig{{"example.com", "s", key("big.pem", make([]byte, maxKeyFileSize+1), 0o600), ""}}, []string{"big.pem", "larger than"}},
		{"algorithm mismatch", []KeyConfig{{"example.com", "s", good, RSASHA256}}, []string{"good.pem", "holds an ed25519-sha256 key"}},
		{"unknown algorithm", []KeyConfig{{"example.com", "s", good, "rsa-sha1"}}, []string{"good.pem", "unknown algorithm"}},
		{"bad domain", []KeyConfig{{"exa mple.com", "s", good, ""}}, []string{"good.pem", "domain"}},
		{"no selector", []KeyConfig{{"example.com", "", good, ""}}, []string{"good.pem", "selector: empty"}},
		{"no file", []KeyConfig{{"example.com", "s", "", ""}}, []string{"s._domainkey.example.com", "no key file"}},
		{"selector twice", []KeyConfig{{"example.com", "s", good, ""}, {"Example.com", "S", good, ""}}, []string{"s._domainkey.example.com configured twice"}},
		{"all errors at once", []KeyConfig{
			{"example.com", "a", filepath.Join(dir, "one.pem"), ""},
			{"example.com", "b", good, ""},
			{"example.com", "c", filepath.Join(dir, "two.pem"), ""},
		}, []string{"one.pem", "two.pem"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.keys, Options{Log: slog.New(slog.DiscardHandler)})
			if err == nil {
				t.Fatal("New succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestLoadWeakKeyWarns(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := writeKey(t, dir, "1024.pem", pkcs8(t, rsaKey(t, 1024)), 0o600)
	var logs syncBuffer
	s, err := New([]KeyConfig{{Domain: "example.com", Selector: "old", File: path}},
		Options{Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	w := s.Warnings()
	if len(w) != 1 || !strings.Contains(w[0], "1024.pem") || !strings.Contains(w[0], "1024-bit RSA key is weak") {
		t.Errorf("warnings = %q", w)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "weak") {
		t.Errorf("log = %q", logs.String())
	}
	k, _ := s.KeyFor("example.com")
	field, err := s.Sign("example.com", []byte(testHeader), strings.NewReader(testBody))
	if err != nil {
		t.Fatal(err)
	}
	verifyOK(t, field+testHeader+"\r\n"+testBody, records{"old._domainkey.example.com": k.TXT()}, 1)
}

// reloadFixture is one key file under a fake clock, with its log.
type reloadFixture struct {
	t     *testing.T
	dir   string
	path  string
	clock *fakeClock
	logs  *syncBuffer
	s     *Signer
}

func newReloadFixture(t *testing.T, kp keyPair) *reloadFixture {
	f := &reloadFixture{t: t, dir: t.TempDir(), clock: newFakeClock(), logs: &syncBuffer{}}
	f.path = writeKey(t, f.dir, "key.pem", kp.pem, 0o600)
	var err error
	f.s, err = New([]KeyConfig{{Domain: "example.com", Selector: "sel", File: f.path}},
		Options{Log: slog.New(slog.NewTextHandler(f.logs, nil)), Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// write replaces the key file, in place (same inode) or by rename.
func (f *reloadFixture) write(data []byte, inPlace bool) {
	f.t.Helper()
	if !inPlace {
		writeKey(f.t, f.dir, "key.pem", data, 0o600)
		return
	}
	if err := os.WriteFile(f.path, data, 0o600); err != nil {
		f.t.Fatal(err)
	}
	// A coarse file system could keep the mtime; the size may match.
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(f.path, later, later); err != nil {
		f.t.Fatal(err)
	}
}

// signedBy signs a message and reports which of the key pairs verifies it.
func (f *reloadFixture) signedBy(kps ...keyPair) int {
	f.t.Helper()
	field, err := f.s.Sign("example.com", []byte(testHeader), strings.NewReader(testBody))
	if err != nil {
		f.t.Fatal(err)
	}
	msg := field + testHeader + "\r\n" + testBody
	for i, kp := range kps {
		vs := verify(f.t, strings.NewReader(msg), records{"sel._domainkey.example.com": kp.txt})
		if len(vs) == 1 && vs[0].Err == nil {
			return i
		}
	}
	f.t.Fatalf("signature verifies with none of the keys")
	return -1
}

func (f *reloadFixture) errorLines() int {
	return strings.Count(f.logs.String(), "level=ERROR")
}

func TestReload(t *testing.T) {
	t.Parallel()
	a, b := rsaA(), rsaB()
	f := newReloadFixture(t, a)
	if got := f.signedBy(a, b); got != 0 {
		t.Fatal("first key not used")
	}

	// A new file is not looked at within the second.
	f.write(b.pem, false)
	f.clock.Add(500 * time.Millisecond)
	if got := f.signedBy(a, b); got != 0 {
		t.Fatal("file looked at again within a second")
	}
	f.clock.Add(600 * time.Millisecond)
	if got := f.signedBy(a, b); got != 1 {
		t.Fatal("new key (renamed into place) not loaded")
	}
	if !strings.Contains(f.logs.String(), "dkim key reloaded") {
		t.Errorf("reload not logged: %s", f.logs)
	}

	// A broken rewrite keeps the key in force and is reported once.
	f.write([]byte("-----BEGIN PRIVATE KEY-----\ntruncat"), true)
	for range 3 {
		f.clock.Add(2 * time.Second)
		if got := f.signedBy(a, b); got != 1 {
			t.Fatal("broken file replaced the key in force")
		}
	}
	if n := f.errorLines(); n != 1 {
		t.Errorf("%d error lines, want 1:\n%s", n, f.logs)
	}
	if !strings.Contains(f.logs.String(), "no PEM private key") || !strings.Contains(f.logs.String(), f.path) {
		t.Errorf("error does not say what and where:\n%s", f.logs)
	}

	// Fixed in place: loaded.
	f.write(a.pem, true)
	f.clock.Add(2 * time.Second)
	if got := f.signedBy(a, b); got != 0 {
		t.Fatal("fixed file not loaded")
	}

	// Made world-readable: refused, key in force kept, reported once.
	if err := os.Chmod(f.path, 0o644); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(2 * time.Second)
	f.signedBy(a)
	f.clock.Add(2 * time.Second)
	f.signedBy(a)
	if n := f.errorLines(); n != 2 || !strings.Contains(f.logs.String(), "other users") {
		t.Errorf("%d error lines, want 2:\n%s", n, f.logs)
	}

	// Removed: key kept, reported once.
	if err := os.Remove(f.path); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(2 * time.Second)
	f.signedBy(a)
	f.clock.Add(2 * time.Second)
	f.signedBy(a)
	if n := f.errorLines(); n != 3 {
		t.Errorf("%d error lines, want 3:\n%s", n, f.logs)
	}

	// Back: loaded again.
	f.write(b.pem, false)
	f.clock.Add(2 * time.Second)
	if got := f.signedBy(a, b); got != 1 {
		t.Fatal("restored file not loaded")
	}

	// A clock stepping back does not stop the checks for good.
	f.clock.Add(-time.Hour)
	f.write(a.pem, false)
	if got := f.signedBy(a, b); got != 0 {
		t.Fatal("file not looked at after the clock stepped back")
	}
}

func TestReloadAlgorithmChange(t *testing.T) {
	t.Parallel()
	f := newReloadFixture(t, edA())
	f.write(rsaA().pem, false)
	f.clock.Add(2 * time.Second)
	if got := f.signedBy(edA()); got != 0 {
		t.Fatal("key in force not kept")
	}
	if !strings.Contains(f.logs.String(), "new selector") {
		t.Errorf("log = %s", f.logs)
	}
	if k, _ := f.s.KeyFor("example.com"); k.Algorithm != Ed25519SHA256 {
		t.Errorf("algorithm = %s", k.Algorithm)
	}
}

func TestReloadForced(t *testing.T) {
	t.Parallel()
	f := newReloadFixture(t, edA())
	f.write(edB().pem, false)
	// No clock change: only Reload reads the file.
	if err := f.s.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := f.signedBy(edA(), edB()); got != 1 {
		t.Fatal("Reload did not load the new key")
	}
	f.write([]byte("junk"), false)
	if err := f.s.Reload(); err == nil || !strings.Contains(err.Error(), f.path) {
		t.Fatalf("Reload err = %v", err)
	}
	f.clock.Add(2 * time.Second)
	if got := f.signedBy(edA(), edB()); got != 1 {
		t.Fatal("key in force not kept")
	}
	// The failure was Reload's to report; the periodic check stays quiet.
	if n := f.errorLines(); n != 0 {
		t.Errorf("%d error lines, want 0:\n%s", n, f.logs)
	}
}

func TestConcurrentSignAndReload(t *testing.T) {
	t.Parallel()
	a, b := edA(), edB()
	f := newReloadFixture(t, a)
	recsA := records{"sel._domainkey.example.com": a.txt}
	recsB := records{"sel._domainkey.example.com": b.txt}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 8 {
		wg.Go(func() {
			for range 20 {
				field, err := f.s.Sign("example.com", []byte(testHeader), strings.NewReader(testBody))
				if err != nil {
					errs <- err
					return
				}
				msg := field + testHeader + "\r\n" + testBody
				okA := verifyQuiet(msg, recsA)
				if !okA && !verifyQuiet(msg, recsB) {
					errs <- errors.New("signature verifies with neither key")
					return
				}
			}
		})
	}
	for i := range 20 {
		if i%2 == 0 {
			f.write(b.pem, false)
		} else {
			f.write(a.pem, false)
		}
		f.clock.Add(2 * time.Second)
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// verifyQuiet is verify for goroutines, which must not call t.Fatal.
func verifyQuiet(msg string, recs records) bool {
	vs, err := dkim.VerifyWithOptions(strings.NewReader(msg), &dkim.VerifyOptions{LookupTXT: recs.lookup})
	return err == nil && len(vs) == 1 && vs[0].Err == nil
}

func TestKeygen(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		alg  string
		bits int
		k    string
		size int // RSA bits, or Ed25519 public key bytes
	}{
		{"", 0, "rsa", 2048},
		{"rsa-sha256", 3072, "rsa", 3072},
		{"ed25519", 0, "ed25519", 32},
		{"ED25519-SHA256", 0, "ed25519", 32},
	} {
		t.Run(tc.alg, func(t *testing.T) {
			t.Parallel()
			priv, txt, err := Keygen(tc.alg, tc.bits)
			if err != nil {
				t.Fatal(err)
			}
			prefix := "v=DKIM1; k=" + tc.k + "; p="
			if !strings.HasPrefix(txt, prefix) {
				t.Fatalf("record %q", txt)
			}
			p, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(txt, prefix))
			if err != nil {
				t.Fatal(err)
			}
			block, _ := pem.Decode(priv)
			if block == nil || block.Type != "PRIVATE KEY" {
				t.Fatalf("private key PEM: %q", priv)
			}
			key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			switch key := key.(type) {
			case *rsa.PrivateKey:
				pub, err := x509.ParsePKIXPublicKey(p)
				if err != nil {
					t.Fatal(err)
				}
				if !key.PublicKey.Equal(pub) || key.N.BitLen() != tc.size {
					t.Errorf("public key mismatch or %d bits", key.N.BitLen())
				}
			case ed25519.PrivateKey:
				if len(p) != tc.size || !key.Public().(ed25519.PublicKey).Equal(ed25519.PublicKey(p)) {
					t.Errorf("public key %x does not match", p)
				}
			default:
				t.Fatalf("key type %T", key)
			}
		})
	}
	for _, tc := range []struct {
		alg  string
		bits int
	}{
		{"rsa", 1024}, {"rsa", 8192}, {"dsa", 0}, {"ed25519", 2048},
	} {
		if _, _, err := Keygen(tc.alg, tc.bits); err == nil {
			t.Errorf("Keygen(%q, %d) succeeded", tc.alg, tc.bits)
		}
	}
}

func TestTXTName(t *testing.T) {
	t.Parallel()
	if got := TXTName("s2026", "example.com"); got != "s2026._domainkey.example.com" {
		t.Errorf("TXTName = %q", got)
	}
}
