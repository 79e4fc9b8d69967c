package auth

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"
)

// TestRealDovecot runs against a Dovecot auth server whose passdb is
// testdata/passwd, for CI to run where Dovecot is installed:
//
//	passdb { driver = passwd-file  args = .../engine/auth/testdata/passwd }
//	service auth { unix_listener /path/auth-client { mode = 0666 } }
//
// LARKPOST_DOVECOT_AUTH is smtpd_sasl_path: a socket path or inet:host:port.
func TestRealDovecot(t *testing.T) {
	path := os.Getenv("LARKPOST_DOVECOT_AUTH")
	if path == "" {
		t.Skip("LARKPOST_DOVECOT_AUTH not set")
	}
	d := newTestDovecot(t, path, 0)
	ctx := context.Background()
	tests := []struct {
		user, pass string
		ok         bool
		canonical  string
	}{
		{"ann@example.org", "correct horse", true, "ann@example.org"},
		{"ANN@example.org", "correct horse", true, "ann@example.org"},
		{"bob@example.org", "correct horse", true, "bob@example.org"},
		{"carol@example.org", "correct horse", true, "carol@example.org"},
		{"dave@example.org", "correct horse", true, "dave@example.org"},
		// Dovecot lowercases the name typed (auth_username_format
		// %Lu) but not the file's, so Frank@Example.ORG is out of
		// reach there; PasswdFile folds both.
		{"frank@example.org", "pässwörd ünïcode", false, ""},
		{"ann@example.org", "wrong", false, ""},
		{"nobody@example.org", "correct horse", false, ""},
	}
	for _, tt := range tests {
		start := time.Now()
		res, err := d.Authenticate(ctx, tt.user, tt.pass, testIP)
		t.Logf("%s: %v", tt.user, time.Since(start))
		if err != nil {
			t.Errorf("%s: %v", tt.user, err)
			continue
		}
		if res.OK != tt.ok || (tt.ok && res.User != tt.canonical) {
			t.Errorf("%s/%q: %+v", tt.user, tt.pass, res)
		}
	}

	// A success is not held up behind failures Dovecot delays.
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.Authenticate(ctx, "ann@example.org", "wrong", testIP)
		}()
	}
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	if res, err := d.Authenticate(ctx, "bob@example.org", "correct horse", testIP); err != nil || !res.OK {
		t.Errorf("during failures: %+v, %v", res, err)
	}
	if el := time.Since(start); el > 500*time.Millisecond {
		t.Errorf("success took %v behind delayed failures", el)
	}
	wg.Wait()
}
