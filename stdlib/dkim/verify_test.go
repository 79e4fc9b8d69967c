package dkim_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/emersion/go-message/textproto"
	msgauth "github.com/emersion/go-msgauth/authres"
	msgdkim "github.com/emersion/go-msgauth/dkim"
	"go.starlark.net/starlark"
	"go.starlark.net/syntax"

	"github.com/larkpost/larkpost/engine/resolver"
	"github.com/larkpost/larkpost/stdlib/authres"
	"github.com/larkpost/larkpost/stdlib/dkim"
	"github.com/larkpost/larkpost/stdlib/dns"
)

// keys are generated once: RSA-2048 generation is slow.
var keys = sync.OnceValue(func() struct {
	rsa         *rsa.PrivateKey
	ed, edOther ed25519.PrivateKey
} {
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	return struct {
		rsa         *rsa.PrivateKey
		ed, edOther ed25519.PrivateKey
	}{r, ed, other}
})

func rsaRecord(t testing.TB, k *rsa.PrivateKey) string {
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
}

func edRecord(k ed25519.PrivateKey) string {
	return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(k.Public().(ed25519.PublicKey))
}

// table publishes the test keys:
//
//	rsa._domainkey.example.com      the RSA key
//	ed._domainkey.example.com       the Ed25519 key
//	ed._domainkey.example.org       the Ed25519 key
//	wrong._domainkey.example.org    another Ed25519 key than the one that signs
//	revoked._domainkey.example.com  "p=": revoked
//	broken._domainkey.example.com   SERVFAIL
//
// and nothing else (NXDOMAIN).
func table(t testing.TB) *resolver.Table {
	k := keys()
	tab := resolver.NewTable()
	add := func(name, value string) {
		if err := tab.Add(name, "TXT", value); err != nil {
			t.Fatal(err)
		}
	}
	add("rsa._domainkey.example.com", rsaRecord(t, k.rsa))
	add("ed._domainkey.example.com", edRecord(k.ed))
	add("ed._domainkey.example.org", edRecord(k.ed))
	add("wrong._domainkey.example.org", edRecord(k.edOther))
	add("revoked._domainkey.example.com", "v=DKIM1; k=rsa; p=")
	if err := tab.ServFail("broken._domainkey.example.com"); err != nil {
		t.Fatal(err)
	}
	return tab
}

const plain = "From: Alice <alice@example.com>\r\n" +
	"To: bob@example.net\r\n" +
	"Subject: lunch\r\n" +
	"Date: Mon, 02 Jan 2006 15:04:05 +0000\r\n" +
	"Message-ID: <1@example.com>\r\n" +
	"\r\n" +
	"Noon at the usual place?\r\n"

