package engine

import (
	"testing"

	"github.com/larkpost/larkpost/rules/postfix"
)

func TestHomeOwner(t *testing.T) {
	accounts := map[string]postfix.Account{
		"alice": {Name: "alice", UID: 1000, Home: "/home/alice"},
		"root":  {Name: "root", UID: 0, Home: "/root"},
		"svc":   {Name: "svc", UID: 998, Home: "/"},
	}
	lookup := func(n string) (postfix.Account, bool) { a, ok := accounts[n]; return a, ok }
	tests := []struct{ box, path, want string }{
		{"alice", "/home/alice/Maildir/", "alice"},
		{"alice", "/home/alice/mbox", "alice"},
		{"alice", "/home/alice/../bob/Maildir/", ""},
		{"alice", "/home/alicex/Maildir/", ""},
		{"alice", "/home/alice", ""},
		{"alice", "/var/lib/larkpost/mail/alice/", ""},
		{"root", "/root/Maildir/", ""},
		{"svc", "/var/mail/svc", ""},
		{"nobody-here", "/home/x/Maildir/", ""},
	}
	for _, tt := range tests {
		if got := homeOwner(tt.box, tt.path, lookup); got != tt.want {
			t.Errorf("homeOwner(%q, %q) = %q, want %q", tt.box, tt.path, got, tt.want)
		}
	}
}
