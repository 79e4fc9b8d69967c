package engine

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/enginetest"
	"github.com/larkpost/larkpost/engine/maillog"
	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
)

// harness is a real engine on 127.0.0.1 with its own data directory.
type harness struct {
	t    testing.TB
	e    *Engine
	addr string
	data string
	log  *enginetest.LogBuffer
}

// start runs an engine whose config is a base config(...) line followed
// by script. The host is mx.test, so destinations are mx.test,
// localhost.test and localhost.
func start(t testing.TB, script string) *harness {
	t.Helper()
	return startWith(t, script, Options{})
}

// startWith is start with engine options.
func startWith(t testing.TB, script string, o Options) *harness {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := fmt.Sprintf("config(listen = {\"smtp\": \"127.0.0.1:0\"}, data_dir = %q, hostname = \"mx.test\", resolvers = [], recipient_delimiter = \"+\")\n", data) + script
	file := filepath.Join(dir, "larkpost.star")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	lb := &enginetest.LogBuffer{}
	log := slog.New(maillog.New(lb, slog.LevelInfo))
	p, err := rules.LoadFileWith(file, rules.Options{Logger: log})
	if err != nil {
		t.Fatalf("load config:\n%v", err)
	}
	e, err := NewWith(p, log, o)
	if err != nil {
		t.Fatal(err)
	}
	e.Start()
	h := &harness{t: t, e: e, addr: e.Addr("smtp").String(), data: data, log: lb}
	t.Cleanup(func() {
		if !t.Failed() {
			// Nothing half-written is left behind in any Maildir.
			h.settle()
			tmps, _ := filepath.Glob(filepath.Join(data, "mail", "*", "tmp", "*"))
			if len(tmps) != 0 {
				t.Errorf("files left in Maildir tmp/: %v", tmps)
			}
		}
		shutdown(t, e)
		if t.Failed() {
			t.Logf("server log:\n%s", lb.String())
		}
	})
	return h
}

// mailbox returns the messages in a user's Maildir new/, oldest first.
func (h *harness) mailbox(user string) [][]byte {
	return readMaildir(h.t, filepath.Join(h.data, "mail", user))
}

// waitMailbox waits until user has n messages (delivery runs after the
// 250, from the queue) and returns them.
func (h *harness) waitMailbox(user string, n int) [][]byte {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m := h.mailbox(user)
		if len(m) >= n || time.Now().After(deadline) {
			return m
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// shutdown stops e the way serve does, with 5 s for sessions and
// deliveries. A shutdown that has not returned 30 s later fails the test
// with every goroutine's stack, instead of leaving the whole test binary
// to time out with no word of which engine hung.
func shutdown(t testing.TB, e *Engine) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.Shutdown(ctx)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		var stacks strings.Builder
		pprof.Lookup("goroutine").WriteTo(&stacks, 2)
		t.Errorf("engine shutdown still waiting after 30 s; goroutines:\n%s", stacks.String())
	}
}

// settle waits until no queued message awaits its first delivery, so a
// check that something was not delivered is meaningful.
func (h *harness) settle() {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		active := 0
		h.e.Queue().Walk(func(r *queue.Record) bool {
			if r.State == queue.Active {
				active++
			}
			return true
		})
		if active == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.t.Errorf("queue did not settle")
}

// held returns the queued messages in the hold state.
func (h *harness) held() []*queue.Record {
	h.settle()
	var out []*queue.Record
	h.e.Queue().Walk(func(r *queue.Record) bool {
		if r.State == queue.Hold {
			out = append(out, r)
		}
		return true
	})
	return out
}

