package rules

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/larkpost/larkpost/engine/dkimsign"
	"github.com/larkpost/larkpost/engine/resolver"
	"github.com/larkpost/larkpost/stdlib/addr"
	"github.com/larkpost/larkpost/stdlib/authres"
)

const authChainPolicy = `
config(hostname = "mx.example.com", destinations = ["example.com"], resolvers = [])

def on_data(tx, msg):
    s = spf.check(tx.conn.ip, tx.conn.helo, tx.sender)
    d = dmarc.check(msg, spf = s, dkim = dkim.verify(msg))
    if d.result != "pass":
        return reject("dmarc " + d.result + ": " + d.reason)
    return None
`

// authChain is a 20 KB message signed by partner.example (RSA-2048), the
// policy that checks it, and a warm DNS cache holding partner.example's
// SPF, DKIM and DMARC records.
func authChain(tb testing.TB) (*Policy, *Tx, *Message, *authres.Recorder) {
	tb.Helper()
	key, txt, err := dkimsign.Keygen("rsa", 2048)
	if err != nil {
		tb.Fatal(err)
	}
	kf := filepath.Join(tb.TempDir(), "k.key")
	if err := os.WriteFile(kf, key, 0o600); err != nil {
		tb.Fatal(err)
	}
	signer, err := dkimsign.New([]dkimsign.KeyConfig{{Domain: "partner.example", Selector: "s1", File: kf}}, dkimsign.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	header := "From: Ann <ann@partner.example>\r\nTo: bob@example.com\r\nSubject: report\r\nMessage-ID: <r@partner.example>\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
	body := strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n", 270) // 20 KB
	sig, err := signer.Sign("partner.example", []byte(header), strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	table := resolver.NewTable()
	for _, rr := range [][3]string{
		{"partner.example", "TXT", "v=spf1 ip4:198.51.100.0/24 include:_spf.partner.example -all"},
		{"_spf.partner.example", "TXT", "v=spf1 ip4:192.0.2.0/24 -all"},
		{"s1._domainkey.partner.example", "TXT", txt},
		{"_dmarc.partner.example", "TXT", "v=DMARC1; p=reject"},
	} {
		if err := table.Add(rr[0], rr[1], rr[2]); err != nil {
			tb.Fatal(err)
		}
	}
	p := mustLoad(tb, authChainPolicy).WithResolver(&resolver.Resolver{Table: table, Cache: resolver.NewCache()})
	conn := &Conn{IP: netip.MustParseAddr("192.0.2.10"), Helo: "mail.partner.example", RDNS: "mail.partner.example", Listener: "smtp"}
	tx := &Tx{Conn: conn, Sender: addr.Address{Local: "ann", Domain: "partner.example"}, HasSender: true}
	return p, tx, ParseMessage([]byte(sig + header + "\r\n" + body)), &authres.Recorder{}
}

// TestAuthChain: the benchmark's chain passes, and records spf, dkim and
// dmarc for the Authentication-Results header.
func TestAuthChain(t *testing.T) {
	p, tx, msg, rec := authChain(t)
	d := p.Data(authres.With(context.Background(), rec), tx, msg)
	if d.Kind != Accept || d.Failed() {
		t.Fatalf("decision %v (%v)", d, d.Err)
	}
	field := authres.Field("mx.example.com", rec.Results())
	for _, want := range []string{"spf=pass", "dkim=pass", "header.d=partner.example", "dmarc=pass"} {
		if !strings.Contains(field, want) {
			t.Errorf("Authentication-Results lacks %q:\n%s", want, field)
		}
	}
}

// BenchmarkAuthChain is the whole sender check of one message: SPF
// (through an include), DKIM verification of a 20 KB message signed with
// RSA-2048, and DMARC, in one on_data hook call, DNS answered from the
// cache.
func BenchmarkAuthChain(b *testing.B) {
	p, tx, msg, rec := authChain(b)
	b.ReportAllocs()
	b.SetBytes(msg.Size)
	for b.Loop() {
		*rec = authres.Recorder{}
		if d := p.Data(authres.With(context.Background(), rec), tx, msg); d.Kind != Accept {
			b.Fatalf("decision %v (%v)", d, d.Err)
		}
	}
}
