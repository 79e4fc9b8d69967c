package engine

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/larkpost/larkpost/engine/enginetest"
	"github.com/larkpost/larkpost/engine/resolver/dnstest"
)

func waitSink(t *testing.T, s *enginetest.Sink, n int) []enginetest.Received {
	t.Helper()
	deadline := time.Now().Add(8 * time.Second)
	for {
		m := s.Messages()
		if len(m) >= n || time.Now().After(deadline) {
			return m
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRelayByMX: the first MX refuses connections, the second takes the
// message; our EHLO name is our hostname.
func TestRelayByMX(t *testing.T) {
	t.Parallel()
	sink := enginetest.NewSink(t, false)
	d := dnstest.NewServer(t,
		"remote.test. 300 IN MX 10 mx1.remote.test.",
		"remote.test. 300 IN MX 20 mx2.remote.test.",
		"mx1.remote.test. 300 IN A 127.0.0.9",
		"mx2.remote.test. 300 IN A 127.0.0.1")
	h := start(t, fmt.Sprintf(`config(resolvers = [%q])
def route(rcpt, msg):
    if rcpt.domain == "remote.test":
        return "smtp:remote.test:%d"
`, d.Addr, sink.Port))
	if _, err := send(t, h.addr, "ann@mx.test", []string{"bob@remote.test", "carol@remote.test"}, "Subject: out\r\n\r\nhello\r\n"); err != nil {
		t.Fatal(err)
	}
	got := waitSink(t, sink, 1)
	if len(got) != 1 {
		t.Fatalf("sink got %d messages, want 1 transaction", len(got))
	}
	m := got[0]
	if m.Helo != "mx.test" || m.From != "ann@mx.test" || strings.Join(m.Rcpts, ",") != "bob@remote.test,carol@remote.test" || !strings.Contains(m.Data, "hello") {
		t.Errorf("sink saw helo=%q from=%q rcpts=%v", m.Helo, m.From, m.Rcpts)
	}
	if !h.log.WaitFor(fmt.Sprintf(`to=<bob@remote.test>, relay=mx2.remote.test\[127.0.0.1\]:%d, .*dsn=2\.\d\.\d, status=sent`, sink.Port), 3*time.Second) {
		t.Error("no delivery log line naming the relay")
	}
}

// TestRemoteRepliesPerRecipient: a 5xx recipient bounces with the remote
// reply in the DSN; a 4xx recipient is retried and delivered.
func TestRemoteRepliesPerRecipient(t *testing.T) {
	t.Parallel()
	sink := enginetest.NewSink(t, false)
	busy := 0
	sink.RcptReply = func(rcpt string) *smtp.SMTPError {
		switch rcpt {
		case "gone@remote.test":
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user here"}
		case "busy@remote.test":
			busy++
			if busy == 1 {
				return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "try again soon"}
			}
		}
		return nil
	}
	h := start(t, fmt.Sprintf(`config(relayhost = "[127.0.0.1]:%d", minimal_backoff = "1s", maximal_backoff = "1s")`, sink.Port))
	if _, err := send(t, h.addr, "ann@mx.test", []string{"gone@remote.test", "busy@remote.test", "ok@remote.test"}, "Subject: mixed\r\n\r\nhi\r\n"); err != nil {
		t.Fatal(err)
	}
	got := waitSink(t, sink, 2)
	if len(got) != 2 || strings.Join(got[0].Rcpts, ",") != "ok@remote.test" || strings.Join(got[1].Rcpts, ",") != "busy@remote.test" {
		t.Fatalf("sink transactions: %+v", got)
	}
	bounce := h.waitMailbox("ann", 1)
	if len(bounce) != 1 {
		t.Fatalf("sender got %d bounces", len(bounce))
	}
	for _, want := range []string{"Final-Recipient: rfc822; gone@remote.test", "Status: 5.1.1", "Diagnostic-Code: smtp; 550 5.1.1 no such user here", "Remote-MTA: dns; 127.0.0.1"} {
		if !strings.Contains(string(bounce[0]), want) {
			t.Errorf("bounce lacks %q:\n%s", want, bounce[0])
		}
	}
}

func TestLMTPPerRecipient(t *testing.T) {
	t.Parallel()
	sink := enginetest.NewSink(t, true)
	sink.RcptReply = func(rcpt string) *smtp.SMTPError {
		switch rcpt {
		case "full@lmtp.test":
			return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full"}
		case "ghost@lmtp.test":
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "unknown user"}
		}
		return nil
	}
	h := start(t, fmt.Sprintf(`config(relay_domains = ["lmtp.test"])
def route(rcpt, msg):
    if rcpt.domain == "lmtp.test":
        return "lmtp:[127.0.0.1]:%d"
`, sink.Port))
	if _, err := send(t, h.addr, "ann@mx.test", []string{"bob@lmtp.test", "full@lmtp.test", "ghost@lmtp.test"}, "Subject: lmtp\r\n\r\nhi\r\n"); err != nil {
		t.Fatal(err)
	}
	got := waitSink(t, sink, 1)
	if len(got) != 1 || strings.Join(got[0].Rcpts, ",") != "bob@lmtp.test" {
		t.Fatalf("LMTP sink: %+v", got)
	}
	if !h.log.WaitFor(`to=<full@lmtp.test>, relay=127.0.0.1\[127.0.0.1\]:\d+, .*dsn=4\.2\.2, status=deferred`, 3*time.Second) {
		t.Error("full mailbox not deferred")
	}
	bounce := h.waitMailbox("ann", 1)
	if len(bounce) != 1 || !strings.Contains(string(bounce[0]), "Final-Recipient: rfc822; ghost@lmtp.test") {
		t.Errorf("no bounce for the unknown LMTP user")
	}
}

// TestDNSFailures: null MX and NXDOMAIN bounce, SERVFAIL defers.
func TestDNSFailures(t *testing.T) {
	t.Parallel()
	d := dnstest.NewServer(t, "nullmx.test. 300 IN MX 0 .", "broken.test. 300 IN MX 10 mx.broken.test.")
	d.SetRcode("broken.test.", 2) // SERVFAIL
	h := start(t, fmt.Sprintf(`config(resolvers = [%q])`, d.Addr))
	if _, err := send(t, h.addr, "ann@mx.test", []string{"a@nullmx.test", "b@nowhere.test", "c@broken.test"}, "Subject: dns\r\n\r\nhi\r\n"); err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`to=<a@nullmx.test>, .*dsn=5\.1\.10, status=bounced`,
		`to=<b@nowhere.test>, .*dsn=5\.1\.2, status=bounced`,
		`to=<c@broken.test>, .*dsn=4\.4\.3, status=deferred`,
	} {
		if !h.log.WaitFor(re, 5*time.Second) {
			t.Errorf("log lacks %s", re)
		}
	}
	bounce := h.waitMailbox("ann", 1)
	if len(bounce) != 1 || !strings.Contains(string(bounce[0]), "a@nullmx.test") || !strings.Contains(string(bounce[0]), "b@nowhere.test") {
		t.Errorf("want one bounce naming both permanent failures")
	}
}

