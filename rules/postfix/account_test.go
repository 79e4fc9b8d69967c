package postfix

import (
	"errors"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// TestAsUser: inside Do, files are opened and created with the account's
// rights; outside, on every other goroutine at the same time, the process
// keeps its own.
func TestAsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: .ci/run runs it as root and fails when it is skipped")
	}
	nobody, ok := LookupAccount("nobody")
	if !ok || nobody.UID == 0 {
		t.Fatal("no unprivileged account nobody")
	}
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("root only"), 0o600)
	pub, err := os.MkdirTemp("", "larkpost-asuser")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(pub)
	os.Chmod(pub, 0o777)

	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := 0; i < 50; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			err := nobody.Do(func() error {
				if _, err := os.ReadFile(secret); !errors.Is(err, fs.ErrPermission) {
					return errors.New("as nobody, root's file was readable")
				}
				f, err := os.CreateTemp(pub, "x")
				if err != nil {
					return err
				}
				defer f.Close()
				fi, _ := f.Stat()
				if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != nobody.UID {
					return errors.New("a file made as nobody is not nobody's")
				}
				return nil
			})
			if err != nil {
				errs <- err
			}
		}()
		go func() {
			defer wg.Done()
			if _, err := os.ReadFile(secret); err != nil {
				errs <- errors.New("root lost its rights beside Do: " + err.Error())
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestLookupHome: the cached lookup agrees with LookupAccount (groups
// aside) for an existing and a missing account, and a second call is
// served from the cache.
func TestLookupHome(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Skip(err)
	}
	want, ok := LookupAccount(me.Username)
	if !ok {
		t.Fatalf("LookupAccount(%q) failed", me.Username)
	}
	for i := 0; i < 2; i++ {
		got, ok := LookupHome(me.Username)
		if !ok || got.Name != want.Name || got.UID != want.UID || got.GID != want.GID || got.Home != want.Home {
			t.Fatalf("LookupHome = %+v, %v; want %+v", got, ok, want)
		}
	}
	if _, ok := LookupHome("no-such-user-larkpost-test"); ok {
		t.Error("a missing account was found")
	}
	homeCache.Lock()
	_, cached := homeCache.m[me.Username]
	homeCache.Unlock()
	if !cached {
		t.Error("the answer was not cached")
	}
}
