package arc

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// The example of RFC 6376 section 3.4.6, in both canonicalizations.
const (
	rfcHeader = "A: X\r\nB : Y\t\r\n\tZ  \r\n"
	rfcBody   = " C \r\nD \t E\r\n\r\n\r\n"
)

func TestCanonicalizeHeader(t *testing.T) {
	t.Parallel()
	h, err := readHeader(bufio.NewReader(strings.NewReader(rfcHeader + "\r\n" + rfcBody)))
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 {
		t.Fatalf("fields = %q, want 2", h)
	}
	tests := []struct {
		c    canonicalization
		want string
	}{
		{relaxed, "a:X\r\nb:Y Z\r\n"},
		{simple, "A: X\r\nB : Y\t\r\n\tZ  \r\n"},
	}
	for _, tt := range tests {
		var got string
		for _, f := range h {
			got += canonicalizers[tt.c].CanonicalizeHeader(f)
		}
		if got != tt.want {
			t.Errorf("%s header = %q, want %q", tt.c, got, tt.want)
		}
	}
}

func TestCanonicalizeBody(t *testing.T) {
	t.Parallel()
	tests := []struct {
		c          canonicalization
		body, want string
	}{
		{relaxed, rfcBody, " C\r\nD E\r\n"},
		{simple, rfcBody, " C \r\nD \t E\r\n"},
		// RFC 6376 sections 3.4.3 and 3.4.4: an empty body.
		{simple, "", "\r\n"},
		{relaxed, "", ""},
		{simple, "\r\n\r\n", "\r\n"},
		{relaxed, "\r\n\r\n", ""},
		// A last line without its end gets one.
		{simple, "a", "a\r\n"},
		{relaxed, "a \t", "a\r\n"},
		// Bare LF, as a message stored with Unix line ends.
		{simple, "a\nb\n\n", "a\r\nb\r\n"},
		{relaxed, "a  b \nc\n", "a b\r\nc\r\n"},
		// Empty lines inside are kept.
		{relaxed, "a\r\n\r\n\r\nb\r\n", "a\r\n\r\n\r\nb\r\n"},
	}
	for _, tt := range tests {
		// Whole, and a byte at a time: the body is a stream and a line
		// end may be split between two writes.
		for _, step := range []int{len(tt.body) + 1, 1} {
			var out bytes.Buffer
			wc := canonicalizers[tt.c].CanonicalizeBody(&out)
			for b := tt.body; len(b) > 0; {
				n := min(step, len(b))
				if _, err := io.WriteString(wc, b[:n]); err != nil {
					t.Fatal(err)
				}
				b = b[n:]
			}
			if err := wc.Close(); err != nil {
				t.Fatal(err)
			}
			if got := out.String(); got != tt.want {
				t.Errorf("%s body %q (writes of %d) = %q, want %q", tt.c, tt.body, step, got, tt.want)
			}
		}
	}
}

// TestPendingBound: a body of nothing but empty lines is not held in
// memory whole.
func TestPendingBound(t *testing.T) {
	t.Parallel()
	for _, c := range []canonicalization{simple, relaxed} {
		wc := canonicalizers[c].CanonicalizeBody(io.Discard)
		_, err := io.Copy(wc, strings.NewReader(strings.Repeat("\r\n", maxPending)))
		if !errors.Is(err, errPending) {
			t.Errorf("%s: error = %v, want %v", c, err, errPending)
		}
	}
}

func TestReadHeader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in       string
		want     []string
		wantBody string
	}{
		{"A: 1\r\nB: 2\r\n\r\nbody", []string{"A: 1\r\n", "B: 2\r\n"}, "body"},
		{"A: 1\nB: 2\n  more\n\nbody\n", []string{"A: 1\r\n", "B: 2\r\n  more\r\n"}, "body\n"},
		{"A: 1\r\nB: 2", []string{"A: 1\r\n", "B: 2\r\n"}, ""},
		{"A: 1\r\n", []string{"A: 1\r\n"}, ""},
		{"\r\nbody", nil, "body"},
	}
	for _, tt := range tests {
		br := bufio.NewReader(strings.NewReader(tt.in))
		h, err := readHeader(br)
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		body, _ := io.ReadAll(br)
		if strings.Join(h, "|") != strings.Join(tt.want, "|") || string(body) != tt.wantBody {
			t.Errorf("%q: header %q body %q, want %q %q", tt.in, h, body, tt.want, tt.wantBody)
		}
	}
	long := "A: " + strings.Repeat("x", maxHeader) + "\r\n\r\n"
	if _, err := readHeader(bufio.NewReader(strings.NewReader(long))); !errors.Is(err, errHeaderTooBig) {
		t.Errorf("long header: error = %v, want %v", err, errHeaderTooBig)
	}
	many := strings.Repeat("A: 1\r\n", maxHeader/6+1) + "\r\n"
	if _, err := readHeader(bufio.NewReader(strings.NewReader(many))); !errors.Is(err, errHeaderTooBig) {
		t.Errorf("many fields: error = %v, want %v", err, errHeaderTooBig)
	}
}

func TestRemoveSignature(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"ARC-Seal: i=1; a=rsa-sha256; b=abc\r\n def\r\n", "ARC-Seal: i=1; a=rsa-sha256; b="},
		{"ARC-Seal: i=1; b = abc; d=x\r\n", "ARC-Seal: i=1; b =; d=x\r\n"},
		{"ARC-Message-Signature: i=1; bh=xyz; b=abc\r\n", "ARC-Message-Signature: i=1; bh=xyz; b="},
		// Only the tag named b, not "b=" within another value.
		{"ARC-Seal: i=1; d=sub=b=x; b=abc\r\n", "ARC-Seal: i=1; d=sub=b=x; b="},
		{"ARC-Seal: i=1\r\n", "ARC-Seal: i=1\r\n"},
	}
	for _, tt := range tests {
		if got := removeSignature(tt.in); got != tt.want {
			t.Errorf("removeSignature(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestHeaderPicker(t *testing.T) {
	t.Parallel()
	h := header{"From: a\r\n", "To: 1\r\n", "to: 2\r\n", "Subject: s\r\n"}
	p := newHeaderPicker(h)
	var got []string
	for _, k := range []string{"to", "TO", "to", "from", "x"} {
		got = append(got, p.Pick(k))
	}
	want := []string{"to: 2\r\n", "To: 1\r\n", "", "From: a\r\n", ""}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("picked %q, want %q", got, want)
	}
}
