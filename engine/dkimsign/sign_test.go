package dkimsign

import (
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
)

// newSigner makes a Signer over key files written to a temporary
// directory, and the fake DNS publishing them.
func newSigner(t *testing.T, opts Options, keys ...struct {
	domain, selector string
	kp               keyPair
}) (*Signer, records) {
	t.Helper()
	dir := t.TempDir()
	recs := records{}
	var cfg []KeyConfig
	for i, k := range keys {
		path := writeKey(t, dir, "k"+strconv.Itoa(i)+".pem", k.kp.pem, 0o600)
		cfg = append(cfg, KeyConfig{Domain: k.domain, Selector: k.selector, File: path})
		recs[TXTName(k.selector, k.domain)] = k.kp.txt
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	s, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s, recs
}

type testKey = struct {
	domain, selector string
	kp               keyPair
}

func TestSignVerify(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		kp   func() keyPair
		alg  string
	}{
		{"rsa-2048", rsaA, "rsa-sha256"},
		{"ed25519", edA, "ed25519-sha256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, recs := newSigner(t, Options{}, testKey{"example.com", "sel", tc.kp()})
			field, err := s.Sign("example.com", []byte(testHeader), strings.NewReader(testBody))
			if err != nil {
				t.Fatal(err)
			}
			checkLayout(t, field, 1)
			msg := field + testHeader + "\r\n" + testBody
			vs := verifyOK(t, msg, recs, 1)
			if vs[0].Domain != "example.com" || vs[0].Time.IsZero() {
				t.Errorf("verification = %+v", vs[0])
			}

			tg := tags(t, field)
			want := map[string]string{
				"v": "1", "a": tc.alg, "c": "relaxed/relaxed", "d": "example.com", "s": "sel",
				"h": "from:from:subject:date:to:message-id",
			}
			for k, v := range want {
				if tg[k] != v {
					t.Errorf("%s=%q, want %q", k, tg[k], v)
				}
			}
			for _, k := range []string{"t", "bh", "b"} {
				if tg[k] == "" {
					t.Errorf("no %s= in %q", k, field)
				}
			}
			for _, k := range []string{"l", "x", "i"} {
				if _, ok := tg[k]; ok {
					t.Errorf("unexpected %s= in %q", k, field)
				}
			}

			// What relaxed canonicalization forgives, and what it does not.
			refolded := strings.Replace(testHeader, "Subject: a test\r\n  folded", "subject:a   test folded", 1)
			verifyOK(t, field+refolded+"\r\n"+strings.ReplaceAll(testBody, "   ", " "), recs, 1)
			verifyOK(t, field+"Received: from x\r\n"+testHeader+"X-Later: 1\r\n\r\n"+testBody, recs, 1)
			verifyFails(t, field+strings.Replace(testHeader, "a test", "a tost", 1)+"\r\n"+testBody, recs)
			verifyFails(t, msg+"appended\r\n", recs)
			verifyFails(t, field+testHeader+"\r\n"+strings.Replace(testBody, "Hello", "Hallo", 1), recs)
		})
	}
}

// checkLayout asserts the fields are n DKIM-Signature fields, CRLF
// terminated, folded with a leading space, within 78 characters a line
// but for an h= tag too long to fit.
func checkLayout(t *testing.T, fields string, n int) {
	t.Helper()
	if !strings.HasSuffix(fields, "\r\n") {
		t.Fatalf("no final CRLF: %q", fields)
	}
	got := 0
	for line := range strings.SplitSeq(strings.TrimSuffix(fields, "\r\n"), "\r\n") {
		if strings.Contains(line, "\n") || strings.Contains(line, "\r") {
			t.Errorf("bare CR or LF in %q", line)
		}
		switch {
		case strings.HasPrefix(line, "DKIM-Signature: "):
			got++
		case strings.HasPrefix(line, " ") && len(line) > 1 && line[1] != ' ':
		default:
			t.Errorf("line neither starts a field nor continues one: %q", line)
		}
		if len(line) > maxLine && !strings.HasPrefix(line, " h=") {
			t.Errorf("line of %d characters: %q", len(line), line)
		}
	}
	if got != n {
		t.Errorf("%d DKIM-Signature fields, want %d:\n%s", got, n, fields)
	}
}