// sign prepends a DKIM-Signature of domain/selector made with key.
func sign(t testing.TB, msg, domain, selector string, key crypto.Signer) string {
	t.Helper()
	var b bytes.Buffer
	err := msgdkim.Sign(&b, strings.NewReader(msg), &msgdkim.SignOptions{
		Domain:                 domain,
		Selector:               selector,
		Signer:                 key,
		HeaderCanonicalization: msgdkim.CanonicalizationRelaxed,
		BodyCanonicalization:   msgdkim.CanonicalizationRelaxed,
		HeaderKeys:             []string{"From", "To", "Subject", "Date", "Message-ID"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// testMsg is a message value as on_data's msg gives it.
type testMsg struct {
	r    io.ReaderAt
	size int64
	h    textproto.Header
}

func (m testMsg) RawMessage() (io.ReaderAt, int64, textproto.Header) { return m.r, m.size, m.h }
func (m testMsg) String() string                                     { return "<msg>" }
func (m testMsg) Type() string                                       { return "msg" }
func (m testMsg) Freeze()                                            {}
func (m testMsg) Truth() starlark.Bool                               { return true }
func (m testMsg) Hash() (uint32, error)                              { return 0, nil }

func newMsg(t testing.TB, r io.ReaderAt, size int64) testMsg {
	t.Helper()
	h, err := textproto.ReadHeader(bufio.NewReader(io.NewSectionReader(r, 0, size)))
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return testMsg{r, size, h}
}

func msgOf(t testing.TB, s string) testMsg {
	return newMsg(t, strings.NewReader(s), int64(len(s)))
}

// verify runs dkim.verify(msg) and returns the results in one line each,
// "result domain selector algorithm", and the Authentication-Results
// recorded.
func verify(t *testing.T, env *dns.Env, msg starlark.Value) ([]string, []starlark.Value, []msgauth.Result) {
	t.Helper()
	rec := &authres.Recorder{}
	th := env.Thread(authres.With(t.Context(), rec), "test")
	v, err := starlark.EvalOptions(&syntax.FileOptions{}, th, "test", `dkim.verify(msg)`,
		starlark.StringDict{"dkim": dkim.Module(), "msg": msg})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	var values []starlark.Value
	for x := range v.(*starlark.List).Elements() {
		values = append(values, x)
		r := x.(dkim.ResultValue).R
		lines = append(lines, strings.Join([]string{r.Result, r.Domain, r.Selector, r.Algorithm}, " "))
	}
	return lines, values, rec.Results()
}

func TestVerify(t *testing.T) {
	t.Parallel()
	k := keys()
	env := &dns.Env{Resolver: &resolver.Resolver{Table: table(t)}}
	twice := sign(t, sign(t, plain, "example.org", "wrong", k.ed), "example.com", "rsa", k.rsa)
	headerOnly := strings.TrimSuffix(sign(t, strings.TrimSuffix(plain, "Noon at the usual place?\r\n"), "example.com", "ed", k.ed), "\r\n")
	tests := []struct {
		name   string
		msg    string
		want   []string
		reason string // in the first result's reason
	}{
		{"rsa", sign(t, plain, "example.com", "rsa", k.rsa), []string{"pass example.com rsa rsa-sha256"}, ""},
		{"ed25519", sign(t, plain, "example.com", "ed", k.ed), []string{"pass example.com ed ed25519-sha256"}, ""},
		{"body tampered", strings.Replace(sign(t, plain, "example.com", "rsa", k.rsa), "Noon", "Midnight", 1),
			[]string{"fail example.com rsa rsa-sha256"}, "body hash"},
		{"header tampered", strings.Replace(sign(t, plain, "example.com", "ed", k.ed), "Subject: lunch", "Subject: dinner", 1),
			[]string{"fail example.com ed ed25519-sha256"}, "signature did not verify"},
		{"key missing", sign(t, plain, "example.com", "gone", k.rsa), []string{"permerror example.com gone rsa-sha256"}, "no such domain"},
		{"key revoked", sign(t, plain, "example.com", "revoked", k.rsa), []string{"permerror example.com revoked rsa-sha256"}, "revoked"},
		{"servfail", sign(t, plain, "example.com", "broken", k.rsa), []string{"temperror example.com broken rsa-sha256"}, "SERVFAIL"},
		{"key of another algorithm", sign(t, plain, "example.com", "ed", k.rsa), []string{"permerror example.com ed rsa-sha256"}, "key algorithm"},
		{"one good one bad", twice, []string{"pass example.com rsa rsa-sha256", "fail example.org wrong ed25519-sha256"}, ""},
		{"malformed", "DKIM-Signature: v=1; d=example.com; garbage\r\n" + plain, []string{"permerror example.com  "}, "malformed"},
		{"body length tag", strings.Replace(sign(t, plain, "example.com", "ed", k.ed), "DKIM-Signature: ", "DKIM-Signature: l=5; ", 1),
			[]string{"neutral example.com ed ed25519-sha256"}, "body length"},
		{"header only, no empty line", headerOnly, []string{"pass example.com ed ed25519-sha256"}, ""},
		{"unsigned", plain, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, values, recorded := verify(t, env, msgOf(t, tt.msg))
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("results:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			if len(values) > 0 {
				reason := values[0].(dkim.ResultValue).R.Reason
				if !strings.Contains(reason, tt.reason) || (tt.reason == "") != (reason == "") {
					t.Errorf("reason %q, want it to contain %q", reason, tt.reason)
				}
			}
			if len(recorded) != len(got) {
				t.Errorf("recorded %d results, want %d", len(recorded), len(got))
			}
			for i, res := range recorded {
				r := values[i].(dkim.ResultValue).R
				d, ok := res.(*msgauth.GenericResult)
				if !ok || d.Method != "dkim" || string(d.Value) != r.Result || d.Params["header.d"] != r.Domain ||
					d.Params["header.s"] != r.Selector || d.Params["header.a"] != r.Algorithm ||
					(r.Selector != "" && len(d.Params["header.b"]) != 8) {
					t.Errorf("recorded %#v for %+v", res, r)
				}
			}
		})
	}
}

// TestAttributes: what scripts see of a result.
func TestAttributes(t *testing.T) {
	t.Parallel()
	env := &dns.Env{Resolver: &resolver.Resolver{Table: table(t)}}
	msg := msgOf(t, sign(t, plain, "Example.COM", "rsa", keys().rsa))
	th := env.Thread(t.Context(), "test")
	predeclared := starlark.StringDict{"dkim": dkim.Module(), "msg": msg}
	tests := []struct{ expr, want string }{
		{`dkim.verify(msg)[0].result`, `"pass"`},
		{`dkim.verify(msg)[0].reason`, `""`},
		{`dkim.verify(msg)[0].domain`, `"example.com"`},
		{`dkim.verify(msg)[0].selector`, `"rsa"`},
		{`dkim.verify(msg)[0].algorithm`, `"rsa-sha256"`},
		{`dkim.verify(msg)[0].identifier`, `"@Example.COM"`},
		{`dkim.verify(msg)[0].headers`, `["from", "to", "subject", "date", "message-id"]`},
		{`dir(dkim.verify(msg)[0])`, `["algorithm", "domain", "headers", "identifier", "reason", "result", "selector"]`},
	}
	for _, tt := range tests {
		v, err := starlark.EvalOptions(&syntax.FileOptions{}, th, "test", tt.expr, predeclared)
		if err != nil {
			t.Errorf("%s: %v", tt.expr, err)
			continue
		}
		if v.String() != tt.want {
			t.Errorf("%s = %s, want %s", tt.expr, v, tt.want)
		}
	}
}

// TestTooManySignatures: past dkim.MaxSignatures, the rest is one
// permerror, and no key of theirs is fetched.
func TestTooManySignatures(t *testing.T) {
	t.Parallel()
	msg := plain
	for range dkim.MaxSignatures + 2 {
		msg = sign(t, msg, "example.com", "ed", keys().ed)
	}
	env := &dns.Env{Resolver: &resolver.Resolver{Table: table(t)}}
	got, values, recorded := verify(t, env, msgOf(t, msg))
	if len(got) != dkim.MaxSignatures+1 {
		t.Fatalf("%d results, want %d: %v", len(got), dkim.MaxSignatures+1, got)
	}
	for _, g := range got[:dkim.MaxSignatures] {
		if g != "pass example.com ed ed25519-sha256" {
			t.Errorf("result %q", g)
		}
	}
	last := values[dkim.MaxSignatures].(dkim.ResultValue).R
	if last.Result != "permerror" || last.Reason != "too many signatures" {
		t.Errorf("last result %+v", last)
	}
	// The recorder keeps one result per domain and identifier.
	if len(recorded) != 2 {
		t.Errorf("recorded %v", recorded)
	}
}

// countingReader counts what is read of a message and the largest read.
type countingReader struct {
	r             io.ReaderAt
	total, widest atomic.Int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.total.Add(int64(n))
	for w := c.widest.Load(); int64(len(p)) > w && !c.widest.CompareAndSwap(w, int64(len(p))); w = c.widest.Load() {
	}
	return n, err
}

// TestUnsignedNotRead: without a signature nothing of the message is read.
func TestUnsignedNotRead(t *testing.T) {
	t.Parallel()
	env := &dns.Env{Resolver: &resolver.Resolver{Table: table(t)}}
	msg := msgOf(t, plain)
	cr := &countingReader{r: msg.r}
	msg.r = cr
	if got, _, _ := verify(t, env, msg); len(got) != 0 {
		t.Errorf("results %v", got)
	}
	if n := cr.total.Load(); n != 0 {
		t.Errorf("%d bytes read", n)
	}
}

// bigMsg is a message of some megabytes that exists only as it is read:
// head, then lines of a fixed pattern.
type bigMsg struct {
	head []byte
	size int64
}

const line = "The quick brown fox jumps over the lazy dog, again and again.\r\n"

func (m bigMsg) ReadAt(p []byte, off int64) (int, error) {
	if off >= m.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && off < m.size {
		if off < int64(len(m.head)) {
			c := copy(p[n:], m.head[off:])
			n, off = n+c, off+int64(c)
			continue
		}
		i := (off - int64(len(m.head))) % int64(len(line))
		c := copy(p[n:], line[i:])
		c = int(min(int64(c), m.size-off))
		n, off = n+c, off+int64(c)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// TestLargeMessage: a message of several megabytes, signed and verified
// as a stream from an io.ReaderAt, in small reads.
func TestLargeMessage(t *testing.T) {
	t.Parallel()
	const lines = 4 << 20 / len(line)
	header := strings.TrimSuffix(plain, "Noon at the usual place?\r\n")
	unsigned := bigMsg{[]byte(header), int64(len(header) + lines*len(line))}
	signer, err := msgdkim.NewSigner(&msgdkim.SignOptions{Domain: "example.com", Selector: "rsa", Signer: keys().rsa})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(signer, io.NewSectionReader(unsigned, 0, unsigned.size)); err != nil {
		t.Fatal(err)
	}
	if err := signer.Close(); err != nil {
		t.Fatal(err)
	}
	sig := signer.Signature()
	signed := bigMsg{[]byte(sig + header), unsigned.size + int64(len(sig))}

	cr := &countingReader{r: signed}
	msg := newMsg(t, cr, signed.size)
	cr.total.Store(0)
	env := &dns.Env{Resolver: &resolver.Resolver{Table: table(t)}}
	got, _, _ := verify(t, env, msg)
	if len(got) != 1 || got[0] != "pass example.com rsa rsa-sha256" {
		t.Errorf("results %v", got)
	}
	if n := cr.total.Load(); n < signed.size {
		t.Errorf("%d bytes read of %d", n, signed.size)
	}
	if w := cr.widest.Load(); w > 64<<10 {
		t.Errorf("a read of %d bytes: the message is not streamed", w)
	}
}

// TestErrors: what a script gets wrong, and dkim outside a hook.
func TestErrors(t *testing.T) {
	t.Parallel()
	env := &dns.Env{Resolver: &resolver.Resolver{Table: table(t)}}
	withDNS := env.Thread(t.Context(), "test")
	tests := []struct {
		th   *starlark.Thread
		msg  starlark.Value
		want string
	}{
		{withDNS, starlark.String("From: a@example.com\r\n\r\n"), "want the message"},
		{withDNS, testMsg{}, "not at hand"},
		{&starlark.Thread{}, msgOf(t, plain), "only available in hooks"},
	}
	for _, tt := range tests {
		_, err := starlark.EvalOptions(&syntax.FileOptions{}, tt.th, "test", `dkim.verify(msg)`,
			starlark.StringDict{"dkim": dkim.Module(), "msg": tt.msg})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("error %v, want %q", err, tt.want)
		}
	}
}

// TestDeadline: a hook whose context is done gets temperror, not fail.
func TestDeadline(t *testing.T) {
	t.Parallel()
	env := &dns.Env{Resolver: &resolver.Resolver{Table: table(t), Cache: resolver.NewCache()}}
	msg := msgOf(t, sign(t, plain, "example.com", "ed", keys().ed))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	s, err := dns.SessionOf(env.Thread(ctx, "test"))
	if err != nil {
		t.Fatal(err)
	}
	res := dkim.Verify(s, msg.r, msg.size, msg.h)
	if len(res) != 1 || res[0].Result != "temperror" {
		t.Errorf("results %+v", res)
	}
}
