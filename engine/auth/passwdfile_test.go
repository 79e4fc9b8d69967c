package auth

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var testIP = netip.MustParseAddr("192.0.2.1")

// fakeClock is a settable clock for PasswdFile and Limiter.
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

func TestPasswdFileDoveadmHashes(t *testing.T) {
	t.Parallel()
	f, err := OpenPasswdFile("testdata/passwd", PasswdFileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		user, pass string
		ok         bool
		canonical  string
		reason     string
	}{
		{"ann@example.org", "correct horse", true, "ann@example.org", ""},
		{"ANN@Example.org", "correct horse", true, "ann@example.org", ""},
		{"ann@example.org", "Correct horse", false, "", "wrong password"},
		{"ann@example.org", "", false, "", "wrong password"},
		{"bob@example.org", "correct horse", true, "bob@example.org", ""},
		{"carol@example.org", "correct horse", true, "carol@example.org", ""},
		{"carol@example.org", "correct horsf", false, "", "wrong password"},
		{"dave@example.org", "correct horse", true, "dave@example.org", ""},
		{"erin", "correct horse", true, "erin", ""},
		{"erin", "correct horse ", false, "", "wrong password"},
		{"frank@example.org", "pässwörd ünïcode", true, "frank@example.org", ""},
		{"gina@example.org", "correct horse", true, "gina@example.org", ""},
		{"locked@example.org", "", false, "", "account locked"},
		{"nobody@example.org", "correct horse", false, "", "unknown user"},
		{"ann", "correct horse", false, "", "unknown user"},
	}
	for _, tt := range tests {
		res, err := f.Authenticate(context.Background(), tt.user, tt.pass, testIP)
		if err != nil {
			t.Errorf("%s: %v", tt.user, err)
			continue
		}
		if res.OK != tt.ok || res.User != tt.canonical || res.Reason != tt.reason {
			t.Errorf("%s/%q: got %+v, want ok=%v user=%q reason=%q", tt.user, tt.pass, res, tt.ok, tt.canonical, tt.reason)
		}
	}
}

