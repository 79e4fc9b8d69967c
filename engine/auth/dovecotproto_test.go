package auth

import (
	"bufio"
	"reflect"
	"strings"
	"testing"
)

func TestParseDovecotLine(t *testing.T) {
	tests := []struct {
		in   string
		cmd  string
		args []string
	}{
		{"DONE", "DONE", nil},
		{"VERSION\t1\t2", "VERSION", []string{"1", "2"}},
		{"MECH\tPLAIN\tplaintext", "MECH", []string{"PLAIN", "plaintext"}},
		{"OK\t1\tuser=ann", "OK", []string{"1", "user=ann"}},
		{"FAIL\t2\treason=a\x01tb\x01nc\x01rd\x011e\x010f\x01x\t", "FAIL", []string{"2", "reason=a\tb\nc\rd\x01e\x00fx", ""}},
		{"FAIL\t3\treason=trailing\x01", "FAIL", []string{"3", "reason=trailing\x01"}},
		{"CONT\t4\t", "CONT", []string{"4", ""}},
	}
	for _, tt := range tests {
		l, err := parseDovecotLine([]byte(tt.in))
		if err != nil || l.cmd != tt.cmd || !reflect.DeepEqual(l.args, tt.args) {
			t.Errorf("parseDovecotLine(%q) = %q %q, %v", tt.in, l.cmd, l.args, err)
		}
	}
	for _, bad := range []string{"", "\tOK", "ok\t1", "OK 1", "OK\t1\nFAIL\t2", strings.Repeat("A", 33)} {
		if _, err := parseDovecotLine([]byte(bad)); err == nil {
			t.Errorf("parseDovecotLine(%q): no error", bad)
		}
	}
}

func TestParseDovecotReply(t *testing.T) {
	l, _ := parseDovecotLine([]byte("FAIL\t17\tuser=ann\ttemp\treason=x=y"))
	r, err := parseDovecotReply(l)
	if err != nil || r.id != 17 {
		t.Fatalf("%+v, %v", r, err)
	}
	if v, ok := r.param("reason"); !ok || v != "x=y" {
		t.Errorf("reason = %q, %v", v, ok)
	}
	if v, ok := r.param("temp"); !ok || v != "" {
		t.Errorf("temp = %q, %v", v, ok)
	}
	if _, ok := r.param("authz"); ok {
		t.Error("authz found")
	}
	for _, bad := range []string{"OK", "OK\t", "OK\tx", "OK\t-1", "OK\t01", "OK\t4294967296"} {
		l, _ := parseDovecotLine([]byte(bad))
		if _, err := parseDovecotReply(l); err == nil {
			t.Errorf("parseDovecotReply(%q): no error", bad)
		}
	}
}

func TestReadDovecotLine(t *testing.T) {
	r := bufio.NewReaderSize(strings.NewReader("OK\t1\n"+strings.Repeat("x", maxDovecotLine)+"\n"), maxDovecotLine)
	if b, err := readDovecotLine(r); err != nil || string(b) != "OK\t1" {
		t.Errorf("%q, %v", b, err)
	}
	if _, err := readDovecotLine(r); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("long line: %v", err)
	}
}

// FuzzDovecotLine checks that the parser never panics and that what it
// accepts survives encoding and parsing again unchanged, so escaping and
// unescaping agree for every byte.
func FuzzDovecotLine(f *testing.F) {
	for _, s := range []string{
		"VERSION\t1\t2", "MECH\tPLAIN\tplaintext", "DONE", "OK\t1\tuser=ann@example.org",
		"FAIL\t2\ttemp\treason=a\x01tb", "CONT\t3\tdXNlcg==", "FAIL\t4\treason=\x01", "OK\t\t\t",
		"COOKIE\t0123456789abcdef0123456789abcdef", "\x01\x01\x01",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		l, err := parseDovecotLine(in)
		if err != nil {
			return
		}
		if r, err := parseDovecotReply(l); err == nil {
			for _, p := range r.params {
				k, _, _ := strings.Cut(p, "=")
				r.param(k)
			}
		}
		enc := l.encode()
		if strings.Count(enc, "\n") != 1 || !strings.HasSuffix(enc, "\n") {
			t.Fatalf("encode(%q) = %q: not one line", in, enc)
		}
		l2, err := parseDovecotLine([]byte(enc[:len(enc)-1]))
		if err != nil && len(enc) <= maxDovecotLine {
			t.Fatalf("re-parse of %q: %v", enc, err)
		}
		if err == nil && (l2.cmd != l.cmd || !reflect.DeepEqual(l2.args, l.args)) {
			t.Fatalf("round trip %q -> %q %q -> %q %q", in, l.cmd, l.args, l2.cmd, l2.args)
		}
		for _, a := range l.args {
			if tabUnescape(tabEscape(a)) != a {
				t.Fatalf("escape round trip of %q", a)
			}
		}
	})
}
