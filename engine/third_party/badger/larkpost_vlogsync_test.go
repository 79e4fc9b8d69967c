package badger

import (
	"bytes"
	"testing"
)

// TestVlogSyncOnlyWhenWritten: with SyncWrites, a commit whose values all
// stay in the LSM tree does not sync the value log, and one that writes a
// value there does, and both are read back after reopening.
func TestVlogSyncOnlyWhenWritten(t *testing.T) {
	dir := t.TempDir()
	opts := DefaultOptions(dir).WithSyncWrites(true).WithValueThreshold(1 << 10).WithLogger(nil)
	db, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	small, big := []byte("small"), bytes.Repeat([]byte("b"), 4<<10)
	set := func(k string, v []byte) int64 {
		t.Helper()
		before := vlogSyncs.Load()
		if err := db.Update(func(txn *Txn) error { return txn.Set([]byte(k), v) }); err != nil {
			t.Fatal(err)
		}
		return vlogSyncs.Load() - before
	}
	if n := set("inline", small); n != 0 {
		t.Errorf("an inline value synced the value log %d times, want 0", n)
	}
	if n := set("logged", big); n != 1 {
		t.Errorf("a value in the value log synced it %d times, want 1", n)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = Open(opts); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for k, want := range map[string][]byte{"inline": small, "logged": big} {
		err := db.View(func(txn *Txn) error {
			item, err := txn.Get([]byte(k))
			if err != nil {
				return err
			}
			got, err := item.ValueCopy(nil)
			if err == nil && !bytes.Equal(got, want) {
				t.Errorf("%s after reopening: %d bytes, want %d", k, len(got), len(want))
			}
			return err
		})
		if err != nil {
			t.Fatalf("%s after reopening: %v", k, err)
		}
	}
}