func TestOversign(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		oversign []string
		edit     func(h string) string
		ok       bool
	}{
		{"unchanged", nil, func(h string) string { return h }, true},
		{"from added above", nil, func(h string) string { return "From: mallory@evil.example\r\n" + h }, false},
		{"from added below", nil, func(h string) string { return h + "From: mallory@evil.example\r\n" }, false},
		{"received added", nil, func(h string) string { return "Received: from relay\r\n" + h }, true},
		{"reply-to added, not oversigned", nil, func(h string) string { return h + "Reply-To: mallory@evil.example\r\n" }, true},
		{"reply-to added, oversigned", []string{"From", "Reply-To"}, func(h string) string { return h + "Reply-To: mallory@evil.example\r\n" }, false},
		{"second to added, to oversigned", []string{"from", "to"}, func(h string) string { return "To: mallory@evil.example\r\n" + h }, false},
		{"oversigning off, from added", []string{}, func(h string) string { return "From: mallory@evil.example\r\n" + h }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, recs := newSigner(t, Options{Oversign: tc.oversign}, testKey{"example.com", "sel", edA()})
			field, err := s.Sign("example.com", []byte(testHeader), strings.NewReader(testBody))
			if err != nil {
				t.Fatal(err)
			}
			msg := field + tc.edit(testHeader) + "\r\n" + testBody
			if tc.ok {
				verifyOK(t, msg, recs, 1)
			} else {
				verifyFails(t, msg, recs)
			}
		})
	}
}

func TestHeaderList(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name              string
		headers, oversign []string
		header            string
		want              string
	}{
		{"default", nil, nil, testHeader, "from:from:subject:date:to:message-id"},
		{"only present, repeated as often as present", nil, nil,
			"Received: x\r\nTo: a@example.net\r\nFrom: ann@example.com\r\nTo: b@example.net\r\nCc: c@example.net\r\nX-Foo: 1\r\n",
			"from:from:to:to:cc"},
		{"field names matched ignoring case and spaces", nil, nil,
			"FROM: ann@example.com\r\nsubject : x\r\nLIST-UNSUBSCRIBE-POST: List-Unsubscribe=One-Click\r\n",
			"from:from:subject:list-unsubscribe-post"},
		{"oversigned and absent: listed once", nil, []string{"From", "Reply-To"}, testHeader,
			"from:from:reply-to:subject:date:to:message-id"},
		{"no oversigning", nil, []string{}, testHeader, "from:subject:date:to:message-id"},
		{"custom list", []string{"Subject", "FROM", "X-Mailer", "Subject"}, nil, testHeader, "subject:from:from:x-mailer"},
		{"oversigned name outside the list", []string{"From"}, []string{"From", "X-Seal"}, testHeader, "from:from:x-seal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, recs := newSigner(t, Options{Headers: tc.headers, Oversign: tc.oversign}, testKey{"example.com", "sel", edA()})
			field, err := s.Sign("example.com", []byte(tc.header), strings.NewReader(testBody))
			if err != nil {
				t.Fatal(err)
			}
			if got := tags(t, field)["h"]; got != tc.want {
				t.Errorf("h=%s, want %s", got, tc.want)
			}
			verifyOK(t, field+tc.header+"\r\n"+testBody, recs, 1)
		})
	}
}

func TestLongHeaderList(t *testing.T) {
	t.Parallel()
	// Every default field present: h= is far longer than a line.
	var h strings.Builder
	for _, name := range DefaultHeaders {
		h.WriteString(name + ": value of " + name + "\r\n")
	}
	header := h.String()
	s, recs := newSigner(t, Options{Oversign: []string{"From", "Reply-To", "Subject", "To", "Cc"}},
		testKey{"a-rather-long-signing-domain-name.example.com", "selector-2026-01", rsaA()})
	field, err := s.Sign("a-rather-long-signing-domain-name.example.com", []byte(header), strings.NewReader(testBody))
	if err != nil {
		t.Fatal(err)
	}
	checkLayout(t, field, 1)
	verifyOK(t, field+header+"\r\n"+testBody, recs, 1)
}

func TestFold(t *testing.T) {
	t.Parallel()
	b := strings.Repeat("ABCDEFGHIJ", 35)
	for _, tc := range []struct {
		name, in string
	}{
		{"go-msgauth layout", "DKIM-Signature: a=rsa-sha256; bh=xyz; c=relaxed/relaxed; d=example.com; h=from:to;\r\n s=sel; t=1;\r\n b=" + b[:72] + "\r\n " + b[72:] + "\r\n"},
		{"long h", "DKIM-Signature: a=rsa-sha256; h=" + strings.Repeat("from:", 30) + "to; s=sel; t=1;\r\n b=" + b + "\r\n"},
		{"b at the end of a full line", "DKIM-Signature: a=rsa-sha256; d=" + strings.Repeat("x", 54) + "; b=" + b + "\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out := fold(tc.in)
			checkLayout(t, out, 1)
			// The hash covers the field without the b= value, relaxed:
			// folding must not change it. The b= value must survive.
			if got, want := relaxedNoB(out), relaxedNoB(tc.in); got != want {
				t.Errorf("canonical form changed:\n got %q\nwant %q", got, want)
			}
			if got := tags(t, out)["b"]; got != b {
				t.Errorf("b= changed: %q", got)
			}
		})
	}
	if got := fold("garbage"); got != "garbage" {
		t.Errorf("fold(garbage) = %q", got)
	}
}