// TestConnectionCacheKeepsTheConcurrency: a burst to one destination
// runs up to default_destination_concurrency_limit deliveries at once,
// and each connection is cached for the next message, so the burst
// needs no more connections than the limit (with a cache smaller than
// the limit, each delivery that ended while the cache was full closed
// its connection and a later one opened another).
func TestConnectionCacheKeepsTheConcurrency(t *testing.T) {
	t.Parallel()
	sink := enginetest.NewSink(t, false)
	const limit, n = 8, 200
	h := start(t, fmt.Sprintf(`config(relayhost = "[127.0.0.1]:%d", default_destination_concurrency_limit = %d)`, sink.Port, limit))
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := send(t, h.addr, "ann@mx.test", []string{fmt.Sprintf("u%d@remote.test", i)}, "Subject: burst\r\n\r\nhi\r\n"); err != nil {
				errs <- err
			}
		}()
		if i%10 == 9 {
			wg.Wait()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := waitSink(t, sink, n); len(got) != n {
		t.Fatalf("sink has %d of %d messages", len(got), n)
	}
	if s := sink.Sessions(); s > limit {
		t.Errorf("%d messages took %d connections, want at most the concurrency limit %d", n, s, limit)
	} else {
		t.Logf("%d messages took %d connections", n, s)
	}
}
