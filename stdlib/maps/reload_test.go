package maps

import (
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"
)

// everyGet makes a table stat its file on every Get, so that a test sees
// each change at once.
var everyGet = reloadOptions{interval: 0, coolDown: defaultCoolDown}

// rewrite replaces a table file and gives it a distinct mtime, so that
// the change is seen even within the file system's timestamp resolution.
func rewrite(t *testing.T, path, text string, version int) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2020, 1, 1, 0, 0, version, 0, time.UTC)
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

func wantGet(t *testing.T, tab Table, key, want string, wantOK bool) {
	t.Helper()
	if got, ok := tab.Get(key); got != want || ok != wantOK {
		t.Errorf("Get(%q) = %q, %v; want %q, %v", key, got, ok, want, wantOK)
	}
}

func wantLogs(t *testing.T, l *logRec, want ...string) {
	t.Helper()
	if got := l.take(); !slices.Equal(got, want) {
		t.Errorf("logf got %q, want %q", got, want)
	}
}

func TestReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := writeTable(t, dir, "access", "a OK\n")
	var l logRec
	tab, err := openTable("hash:access", dir, l.logf, everyGet)
	if err != nil {
		t.Fatal(err)
	}
	wantGet(t, tab, "a", "OK", true)

	rewrite(t, path, "a REJECT\nb OK\n", 1)
	wantGet(t, tab, "a", "REJECT", true)
	wantGet(t, tab, "b", "OK", true)
	wantLogs(t, &l)

	// The same size as before: only the mtime tells.
	rewrite(t, path, "a REJEC2\nb OK\n", 2)
	wantGet(t, tab, "a", "REJEC2", true)

	rewrite(t, path, "a DISCARD\nbroken\n", 3)
	wantGet(t, tab, "a", "REJEC2", true)
	wantGet(t, tab, "b", "OK", true)
	wantLogs(t, &l, `access:2: expected format: key whitespace value, got "broken"`)
	wantGet(t, tab, "a", "REJEC2", true)
	wantLogs(t, &l) // once per failed version

	rewrite(t, path, "a DISCARD\nbroken again\nworse\n", 4)
	wantGet(t, tab, "a", "REJEC2", true)
	wantLogs(t, &l, `access:3: expected format: key whitespace value, got "worse"`)

	rewrite(t, path, "a HOLD\nA dup\n", 5)
	wantGet(t, tab, "a", "dup", true)
	wantGet(t, tab, "b", "", false)
	wantLogs(t, &l, `access:2: warning: duplicate entry "A" (also on line 1); the later entry wins`)

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	wantGet(t, tab, "a", "dup", true)
	wantLogs(t, &l, "access: no such file or directory")
	wantGet(t, tab, "a", "dup", true)
	wantLogs(t, &l)

	rewrite(t, path, "a back\n", 6)
	wantGet(t, tab, "a", "back", true)
	wantLogs(t, &l)
}

func TestReloadRegexp(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := writeTable(t, dir, "checks", "/^Subject: (.*)/ WARN $1\n")
	var l logRec
	tab, err := openTable("regexp:checks", dir, l.logf, everyGet)
	if err != nil {
		t.Fatal(err)
	}
	wantGet(t, tab, "Subject: hi", "WARN hi", true)
	rewrite(t, path, "/^Subject: (.*)/ WARN $1\n/(x)\\1/ REJECT\n", 1)
	wantGet(t, tab, "Subject: hi", "WARN hi", true)
	wantLogs(t, &l, `checks:2: /(x)\1/: backreference \1 is not supported (Go RE2 syntax has no backreferences)`)
	rewrite(t, path, "/^Subject: (.*)/ DISCARD $1\n", 2)
	wantGet(t, tab, "Subject: hi", "DISCARD hi", true)
}

func TestReloadInterval(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := writeTable(t, dir, "t", "a 1\n")
	tab, err := openTable("t", dir, nil, reloadOptions{interval: time.Hour, coolDown: defaultCoolDown})
	if err != nil {
		t.Fatal(err)
	}
	rewrite(t, path, "a 2\n", 1)
	// Within the interval the file is not even looked at.
	wantGet(t, tab, "a", "1", true)
}

func TestReloadConcurrent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := writeTable(t, dir, "t", "k 0\n")
	ft, err := openTable("hash:t", dir, nil, everyGet)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, ok := ft.Get("k"); !ok {
					t.Error("Get during reload missed the key")
					return
				}
			}
		})
	}
	for i := 1; i <= 50; i++ {
		rewrite(t, path, fmt.Sprintf("k %d\n", i), i)
	}
	close(stop)
	wg.Wait()
	wantGet(t, ft, "k", "50", true)
}

func TestReloadWaitsForWriters(t *testing.T) {
	t.Parallel()
	// Long enough that a Get right after a write comes within it even
	// when parallel tests and -race slow this one down.
	const coolDown = 200 * time.Millisecond
	dir := t.TempDir()
	path := writeTable(t, dir, "t", "a 1\n")
	tab, err := openTable("t", dir, nil, reloadOptions{interval: 0, coolDown: coolDown})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("texthash cool-down: a file modified just now is not loaded yet", func(t *testing.T) {
		if err := os.WriteFile(path, []byte("a 2\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		wantGet(t, tab, "a", "1", true)
		time.Sleep(2 * coolDown)
		wantGet(t, tab, "a", "2", true)
	})
	t.Run("larkpost: a truncated file with an old mtime is not loaded at once", func(t *testing.T) {
		rewrite(t, path, "", 1)
		wantGet(t, tab, "a", "2", true)
		time.Sleep(2 * coolDown)
		wantGet(t, tab, "a", "", false)
	})
}
