package dkimsign

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
)

// keyPair is a private key PEM and its DNS record value.
type keyPair struct {
	pem []byte
	txt string
}

func mustKeygen(alg string, bits int) func() keyPair {
	return sync.OnceValue(func() keyPair {
		p, txt, err := Keygen(alg, bits)
		if err != nil {
			panic(err)
		}
		return keyPair{p, txt}
	})
}

// RSA generation is slow, so each test key is made once per run.
var (
	rsaA = mustKeygen("rsa", 2048)
	rsaB = mustKeygen("rsa", 2048)
	edA  = mustKeygen("ed25519", 0)
	edB  = mustKeygen("ed25519", 0)
)

// writeKey writes a key file with mode and returns its path.
func writeKey(t testing.TB, dir, name string, data []byte, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, name)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, mode); err != nil { // umask-proof
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// fakeClock is a settable clock for the key file checks.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// syncBuffer collects log output from concurrent goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// records is a fake DNS: TXT name -> record value.
type records map[string]string

func (r records) lookup(name string) ([]string, error) {
	if v, ok := r[name]; ok {
		return []string{v}, nil
	}
	return nil, &os.PathError{Op: "lookup", Path: name, Err: os.ErrNotExist}
}

// verify checks every signature of msg against recs and returns the
// results, in order of appearance.
func verify(t *testing.T, msg io.Reader, recs records) []*dkim.Verification {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(msg, &dkim.VerifyOptions{LookupTXT: recs.lookup})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return vs
}

// verifyOK asserts msg carries n signatures, all valid.
func verifyOK(t *testing.T, msg string, recs records, n int) []*dkim.Verification {
	t.Helper()
	vs := verify(t, strings.NewReader(msg), recs)
	if len(vs) != n {
		t.Fatalf("got %d verifications, want %d", len(vs), n)
	}
	for _, v := range vs {
		if v.Err != nil {
			t.Fatalf("signature of %s does not verify: %v\n%s", v.Domain, v.Err, msg)
		}
	}
	return vs
}

// verifyFails asserts msg has a signature and none verifies.
func verifyFails(t *testing.T, msg string, recs records) {
	t.Helper()
	vs := verify(t, strings.NewReader(msg), recs)
	if len(vs) == 0 {
		t.Fatal("no signature found")
	}
	for _, v := range vs {
		if v.Err == nil {
			t.Fatalf("signature of %s verifies, want failure:\n%s", v.Domain, msg)
		}
	}
}

// tags parses a DKIM-Signature field into its tags, whitespace removed.
func tags(t *testing.T, field string) map[string]string {
	t.Helper()
	_, v, ok := strings.Cut(field, ":")
	if !ok {
		t.Fatalf("not a field: %q", field)
	}
	m := map[string]string{}
	for kv := range strings.SplitSeq(v, ";") {
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		m[strings.TrimSpace(k)] = strings.Join(strings.Fields(val), "")
	}
	return m
}

const testHeader = "From: Ann <ann@example.com>\r\n" +
	"To: bob@example.net\r\n" +
	"Subject: a test\r\n" +
	"  folded\r\n" +
	"Date: Fri, 02 Jan 2026 03:04:05 +0000\r\n" +
	"Message-ID: <1@example.com>\r\n" +
	"X-Mailer: test\r\n"

const testBody = "Hello,\r\n\r\nthis is   a body  \r\nwith trailing blank lines\r\n\r\n\r\n"
