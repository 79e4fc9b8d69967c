package maildir

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

func TestDeliverCreatesAndWrites(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mail", "alice")
	body := []byte("Subject: hi\n\nhello\n")
	path, err := Deliver(dir, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(path) != filepath.Join(dir, "new") {
		t.Errorf("delivered to %s, want under new/", path)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, body) {
		t.Errorf("content %q, want %q", got, body)
	}
	if !strings.HasSuffix(path, ",S="+strconv.Itoa(len(body))) {
		t.Errorf("name %s lacks ,S=%d", path, len(body))
	}
	if !regexp.MustCompile(`^\d+\.M\d+P\d+Q\d+\.[^/:]+,S=\d+$`).MatchString(filepath.Base(path)) {
		t.Errorf("name %q is not in maildir(5) form", filepath.Base(path))
	}
	for _, sub := range []string{"tmp", "cur"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 0 {
			t.Errorf("%s/ not empty after delivery: %v", sub, ents)
		}
	}
}

func TestDeliverUniqueUnderConcurrency(t *testing.T) {
	dir := t.TempDir()
	const n = 200
	var wg sync.WaitGroup
	names := make(chan string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := Deliver(dir, strings.NewReader("x"))
			if err != nil {
				t.Error(err)
				return
			}
			names <- p
		}()
	}
	wg.Wait()
	close(names)
	seen := map[string]bool{}
	for p := range names {
		if seen[p] {
			t.Fatalf("duplicate name %s", p)
		}
		seen[p] = true
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "new"))
	if len(ents) != n {
		t.Errorf("%d files in new/, want %d", len(ents), n)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, os.ErrDeadlineExceeded }

func TestDeliverFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	if _, err := Deliver(dir, failingReader{}); err == nil {
		t.Fatal("want error from failing reader")
	}
	for _, sub := range []string{"tmp", "new"} {
		ents, _ := os.ReadDir(filepath.Join(dir, sub))
		if len(ents) != 0 {
			t.Errorf("%s/ has %d files after failed delivery", sub, len(ents))
		}
	}
}

func TestDeliverUnwritableDir(t *testing.T) {
	if os.Geteuid() == 0 {
		// root ignores permissions; use a file where a directory must be.
		f := filepath.Join(t.TempDir(), "file")
		os.WriteFile(f, nil, 0o600)
		if _, err := Deliver(filepath.Join(f, "md"), strings.NewReader("x")); err == nil {
			t.Fatal("want error when maildir cannot be created")
		}
		return
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o500)
	defer os.Chmod(dir, 0o700)
	if _, err := Deliver(filepath.Join(dir, "md"), strings.NewReader("x")); err == nil {
		t.Fatal("want error when maildir cannot be created")
	}
}

// TestDeliverWays: the unnamed file (where the system has it), the named
// one in tmp/, and a link refused after the write, which falls back to a
// named file for this message and every later one. Each way leaves the
// message whole in new/ and nothing in tmp/.
func TestDeliverWays(t *testing.T) {
	refused := func(f *os.File, path string) error {
		return &os.LinkError{Op: "link", Old: f.Name(), New: path, Err: syscall.EPERM}
	}
	tests := []struct {
		name       string
		broken     bool // anonBroken before the delivery
		link       func(*os.File, string) error
		wantBroken bool
	}{
		{"unnamed file", false, linkAnon, runtime.GOOS != "linux"},
		{"named file", true, linkAnon, true},
		{"link refused after the write", false, refused, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			was := anonBroken.Load()
			defer func() { anonBroken.Store(was); link = linkAnon }()
			if was && !tt.broken {
				t.Skip("this system has no unnamed files (O_TMPFILE) or no /proc")
			}
			anonBroken.Store(tt.broken)
			link = tt.link
			dir := filepath.Join(t.TempDir(), "md")
			body := strings.Repeat("a line of the message\r\n", 2000)
			path, err := Deliver(dir, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(path); string(got) != body {
				t.Errorf("new/ holds %d bytes, want %d", len(got), len(body))
			}
			if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
				t.Errorf("tmp/ holds %v", ents)
			}
			if ents, _ := os.ReadDir(filepath.Join(dir, "new")); len(ents) != 1 {
				t.Errorf("new/ holds %d files, want 1", len(ents))
			}
			if got := anonBroken.Load(); got != tt.wantBroken {
				t.Errorf("after delivery, unnamed files given up = %v, want %v", got, tt.wantBroken)
			}
		})
	}
}

// TestDeliverNewRemoved: a Maildir whose new/ was removed gets it back, and
// a full disk or a read-only Maildir is reported, not worked around.
func TestDeliverNewRemoved(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "md")
	if err := Create(dir); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "new"))
	if _, err := Deliver(dir, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "new")); len(ents) != 1 {
		t.Errorf("new/ holds %d files, want 1", len(ents))
	}
	for _, e := range []error{syscall.ENOSPC, syscall.EDQUOT, syscall.EACCES, syscall.EEXIST} {
		if !maildirTrouble(&os.LinkError{Op: "link", Err: e}) {
			t.Errorf("%v would be worked around, not reported", e)
		}
	}
	if maildirTrouble(&os.LinkError{Op: "link", Err: syscall.EPERM}) {
		t.Error("EPERM from link would be reported, not worked around")
	}
}
