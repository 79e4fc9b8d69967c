package rules

import (
	"bufio"
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/emersion/go-message/textproto"

	"github.com/larkpost/larkpost/engine/metrics"
	"github.com/larkpost/larkpost/stdlib/addr"
)

func mustLoad(t testing.TB, src string) *Policy {
	t.Helper()
	p, err := Load("p.star", []byte(src))
	if err != nil {
		t.Fatalf("load:\n%v", err)
	}
	return p
}

func TestDefaultRcptPolicy(t *testing.T) {
	p := mustLoad(t, `config(hostname = "mx.example.com", networks = ["10.0.0.0/8"], relay_domains = ["relay.example"], recipient_delimiter = "+")`)
	outside := &Conn{IP: netip.MustParseAddr("192.0.2.1")}
	inside := &Conn{IP: netip.MustParseAddr("10.1.1.1"), InNetworks: true}
	authed := &Conn{IP: netip.MustParseAddr("192.0.2.1"), User: "ann"}
	tests := []struct {
		conn *Conn
		rcpt string
		want string
	}{
		{outside, "bob@mx.example.com", "accept"},
		{outside, "bob+tag@localhost", "accept"},
		{outside, "x@relay.example", "accept"},
		{outside, "x@other.example", "reject 554 5.7.1 <x@other.example>: Relay access denied"},
		{inside, "x@other.example", "accept"},
		{authed, "x@other.example", "accept"},
		{outside, "a..b@mx.example.com", `reject 550 5.1.1 <"a..b"@mx.example.com>: Recipient address rejected: User unknown in local recipient table`},
		{outside, ".hidden@mx.example.com", `reject 550 5.1.1 <".hidden"@mx.example.com>: Recipient address rejected: User unknown in local recipient table`},
	}
	for _, tt := range tests {
		a, err := addr.Parse(tt.rcpt)
		if err != nil {
			t.Fatalf("parse %s: %v", tt.rcpt, err)
		}
		d := p.Rcpt(context.Background(), &Tx{Conn: tt.conn}, a)
		if d.String() != tt.want || d.Source != DefaultSource {
			t.Errorf("rcpt %s from %v: %s (%s), want %s from the default policy", tt.rcpt, tt.conn.IP, d, d.Source, tt.want)
		}
	}
}

func TestDecisionConstructors(t *testing.T) {
	tests := []struct {
		expr string
		want string // decision, or "error: ..." substring
	}{
		{`accept()`, "accept"},
		{`reject()`, "reject 550 5.7.1 Access denied"},
		{`reject("go away", code = 554, status = "5.7.0")`, "reject 554 5.7.0 go away"},
		{`defer()`, "defer 451 4.7.1 Try again later"},
		{`defer("busy", 421, "4.3.2")`, "defer 421 4.3.2 busy"},
		{`discard()`, "discard"},
		{`hold("look at this")`, "hold look at this"},
		{`reject("x", code = 450)`, "error: code 450 is not a 5xx"},
		{`defer("x", code = 550)`, "error: code 550 is not a 4xx"},
		{`reject("x", status = "4.7.1")`, "error: status \"4.7.1\" is not a 5.x.x"},
		{`reject("x", status = "5.7")`, "error: status \"5.7\" is not a 5.x.x"},
		{`reject("a\rb")`, "error: reply text contains a control character"},
		{`reject(code = 599, status = "5.999.999")`, "reject 599 5.999.999 Access denied"},
	}
	for _, tt := range tests {
		p := mustLoad(t, "def on_mail(tx, sender):\n    return "+tt.expr+"\n")
		d := p.Mail(context.Background(), &Tx{Conn: &Conn{}}, addr.Address{})
		if strings.HasPrefix(tt.want, "error: ") {
			if !d.Failed() || !strings.Contains(d.Err.Error(), strings.TrimPrefix(tt.want, "error: ")) {
				t.Errorf("%s: got %v (err %v), want failure %q", tt.expr, d, d.Err, tt.want)
			}
			continue
		}
		if d.Failed() || d.String() != tt.want || d.Source != "p.star:2" || d.Hook != "on_mail" {
			t.Errorf("%s: got %q from %s/%s (err %v), want %q from p.star:2", tt.expr, d, d.Hook, d.Source, d.Err, tt.want)
		}
	}
}