func TestPasswdFileDummyCost(t *testing.T) {
	users, dummy, err := parsePasswd("x", strings.NewReader(strings.Join([]string{
		"a:{PLAIN}x",
		"b:" + shaCryptVectors[0].hash, // $5$ rounds 5000
		"c:" + shaCryptVectors[7].hash, // $6$ rounds 5000
		"d:" + shaCryptVectors[9].hash, // $6$ rounds 5000
		"e:" + shaCryptVectors[8].hash, // $6$ rounds 10000
		"f:",
	}, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 6 {
		t.Errorf("%d users", len(users))
	}
	// Unknown users must cost what most users cost.
	if dummy.cost() != "$6$5000" {
		t.Errorf("dummy cost %q, want $6$5000", dummy.cost())
	}
	_, dummy, _ = parsePasswd("x", strings.NewReader("# nobody\n"))
	if dummy != dummyHash {
		t.Errorf("empty file: dummy %v", dummy)
	}
}

func TestPasswdFileSyntax(t *testing.T) {
	good := "ok:{PLAIN}pw\n"
	tests := []struct {
		name, content, want string
	}{
		{"bad scheme", good + "\n# c\nbad:{NOPE}x\n", "f:4: user \"bad\": unsupported password scheme {NOPE}"},
		{"bad hash", good + "bad:$6$salt$short\n", "f:2: user \"bad\": $6$ hash must have 86"},
		{"duplicate", good + "OK:{PLAIN}x\n", "f:2: user \"OK\" listed twice"},
		{"empty user", good + ":{PLAIN}x\n", "f:2: bad user name"},
		{"control in user", good + "a\x01b:{PLAIN}x\n", "f:2: bad user name"},
		{"long line", good + "long:{PLAIN}" + strings.Repeat("x", maxPasswdLineLen) + "\n", "f:2: line longer than"},
	}
	for _, tt := range tests {
		_, _, err := parsePasswd("f", strings.NewReader(tt.content))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
	users, _, err := parsePasswd("f", strings.NewReader("# c\n\n  \r\nann:{PLAIN}pw\r\nbob:{PLAIN}pw:1:2::/h::x=y:z\n"))
	if err != nil || len(users) != 2 || !users["ann"].v.verify([]byte("pw")) || !users["bob"].v.verify([]byte("pw")) {
		t.Errorf("CRLF and extra fields: %v %v", users, err)
	}
}

func TestPasswdFileReload(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "passwd")
	write := func(content string) {
		t.Helper()
		// Writing a new file and renaming it over the old one is what
		// editors and config managers do; it changes the identity
		// even when size and time stay the same.
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write("ann:{PLAIN}one\n")
	clock := newFakeClock()
	var logs syncBuffer
	f, err := OpenPasswdFile(path, PasswdFileOptions{Now: clock.Now, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	login := func(user, pass string) bool {
		t.Helper()
		res, err := f.Authenticate(context.Background(), user, pass, testIP)
		if err != nil {
			t.Fatal(err)
		}
		return res.OK
	}
	if !login("ann", "one") {
		t.Fatal("initial content not in force")
	}

	write("ann:{PLAIN}two\nbob:{PLAIN}two\n")
	if !login("ann", "one") {
		t.Error("file read again within a second")
	}
	clock.Add(time.Second)
	if !login("ann", "two") || !login("bob", "two") || login("ann", "one") {
		t.Error("changed file not read after a second")
	}

	// A broken edit: the last good content stays, the error names the line.
	write("ann:{PLAIN}three\n# comment\nbob:{SHA512-CRYPT}$6$broken\n")
	clock.Add(time.Second)
	if !login("ann", "two") || login("ann", "three") {
		t.Error("broken file replaced the good content")
	}
	if err := f.Err(); err == nil || !strings.Contains(err.Error(), path+":3: user \"bob\"") {
		t.Errorf("Err() = %v, want %s:3", err, path)
	}
	if !strings.Contains(logs.String(), path+":3:") || strings.Count(logs.String(), "level=WARN") != 1 {
		t.Errorf("log: %s", logs.String())
	}
	clock.Add(time.Second)
	login("ann", "two")
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Errorf("the same broken file was reported %d times", n)
	}

	// Fixed: in force, and the error is gone.
	write("ann:{PLAIN}four\n")
	clock.Add(time.Second)
	if !login("ann", "four") || login("bob", "two") {
		t.Error("fixed file not in force")
	}
	if err := f.Err(); err != nil {
		t.Errorf("Err() after a good reload = %v", err)
	}

	// Removed: the last content stays.
	os.Remove(path)
	clock.Add(time.Second)
	if !login("ann", "four") {
		t.Error("removed file dropped the content")
	}
	if f.Err() == nil {
		t.Error("no error for a removed file")
	}

	// Reload reads at once, without waiting for the clock.
	write("ann:{PLAIN}five\n")
	if err := f.Reload(); err != nil || !login("ann", "five") {
		t.Errorf("Reload: %v", err)
	}
}

func TestPasswdFileOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenPasswdFile(filepath.Join(dir, "missing"), PasswdFileOptions{}); err == nil {
		t.Error("missing file opened")
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("x:{PLAIN}y\nx:{PLAIN}z\n"), 0o600)
	if _, err := OpenPasswdFile(bad, PasswdFileOptions{}); err == nil || !strings.Contains(err.Error(), bad+":2:") {
		t.Errorf("broken file: %v", err)
	}
}

// TestPasswdFileTiming compares an unknown user with a wrong password for a
// known one. The dummy hash has the same cost by construction
// (TestPasswdFileDummyCost); this checks that it is actually computed.
func TestPasswdFileTiming(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	var lines []string
	for _, u := range []string{"a", "b", "c"} {
		lines = append(lines, u+":"+shaCryptVectors[8].hash) // $6$ rounds=10000
	}
	os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o600)
	f, err := OpenPasswdFile(path, PasswdFileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	measure := func(user string) time.Duration {
		best := time.Hour
		for range 10 {
			start := time.Now()
			f.Authenticate(context.Background(), user, "wrong", testIP)
			best = min(best, time.Since(start))
		}
		return best
	}
	known, unknown := measure("a"), measure("nobody")
	if unknown < known/3 || unknown > known*3 {
		t.Errorf("wrong password %v, unknown user %v", known, unknown)
	}
}

func TestPasswdFileCanceled(t *testing.T) {
	f, err := OpenPasswdFile("testdata/passwd", PasswdFileOptions{MaxConcurrent: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.Authenticate(ctx, "ann@example.org", "correct horse", testIP); err == nil {
		t.Error("canceled context: no error")
	}
	// A full semaphore and a deadline: an error, not a refusal.
	f.sem <- struct{}{}
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := f.Authenticate(ctx, "ann@example.org", "correct horse", testIP); err == nil {
		t.Error("no error while waiting for a hash slot")
	}
}
