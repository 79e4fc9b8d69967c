package maildrop

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestWriteListReadRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  Envelope
		msg  string
	}{
		{"lf", Envelope{ID: "AAAA1", Sender: "ann@example.org", Rcpts: []string{"bob@example.org"}, UID: 1000, User: "ann"}, "Subject: hi\n\nbody\n"},
		{"crlf", Envelope{ID: "AAAA2", Sender: "", Rcpts: []string{"a@x.test", "b@x.test"}, UID: 0, User: "root"}, "Subject: hi\r\n\r\nbody\r\n"},
		{"empty message", Envelope{ID: "AAAA3", Sender: "s@x.test", Rcpts: []string{"a@x.test"}}, ""},
		{"envelope-like body", Envelope{ID: "AAAA4", Rcpts: []string{"a@x.test"}}, envelopeHeader + "{}\nX: y\n"},
	}
	dir := filepath.Join(t.TempDir(), "maildrop")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := tt.env
			env.Time = time.Date(2026, 5, 1, 12, 0, 0, 123456789, time.UTC)
			path, err := Write(dir, &env, []byte(tt.msg))
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(dir, "new", tt.env.ID); path != want {
				t.Errorf("path %s, want %s", path, want)
			}
			got, msg, err := Read(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(msg) != tt.msg {
				t.Errorf("message %q, want %q", msg, tt.msg)
			}
			if got.Owner != os.Getuid() {
				t.Errorf("owner %d, want %d", got.Owner, os.Getuid())
			}
			got.Owner = 0
			if !got.Time.Equal(env.Time) {
				t.Errorf("time %v, want %v", got.Time, env.Time)
			}
			got.Time = env.Time
			if !reflect.DeepEqual(*got, env) {
				t.Errorf("envelope %+v, want %+v", *got, env)
			}
		})
	}
	files, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(tests) {
		t.Errorf("List: %d files, want %d", len(files), len(tests))
	}
	if tmps, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmps) != 0 {
		t.Errorf("files left in tmp/: %v", tmps)
	}
}

func TestWriteGeneratesIDAndNeverReplaces(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := &Envelope{Rcpts: []string{"a@x.test"}}
	path, err := Write(dir, env, []byte("first\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !ValidID(env.ID) || filepath.Base(path) != env.ID {
		t.Fatalf("generated id %q, file %s", env.ID, path)
	}
	again := &Envelope{ID: env.ID, Rcpts: []string{"b@x.test"}}
	if _, err := Write(dir, again, []byte("second\n")); !errors.Is(err, ErrExist) {
		t.Fatalf("second write with the same id: %v, want ErrExist", err)
	}
	if _, msg, _ := Read(path); string(msg) != "first\n" {
		t.Errorf("first message replaced: %q", msg)
	}
	if tmps, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmps) != 0 {
		t.Errorf("files left in tmp/: %v", tmps)
	}
}

func TestFailedWriteLeavesNothing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		id   string
		sync func(*os.File) error
	}{
		{"fsync fails", "GOOD1", func(*os.File) error { return errors.New("disk on fire") }},
		{"bad id", "../escape", (*os.File).Sync},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := writer{syncFile: tt.sync}
			dir := t.TempDir()
			if _, err := w.write(dir, &Envelope{ID: tt.id, Rcpts: []string{"a@x.test"}}, []byte("x\n")); err == nil {
				t.Fatal("write succeeded")
			}
			for _, sub := range []string{"new", "tmp"} {
				if ents, _ := os.ReadDir(filepath.Join(dir, sub)); len(ents) != 0 {
					t.Errorf("%s/ holds %v after a failed write", sub, ents)
				}
			}
			if files, _ := List(dir); len(files) != 0 {
				t.Errorf("List after a failed write: %v", files)
			}
		})
	}
}