func readMaildir(t testing.TB, dir string) [][]byte {
	ents, err := os.ReadDir(filepath.Join(dir, "new"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	var out [][]byte
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, "new", n))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// send delivers one message with go-smtp's client and returns the final reply.
func send(t testing.TB, addr, from string, to []string, body string) (string, error) {
	t.Helper()
	return enginetest.Send(addr, from, to, body)
}

// TestMissingHeaders: cleanup adds Message-ID and Date to messages
// lacking them from sendmail and from clients in networks (Postfix's
// local_header_rewrite_clients), to everyone's with
// always_add_missing_headers, and never replaces a client's own.
func TestMissingHeaders(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, config, body string
		wantID, wantDate   string // regexps; "" for absent
	}{
		{"client in networks", "", "Subject: a\r\n\r\nx\r\n", `<\d{14}\.ID@mx\.test>`, `\w{3}, \d\d \w{3} \d{4} `},
		{"its own headers stay", "", "Subject: a\r\nMessage-ID: <own@x>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nx\r\n", `<own@x>`, `Mon, 1 Jan 2024`},
		{"outside networks", `config(networks = ["192.0.2.0/24"], destinations = ["mx.test"])`, "Subject: a\r\n\r\nx\r\n", "", ""},
		{"always_add_missing_headers", `config(networks = ["192.0.2.0/24"], always_add_missing_headers = True)`, "Subject: a\r\n\r\nx\r\n", `<\d{14}\.ID@mx\.test>`, `\w{3}, \d\d \w{3} \d{4} `},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := start(t, tt.config)
			status, err := send(t, h.addr, "ann@example.org", []string{"alice@mx.test"}, tt.body)
			if err != nil {
				t.Fatal(err)
			}
			id := status[strings.LastIndex(status, " ")+1:]
			msgs := h.waitMailbox("alice", 1)
			if len(msgs) != 1 {
				t.Fatalf("alice has %d messages", len(msgs))
			}
			msg, err := mail.ReadMessage(bytes.NewReader(msgs[0]))
			if err != nil {
				t.Fatal(err)
			}
			for field, want := range map[string]string{"Message-Id": strings.ReplaceAll(tt.wantID, "ID", id), "Date": tt.wantDate} {
				got := msg.Header[field]
				switch {
				case want == "" && len(got) != 0:
					t.Errorf("%s added: %q", field, got)
				case want != "" && (len(got) != 1 || !regexp.MustCompile(want).MatchString(got[0])):
					t.Errorf("%s = %q, want one matching %s", field, got, want)
				}
			}
		})
	}
}

func TestDeliverToMaildir(t *testing.T) {
	t.Parallel()
	h := start(t, "")
	long := strings.Repeat("x", 10000) // longer than RFC 5321's 1000 and go-smtp's default 2000
	body := "From: Ann <ann@example.org>\r\nTo: alice@mx.test\r\nSubject: hello\r\nMessage-ID: <m1@example.org>\r\n\r\n" +
		"first line\r\n.leading dot survives dot-stuffing\r\n" + long + "\r\n\r\nlast line\r\n"
	status, err := send(t, h.addr, "ann@example.org", []string{"alice+news@mx.test"}, body)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`^2\.0\.0 Ok: queued as ([0-9A-Z]{13})$`).FindStringSubmatch(status)
	if m == nil {
		t.Fatalf("DATA reply %q, want 2.0.0 Ok: queued as ID", status)
	}
	id := m[1]
	msgs := h.waitMailbox("alice", 1)
	if len(msgs) != 1 {
		t.Fatalf("alice has %d messages, want 1", len(msgs))
	}
	got := string(msgs[0])
	prefix := regexp.MustCompile(`^Return-Path: <ann@example.org>\n` +
		`Delivered-To: alice\+news@mx.test\n` +
		`X-Original-To: alice\+news@mx.test\n` +
		`Received: from client.example \(localhost \[127\.0\.0\.1\]\)\n` +
		`\tby mx.test \(larkpost\) with ESMTP id ` + id + `\n` +
		`\tfor <alice\+news@mx.test>; \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4} \(\w+\)\n` +
		// A client in networks gets the Date its message lacks (it has a Message-ID).
		`Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4} \(\w+\)\n`)
	loc := prefix.FindStringIndex(got)
	if loc == nil {
		t.Fatalf("delivered message does not start with the expected trace headers:\n%s", got[:min(len(got), 400)])
	}
	want := strings.ReplaceAll(body, "\r\n", "\n")
	if got[loc[1]:] != want {
		t.Errorf("body differs:\ngot  %q\nwant %q", got[loc[1]:][:200], want[:200])
	}
	for _, re := range []string{
		`connect from localhost\[127\.0\.0\.1\]`,
		id + `: client=localhost\[127\.0\.0\.1\]`,
		id + `: from=<ann@example.org>, size=\d+, nrcpt=1`,
		id + `: to=<alice\+news@mx.test>, relay=local, delay=[\d.]+, delays=[\d.]+/[\d.]+/0/[\d.]+, dsn=2\.0\.0, status=sent \(delivered to maildir\)`,
		id + `: removed`,
		id + `: message-id=<m1@example.org>`,
		`disconnect from localhost\[127\.0\.0\.1\] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5`,
	} {
		if !h.log.WaitFor(re, 2*time.Second) {
			t.Errorf("log lacks %s", re)
		}
	}
}

