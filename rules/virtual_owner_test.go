package rules

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/larkpost/larkpost/rules/postfix"
)

// TestVirtualOwnerSettings: virtual_uid_maps, virtual_gid_maps,
// virtual_minimum_uid and virtual_mailbox_owner are checked when the
// config loads, each bad value reported with the setting's name.
func TestVirtualOwnerSettings(t *testing.T) {
	tests := []struct {
		name    string
		src     string
		wantErr string // a substring of the diagnostics; "" = loads
		check   func(t *testing.T, s *Settings)
	}{
		{"defaults", ``, "", func(t *testing.T, s *Settings) {
			if s.VirtualMinimumUID != 100 || s.VirtualMailboxOwner != "" || s.VirtualUIDMaps != nil || s.VirtualGIDMaps != nil {
				t.Errorf("defaults: %d %q %v %v", s.VirtualMinimumUID, s.VirtualMailboxOwner, s.VirtualUIDMaps, s.VirtualGIDMaps)
			}
		}},
		{"static maps", `config(virtual_uid_maps = "static:5000", virtual_gid_maps = ["static:{ 5001 }"], virtual_minimum_uid = 1000)`, "",
			func(t *testing.T, s *Settings) {
				if strings.Join(s.VirtualUIDMaps, " ") != "static:5000" || strings.Join(s.VirtualGIDMaps, " ") != "static:{ 5001 }" || s.VirtualMinimumUID != 1000 {
					t.Errorf("got %v %v %d", s.VirtualUIDMaps, s.VirtualGIDMaps, s.VirtualMinimumUID)
				}
			}},
		{"owner numbers", `config(virtual_mailbox_owner = " 05000:5001 ")`, "", func(t *testing.T, s *Settings) {
			if s.VirtualMailboxOwner != "5000:5001" {
				t.Errorf("owner = %q", s.VirtualMailboxOwner)
			}
		}},
		{"owner account", `config(virtual_mailbox_owner = "vmail")`, "", func(t *testing.T, s *Settings) {
			if s.VirtualMailboxOwner != "vmail" {
				t.Errorf("owner = %q", s.VirtualMailboxOwner)
			}
		}},
		{"owner empty", `config(virtual_mailbox_owner = "")`, "", nil},
		{"bad static uid", `config(virtual_uid_maps = ["static:vmail"], virtual_gid_maps = ["static:5000"])`,
			`p.star:1:28: virtual_uid_maps: static:vmail: bad uid "vmail" (want a decimal number)`, nil},
		{"negative static gid", `config(virtual_gid_maps = ["static:-1"])`, `virtual_gid_maps: static:-1: bad gid "-1"`, nil},
		{"huge static uid", `config(virtual_uid_maps = ["static:4294967295"])`, `virtual_uid_maps: static:4294967295: bad uid`, nil},
		{"empty table", `config(virtual_uid_maps = [""])`, `virtual_uid_maps: empty table name`, nil},
		{"minimum uid zero", `config(virtual_minimum_uid = 0)`, `virtual_minimum_uid: out of range: 0 (minimum 1)`, nil},
		{"minimum uid type", `config(virtual_minimum_uid = "100")`, `virtual_minimum_uid: want int, got string`, nil},
		{"owner root", `config(virtual_mailbox_owner = "root")`, `virtual_mailbox_owner: root may not own virtual mailboxes`, nil},
		{"owner uid 0", `config(virtual_mailbox_owner = "0:5000")`, `virtual_mailbox_owner: "0:5000": root (uid 0 or gid 0)`, nil},
		{"owner gid 0", `config(virtual_mailbox_owner = "5000:0")`, `virtual_mailbox_owner: "5000:0": root`, nil},
		{"owner bare number", `config(virtual_mailbox_owner = "5000")`, `virtual_mailbox_owner: "5000": want an account name or "UID:GID" (e.g. "5000:5000")`, nil},
		{"owner bad gid", `config(virtual_mailbox_owner = "5000:x")`, `virtual_mailbox_owner: bad gid "x"`, nil},
		{"owner bad name", `config(virtual_mailbox_owner = "v mail")`, `virtual_mailbox_owner: bad account name "v mail"`, nil},
		{"owner type", `config(virtual_mailbox_owner = 5000)`, `virtual_mailbox_owner: want string, got int`, nil},
		{"owner and maps", "config(virtual_mailbox_owner = \"vmail\")\nconfig(virtual_uid_maps = [\"static:5000\"], virtual_gid_maps = [\"static:5000\"])",
			`p.star:1:8: virtual_mailbox_owner: not used with virtual_uid_maps and virtual_gid_maps; set one or the other`, nil},
		{"missing table file", `config(virtual_uid_maps = ["hash:no-such-file"], virtual_gid_maps = ["static:5000"])`, `virtual_uid_maps: `, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Load(filepath.Join(t.TempDir(), "p.star"), []byte(tt.src+"\n"))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("load: %v", err)
				}
				if tt.check != nil {
					tt.check(t, p.Settings)
				}
				return
			}
			var ds Diagnostics
			if !errors.As(err, &ds) {
				t.Fatalf("Load error = %v, want Diagnostics with %q", err, tt.wantErr)
			}
			if !strings.Contains(ds.Error(), tt.wantErr) {
				t.Errorf("diagnostics:\n%s\nwant one with %q", ds.Error(), tt.wantErr)
			}
		})
	}
}

