package milter

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
)

func TestMessageApplyHeader(t *testing.T) {
	const hdr = "Received: from a\r\n\tby b\r\nSubject: hi\r\nX-Spam: old\r\nFrom: ann@example.org\r\nx-spam: second\r\n"
	tests := []struct {
		name string
		mod  Modification
		want string // the header after; "" with wantErr
		err  bool
	}{
		{"add goes last", Modification{Kind: ModAddHeader, Name: "X-New", Value: " v"},
			hdr + "X-New: v\r\n", false},
		{"insert at the top", Modification{Kind: ModInsertHeader, Index: 0, Name: "DKIM-Signature", Value: " v=1;\r\n\tb=x"},
			"DKIM-Signature: v=1;\r\n\tb=x\r\n" + hdr, false},
		{"insert counts whole fields (a folded one is one)", Modification{Kind: ModInsertHeader, Index: 1, Name: "X-I", Value: " 1"},
			"Received: from a\r\n\tby b\r\nX-I: 1\r\nSubject: hi\r\nX-Spam: old\r\nFrom: ann@example.org\r\nx-spam: second\r\n", false},
		{"insert past the end appends", Modification{Kind: ModInsertHeader, Index: 99, Name: "X-I", Value: " 1"},
			hdr + "X-I: 1\r\n", false},
		{"change the second of a name, case-insensitive", Modification{Kind: ModChangeHeader, Index: 2, Name: "X-SPAM", Value: " new"},
			"Received: from a\r\n\tby b\r\nSubject: hi\r\nX-Spam: old\r\nFrom: ann@example.org\r\nX-SPAM: new\r\n", false},
		{"change a field that is not there adds it", Modification{Kind: ModChangeHeader, Index: 1, Name: "X-Absent", Value: " v"},
			hdr + "X-Absent: v\r\n", false},
		{"delete a folded field whole", Modification{Kind: ModDeleteHeader, Index: 1, Name: "Received"},
			"Subject: hi\r\nX-Spam: old\r\nFrom: ann@example.org\r\nx-spam: second\r\n", false},
		{"delete one that is not there", Modification{Kind: ModDeleteHeader, Index: 3, Name: "X-Spam"}, hdr, false},
		{"a value that smuggles a field in", Modification{Kind: ModAddHeader, Name: "X-A", Value: " v\r\nBcc: evil@example.net"}, "", true},
		{"a value that ends the header", Modification{Kind: ModChangeHeader, Index: 1, Name: "Subject", Value: " v\r\n\r\nbody"}, "", true},
		{"a bare LF", Modification{Kind: ModAddHeader, Name: "X-A", Value: " v\nBcc: x"}, "", true},
		{"a name with a colon", Modification{Kind: ModAddHeader, Name: "Bcc: x\r\nX", Value: " v"}, "", true},
		{"a name with a space", Modification{Kind: ModAddHeader, Name: "X A", Value: " v"}, "", true},
		{"an empty name", Modification{Kind: ModAddHeader, Name: "", Value: " v"}, "", true},
		{"a NUL", Modification{Kind: ModAddHeader, Name: "X-A", Value: " v\x00"}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMessage([]byte(hdr), strings.NewReader("body\r\n"), 0, 6)
			handled, err := m.Apply(tt.mod)
			if !handled {
				t.Fatal("a header change was not handled")
			}
			if tt.err {
				if !errors.Is(err, ErrBadHeader) {
					t.Fatalf("err = %v, want ErrBadHeader", err)
				}
				if string(m.Header()) != hdr || m.HeaderEdited() {
					t.Errorf("a refused change edited the header:\n%s", m.Header())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := string(m.Header()); got != tt.want {
				t.Errorf("header:\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestMessageHeaderLimit(t *testing.T) {
	m := NewMessage([]byte("Subject: x\r\n"), strings.NewReader(""), 0, 0)
	big := " " + strings.Repeat("x", 60000)
	var err error
	for i := 0; i < 40 && err == nil; i++ {
		_, err = m.Apply(Modification{Kind: ModAddHeader, Name: "X-Big", Value: big})
	}
	if !errors.Is(err, ErrBadHeader) || len(m.Header()) > MaxHeader {
		t.Errorf("header grew to %d bytes (err %v); limit %d", len(m.Header()), err, MaxHeader)
	}
}

func TestMessageReplaceBody(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "body")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("new body\r\n")
	f.Seek(0, io.SeekStart)
	m := NewMessage([]byte("Subject: x\r\n"), strings.NewReader("Subject: x\r\n\r\nold\r\n"), 14, 5)
	var before bytes.Buffer
	m.WriteTo(&before)
	if before.String() != "Subject: x\r\n\r\nold\r\n" {
		t.Fatalf("before: %q", before.String())
	}
	if handled, err := m.Apply(Modification{Kind: ModReplaceBody, Body: f}); !handled || err != nil {
		t.Fatal(handled, err)
	}
	var after bytes.Buffer
	m.WriteTo(&after)
	if after.String() != "Subject: x\r\n\r\nnew body\r\n" || !m.BodyReplaced() || m.BodySize() != 10 {
		t.Errorf("after: %q (replaced %v, size %d)", after.String(), m.BodyReplaced(), m.BodySize())
	}
	m.Close()
	if _, err := f.Stat(); err == nil {
		t.Error("Close left the replaced body open")
	}
	if handled, _ := m.Apply(Modification{Kind: ModAddRcpt, Addr: "x@y"}); handled {
		t.Error("an envelope change was handled by the message")
	}
}

func TestMessageLimitHeader(t *testing.T) {
	m := NewMessage([]byte("Subject: x\r\n"), strings.NewReader(""), 0, 0)
	m.LimitHeader(100)
	if _, err := m.Apply(Modification{Kind: ModAddHeader, Name: "X-A", Value: " " + strings.Repeat("a", 50)}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Apply(Modification{Kind: ModAddHeader, Name: "X-B", Value: " " + strings.Repeat("b", 50)}); !errors.Is(err, ErrBadHeader) {
		t.Errorf("second field past the 100-byte limit: %v", err)
	}
	if _, err := m.Apply(Modification{Kind: ModDeleteHeader, Index: 1, Name: "X-A"}); err != nil || string(m.Header()) != "Subject: x\r\n" {
		t.Errorf("delete at the limit: %v, header %q", err, m.Header())
	}
}