func TestBannerAndReplies(t *testing.T) {
	t.Parallel()
	h := start(t, "")
	enginetest.Dialog(t, h.addr, `
		<- 220 mx.test ESMTP larkpost
		-> EHLO client.example
		<- 250-Hello client.example
		<- 250-PIPELINING
		<- 250-8BITMIME
		<- 250-ENHANCEDSTATUSCODES
		<- 250-CHUNKING
		<- 250-SMTPUTF8
		<- 250-DSN
		<- 250-SIZE 10240000
		<- 250 LIMITS RCPTMAX=1000
		-> MAIL FROM:<a@example.org>
		<- 250 2.1.0 Ok
		-> MAIL FROM:<b@example.org>
		<- 503 5.5.1 Error: nested MAIL command
		-> RCPT TO:<bob@localhost>
		<- 250 2.1.5 Ok
		-> NOOP
		<- 250 2.0.0 Ok
		-> RSET
		<- 250 2.0.0 Ok
		-> QUIT
		<- 221 2.0.0 Bye
	`)
}

func TestPostmasterWithoutDomain(t *testing.T) {
	t.Parallel()
	h := start(t, "")
	enginetest.Dialog(t, h.addr, `
		<~ ^220
		-> EHLO client.example
		<+ ^250 LIMITS
		-> MAIL FROM:<a@example.org>
		<- 250 2.1.0 Ok
		-> RCPT TO:<Postmaster>
		<- 250 2.1.5 Ok
		-> DATA
		<- 354 End data with <CR><LF>.<CR><LF>
		-> Subject: to the postmaster
		->
		-> RCPT TO:<postmaster>
		-> .
		<~ ^250 2.0.0 Ok: queued as
		-> QUIT
		<- 221 2.0.0 Bye
	`)
	msgs := h.waitMailbox("postmaster", 1)
	if len(msgs) != 1 {
		t.Fatalf("postmaster has %d messages, want 1", len(msgs))
	}
	// A body line that looks like the command must not be rewritten.
	if !bytes.Contains(msgs[0], []byte("\nRCPT TO:<postmaster>\n")) || !bytes.Contains(msgs[0], []byte("Delivered-To: postmaster@mx.test\n")) {
		t.Errorf("unexpected message:\n%s", msgs[0])
	}
}

func TestRelayControl(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, script, rcpt, want string
		held                     int
	}{
		{"outside networks", `config(networks = ["192.0.2.0/24"])`, "x@elsewhere.example",
			"554 5.7.1 <x@elsewhere.example>: Relay access denied", 0},
		{"relay domain from anyone", `config(networks = ["192.0.2.0/24"], relay_domains = [".example.net"])`, "x@sub.example.net",
			"250 2.1.5 Ok", 1},
		{"trusted network relays", ``, "x@elsewhere.example", "250 2.1.5 Ok", 1},
		{"soft bounce", `config(networks = ["192.0.2.0/24"], soft_bounce = True)`, "x@elsewhere.example",
			"454 4.7.1 <x@elsewhere.example>: Relay access denied", 0},
		{"hook accept overrides", "config(networks = [\"192.0.2.0/24\"])\ndef on_rcpt(tx, rcpt):\n    if rcpt.domain == \"partner.example\":\n        return accept()\n",
			"x@partner.example", "250 2.1.5 Ok", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := start(t, tt.script)
			ok := strings.HasPrefix(tt.want, "250")
			script := `
				<~ ^220
				-> EHLO client.example
				<+ ^250 LIMITS
				-> MAIL FROM:<a@example.org>
				<- 250 2.1.0 Ok
				-> RCPT TO:<` + tt.rcpt + `>
				<- ` + tt.want + "\n"
			if ok {
				script += "-> DATA\n<~ ^354\n-> Subject: relay\n->\n-> body\n-> .\n<~ ^250 2.0.0 Ok: queued\n"
			}
			script += "-> QUIT\n<- 221 2.0.0 Bye\n"
			enginetest.Dialog(t, h.addr, script)
			// Relayed mail waits in the queue for the smtp agent (there is
			// no DNS in this test, so it is deferred), nothing is local.
			h.settle()
			queued := 0
			h.e.Queue().Walk(func(*queue.Record) bool { queued++; return true })
			if queued != tt.held {
				t.Errorf("%d messages queued for relay, want %d", queued, tt.held)
			}
			if !ok && !h.log.WaitFor(`NOQUEUE: reject: RCPT from localhost\[127\.0\.0\.1\]: `+regexp.QuoteMeta(tt.want[:3])+` .*; from=<a@example.org> to=<`+regexp.QuoteMeta(tt.rcpt)+`> proto=ESMTP helo=<client.example>`, time.Second) {
				t.Errorf("no Postfix-style reject log line")
			}
		})
	}
}

