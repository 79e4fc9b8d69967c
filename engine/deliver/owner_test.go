package deliver

import "testing"

func TestNumericOwner(t *testing.T) {
	tests := []struct {
		in       string
		uid, gid int
		ok       bool
	}{
		{"#5000:5000", 5000, 5000, true},
		{"#0:0", 0, 0, true},
		{"#1000:100", 1000, 100, true},
		{"#2147483647:1", 2147483647, 1, true},
		{"#2147483648:1", 0, 0, false}, // beyond 2^31-1
		{"#4294967295:1", 0, 0, false}, // (uid_t)-1
		{"#12345678901:1", 0, 0, false},
		{"alice", 0, 0, false},
		{"", 0, 0, false},
		{"#", 0, 0, false},
		{"#:", 0, 0, false},
		{"#5000", 0, 0, false},
		{"#5000:", 0, 0, false},
		{"#:5000", 0, 0, false},
		{"5000:5000", 0, 0, false},
		{"#05000:5000", 0, 0, false},
		{"#+5:5", 0, 0, false},
		{"#-1:5", 0, 0, false},
		{"#5:5:5", 0, 0, false},
		{"# 5:5", 0, 0, false},
		{"#5:5 ", 0, 0, false},
		{"#five:5", 0, 0, false},
	}
	for _, tt := range tests {
		uid, gid, ok := ParseNumericOwner(tt.in)
		if uid != tt.uid || gid != tt.gid || ok != tt.ok {
			t.Errorf("ParseNumericOwner(%q) = %d, %d, %v; want %d, %d, %v", tt.in, uid, gid, ok, tt.uid, tt.gid, tt.ok)
		}
		if tt.ok {
			if back := NumericOwner(uid, gid); back != tt.in {
				t.Errorf("NumericOwner(%d, %d) = %q, want %q", uid, gid, back, tt.in)
			}
		}
	}
}
