package engine

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	gomilter "github.com/emersion/go-milter"
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