func TestHookDecisions(t *testing.T) {
	t.Parallel()
	policy := `
def on_helo(conn, name):
    if name == "bad.example":
        return reject("bad helo", code = 550, status = "5.7.1")

def on_mail(tx, sender):
    if sender.domain == "spam.example":
        return reject("no spam, thanks", code = 553, status = "5.7.1")
    if sender.local == "slow":
        return defer("greylisted, come back later", code = 450, status = "4.7.1")

def on_rcpt(tx, rcpt):
    if rcpt.user == "full":
        return defer("mailbox full", code = 452, status = "4.2.2")
    if rcpt.user == "gone":
        return reject("user moved away", code = 550, status = "5.1.6")
    if rcpt.user == "blackhole":
        return discard("sink")
    if rcpt.user == "quarantine":
        return hold("check this")

def on_data(tx, msg):
    if "viagra" in msg.subject.lower():
        return reject("content rejected", code = 554, status = "5.7.1")
    if msg.header("X-Retry") != None:
        return defer("scanner busy")
`
	h := start(t, policy)
	tests := []struct {
		name, script string
	}{
		{"helo reject", `
			-> EHLO bad.example
			<- 550 5.7.1 bad helo
			-> EHLO good.example
			<~ ^250-Hello good.example
			<+ ^250 LIMITS`},
		{"mail reject", `
			-> EHLO c.example
			<+ ^250 LIMITS
			-> MAIL FROM:<x@spam.example>
			<- 553 5.7.1 no spam, thanks
			-> MAIL FROM:<slow@example.org>
			<- 450 4.7.1 greylisted, come back later
			-> MAIL FROM:<ok@example.org>
			<- 250 2.1.0 Ok`},
		{"rcpt reject and defer", `
			-> EHLO c.example
			<+ ^250 LIMITS
			-> MAIL FROM:<a@example.org>
			<- 250 2.1.0 Ok
			-> RCPT TO:<full@localhost>
			<- 452 4.2.2 mailbox full
			-> RCPT TO:<gone@localhost>
			<- 550 5.1.6 user moved away
			-> RCPT TO:<bob@localhost>
			<- 250 2.1.5 Ok`},
		{"data reject", `
			-> EHLO c.example
			<+ ^250 LIMITS
			-> MAIL FROM:<a@example.org>
			<- 250 2.1.0 Ok
			-> RCPT TO:<carol@localhost>
			<- 250 2.1.5 Ok
			-> DATA
			<~ ^354
			-> Subject: Cheap VIAGRA
			->
			-> buy now
			-> .
			<- 554 5.7.1 content rejected
			-> MAIL FROM:<a@example.org>
			<- 250 2.1.0 Ok
			-> RCPT TO:<carol@localhost>
			<- 250 2.1.5 Ok
			-> DATA
			<~ ^354
			-> X-Retry: yes
			->
			-> body
			-> .
			<- 451 4.7.1 scanner busy`},
		{"discard", `
			-> EHLO c.example
			<+ ^250 LIMITS
			-> MAIL FROM:<a@example.org>
			<- 250 2.1.0 Ok
			-> RCPT TO:<blackhole@localhost>
			<- 250 2.1.5 Ok
			-> RCPT TO:<dave@localhost>
			<- 250 2.1.5 Ok
			-> DATA
			<~ ^354
			-> Subject: into the void
			->
			-> .
			<~ ^250 2.0.0 Ok: queued as`},
		{"hold", `
			-> EHLO c.example
			<+ ^250 LIMITS
			-> MAIL FROM:<a@example.org>
			<- 250 2.1.0 Ok
			-> RCPT TO:<quarantine@localhost>
			<- 250 2.1.5 Ok
			-> DATA
			<~ ^354
			-> Subject: held
			->
			-> .
			<~ ^250 2.0.0 Ok: queued as`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enginetest.Dialog(t, h.addr, "<~ ^220\n"+tt.script+"\n-> QUIT\n<- 221 2.0.0 Bye")
		})
	}
	h.settle()
	if n := len(h.mailbox("carol")); n != 0 {
		t.Errorf("carol got %d messages, want 0 (rejected and deferred at DATA)", n)
	}
	if n := len(h.mailbox("dave")); n != 0 {
		t.Errorf("dave got %d messages, want 0 (the message was discarded)", n)
	}
	held := h.held()
	if len(held) != 1 || held[0].HoldReason != "held by policy: check this" {
		t.Errorf("want one held message with its reason, got %d", len(held))
	}
	if n := len(h.mailbox("quarantine")); n != 0 {
		t.Errorf("held message was delivered")
	}
	if !h.log.WaitFor(`: discard: END-OF-MESSAGE from localhost\[127\.0\.0\.1\]: on_rcpt at .*larkpost\.star:\d+`, time.Second) {
		t.Errorf("no discard log line naming the script line")
	}
}