// relaxedNoB is the relaxed canonical form of a signature field with its
// b= value removed, as a verifier hashes it.
func relaxedNoB(field string) string {
	i := strings.Index(field, " b=")
	if i < 0 {
		i = strings.Index(field, "\tb=")
	}
	return strings.Join(strings.Fields(field[:i+3]), " ")
}

func TestKeyFor(t *testing.T) {
	t.Parallel()
	s, _ := newSigner(t, Options{},
		testKey{"example.com", "s1", edA()},
		testKey{"Mail.Example.ORG.", "s2", edB()},
		testKey{"example.com", "s3", edB()},
	)
	for _, tc := range []struct {
		domain, want string // want "": no key
		selector     string
	}{
		{"example.com", "example.com", "s1"},
		{"EXAMPLE.com.", "example.com", "s1"},
		{"a.b.example.com", "example.com", "s1"},
		{"mail.example.org", "mail.example.org", "s2"},
		{"x.mail.example.org", "mail.example.org", "s2"},
		{"example.org", "", ""},
		{"notexample.com", "", ""},
		{"com", "", ""},
		{"", "", ""},
		{"exa mple.com", "", ""},
		{"example.com\r\nX: y", "", ""},
	} {
		k, ok := s.KeyFor(tc.domain)
		if ok != (tc.want != "") {
			t.Errorf("KeyFor(%q) ok = %v", tc.domain, ok)
			continue
		}
		if ok && (k.Domain != tc.want || k.Selector != tc.selector) {
			t.Errorf("KeyFor(%q) = %s/%s, want %s/%s", tc.domain, k.Domain, k.Selector, tc.want, tc.selector)
		}
	}
}

func TestSignSubdomainWithParentKey(t *testing.T) {
	t.Parallel()
	s, recs := newSigner(t, Options{}, testKey{"example.com", "sel", edA()})
	header := strings.Replace(testHeader, "ann@example.com", "ann@news.example.com", 1)
	field, err := s.Sign("news.example.com", []byte(header), strings.NewReader(testBody))
	if err != nil {
		t.Fatal(err)
	}
	if vs := verifyOK(t, field+header+"\r\n"+testBody, recs, 1); vs[0].Domain != "example.com" {
		t.Errorf("d=%s, want example.com", vs[0].Domain)
	}
}

func TestDualSign(t *testing.T) {
	t.Parallel()
	s, recs := newSigner(t, Options{},
		testKey{"example.com", "rsa", rsaA()},
		testKey{"example.com", "ed", edA()},
	)
	field, err := s.Sign("example.com", []byte(testHeader), strings.NewReader(testBody))
	if err != nil {
		t.Fatal(err)
	}
	checkLayout(t, field, 2)
	verifyOK(t, field+testHeader+"\r\n"+testBody, recs, 2)
	if !strings.Contains(field, "a=rsa-sha256") || !strings.Contains(field, "a=ed25519-sha256") {
		t.Errorf("want one signature of each algorithm:\n%s", field)
	}
}

