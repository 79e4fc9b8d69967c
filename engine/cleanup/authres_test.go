package cleanup

import "testing"

func TestStripAuthResults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, head, want string
		removed          int
	}{
		{"none", "From: a\r\nSubject: b\r\n", "From: a\r\nSubject: b\r\n", 0},
		{"ours", "From: a\r\nAuthentication-Results: mx.test; spf=pass\r\nSubject: b\r\n", "From: a\r\nSubject: b\r\n", 1},
		{"folded", "Authentication-Results: mx.test;\r\n\tspf=pass\r\n  smtp.mailfrom=x\r\nSubject: b\r\n", "Subject: b\r\n", 1},
		{"case and version", "authentication-results: MX.Test 1; dkim=pass\r\n", "", 1},
		{"space before colon", "Authentication-Results : mx.test; spf=pass\r\n", "", 1},
		{"id folded onto the next line", "Authentication-Results:\r\n mx.test; spf=pass\r\n", "", 1},
		{"no results (none)", "Authentication-Results: mx.test; none\r\n", "", 1},
		{"unparsable but ours", "Authentication-Results: mx.test; garbage ((\r\n", "", 1},
		{"another server", "Authentication-Results: mx.test.evil; spf=pass\r\nAuthentication-Results: other; spf=pass\r\n",
			"Authentication-Results: mx.test.evil; spf=pass\r\nAuthentication-Results: other; spf=pass\r\n", 0},
		{"last line without newline", "Subject: b\r\nAuthentication-Results: mx.test; spf=pass", "Subject: b\r\n", 1},
		{"LF only", "Authentication-Results: mx.test; spf=pass\nX: y\n", "X: y\n", 1},
		{"other field mentioning it", "X-Note: Authentication-Results: mx.test; spf=pass\r\n", "X-Note: Authentication-Results: mx.test; spf=pass\r\n", 0},
	}
	for _, tt := range tests {
		got, n := stripAuthResults([]byte(tt.head), "mx.test")
		if string(got) != tt.want || n != tt.removed {
			t.Errorf("%s: got %q, %d; want %q, %d", tt.name, got, n, tt.want, tt.removed)
		}
	}
}
