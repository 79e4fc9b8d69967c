package arc_test

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-message/textproto"
	msgauth "github.com/emersion/go-msgauth/authres"
	"go.starlark.net/starlark"
	"go.starlark.net/syntax"

	"github.com/larkpost/larkpost/engine/resolver"
	"github.com/larkpost/larkpost/stdlib/arc"
	"github.com/larkpost/larkpost/stdlib/authres"
	"github.com/larkpost/larkpost/stdlib/dns"
)

// msgValue is the message value of on_data over a []byte.
type msgValue struct {
	raw   []byte
	h     textproto.Header
	noRaw bool
}

func newMsg(t *testing.T, raw []byte) *msgValue {
	t.Helper()
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil && err != io.EOF {
		t.Fatalf("parsing the test message: %v", err)
	}
	return &msgValue{raw: raw, h: h}
}

func (m *msgValue) String() string        { return "<msg>" }
func (m *msgValue) Type() string          { return "msg" }
func (m *msgValue) Freeze()               {}
func (m *msgValue) Truth() starlark.Bool  { return true }
func (m *msgValue) Hash() (uint32, error) { return 0, fmt.Errorf("unhashable") }
func (m *msgValue) RawMessage() (io.ReaderAt, int64, textproto.Header) {
	if m.noRaw {
		return nil, 0, m.h
	}
	return bytes.NewReader(m.raw), int64(len(m.raw)), m.h
}

var rsaKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

var edKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

// hop is a forwarder that seals.
type hop struct {
	domain, selector string
	key              crypto.Signer
	results          string // its Authentication-Results text
}

var (
	list   = hop{"lists.example.org", "s1", nil, "lists.example.org; spf=pass smtp.mailfrom=origin.example; dkim=pass header.d=origin.example; dmarc=pass header.from=origin.example"}
	fwd    = hop{"forwarder.example.net", "ed", edKey, "mx.forwarder.example.net; spf=fail smtp.mailfrom=origin.example; arc=pass"}
	relay  = hop{"relay.example.com", "s3", nil, "relay.example.com; arc=pass"}
	nokey  = hop{"nokey.example", "s", edKey, "nokey.example; none"}
	broken = hop{"broken.example", "s", edKey, "broken.example; none"}
)

func (h hop) signer() crypto.Signer {
	if h.key == nil {
		return rsaKey()
	}
	return h.key
}