func TestHookSeesConnAndAddresses(t *testing.T) {
	t.Parallel()
	h := start(t, `
config(recipient_delimiter = "+")
def on_rcpt(tx, rcpt):
    return reject(" ".join([str(x) for x in [conn_desc(tx.conn), tx.sender, tx.sender.domain, rcpt.user,
        rcpt.extension, rcpt.domain, len(tx.rcpts), tx.smtputf8, tx.id]]))

def conn_desc(c):
    return "%s %s %s %s %s %s %s" % (c.ip, c.rdns, c.helo, c.listener, c.in_networks, c.tls, c.user)
`)
	enginetest.Dialog(t, h.addr, `
		<~ ^220
		-> EHLO me.example
		<+ ^250 LIMITS
		-> MAIL FROM:<Ann@Example.ORG>
		<- 250 2.1.0 Ok
		-> RCPT TO:<bob+tag@mx.test>
		<- 550 5.7.1 127.0.0.1 localhost me.example smtp True None None Ann@example.org example.org bob tag mx.test 0 False None
	`)
}

func TestConnectHook(t *testing.T) {
	t.Parallel()
	tests := []struct{ policy, dialog string }{
		{"def on_connect(conn):\n    return reject(\"no service for \" + conn.ip)\n",
			"<- 554 5.7.1 no service for 127.0.0.1\n<* CLOSED"},
		{"def on_connect(conn):\n    return defer(\"busy\", code = 450, status = \"4.3.2\")\n",
			"<- 421 4.3.2 busy\n<* CLOSED"},
		{"def on_connect(conn):\n    if conn.ip != \"127.0.0.1\":\n        return reject()\n",
			"<- 220 mx.test ESMTP larkpost\n-> QUIT\n<- 221 2.0.0 Bye"},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			h := start(t, tt.policy)
			enginetest.Dialog(t, h.addr, tt.dialog)
		})
	}
}

func TestScriptFailuresAreTemporary(t *testing.T) {
	t.Parallel()
	h := start(t, `
config(hook_timeout = "200ms", hook_max_steps = 100000000)

def on_rcpt(tx, rcpt):
    if rcpt.user == "loop":
        n = 0
        while True:
            n += 1
    if rcpt.user == "crash":
        return {}["missing"]
    if rcpt.user == "wrongtype":
        return 42
`)
	for _, user := range []string{"loop", "crash", "wrongtype"} {
		start := time.Now()
		enginetest.Dialog(t, h.addr, `
			<~ ^220
			-> EHLO c.example
			<+ ^250 LIMITS
			-> MAIL FROM:<a@example.org>
			<- 250 2.1.0 Ok
			-> RCPT TO:<`+user+`@localhost>
			<- 451 4.3.5 Server configuration problem
			-> RCPT TO:<fine@localhost>
			<- 250 2.1.5 Ok
			-> QUIT
			<- 221 2.0.0 Bye`)
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%s: took %v", user, d)
		}
	}
	for _, re := range []string{
		`error: hook failed: on_rcpt at .*larkpost\.star:\d+: .*cancelled: hook deadline exceeded`,
		`error: hook failed: on_rcpt at .*larkpost\.star:11: key "missing" not in dict`,
		`error: hook failed: on_rcpt at .*larkpost\.star:13: on_rcpt returned int`,
	} {
		if !h.log.WaitFor(re, time.Second) {
			t.Errorf("log lacks %s", re)
		}
	}
	if _, err := send(t, h.addr, "a@example.org", []string{"fine@localhost"}, "Subject: x\r\n\r\nstill serving\r\n"); err != nil {
		t.Fatalf("server not serving after script failures: %v", err)
	}
}

func TestStepLimit(t *testing.T) {
	t.Parallel()
	h := start(t, "def on_mail(tx, sender):\n    for i in range(10000000):\n        pass\n")
	enginetest.Dialog(t, h.addr, `
		<~ ^220
		-> EHLO c.example
		<+ ^250 LIMITS
		-> MAIL FROM:<a@example.org>
		<- 451 4.3.5 Server configuration problem`)
	if !h.log.WaitFor(`hook failed: on_mail at .*larkpost\.star:3: .*too many steps`, time.Second) {
		t.Errorf("no step-limit log line")
	}
}