func TestMessageValue(t *testing.T) {
	p := mustLoad(t, `
def on_data(tx, msg):
    return reject("|".join([
        msg.subject,
        msg.header("x-spam-flag", "none"),
        msg.header("X-Missing", "dflt"),
        ",".join(msg.headers("Received")),
        ",".join(msg.header_names),
        str(msg.size),
    ]))
`)
	h := parseHeaderForTest(t, "Received: a\r\nReceived: b\r\n c\r\nX-Spam-Flag: YES\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\n")
	d := p.Data(context.Background(), &Tx{Conn: &Conn{}}, &Message{Header: h, Size: 1234})
	want := "café|YES|dflt|a,b c|Received,X-Spam-Flag,Subject|1234"
	if d.Text != want {
		t.Errorf("got %q (%v), want %q", d.Text, d.Err, want)
	}
}

// benchPolicy is a realistic on_rcpt: a few table lookups, string tests
// and a helper, the shape of a Postfix recipient restriction list.
const benchPolicy = `
config(hostname = "mx.example.com", recipient_delimiter = "+", networks = ["10.0.0.0/8"])

BLOCKED_SENDERS = ["spammer.example", "bulk.example"]
RELOCATED = {"old@example.com": "new@example.org", "gone@example.com": "elsewhere@example.net"}
ROLE = ["postmaster", "abuse", "hostmaster"]

def is_role(user):
    return user in ROLE

def on_rcpt(tx, rcpt):
    if tx.sender != None and tx.sender.domain in BLOCKED_SENDERS:
        return reject("sender blocked", code = 554)
    if is_role(rcpt.user):
        return accept()
    moved = RELOCATED.get(rcpt.address)
    if moved:
        return reject("user has moved to " + moved, code = 550, status = "5.1.6")
    if rcpt.extension == "spam" and not tx.conn.in_networks:
        return defer("try later")
    if len(tx.rcpts) > 50:
        return defer("too many recipients", code = 452, status = "4.5.3")
    return None
`

// BenchmarkHookCall measures one on_rcpt call of benchPolicy the way the
// server makes it: fresh Thread, step limit, deadline timer, struct args,
// then the default policy.
func BenchmarkHookCall(b *testing.B) {
	p := mustLoad(b, benchPolicy)
	conn := &Conn{IP: netip.MustParseAddr("192.0.2.1"), RDNS: "client.example", Helo: "client.example", Listener: "smtp"}
	tx := &Tx{Conn: conn, Sender: addr.Address{Local: "ann", Domain: "example.org"}, HasSender: true}
	rcpt := addr.Address{Local: "bob+news", Domain: "mx.example.com"}
	ctx := context.Background()
	if d := p.Rcpt(ctx, tx, rcpt); d.Kind != Accept || d.Failed() {
		b.Fatalf("unexpected decision %v (%v)", d, d.Err)
	}
	b.Run("plain", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			p.Rcpt(ctx, tx, rcpt)
		}
	})
	// With the server's observer: the cost metrics add to each call.
	b.Run("metrics", func(b *testing.B) {
		p.ObserveHooks(metrics.New(nil).Hook)
		defer p.ObserveHooks(nil)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			p.Rcpt(ctx, tx, rcpt)
		}
	})
}

func parseHeaderForTest(t *testing.T, s string) textproto.Header {
	t.Helper()
	h, err := textproto.ReadHeader(bufio.NewReader(strings.NewReader(s)))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestDecisionsNameTheReturningLine: a hook's plain return values (a route
// string, a folder, a rewritten address) name the line that returned
// them, not the def; a helper's returns do not count.
func TestDecisionsNameTheReturningLine(t *testing.T) {
	p := mustLoad(t, `
def pick(d):
    return "smtp:[relay.example]:25"

def route(rcpt, msg):
    if rcpt.domain == "a.example":
        return "lmtp:unix:/run/lmtp"
    if rcpt.domain == "b.example":
        return pick(rcpt.domain)
    return None
`)
	for _, tt := range []struct{ rcpt, kind, source string }{
		{"x@a.example", "lmtp", "p.star:7"},
		{"x@b.example", "smtp", "p.star:9"},
	} {
		tr, err := p.Route(context.Background(), tt.rcpt, nil)
		if err != nil || tr.Kind != tt.kind || !strings.HasSuffix(tr.Source, tt.source) {
			t.Errorf("Route(%s) = %+v, %v; want %s from %s", tt.rcpt, tr, err, tt.kind, tt.source)
		}
	}
}