// TestVirtualOwner: the owner of a virtual mailbox, from the maps (the
// address, then @domain; the first table with an entry wins), else from
// virtual_mailbox_owner, refused below virtual_minimum_uid.
func TestVirtualOwner(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "uids"), []byte("bob@vm.test 2001\n@vm.test 3000\nlow@vm.test 99\nbad@vm.test vmail\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "gids"), []byte("bob@vm.test 2002\n@vm.test 3001\nrootgrp@vm.test 0\n"), 0o644)
	nobody, ok := postfix.LookupAccount("nobody")
	if !ok || nobody.UID < 100 || nobody.GID == 0 {
		t.Fatalf("no account nobody with a uid of 100 or more: %+v", nobody)
	}
	tests := []struct {
		name     string
		cfg      string
		address  string
		uid, gid int
		ok       bool
		wantErr  string
	}{
		{"nothing set", ``, "bob@vm.test", 0, 0, false, ""},
		{"static", `virtual_uid_maps = ["static:5000"], virtual_gid_maps = ["static:5000"]`, "bob@vm.test", 5000, 5000, true, ""},
		{"per address", `virtual_uid_maps = ["hash:uids"], virtual_gid_maps = ["texthash:gids"]`, "bob@vm.test", 2001, 2002, true, ""},
		{"address in another case", `virtual_uid_maps = ["hash:uids"], virtual_gid_maps = ["texthash:gids"]`, "Bob@VM.test", 2001, 2002, true, ""},
		{"extension", `virtual_uid_maps = ["hash:uids"], virtual_gid_maps = ["texthash:gids"], recipient_delimiter = "+"`, "bob+lists@vm.test", 2001, 2002, true, ""},
		{"domain fallback", `virtual_uid_maps = ["hash:uids"], virtual_gid_maps = ["hash:gids"]`, "carol@vm.test", 3000, 3001, true, ""},
		{"first table wins, static as the fallback", `virtual_uid_maps = ["hash:uids", "static:4000"], virtual_gid_maps = ["static:4001"]`, "dan@other.test", 4000, 4001, true, ""},
		{"inline", `virtual_uid_maps = ["inline:{ bob@vm.test=6000 }"], virtual_gid_maps = ["static:6001"]`, "bob@vm.test", 6000, 6001, true, ""},
		{"no uid entry", `virtual_uid_maps = ["hash:uids"], virtual_gid_maps = ["static:5000"]`, "dan@other.test", 0, 0, false, "no uid for dan@other.test in virtual_uid_maps"},
		{"no gid maps", `virtual_uid_maps = ["static:5000"]`, "bob@vm.test", 0, 0, false, "no gid for bob@vm.test in virtual_gid_maps"},
		{"bad uid entry", `virtual_uid_maps = ["hash:uids"], virtual_gid_maps = ["static:5000"]`, "bad@vm.test", 0, 0, false, `virtual_uid_maps: hash:uids bad@vm.test: bad uid "vmail"`},
		{"below the minimum", `virtual_uid_maps = ["hash:uids"], virtual_gid_maps = ["static:5000"]`, "low@vm.test", 0, 0, false,
			"virtual mailbox owner uid 99 of low@vm.test, from virtual_uid_maps (hash:uids low@vm.test), is below virtual_minimum_uid (100)"},
		{"a lower minimum", `virtual_uid_maps = ["hash:uids"], virtual_gid_maps = ["static:5000"], virtual_minimum_uid = 50`, "low@vm.test", 99, 5000, true, ""},
		{"gid 0", `virtual_uid_maps = ["static:5000"], virtual_gid_maps = ["hash:gids"]`, "rootgrp@vm.test", 0, 0, false, "virtual mailbox owner gid 0"},
		{"owner numbers", `virtual_mailbox_owner = "5000:6000"`, "bob@vm.test", 5000, 6000, true, ""},
		{"owner below the minimum", `virtual_mailbox_owner = "50:50"`, "bob@vm.test", 0, 0, false,
			`virtual mailbox owner uid 50 of bob@vm.test, from virtual_mailbox_owner "50:50", is below virtual_minimum_uid (100)`},
		{"owner account", `virtual_mailbox_owner = "nobody"`, "bob@vm.test", nobody.UID, nobody.GID, true, ""},
		{"unknown account", `virtual_mailbox_owner = "no-such-user-here"`, "bob@vm.test", 0, 0, false, `virtual_mailbox_owner: no account "no-such-user-here"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "config(virtual_mailbox_domains = [\"vm.test\"])\n"
			if tt.cfg != "" {
				src += "config(" + tt.cfg + ")\n"
			}
			p, err := Load(filepath.Join(dir, "p.star"), []byte(src))
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			uid, gid, ok, err := p.VirtualOwner(tt.address)
			if uid != tt.uid || gid != tt.gid || ok != tt.ok {
				t.Errorf("VirtualOwner(%q) = %d, %d, %v, want %d, %d, %v (err %v)", tt.address, uid, gid, ok, tt.uid, tt.gid, tt.ok, err)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("err = %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("err = %v, want one with %q", err, tt.wantErr)
			}
		})
	}
}