// smuggling sends a message whose data holds a fake end-of-data followed
// by a second transaction for victim@mx.test.
func TestSmuggling(t *testing.T) {
	t.Parallel()
	payloads := map[string]string{
		"LF.LF":   "body\n.\n",
		"CRLF.LF": "body\r\n.\n",
		"LF.CRLF": "body\n.\r\n",
		"CR.CR":   "body\r.\r",
		"CRLF.CR": "body\r\n.\r",
		"bare LF": "body\nmore\r\n",
		"bare CR": "body\rmore\r\n",
	}
	inject := "MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@mx.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n"
	for _, mode := range []string{"reject", "normalize"} {
		h := start(t, `config(networks = ["192.0.2.0/24"], smtpd_forbid_bare_newline = "`+mode+`")`)
		for name, p := range payloads {
			want := "<- 550 5.5.2 Error: bare <"
			quit := "-> QUIT\n<- 221 2.0.0 Bye"
			switch {
			case name == "CRLF.CR":
				// go-smtp's dot-unstuffing would drop the CR of a line
				// starting ".\r" and then miss the end of data: refused,
				// and the connection closed, in both modes.
				want, quit = "<~ ^550 5\\.5\\.2 Error: bare .CR. received after a leading dot$", "<* CLOSED"
			case mode == "normalize":
				want = "<~ ^250 2.0.0 Ok: queued as"
			}
			t.Run(mode+"/"+name, func(t *testing.T) {
				enginetest.Dialog(t, h.addr, `
					<~ ^220
					-> EHLO c.example
					<+ ^250 LIMITS
					-> MAIL FROM:<a@example.org>
					<- 250 2.1.0 Ok
					-> RCPT TO:<alice@mx.test>
					<- 250 2.1.5 Ok
					-> DATA
					<~ ^354
					=> `+fmt.Sprintf("%q", "Subject: test\r\n\r\n"+p+inject+".\r\n")+`
					`+strings.Replace(want, "<- 550 5.5.2 Error: bare <", "<~ ^550 5\\.5\\.2 Error: bare <(LF|CR)> received$", 1)+`
					`+quit)
			})
		}
		h.settle()
		if n := len(h.mailbox("victim")); n != 0 {
			t.Errorf("%s: smuggled message delivered to victim (%d)", mode, n)
		}
		got := h.mailbox("alice")
		if mode == "reject" && len(got) != 0 {
			t.Errorf("reject mode delivered %d messages, want none", len(got))
		}
		if mode == "normalize" {
			if len(got) != len(payloads)-1 {
				t.Errorf("normalize mode delivered %d messages, want %d", len(got), len(payloads)-1)
			}
			for _, m := range got {
				if !bytes.Contains(m, []byte("\nsmuggled\n")) || bytes.Contains(m, []byte("\r")) || bytes.Count(m, []byte("Received: ")) != 1 {
					t.Errorf("normalized message should hold the fake commands as text, with no CR:\n%q", m)
				}
			}
		}
	}
}

func TestBDAT(t *testing.T) {
	t.Parallel()
	h := start(t, `config(networks = ["192.0.2.0/24"])`)
	msg := "Subject: chunked\r\n\r\nRCPT TO:<postmaster>\r\nhello\r\n"
	enginetest.Dialog(t, h.addr, `
		<~ ^220
		-> EHLO c.example
		<+ ^250 LIMITS
		-> MAIL FROM:<a@example.org>
		<- 250 2.1.0 Ok
		-> RCPT TO:<alice@mx.test>
		<- 250 2.1.5 Ok
		=> `+fmt.Sprintf("%q", fmt.Sprintf("BDAT %d\r\n%s", 10, msg[:10]))+`
		<- 250 2.0.0 Continue
		=> `+fmt.Sprintf("%q", fmt.Sprintf("BDAT %d LAST\r\n%s", len(msg)-10, msg[10:]))+`
		<~ ^250 2.0.0 Ok: queued as
		-> MAIL FROM:<a@example.org>
		<- 250 2.1.0 Ok
		-> RCPT TO:<alice@mx.test>
		<- 250 2.1.5 Ok
		=> "BDAT 16 LAST\r\nSubject: x\n\nhi\r\n"
		<- 550 5.5.2 Error: bare <LF> received
		-> QUIT
		<- 221 2.0.0 Bye`)
	got := h.waitMailbox("alice", 1)
	if len(got) != 1 {
		t.Fatalf("alice has %d messages, want 1", len(got))
	}
	if !bytes.HasSuffix(got[0], []byte("\n\nRCPT TO:<postmaster>\nhello\n")) {
		t.Errorf("BDAT chunk was altered:\n%q", got[0])
	}
}