func zone(t *testing.T) *resolver.Table {
	t.Helper()
	tab := resolver.NewTable()
	der, err := x509.MarshalPKIXPublicKey(rsaKey().Public())
	if err != nil {
		t.Fatal(err)
	}
	rsaRecord := "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	edRecord := "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(edKey.Public().(ed25519.PublicKey))
	for name, rec := range map[string]string{
		"s1._domainkey.lists.example.org":     rsaRecord,
		"s3._domainkey.relay.example.com":     rsaRecord,
		"ed._domainkey.forwarder.example.net": edRecord,
	} {
		if err := tab.Add(name, "TXT", rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := tab.ServFail("s._domainkey.broken.example"); err != nil {
		t.Fatal(err)
	}
	return tab
}

const original = "From: Alice <alice@origin.example>\r\n" +
	"To: list@lists.example.org\r\n" +
	"Subject: hello\r\n" +
	"Date: Mon, 1 Jun 2026 10:00:00 +0000\r\n" +
	"Message-ID: <1@origin.example>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain\r\n" +
	"\r\n" +
	"Hello,  world.\r\n\r\n"

// seal adds h's ARC set to msg, with chain result cv.
func seal(t *testing.T, msg []byte, h hop, cv string) []byte {
	t.Helper()
	i := bytes.Index(msg, []byte("\r\n\r\n"))
	if i < 0 {
		t.Fatal("test message without a body")
	}
	fields, err := arc.Seal(msg[:i+2], bytes.NewReader(msg[i+4:]), h.results, cv, h.domain, h.selector, h.signer(), time.Unix(1780000000, 0))
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return append([]byte(fields), msg...)
}

// edit applies fn to the message's header fields (each with its line
// ends); a field fn returns "" for is removed.
func edit(msg []byte, fn func(field string) string) []byte {
	s := string(msg)
	end := strings.Index(s, "\r\n\r\n") + 2
	var fields []string
	for _, line := range strings.SplitAfter(s[:end], "\r\n") {
		switch {
		case line == "":
		case line[0] == ' ' || line[0] == '\t':
			fields[len(fields)-1] += line
		default:
			fields = append(fields, line)
		}
	}
	var out strings.Builder
	for _, f := range fields {
		out.WriteString(fn(f))
	}
	return []byte(out.String() + s[end:])
}

func isInstance(f string, i int) bool {
	return strings.HasPrefix(f, "ARC-") && strings.Contains(f, fmt.Sprintf("i=%d;", i))
}

// verify runs arc.verify(msg) on a thread whose DNS answers from tab.
func verify(t *testing.T, tab *resolver.Table, msg []byte) (starlark.Value, *dns.Session) {
	t.Helper()
	env := &dns.Env{Resolver: &resolver.Resolver{Table: tab}}
	th := env.Thread(t.Context(), "test")
	v, err := starlark.EvalOptions(&syntax.FileOptions{}, th, "test", "arc.verify(msg)",
		starlark.StringDict{"arc": arc.Module(), "msg": newMsg(t, msg)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := dns.SessionOf(th)
	if err != nil {
		t.Fatal(err)
	}
	return v, s
}

func attr(t *testing.T, v starlark.Value, path ...string) starlark.Value {
	t.Helper()
	for _, name := range path {
		if i, err := fmt.Sscan(name, new(int)); err == nil && i == 1 {
			var n int
			fmt.Sscan(name, &n)
			v = v.(starlark.Indexable).Index(n)
			continue
		}
		a, err := v.(starlark.HasAttrs).Attr(name)
		if err != nil || a == nil {
			t.Fatalf("no attribute %s of %s", name, v)
		}
		v = a
	}
	return v
}

func str(t *testing.T, v starlark.Value, path ...string) string {
	t.Helper()
	s, ok := starlark.AsString(attr(t, v, path...))
	if !ok {
		t.Fatalf("%v is not a string", path)
	}
	return s
}

func TestVerify(t *testing.T) {
	t.Parallel()
	tab := zone(t)
	base := []byte(original)
	one := seal(t, base, list, "none")
	two := seal(t, one, fwd, "pass")
	three := seal(t, two, relay, "pass")
	changedBody := seal(t, bytes.Replace(one, []byte("Hello,  world."), []byte("Hello, world.\r\n-- \r\nThe list footer"), 1), fwd, "pass")
	cvFail := seal(t, one, fwd, "fail")

	var fifty []byte = base
	for i := range arc.MaxInstances {
		cv := "pass"
		if i == 0 {
			cv = "none"
		}
		fifty = seal(t, fifty, fwd, cv)
	}

	// Unix line ends, as a message stored by a tool that rewrote them.
	unix := bytes.ReplaceAll(two, []byte("\r\n"), []byte("\n"))

	// The message ends with its header: no empty line, no body.
	headerOnly := seal(t, []byte("From: a@origin.example\r\nSubject: x\r\n\r\n"), list, "none")
	headerOnly = headerOnly[:len(headerOnly)-2]

	tests := []struct {
		name        string
		msg         []byte
		want        string // result temporary instances oldest_pass
		reason      string // in the reason
		lastResults string
	}{
		{"unsealed", base, "none False 0 0", "no ARC sets", ""},
		{"one hop", one, "pass False 1 0", "", list.results},
		{"two hops", two, "pass False 2 0", "", fwd.results},
		{"three hops", three, "pass False 3 0", "", relay.results},
		{"fifty hops", fifty, "pass False 50 0", "", fwd.results},
		{"unix line ends", unix, "pass False 2 0", "", fwd.results},
		{"header only", headerOnly, "pass False 1 0", "", list.results},
		// The list changed the body, then sealed what it sent: the
		// chain holds, the first signature no longer does.
		{"body changed between hops", changedBody, "pass False 2 2", "", fwd.results},
		{"header changed after the last seal",
			bytes.Replace(two, []byte("Subject: hello"), []byte("Subject: [list] hello"), 1),
			"fail False 2 0", "ARC-Message-Signature i=2: signature does not verify", ""},
		{"body changed after the last seal",
			bytes.Replace(two, []byte("Hello,  world."), []byte("Hello, world!"), 1),
			"fail False 2 0", "ARC-Message-Signature i=2: body hash does not match", ""},
		// The AMS does not cover ARC fields; the seals do.
		{"results of hop 1 forged",
			edit(two, func(f string) string {
				if isInstance(f, 1) {
					return strings.Replace(f, "spf=pass", "spf=fail", 1)
				}
				return f
			}),
			"fail False 2 0", "ARC-Seal i=2: signature does not verify", ""},
		{"seal of hop 2 refolded",
			edit(two, func(f string) string {
				if strings.HasPrefix(f, "ARC-Seal: i=2") {
					return strings.Replace(f, "; cv=", ";\r\n    cv=", 1) // the same in relaxed form
				}
				return f
			}),
			"pass False 2 0", "", fwd.results},
		{"seal of hop 2 forged",
			edit(two, func(f string) string {
				if strings.HasPrefix(f, "ARC-Seal: i=2") {
					return strings.Replace(f, "t=1780000000", "t=1780000001", 1)
				}
				return f
			}),
			"fail False 2 0", "ARC-Seal i=2: signature does not verify", ""},
		{"cv=fail on top", cvFail, "fail False 2 0", "found the chain broken (cv=fail)", ""},
		{"cv=fail below", seal(t, cvFail, relay, "pass"), "fail False 3 0", `ARC-Seal i=2 has cv="fail"`, ""},
		{"cv=pass on the first", edit(one, func(f string) string { return strings.Replace(f, "cv=none", "cv=pass", 1) }),
			"fail False 1 0", `ARC-Seal i=1 has cv="pass", want cv=none`, ""},
		{"instance 2 missing", edit(three, func(f string) string {
			if isInstance(f, 2) {
				return ""
			}
			return f
		}), "fail False 3 0", "no ARC set of instance 2", ""},
		{"AAR 1 missing", edit(two, func(f string) string {
			if strings.HasPrefix(f, "ARC-Authentication-Results: i=1") {
				return ""
			}
			return f
		}), "fail False 2 0", "ARC set 1 has no ARC-Authentication-Results", ""},
		{"AMS duplicated", edit(one, func(f string) string {
			if strings.HasPrefix(f, "ARC-Message-Signature") {
				return f + f
			}
			return f
		}), "fail False 1 0", "two ARC-Message-Signature fields of instance 1", ""},
		{"key does not exist", seal(t, base, nokey, "none"), "fail False 1 0", "no key at s._domainkey.nokey.example (nxdomain)", ""},
		{"key lookup fails", seal(t, base, broken, "none"), "fail True 1 0", "temporary failure: key lookup for s._domainkey.broken.example", ""},
		{"key of hop 2 missing", seal(t, one, nokey, "pass"), "fail False 2 0", "ARC-Message-Signature i=2: no key", ""},
		{"AMS signs ARC-Seal", edit(one, func(f string) string { return strings.Replace(f, "h=from:", "h=arc-seal:from:", 1) }),
			"fail False 1 0", "h= signs ARC-Seal", ""},
		{"seal with h=", edit(one, func(f string) string { return strings.Replace(f, "cv=none;", "cv=none; h=from;", 1) }),
			"fail False 1 0", "ARC-Seal i=1: h= tag", ""},
		{"rsa-sha1", edit(one, func(f string) string {
			if strings.HasPrefix(f, "ARC-Message-Signature") {
				return strings.Replace(f, "a=rsa-sha256", "a=rsa-sha1", 1)
			}
			return f
		}), "fail False 1 0", `unsupported algorithm a="rsa-sha1"`, ""},
		{"instance 0", edit(one, func(f string) string { return strings.Replace(f, "i=1;", "i=0;", 1) }),
			"fail False 0 0", "invalid instance", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, _ := verify(t, tab, tt.msg)
			got := fmt.Sprintf("%s %s %s %s", str(t, v, "result"), attr(t, v, "temporary"), attr(t, v, "instances"), attr(t, v, "oldest_pass"))
			if got != tt.want {
				t.Errorf("got %s, want %s (reason %q)", got, tt.want, str(t, v, "reason"))
			}
			if reason := str(t, v, "reason"); !strings.Contains(reason, tt.reason) || (tt.reason == "") != (reason == "") {
				t.Errorf("reason %q, want %q", reason, tt.reason)
			}
			if last := str(t, v, "last_results"); last != tt.lastResults {
				t.Errorf("last_results %q, want %q", last, tt.lastResults)
			}
		})
	}
}

// TestSets: the sets as a script sees them, by instance.
func TestSets(t *testing.T) {
	t.Parallel()
	tab := zone(t)
	one := seal(t, []byte(original), list, "none")
	msg := seal(t, bytes.Replace(one, []byte("world"), []byte("there"), 1), fwd, "pass")
	v, _ := verify(t, tab, msg)
	sets := attr(t, v, "sets").(*starlark.List)
	if sets.Len() != 2 {
		t.Fatalf("sets = %s", sets)
	}
	want := [][]string{
		{"1", "lists.example.org", "s1", "none", "lists.example.org", "s1", "fail", list.results},
		{"2", "forwarder.example.net", "ed", "pass", "forwarder.example.net", "ed", "pass", fwd.results},
	}
	for i, w := range want {
		s := sets.Index(i)
		var got []string
		for _, name := range []string{"instance", "domain", "selector", "seal_result", "ams_domain", "ams_selector", "ams_result", "authentication_results"} {
			a := attr(t, s, name)
			if str, ok := starlark.AsString(a); ok {
				got = append(got, str)
			} else {
				got = append(got, a.String())
			}
		}
		if strings.Join(got, "|") != strings.Join(w, "|") {
			t.Errorf("set %d = %q, want %q", i+1, got, w)
		}
	}
}

// TestTooManySets: past 50 sets the chain fails on its structure, with
// no key fetched and no signature checked.
func TestTooManySets(t *testing.T) {
	t.Parallel()
	tab := zone(t)
	var b strings.Builder
	for i := 51; i >= 1; i-- {
		cv := "pass"
		if i == 1 {
			cv = "none"
		}
		fmt.Fprintf(&b, "ARC-Seal: i=%d; a=rsa-sha256; cv=%s; d=lists.example.org; s=s1; b=AAAA\r\n", i, cv)
		fmt.Fprintf(&b, "ARC-Message-Signature: i=%d; a=rsa-sha256; d=lists.example.org; s=s1; h=from; bh=AAAA; b=AAAA\r\n", i)
		fmt.Fprintf(&b, "ARC-Authentication-Results: i=%d; lists.example.org; none\r\n", i)
	}
	for _, tt := range []struct {
		name string
		msg  string
		want string
	}{
		{"51 sets", b.String() + original, "more than 50 ARC sets"},
		{"instance 1000", "ARC-Seal: i=1000; cv=pass\r\n" + original, "i=1000: more than 50 ARC sets"},
		{"thousands of fields", strings.Repeat("ARC-Seal: i=1; cv=none\r\n", 5000) + original, "more than 50 ARC sets"},
	} {
		v, s := verify(t, tab, []byte(tt.msg))
		if r := str(t, v, "result"); r != "fail" {
			t.Errorf("%s: result %s", tt.name, r)
		}
		if reason := str(t, v, "reason"); !strings.Contains(reason, tt.want) {
			t.Errorf("%s: reason %q, want %q", tt.name, reason, tt.want)
		}
		if s.Used() != 0 {
			t.Errorf("%s: %d DNS queries, want none", tt.name, s.Used())
		}
	}
}

// TestRecorded: the result goes to the message's Authentication-Results,
// in a form go-msgauth reads back as an ARC result.
func TestRecorded(t *testing.T) {
	t.Parallel()
	tab := zone(t)
	one := seal(t, []byte(original), list, "none")
	changed := seal(t, bytes.Replace(one, []byte("world"), []byte("there"), 1), fwd, "pass")
	broken := bytes.Replace(changed, []byte("Subject: hello"), []byte("Subject: bye"), 1)
	for _, tt := range []struct {
		msg  []byte
		want string
	}{
		{[]byte(original), "arc=none"},
		{one, "arc=pass"},
		{changed, "arc=pass header.oldest-pass=2"},
		{broken, `arc=fail reason="ARC-Message-Signature i=2: signature does not verify`},
	} {
		rec := &authres.Recorder{}
		env := &dns.Env{Resolver: &resolver.Resolver{Table: tab}}
		th := env.Thread(authres.With(t.Context(), rec), "test")
		_, err := starlark.EvalOptions(&syntax.FileOptions{}, th, "test", "arc.verify(msg)",
			starlark.StringDict{"arc": arc.Module(), "msg": newMsg(t, tt.msg)})
		if err != nil {
			t.Fatal(err)
		}
		results := rec.Results()
		field := msgauth.Format("mx.example", results)
		if len(results) != 1 || !strings.Contains(field, tt.want) {
			t.Errorf("recorded %q, want %q", field, tt.want)
			continue
		}
		if _, parsed, err := msgauth.Parse(field); err != nil {
			t.Errorf("%q does not parse: %v", field, err)
		} else if r, ok := parsed[0].(*msgauth.ARCResult); !ok || string(r.Value) != strings.Fields(strings.TrimPrefix(tt.want, "arc="))[0] {
			t.Errorf("%q parses as %#v", field, parsed[0])
		}
	}
}

func TestVerifyErrors(t *testing.T) {
	t.Parallel()
	env := &dns.Env{Resolver: &resolver.Resolver{Table: zone(t)}}
	predeclared := func(m starlark.Value) starlark.StringDict {
		return starlark.StringDict{"arc": arc.Module(), "msg": m}
	}
	notAtHand := newMsg(t, []byte(original))
	notAtHand.noRaw = true
	for _, tt := range []struct {
		name string
		th   *starlark.Thread
		msg  starlark.Value
		want string
	}{
		{"not a message", env.Thread(t.Context(), "test"), starlark.String("x"), "want the message"},
		{"not at hand", env.Thread(t.Context(), "test"), notAtHand, "not at hand"},
		{"outside a hook", &starlark.Thread{}, newMsg(t, []byte(original)), "only available in hooks"},
	} {
		_, err := starlark.EvalOptions(&syntax.FileOptions{}, tt.th, "test", "arc.verify(msg)", predeclared(tt.msg))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestSealErrors(t *testing.T) {
	t.Parallel()
	one := seal(t, []byte(original), list, "none")
	hdr := func(msg []byte) []byte { return msg[:bytes.Index(msg, []byte("\r\n\r\n"))+2] }
	gap := edit(seal(t, seal(t, one, fwd, "pass"), fwd, "pass"), func(f string) string {
		if isInstance(f, 2) {
			return ""
		}
		return f
	})
	for _, tt := range []struct {
		name    string
		header  []byte
		results string
		cv      string
		domain  string
		want    string
	}{
		{"cv of the first set", []byte(original), list.results, "pass", list.domain, "want none"},
		{"cv of a later set", one, fwd.results, "none", fwd.domain, "want pass or fail"},
		{"broken chain", gap, fwd.results, "fail", fwd.domain, "no ARC set of instance 2"},
		{"bare line feed", []byte(original), "mx.example; spf=pass\nX-Injected: yes", "none", list.domain, "line break"},
		{"empty results", []byte(original), " ", "none", list.domain, "empty"},
		{"bad domain", []byte(original), list.results, "none", "lists example.org", "invalid domain"},
	} {
		_, err := arc.Seal(hdr(tt.header), strings.NewReader(""), tt.results, tt.cv, tt.domain, "s1", edKey, time.Now())
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.want)
		}
	}
}
