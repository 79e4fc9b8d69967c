package engine

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/larkpost/larkpost/engine/maildrop"
)

// spamMilter acts like rspamd's milter: it refuses one recipient, rejects
// GTUBE at end of message, and adds its verdict header and a recipient
// to everything else.
type spamMilter struct {
	gomilter.NoOpMilter
	mu   sync.Mutex
	body bytes.Buffer
}

func (m *spamMilter) RcptTo(rcpt string, _ *gomilter.Modifier) (gomilter.Response, error) {
	if strings.Contains(rcpt, "trap@") {
		return gomilter.NewResponseStr('y', "550 5.7.1 spam trap"), nil
	}
	return gomilter.RespContinue, nil
}

func (m *spamMilter) BodyChunk(chunk []byte, _ *gomilter.Modifier) (gomilter.Response, error) {
	m.mu.Lock()
	m.body.Write(chunk)
	m.mu.Unlock()
	return gomilter.RespContinue, nil
}

func (m *spamMilter) Body(mod *gomilter.Modifier) (gomilter.Response, error) {
	m.mu.Lock()
	body := m.body.String()
	m.body.Reset()
	m.mu.Unlock()
	if strings.Contains(body, "GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL") {
		return gomilter.NewResponseStr('y', "554 5.7.1 Gtube pattern"), nil
	}
	mod.AddHeader("X-Spam", "No, score=0.1")
	mod.AddRecipient("<archive@mx.test>")
	return gomilter.RespAccept, nil
}

func serveMilter(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &gomilter.Server{NewMilter: func() gomilter.Milter { return &spamMilter{} },
		Actions: gomilter.OptAddHeader | gomilter.OptAddRcpt}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { ln.Close(); <-done })
	return "inet:" + ln.Addr().String()
}

// TestMilter: smtpd_milters are asked after the hooks; their refusals
// reach the client and the decision log, their headers and recipients
// reach the message; a milter that is down gets milter_default_action.
func TestMilter(t *testing.T) {
	t.Parallel()
	addr := serveMilter(t)
	h := start(t, fmt.Sprintf(`config(networks = ["192.0.2.0/24"], destinations = ["mx.test"], smtpd_milters = [%q])`, addr))

	if _, err := send(t, h.addr, "ann@example.org", []string{"trap@mx.test"}, "Subject: x\r\n\r\nhi\r\n"); err == nil || !strings.Contains(err.Error(), "550") || !strings.Contains(err.Error(), "spam trap") {
		t.Errorf("trap recipient: %v, want 550 spam trap", err)
	}
	if _, err := send(t, h.addr, "ann@example.org", []string{"alice@mx.test"}, "Subject: gtube\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"); err == nil || !strings.Contains(err.Error(), "554") {
		t.Errorf("GTUBE: %v, want 554", err)
	}
	if !h.log.WaitFor(`reject: END-OF-MESSAGE from .*: 554 5\.7\.1 Gtube pattern`, 0) {
		t.Error("GTUBE reject not logged")
	}
	status, err := send(t, h.addr, "ann@example.org", []string{"alice@mx.test"}, "Subject: fine\r\n\r\nhello\r\n")
	if err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"alice", "archive"} {
		msgs := h.waitMailbox(user, 1)
		if len(msgs) != 1 || !bytes.Contains(msgs[0], []byte("X-Spam: No, score=0.1")) {
			t.Errorf("%s: %d messages, want 1 with the milter's header", user, len(msgs))
		}
	}
	id := status[strings.LastIndex(status, " ")+1:]
	if !h.log.WaitFor(id+`: milter inet:127\.0\.0\.1:\d+: add recipient <archive@mx\.test>`, 0) {
		t.Error("added recipient not logged")
	}
}