func TestSizeAndRecipientLimits(t *testing.T) {
	t.Parallel()
	h := start(t, `config(message_size_limit = 1000, smtpd_recipient_limit = 2)`)
	big := strings.Repeat("0123456789abcdef\r\n", 100)
	enginetest.Dialog(t, h.addr, `
		<~ ^220
		-> EHLO c.example
		<+ ^250-SIZE 1000
		<- 250 LIMITS RCPTMAX=2
		-> MAIL FROM:<a@example.org> SIZE=5000
		<- 552 5.3.4 Max message size exceeded
		-> MAIL FROM:<a@example.org>
		<- 250 2.1.0 Ok
		-> RCPT TO:<alice@localhost>
		<- 250 2.1.5 Ok
		-> RCPT TO:<bob@localhost>
		<- 250 2.1.5 Ok
		-> RCPT TO:<carol@localhost>
		<- 452 4.5.3 Maximum limit of 2 recipients reached
		-> DATA
		<~ ^354
		=> `+fmt.Sprintf("%q", big+".\r\n")+`
		<- 552 5.3.4 Error: message file too big
		-> NOOP
		<- 250 2.0.0 Ok
		-> QUIT
		<- 221 2.0.0 Bye`)
	h.settle()
	for _, u := range []string{"alice", "bob"} {
		if n := len(h.mailbox(u)); n != 0 {
			t.Errorf("%s got %d messages from an oversized DATA", u, n)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(h.data, "mail")); len(ents) != 0 {
		t.Errorf("oversized message left %d mailbox directories", len(ents))
	}
}

func TestAddressSyntax(t *testing.T) {
	t.Parallel()
	h := start(t, "")
	enginetest.Dialog(t, h.addr, `
		<~ ^220
		-> EHLO c.example
		<+ ^250 LIMITS
		-> MAIL FROM:<a@-bad-.example>
		<- 501 5.1.7 Bad sender address syntax
		-> MAIL FROM:<jösé@example.org>
		<- 553 5.6.7 Must declare SMTPUTF8 to send unicode address
		-> MAIL FROM:<jösé@example.org> SMTPUTF8
		<- 250 2.1.0 Ok
		-> RCPT TO:<x@bad..example>
		<- 501 5.1.3 Bad recipient address syntax
		-> RCPT TO:<../../etc@localhost>
		<- 550 5.1.1 <"../../etc"@localhost>: Recipient address rejected: User unknown in local recipient table
		-> RCPT TO:<a!b@localhost>
		<- 550 5.1.1 <a!b@localhost>: Recipient address rejected: User unknown in local recipient table
		-> RCPT TO:<ünï@localhost>
		<- 250 2.1.5 Ok
		-> QUIT
		<- 221 2.0.0 Bye`)
	if ents, _ := os.ReadDir(filepath.Join(h.data, "mail")); len(ents) != 0 {
		t.Errorf("bad addresses created %d mailbox directories", len(ents))
	}
}

func TestTimeouts(t *testing.T) {
	t.Parallel()
	// A low smtpd_min_data_rate: these clients send a few bytes a second
	// on purpose (TestMinDataRate has the default).
	h := start(t, `config(smtpd_timeout = "1s", smtpd_data_timeout = "3s", smtpd_session_timeout = "6s", smtpd_min_data_rate = 10)`)

	t.Run("slow but live client is not cut off", func(t *testing.T) {
		t.Parallel()
		c := dialReady(t, h.addr)
		defer c.Close()
		c.cmd("MAIL FROM:<a@example.org>", "250 ")
		c.cmd("RCPT TO:<slow@localhost>", "250 ")
		c.cmd("DATA", "354 ")
		c.write("Subject: slow\r\n\r\n")
		for i := 0; i < 8; i++ { // 2.4s in all, more than smtpd_timeout
			time.Sleep(300 * time.Millisecond)
			c.write(fmt.Sprintf("line %d\r\n", i))
		}
		c.cmd(".", "250 2.0.0 Ok: queued as")
	})
	t.Run("idle client is dropped", func(t *testing.T) {
		t.Parallel()
		c := dialReady(t, h.addr)
		defer c.Close()
		start := time.Now()
		c.expect("421 4.4.2")
		if d := time.Since(start); d < 900*time.Millisecond || d > 3*time.Second {
			t.Errorf("idle timeout after %v, want about 1s", d)
		}
	})
	t.Run("slow drip hits the data deadline", func(t *testing.T) {
		t.Parallel()
		c := dialReady(t, h.addr)
		defer c.Close()
		c.cmd("MAIL FROM:<a@example.org>", "250 ")
		c.cmd("RCPT TO:<drip@localhost>", "250 ")
		c.cmd("DATA", "354 ")
		start := time.Now()
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; i < 40; i++ {
				time.Sleep(200 * time.Millisecond)
				if _, err := c.Write([]byte("MAIL FROM:<x@y>\r\n")); err != nil {
					return
				}
			}
		}()
		c.expect("421 4.4.2")
		if d := time.Since(start); d < 2500*time.Millisecond || d > 5*time.Second {
			t.Errorf("data deadline after %v, want about 3s", d)
		}
		c.expectClosed()
		<-done
	})
	t.Run("session deadline", func(t *testing.T) {
		t.Parallel()
		c := dialReady(t, h.addr)
		defer c.Close()
		start := time.Now()
		for time.Since(start) < 10*time.Second {
			time.Sleep(500 * time.Millisecond)
			c.write("NOOP\r\n")
			line := c.readLine()
			if strings.HasPrefix(line, "421 ") {
				if d := time.Since(start); d < 5*time.Second {
					t.Errorf("session ended after %v, want about 6s", d)
				}
				return
			}
		}
		t.Error("session outlived smtpd_session_timeout")
	})
	t.Cleanup(func() {
		if len(h.waitMailbox("slow", 1)) != 1 {
			t.Error("slow message was not delivered")
		}
		h.settle()
		if len(h.mailbox("drip")) != 0 {
			t.Error("timed-out message was delivered")
		}
	})
}