func TestSignLineEndings(t *testing.T) {
	t.Parallel()
	s, recs := newSigner(t, Options{}, testKey{"example.com", "sel", edA()})
	crlfToLF := func(s string) string { return strings.ReplaceAll(s, "\r\n", "\n") }
	for _, tc := range []struct {
		name, header, body string
	}{
		{"lf header", crlfToLF(testHeader), testBody},
		{"lf body", testHeader, crlfToLF(testBody)},
		{"mixed", strings.Replace(testHeader, "\r\n", "\n", 2), strings.Replace(testBody, "\r\n", "\n", 1)},
		{"no final newline", strings.TrimSuffix(testHeader, "\r\n"), testBody},
		{"lf, no final newline", strings.TrimSuffix(crlfToLF(testHeader), "\n"), testBody},
	} {
		t.Run(tc.name, func(t *testing.T) {
			field, err := s.Sign("example.com", []byte(tc.header), strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			// Signed as the CRLF message the wire carries.
			verifyOK(t, field+testHeader+"\r\n"+testBody, recs, 1)
		})
	}
}

func TestSignRefuses(t *testing.T) {
	t.Parallel()
	s, _ := newSigner(t, Options{}, testKey{"example.com", "sel", edA()})
	for _, tc := range []struct {
		name, domain, header, want string
	}{
		{"no key", "example.net", testHeader, "no dkim key"},
		{"bad domain", "exa mple.com", testHeader, "no dkim key"},
		{"empty header", "example.com", "", "empty header"},
		{"blank line inside", "example.com", "From: a@example.com\r\n\r\nTo: b@example.net\r\n", "line 2 is empty"},
		{"blank line at the end", "example.com", testHeader + "\r\n", "is empty"},
		{"no from", "example.com", "To: b@example.net\r\nSubject: x\r\n", "no From"},
		{"leading continuation", "example.com", " folded\r\nFrom: a@example.com\r\n", "continuation"},
		{"no colon", "example.com", "From a@example.com Fri Jan  2\r\nFrom: a@example.com\r\n", "line 1 has no colon"},
		{"bare CR", "example.com", "From: a@example.com\rTo: b@example.net\r\n", "bare CR"},
		{"NUL", "example.com", "From: a@exa\x00mple.com\r\n", "NUL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Sign(tc.domain, []byte(tc.header), strings.NewReader(testBody))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
			if strings.HasPrefix(tc.want, "no dkim key") != errors.Is(err, ErrNoKey) {
				t.Errorf("errors.Is(err, ErrNoKey) wrong for %v", err)
			}
		})
	}
}

// errReader fails after some bytes.
type errReader struct{ n int }

func (r *errReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("disk on fire")
	}
	n := min(len(p), r.n)
	for i := range p[:n] {
		p[i] = 'x'
	}
	r.n -= n
	return n, nil
}

func TestSignBodyError(t *testing.T) {
	t.Parallel()
	s, _ := newSigner(t, Options{}, testKey{"example.com", "rsa", rsaA()}, testKey{"example.com", "ed", edA()})
	_, err := s.Sign("example.com", []byte(testHeader), &errReader{100000})
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("err = %v", err)
	}
	// A nil body is an empty one.
	if _, err := s.Sign("example.com", []byte(testHeader), nil); err != nil {
		t.Fatal(err)
	}
}

// genReader produces n bytes of varied text lines without holding them.
type genReader struct {
	n, off int
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.off >= g.n {
		return 0, io.EOF
	}
	const line = "The quick brown fox jumps over the lazy dog,  again\t and again.  \r\n"
	n := min(len(p), g.n-g.off)
	for i := range p[:n] {
		p[i] = line[(g.off+i)%len(line)]
	}
	g.off += n
	return n, nil
}

func TestSignLargeBody(t *testing.T) {
	t.Parallel()
	const size = 5 << 20
	s, recs := newSigner(t, Options{}, testKey{"example.com", "sel", rsaA()})
	body := &genReader{n: size}
	field, err := s.Sign("example.com", []byte(testHeader), body)
	if err != nil {
		t.Fatal(err)
	}
	if body.off != size {
		t.Fatalf("read %d bytes of %d", body.off, size)
	}
	// Verified as a stream too.
	msg := io.MultiReader(strings.NewReader(field+testHeader+"\r\n"), &genReader{n: size})
	vs := verify(t, msg, recs)
	if len(vs) != 1 || vs[0].Err != nil {
		t.Fatalf("verifications: %+v", vs)
	}
	// One byte less is another body.
	msg = io.MultiReader(strings.NewReader(field+testHeader+"\r\n"), &genReader{n: size - 1})
	if vs := verify(t, msg, recs); len(vs) != 1 || vs[0].Err == nil {
		t.Fatal("truncated body verifies")
	}
}

func TestExpire(t *testing.T) {
	t.Parallel()
	s, recs := newSigner(t, Options{Expire: 3600e9}, testKey{"example.com", "sel", edA()})
	field, err := s.Sign("example.com", []byte(testHeader), strings.NewReader(testBody))
	if err != nil {
		t.Fatal(err)
	}
	vs := verifyOK(t, field+testHeader+"\r\n"+testBody, recs, 1)
	if d := vs[0].Expiration.Sub(vs[0].Time); d < 3599e9 || d > 3601e9 {
		t.Errorf("x= - t= = %v, want 1h", d)
	}
}

func TestNewOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"from not signed", Options{Headers: []string{"Subject", "To"}, Oversign: []string{}}, "must include From"},
		{"bad name", Options{Headers: []string{"From", "X Bad"}}, "bad header field name"},
		{"colon", Options{Oversign: []string{"From:"}}, "bad header field name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(nil, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	// No keys: a Signer that signs nothing.
	s, err := New(nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sign("example.com", []byte(testHeader), nil); !errors.Is(err, ErrNoKey) {
		t.Fatalf("err = %v", err)
	}
}
