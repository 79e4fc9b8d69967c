package cleanup

import (
	"strings"
	"testing"
)

func TestRewriteHeaders(t *testing.T) {
	canon := map[string]string{"jdoe@example.com": "john.doe@example.com", "root@ws1.example.com": "it@example.com"}
	fn := func(a, field string, sender bool) string {
		if n, ok := canon[strings.ToLower(a)]; ok {
			return n
		}
		return a
	}
	tests := []struct{ name, in, want string }{
		{"untouched message keeps every byte",
			"From: Ann <ann@example.org>\r\nTo: bob@example.com\r\nDKIM-Signature: v=1;\r\n b=xyz\r\n\r\nbody\r\n",
			"From: Ann <ann@example.org>\r\nTo: bob@example.com\r\nDKIM-Signature: v=1;\r\n b=xyz\r\n\r\nbody\r\n"},
		{"only the changed field is rewritten",
			"Received: from x\r\n\tby y\r\nFrom: root@ws1.example.com\r\nTo:  Bob <bob@example.com>,\r\n  John <jdoe@example.com>\r\nSubject: jdoe@example.com\r\n\r\nTo: jdoe@example.com\r\n",
			"Received: from x\r\n\tby y\r\nFrom: <it@example.com>\r\nTo: \"Bob\" <bob@example.com>, \"John\" <john.doe@example.com>\r\nSubject: jdoe@example.com\r\n\r\nTo: jdoe@example.com\r\n"},
		{"unparseable field left alone",
			"To: jdoe@example.com <<<\r\n\r\n",
			"To: jdoe@example.com <<<\r\n\r\n"},
		{"a message that is all header",
			"To: jdoe@example.com\r\n",
			"To: <john.doe@example.com>\r\n"},
		{"the header ends at a line that is not a field",
			"To: jdoe@example.com\r\nnot a field\r\nFrom: jdoe@example.com\r\n",
			"To: <john.doe@example.com>\r\nnot a field\r\nFrom: jdoe@example.com\r\n"},
	}
	for _, tt := range tests {
		n := HeaderLen([]byte(tt.in))
		got := tt.in
		if h := rewriteHeaders([]byte(tt.in[:n]), fn); h != nil {
			got = string(h) + tt.in[n:]
		}
		if got != tt.want {
			t.Errorf("%s:\ngot  %q\nwant %q", tt.name, got, tt.want)
		}
	}
}