// TestMilterDown: a milter nobody listens on, with each default action.
func TestMilterDown(t *testing.T) {
	t.Parallel()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "inet:" + ln.Addr().String()
	ln.Close()
	for _, tt := range []struct{ action, want string }{{"tempfail", "421"}, {"reject", "554"}, {"accept", ""}} {
		h := start(t, fmt.Sprintf(`config(networks = ["192.0.2.0/24"], destinations = ["mx.test"], smtpd_milters = [%q], milter_default_action = %q, milter_connect_timeout = "2s")`, dead, tt.action))
		_, err := send(t, h.addr, "ann@example.org", []string{"alice@mx.test"}, "Subject: x\r\n\r\nhi\r\n")
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v, want the message accepted", tt.action, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: %v, want %s", tt.action, err, tt.want)
		}
	}
}

// editMilter changes the message the way OpenDKIM, rspamd's rewriting
// and disclaimer milters do, and records the header it was given.
type editMilter struct {
	gomilter.NoOpMilter
	edit func(*gomilter.Modifier)
	seen func(name, value string)
}

func (m *editMilter) Header(name, value string, _ *gomilter.Modifier) (gomilter.Response, error) {
	if m.seen != nil {
		m.seen(name, value)
	}
	return gomilter.RespContinue, nil
}

func (m *editMilter) Body(mod *gomilter.Modifier) (gomilter.Response, error) {
	if m.edit != nil {
		m.edit(mod)
	}
	return gomilter.RespAccept, nil
}

func serveEditMilter(t *testing.T, m func() *editMilter) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &gomilter.Server{NewMilter: func() gomilter.Milter { return m() },
		Actions: gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptChangeBody | gomilter.OptAddRcpt | gomilter.OptRemoveRcpt | gomilter.OptChangeFrom}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { ln.Close(); <-done })
	return "inet:" + ln.Addr().String()
}

// TestMilterEdits: header changes, deletions, insertions and a replaced
// body reach the delivered message; the second milter is given the
// message as the first left it; a change that would smuggle a field in
// is refused; every change is in the decision log with the milter's name.
func TestMilterEdits(t *testing.T) {
	t.Parallel()
	first := serveEditMilter(t, func() *editMilter {
		return &editMilter{edit: func(mod *gomilter.Modifier) {
			mod.ChangeHeader(1, "Subject", "[EXTERNAL] hello")
			mod.ChangeHeader(1, "X-Internal", "") // delete
			mod.InsertHeader(0, "X-First", "top")
			mod.AddHeader("X-Smuggle", "v\r\nBcc: evil@example.net")
			mod.ReplaceBody([]byte("replaced body\nwith a disclaimer\n"))
		}}
	})
	var mu sync.Mutex
	var secondSaw []string
	second := serveEditMilter(t, func() *editMilter {
		return &editMilter{
			seen: func(name, value string) { mu.Lock(); secondSaw = append(secondSaw, name+":"+value); mu.Unlock() },
			edit: func(mod *gomilter.Modifier) { mod.AddHeader("X-Second", "last") },
		}
	})
	h := start(t, fmt.Sprintf(`config(networks = ["192.0.2.0/24"], destinations = ["mx.test"], smtpd_milters = [%q, %q])`, first, second))
	status, err := send(t, h.addr, "ann@example.org", []string{"alice@mx.test"},
		"Subject: hello\r\nX-Internal: secret\r\nFrom: ann@example.org\r\n\r\noriginal body\r\n")
	if err != nil {
		t.Fatal(err)
	}
	id := status[strings.LastIndex(status, " ")+1:]
	msgs := h.waitMailbox("alice", 1)
	if len(msgs) != 1 {
		t.Fatalf("alice has %d messages", len(msgs))
	}
	// Maildir files have LF line ends.
	got := string(msgs[0])
	head, body, _ := strings.Cut(got, "\n\n")
	for _, want := range []string{"Subject: [EXTERNAL] hello\n", "X-First: top\n", "From: ann@example.org\nX-Second: last"} {
		if !strings.Contains(head, want) {
			t.Errorf("header lacks %q:\n%s", want, head)
		}
	}
	for _, gone := range []string{"X-Internal", "secret", "Bcc", "X-Smuggle", "Subject: hello"} {
		if strings.Contains(head, gone) {
			t.Errorf("header still has %q:\n%s", gone, head)
		}
	}
	if strings.Index(head, "X-First: top") > strings.Index(head, "Subject:") {
		t.Errorf("inserted field not above the client's fields:\n%s", head)
	}
	if body != "replaced body\nwith a disclaimer\n" {
		t.Errorf("body %q, want the replacement", body)
	}
	mu.Lock()
	saw := strings.Join(secondSaw, "|")
	mu.Unlock()
	if !strings.Contains(saw, "Subject:[EXTERNAL] hello") || strings.Contains(saw, "X-Internal") || !strings.HasPrefix(saw, "X-First:top") {
		t.Errorf("the second milter was given %s, want the first milter's result", saw)
	}
	if !h.log.WaitFor(`warning: `+id+`: milter inet:.*: bad header change: add header "X-Smuggle"`, 0) {
		t.Error("the smuggling change was not logged")
	}
	if !h.log.WaitFor(id+`: milter inet:.*: replace body \(\d+ bytes\)`, 0) {
		t.Error("body replacement not logged")
	}
}

