package engine

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// TestSharedState: two nodes sharing one Redis (state_store) share
// greylist triplets and a rate limit; with Redis gone each module
// follows its failure mode, and both recover when it is back.
func TestSharedState(t *testing.T) {
	t.Parallel()
	m := miniredis.RunT(t)
	cfg := fmt.Sprintf(`config(networks = ["192.0.2.0/24"], destinations = ["mx.test"], state_store = "redis://%s/0",
    state_store_timeout = "300ms", greylist_fail_mode = "open", ratelimit_fail_mode = "closed")
def on_mail(tx, sender):
    if sender.local == "bulk":
        r = ratelimit.take("bulk", rate = "10/min")
        if not r:
            return defer("4.7.0 too many messages, retry in %%d s" %% r.retry_after)
def on_rcpt(tx, rcpt):
    if rcpt.local == "grey":
        return greylist.check(tx.conn.ip, tx.sender, rcpt, delay = "1s")
`, m.Addr())
	a, b := start(t, cfg), start(t, cfg)

	// Greylisted on A; the retry after the delay passes on B.
	if _, err := send(t, a.addr, "ann@example.org", []string{"grey@mx.test"}, "Subject: 1\r\n\r\nx\r\n"); err == nil || !strings.Contains(err.Error(), "450") || !strings.Contains(err.Error(), "Greylisted: try again in") {
		t.Fatalf("first attempt on A: %v, want 450 Greylisted", err)
	}
	if _, err := send(t, b.addr, "ann@example.org", []string{"grey@mx.test"}, "Subject: 1\r\n\r\nx\r\n"); err == nil || !strings.Contains(err.Error(), "450") {
		t.Errorf("early retry on B: %v, want 450", err)
	}
	time.Sleep(1100 * time.Millisecond)
	if _, err := send(t, b.addr, "ann@example.org", []string{"grey@mx.test"}, "Subject: 1\r\n\r\nx\r\n"); err != nil {
		t.Errorf("retry on B after the delay: %v", err)
	}

	// 10/min across both nodes: the 11th message is deferred.
	accepted, deferred := 0, 0
	for i := 0; i < 11; i++ {
		node := a
		if i%2 == 1 {
			node = b
		}
		_, err := send(t, node.addr, "bulk@example.org", []string{"alice@mx.test"}, "Subject: bulk\r\n\r\nx\r\n")
		switch {
		case err == nil:
			accepted++
		case strings.Contains(err.Error(), "451") && strings.Contains(err.Error(), "too many messages"):
			deferred++
		default:
			t.Fatalf("bulk %d: %v", i, err)
		}
	}
	if accepted != 10 || deferred != 1 {
		t.Errorf("shared 10/min: %d accepted, %d deferred; want 10 and 1", accepted, deferred)
	}

	// Redis down: greylisting fails open (a new triplet passes), the rate
	// limit fails closed; each failure is logged.
	m.Close()
	start := time.Now()
	if _, err := send(t, a.addr, "new@example.org", []string{"grey@mx.test"}, "Subject: 2\r\n\r\nx\r\n"); err != nil {
		t.Errorf("greylist with Redis down (fail open): %v", err)
	}
	if _, err := send(t, b.addr, "bulk@example.org", []string{"alice@mx.test"}, "Subject: 3\r\n\r\nx\r\n"); err == nil || !strings.Contains(err.Error(), "too many messages") {
		t.Errorf("ratelimit with Redis down (fail closed): %v, want deferred", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("two sessions with Redis down took %v", d)
	}
	if !a.log.WaitFor(`warning: greylist: .*state store unavailable`, 0) {
		t.Errorf("no warning for the failed greylist lookup:\n%s", a.log.String())
	}

	// Back: a new triplet is greylisted again.
	if err := m.Restart(); err != nil {
		t.Fatal(err)
	}
	if _, err := send(t, a.addr, "other@example.org", []string{"grey@mx.test"}, "Subject: 4\r\n\r\nx\r\n"); err == nil || !strings.Contains(err.Error(), "450") {
		t.Errorf("greylist after Redis came back: %v, want 450", err)
	}
}
