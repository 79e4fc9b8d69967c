package engine

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestEventHooks: on_delivered, on_bounced and on_deferred see each
// recipient's result after it is on disk; a hook that fails (here: runs
// out of steps) is logged and changes nothing.
func TestEventHooks(t *testing.T) {
	t.Parallel()
	h := start(t, `config(networks = ["127.0.0.0/8"], destinations = ["mx.test"], local_recipients = ["alice"],
    relayhost = "[127.0.0.1]:1", hook_max_steps = 5000)
def on_delivered(msg, rcpt, result):
    print("delivered %s to %s: %s %s via %s after %d attempt(s)" % (msg.id, rcpt, result.status, result.dsn, result.relay, result.attempts))
    for i in range(100000):
        pass
def on_bounced(msg, rcpt, result):
    print("bounced %s from %s: %s %s" % (rcpt, msg.sender, result.dsn, result.text))
def route(rcpt, msg):
    if rcpt.domain == "gone.test":
        return "error:5.1.1 user has left"
    return None
def on_deferred(msg, rcpt, result):
    print("deferred %s: %s" % (rcpt, result.dsn))
`)
	if _, err := send(t, h.addr, "ann@example.org", []string{"alice@mx.test", "nobody@gone.test", "far@elsewhere.example"}, "Subject: x\r\n\r\nhi\r\n"); err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`script: delivered \w+ to alice@mx\.test: sent 2\.0\.0 via local after 1 attempt\(s\)`,
		`script: bounced nobody@gone\.test from ann@example\.org: 5\.1\.1 user has left`,
		`script: deferred far@elsewhere\.example: 4\.`,
		`hook failed: on_delivered at .*too many steps`,
	} {
		if !h.log.WaitFor(re, 10*time.Second) {
			t.Errorf("no log line matching %s", re)
		}
	}
	if msgs := h.waitMailbox("alice", 1); len(msgs) != 1 {
		t.Errorf("alice has %d messages", len(msgs))
	}
}

// TestBounceWebhook: on_bounced posts to a webhook; the request arrives
// with the bounce's facts.
func TestBounceWebhook(t *testing.T) {
	t.Parallel()
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- string(b)
	}))
	t.Cleanup(srv.Close)
	h := start(t, fmt.Sprintf(`config(networks = ["127.0.0.0/8"], destinations = ["mx.test"])
def route(rcpt, msg):
    if rcpt.domain == "gone.test":
        return "error:5.1.1 user has left"
    return None
def on_bounced(msg, rcpt, result):
    http.post(%q, json = {"id": msg.id, "rcpt": rcpt, "dsn": result.dsn, "text": result.text})
`, srv.URL))
	status, err := send(t, h.addr, "ann@example.org", []string{"old@gone.test"}, "Subject: x\r\n\r\nhi\r\n")
	if err != nil {
		t.Fatal(err)
	}
	id := status[strings.LastIndex(status, " ")+1:]
	select {
	case body := <-got:
		want := `{"dsn":"5.1.1","id":"` + id + `","rcpt":"old@gone.test","text":"user has left"}`
		if body != want {
			t.Errorf("webhook got %s, want %s", body, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no webhook request")
	}
}