func TestListOldestFirst(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	base := time.Now().Add(-time.Hour)
	// Written in one order, dated in another: List follows the dates, then names.
	dates := map[string]time.Duration{"C": 1 * time.Second, "A": 3 * time.Second, "B": 2 * time.Second, "D": 2 * time.Second}
	for _, id := range []string{"A", "B", "C", "D"} {
		path, err := Write(dir, &Envelope{ID: id, Rcpts: []string{"a@x.test"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		when := base.Add(dates[id])
		if err := os.Chtimes(path, when, when); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "new", ".hidden"), nil, 0o600)
	files, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range files {
		got = append(got, filepath.Base(f))
	}
	if want := []string{"C", "B", "D", "A"}; !reflect.DeepEqual(got, want) {
		t.Errorf("List order %v, want %v", got, want)
	}
	if files, err := List(filepath.Join(dir, "missing")); err != nil || files != nil {
		t.Errorf("List of a missing maildrop: %v, %v", files, err)
	}
}

func TestReadRefusesWhatWriteDoesNotMake(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := Init(dir); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte(envelopeHeader+`{"id":"X1"}`+"\nsecret\n"), 0o600)
	tests := []struct {
		name  string
		make  func(path string) error
		limit int64
		want  error
	}{
		{"no envelope line", func(p string) error { return os.WriteFile(p, []byte("Subject: x\n\n"), 0o600) }, -1, ErrMalformed},
		{"bad json", func(p string) error { return os.WriteFile(p, []byte(envelopeHeader+"{\n"), 0o600) }, -1, ErrMalformed},
		{"bad id", func(p string) error { return os.WriteFile(p, []byte(envelopeHeader+`{"id":"a/b"}`+"\n"), 0o600) }, -1, ErrMalformed},
		{"symbolic link", func(p string) error { return os.Symlink(secret, p) }, -1, ErrMalformed},
		{"hard link", func(p string) error { return os.Link(secret, p) }, -1, ErrMalformed},
		{"directory", func(p string) error { return os.Mkdir(p, 0o700) }, -1, ErrMalformed},
		{"too big", func(p string) error {
			return os.WriteFile(p, []byte(envelopeHeader+`{"id":"X1"}`+"\n"+strings.Repeat("x", 100)), 0o600)
		}, 50, ErrTooBig},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "new", "F"+string(rune('A'+i)))
			if err := tt.make(path); err != nil {
				t.Fatal(err)
			}
			if _, _, err := ReadLimit(path, tt.limit); !errors.Is(err, tt.want) {
				t.Errorf("ReadLimit: %v, want %v", err, tt.want)
			}
		})
	}
}

func TestInitModes(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data", "maildrop")
	if err := Init(dir); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		sub  string
		want os.FileMode
	}{{"tmp", os.ModeDir | dropMode}, {"new", os.ModeDir | dropMode}, {"rejected", os.ModeDir | 0o700}}
	for _, tt := range tests {
		st, err := os.Stat(filepath.Join(dir, tt.sub))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != tt.want {
			t.Errorf("%s: mode %v, want %v", tt.sub, st.Mode(), tt.want)
		}
	}
}

func TestRejectQuarantineSweep(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := Init(dir); err != nil {
		t.Fatal(err)
	}
	env := &Envelope{ID: "R1", Rcpts: []string{"a@x.test"}, Reason: "first"}
	if _, err := Reject(dir, env, []byte("one\n")); err != nil {
		t.Fatal(err)
	}
	env.Reason = "second"
	path, err := Reject(dir, env, []byte("two\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, msg, err := Read(path); err != nil || got.Reason != "second" || string(msg) != "two\n" {
		t.Errorf("Reject did not replace its earlier copy: %+v %q %v", got, msg, err)
	}

	var moved []string
	for i := 0; i < 2; i++ {
		bad := filepath.Join(dir, "new", "junk")
		os.WriteFile(bad, []byte("junk"), 0o600)
		dst, err := Quarantine(bad)
		if err != nil {
			t.Fatal(err)
		}
		moved = append(moved, dst)
	}
	if moved[0] == moved[1] {
		t.Errorf("second quarantine replaced the first: %v", moved)
	}
	if files, _ := List(dir); len(files) != 0 {
		t.Errorf("new/ after quarantine: %v", files)
	}

	old, fresh := filepath.Join(dir, "tmp", "old"), filepath.Join(dir, "tmp", "fresh")
	os.WriteFile(old, nil, 0o600)
	os.WriteFile(fresh, nil, 0o600)
	os.Chtimes(old, time.Now().Add(-48*time.Hour), time.Now().Add(-48*time.Hour))
	if n, err := Sweep(dir, 24*time.Hour); n != 1 || err != nil {
		t.Errorf("Sweep: %d, %v; want 1 removed", n, err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("Sweep removed a fresh file: %v", err)
	}
}

func TestNewID(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	last := ""
	for i := 0; i < 10000; i++ {
		id := NewID()
		if len(id) != 13 || !ValidID(id) || id <= last || seen[id] {
			t.Fatalf("id %q after %q: not a new, later 13-character id", id, last)
		}
		// The second-to-last character holds bits 5-9: the mark is bit 9.
		if strings.IndexByte(idAlphabet, id[11]) < 16 {
			t.Fatalf("id %q lacks the maildrop mark", id)
		}
		seen[id], last = true, id
	}
}