// TestMilterBodyLimit: a milter's replacement body larger than
// message_size_limit is not queued: the client gets 451 and may retry.
func TestMilterBodyLimit(t *testing.T) {
	t.Parallel()
	big := serveEditMilter(t, func() *editMilter {
		return &editMilter{edit: func(mod *gomilter.Modifier) { mod.ReplaceBody(bytes.Repeat([]byte("0123456789abcdef\n"), 8000)) }}
	})
	h := start(t, fmt.Sprintf(`config(networks = ["192.0.2.0/24"], destinations = ["mx.test"], smtpd_milters = [%q], message_size_limit = "100KB")`, big))
	if _, err := send(t, h.addr, "ann@example.org", []string{"alice@mx.test"}, "Subject: x\r\n\r\nsmall\r\n"); err == nil || !strings.Contains(err.Error(), "451") {
		t.Errorf("oversized replacement: %v, want 451", err)
	}
	if n := len(h.mailbox("alice")); n != 0 {
		t.Errorf("alice got %d messages", n)
	}
}

// TestNonSMTPMilters: mail from sendmail goes through non_smtpd_milters,
// told it came from localhost; a refusal moves it to maildrop/rejected
// with the milter's reply, changes reach the delivered message, and the
// smtpd_milters are not asked.
func TestNonSMTPMilters(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var clients []string
	local := serveEditMilter(t, func() *editMilter {
		return &editMilter{edit: func(mod *gomilter.Modifier) {
			mod.InsertHeader(0, "DKIM-Signature", "v=1; d=mx.test; b=abc")
			mod.ChangeHeader(1, "Subject", "signed")
		}}
	})
	reject := serveEditMilter(t, func() *editMilter {
		return &editMilter{seen: func(name, value string) {
			mu.Lock()
			clients = append(clients, name+":"+value)
			mu.Unlock()
		}}
	})
	// The SMTP milter would reject everything: it must not be asked.
	smtpOnly := serveMilter(t)
	h := start(t, fmt.Sprintf(`config(smtpd_milters = [%q], non_smtpd_milters = [%q, %q])`, smtpOnly, local, reject))
	id := h.drop(&maildrop.Envelope{ID: maildrop.NewID(), Sender: "ann@mx.test", Rcpts: []string{"bob@mx.test"}}, "Subject: hi\n\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\n")
	msgs := h.waitMailbox("bob", 1)
	if len(msgs) != 1 {
		t.Fatalf("bob has %d messages:\n%s", len(msgs), h.log.String())
	}
	head, _, _ := strings.Cut(string(msgs[0]), "\n\n")
	head += "\n"
	if !strings.Contains(head, "DKIM-Signature: v=1; d=mx.test; b=abc\n") || !strings.Contains(head, "Subject: signed\n") {
		t.Errorf("the milters' changes are missing:\n%s", head)
	}
	mu.Lock()
	saw := strings.Join(clients, "|")
	mu.Unlock()
	if !strings.Contains(saw, "Subject:signed") {
		t.Errorf("the second milter saw %s, want the first one's Subject", saw)
	}
	if !h.log.WaitFor(id+`: milter inet:.*: change header Subject: signed`, 0) {
		t.Error("change not logged")
	}
}