func TestConnectionLimits(t *testing.T) {
	t.Parallel()
	h := start(t, `config(networks = ["192.0.2.0/24"], smtpd_client_connection_count_limit = 2)`)
	a, b := dialReady(t, h.addr), dialReady(t, h.addr)
	enginetest.Dialog(t, h.addr, "<- 421 4.7.0 mx.test Error: too many connections from 127.0.0.1\n<* CLOSED")
	a.Close()
	time.Sleep(100 * time.Millisecond)
	c := dialReady(t, h.addr) // a slot is free again
	c.Close()
	b.Close()

	h2 := start(t, `config(smtpd_connection_limit = 1)`)
	d := dialReady(t, h2.addr)
	enginetest.Dialog(t, h2.addr, "<- 421 4.7.0 mx.test Error: too many connections\n<* CLOSED")
	d.Close()
}

// rawClient is a line-oriented client for timing tests.
type rawClient struct {
	net.Conn
	t   testing.TB
	buf []byte
}

// dialReady connects, reads the banner and says EHLO.
func dialReady(t testing.TB, addr string) *rawClient {
	t.Helper()
	rc := dialRaw(t, addr)
	rc.cmd("EHLO c.example", "250 LIMITS")
	return rc
}

func (c *rawClient) write(s string) {
	c.t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *rawClient) readLine() string {
	c.t.Helper()
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		if i := bytes.IndexByte(c.buf, '\n'); i >= 0 {
			line := string(bytes.TrimRight(c.buf[:i], "\r"))
			c.buf = c.buf[i+1:]
			return line
		}
		b := make([]byte, 4096)
		n, err := c.Read(b)
		c.buf = append(c.buf, b[:n]...)
		if err != nil && n == 0 {
			return "<error: " + err.Error() + ">"
		}
	}
}

// expect reads reply lines until one starts with prefix.
func (c *rawClient) expect(prefix string) {
	c.t.Helper()
	for {
		line := c.readLine()
		if strings.HasPrefix(line, prefix) {
			return
		}
		if !strings.HasPrefix(line, "250-") {
			c.t.Fatalf("got %q, want %q", line, prefix)
		}
	}
}

func (c *rawClient) expectClosed() {
	c.t.Helper()
	if line := c.readLine(); !strings.HasPrefix(line, "<error") {
		c.t.Errorf("want closed connection, got %q", line)
	}
}

func (c *rawClient) cmd(line, want string) {
	c.t.Helper()
	c.write(line + "\r\n")
	c.expect(want)
}