// TestNonSMTPMilterRefusal: a non_smtpd_milter's rejection of a
// sendmail message moves it to maildrop/rejected with the reply; a
// milter that is down defers it (milter_default_action tempfail).
func TestNonSMTPMilterRefusal(t *testing.T) {
	t.Parallel()
	h := start(t, fmt.Sprintf(`config(non_smtpd_milters = [%q])`, serveMilter(t)))
	id := h.drop(&maildrop.Envelope{ID: maildrop.NewID(), Sender: "ann@mx.test", Rcpts: []string{"bob@mx.test"}}, "Subject: hi\n\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\n")
	if !h.log.WaitFor(id+`: reject: sendmail from local: 554 5\.7\.1 Gtube pattern; stage=END-OF-MESSAGE .*moved to maildrop/rejected`, 5*time.Second) {
		t.Errorf("no reject line:\n%s", h.log.String())
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "inet:" + ln.Addr().String()
	ln.Close()
	h2 := start(t, fmt.Sprintf(`config(non_smtpd_milters = [%q], milter_connect_timeout = "2s")`, dead))
	id2 := h2.drop(&maildrop.Envelope{ID: maildrop.NewID(), Sender: "ann@mx.test", Rcpts: []string{"bob@mx.test"}}, "Subject: hi\n\nx\n")
	if !h2.log.WaitFor(id2+`: .*451 4\.7\.1`, 5*time.Second) {
		t.Errorf("a milter that is down did not defer:\n%s", h2.log.String())
	}
	if n := len(h2.mailbox("bob")); n != 0 {
		t.Errorf("bob got %d messages with the milter down", n)
	}
}

// TestMilterCheckFromHook: milter.check gives a hook the milter's verdict
// and the changes it asked for, and applies none of them.
func TestMilterCheckFromHook(t *testing.T) {
	t.Parallel()
	addr := serveMilter(t)
	h := start(t, fmt.Sprintf(`config(networks = ["192.0.2.0/24"], destinations = ["mx.test"])
def on_data(tx, msg):
    r = milter.check(%q, msg, tx)
    print("milter said %%s %%d %%s at %%s; headers %%s; changes %%s; error %%r" %% (r.action, r.code, r.text, r.stage, r.headers, r.changes, r.error))
    if r.action == "reject":
        return reject("scanner says: " + r.text)
`, addr))
	if _, err := send(t, h.addr, "ann@example.org", []string{"alice@mx.test"}, "Subject: gtube\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"); err == nil || !strings.Contains(err.Error(), "scanner says: Gtube pattern") {
		t.Errorf("GTUBE: %v, want the hook's reject with the milter's text", err)
	}
	if _, err := send(t, h.addr, "ann@example.org", []string{"alice@mx.test"}, "Subject: fine\r\n\r\nhello\r\n"); err != nil {
		t.Fatal(err)
	}
	if !h.log.WaitFor(`script: milter said accept 0  at end of message; headers \[\("X-Spam", "No, score=0.1"\)\]; changes \["add header X-Spam: No, score=0.1", "add rcpt <archive@mx\.test>"\]; error ""`, 0) {
		t.Errorf("hook did not see the verdict and changes:\n%s", h.log.String())
	}
	msgs := h.waitMailbox("alice", 1)
	if len(msgs) != 1 || bytes.Contains(msgs[0], []byte("X-Spam")) {
		t.Errorf("alice: %d messages; the milter's header must not be applied", len(msgs))
	}
	h.settle()
	if n := len(h.mailbox("archive")); n != 0 {
		t.Errorf("the milter's recipient was added (%d messages)", n)
	}
}
