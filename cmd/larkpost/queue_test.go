package main

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/enginetest"
)

// lp runs the larkpost binary (this test binary) and returns its output.
func lp(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, err := larkpost(args...).CombinedOutput()
	return string(out), exitCode(err)
}

func TestQueueVerbs(t *testing.T) {
	sink := enginetest.NewSink(t, false)
	s := startServer(t, `config(minimal_backoff = "1h", maximal_backoff = "1h", relay_domains = ["remote.test"])
def route(rcpt, msg):
    if rcpt.domain == "remote.test":
        return "smtp:[127.0.0.1]:1"
`)
	cfg := s.cmd.Args[len(s.cmd.Args)-1]
	if err := sendOne(s.addr, "ann@example.org", "x@remote.test", "Subject: stuck\r\n\r\nhello\r\n"); err != nil {
		t.Fatal(err)
	}
	waitLog(t, s, "status=deferred")
	// The queue update after a delivery lands in the background: poll.
	out, code := lp(t, "queue", "list", "-c", cfg)
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(out, "(deferred") && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		out, code = lp(t, "queue", "list", "-c", cfg)
	}
	m := regexp.MustCompile(`(?m)^([0-9A-Z]{13}) .*<ann@example.org>  \(deferred, 1 tries`).FindStringSubmatch(out)
	if code != 0 || m == nil || !strings.Contains(out, "x@remote.test") || !strings.Contains(out, "1 attempt(s), last 4.4.1") {
		t.Fatalf("queue list (exit %d):\n%s", code, out)
	}
	id := m[1]

	out, _ = lp(t, "queue", "show", "-c", cfg, id)
	for _, want := range []string{"*** ENVELOPE RECORDS " + id, "sender: <ann@example.org>", "recipient: x@remote.test (pending)",
		"*** DECISION LOG ***", "rcpt     x@remote.test", "Subject: stuck"} {
		if !strings.Contains(out, want) {
			t.Errorf("queue show lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hello") {
		t.Errorf("queue show printed the body without --body")
	}
	if out, _ := lp(t, "queue", "show", "--body", "-c", cfg, id); !strings.Contains(out, "hello") {
		t.Errorf("queue show --body lacks the body:\n%s", out)
	}

	check := func(want string, args ...string) {
		t.Helper()
		out, code := lp(t, append(args, "-c", cfg)...)
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("larkpost %v: exit %d, %q, want %q", args, code, out, want)
		}
	}
	check("hold: 1 message(s)", "queue", "hold", id)
	check("(hold: held by the admin)", "queue", "list", "--state", "hold")
	check("would release: 1 message(s)", "queue", "release", "--dry-run", "--all")
	check("release: 1 message(s)", "queue", "release", id)
	// Released means due now: it is tried again at once.
	waitLogCount(t, s, "to=<x@remote.test>.*status=deferred", 2)
	check("flush: 1 message(s)", "queue", "flush", "--domain", "remote.test")
	waitLogCount(t, s, "to=<x@remote.test>.*status=deferred", 3)

	// Route change, reload, requeue: delivered to the new place.
	orig, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(orig), `"smtp:[127.0.0.1]:1"`, fmt.Sprintf(`"smtp:[127.0.0.1]:%d"`, sink.Port), 1)), 0o600)
	check("reloaded", "reload")
	check("requeue: 1 message(s)", "queue", "requeue", id)
	deadline := time.Now().Add(5 * time.Second)
	for len(sink.Messages()) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if len(sink.Messages()) != 1 {
		t.Fatalf("requeued message not delivered after the route change")
	}
	check("Mail queue is empty", "queue", "list")

	// Delete.
	os.WriteFile(cfg, orig, 0o600)
	check("reloaded", "reload")
	sendOne(s.addr, "ann@example.org", "y@remote.test", "Subject: doomed\r\n\r\n")
	waitLog(t, s, "to=<y@remote.test>")
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if out, _ := lp(t, "queue", "list", "--to", "y@", "-c", cfg); strings.Contains(out, "(deferred") {
			break
		}
	}
	check("would delete: 1 message(s)", "queue", "delete", "--dry-run", "--to", "y@")
	check("delete: 1 message(s)", "queue", "delete", "--to", "y@")
	check("Mail queue is empty", "queue", "list")

	// A broken config is refused with its line; the old one keeps serving.
	os.WriteFile(cfg, append(orig, []byte("def on_rcpt(tx):\n    pass\n")...), 0o600)
	out, code = lp(t, "reload", "-c", cfg)
	if code == 0 || !strings.Contains(out, "on_rcpt takes 2 parameters") {
		t.Errorf("broken reload: exit %d:\n%s", code, out)
	}
	os.WriteFile(cfg, orig, 0o600)
	if err := sendOne(s.addr, "ann@example.org", "bob@mx.test", "Subject: still here\r\n\r\n"); err != nil {
		t.Errorf("server stopped serving after a refused reload: %v", err)
	}

	out, code = lp(t, "status", "-c", cfg)
	for _, want := range []string{"larkpost running, pid", "config   " + cfg, "listen   smtp 127.0.0.1:", "queue    active", "delivery "} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("status lacks %q (exit %d):\n%s", want, code, out)
		}
	}

	s.cmd.Process.Signal(syscall.SIGTERM)
	s.wait(10 * time.Second)
	out, code = lp(t, "queue", "list", "-c", cfg)
	if code != 2 || !strings.Contains(out, "no larkpost server is running") || strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Errorf("with no server: exit %d, %q; want exit 2 and one line", code, out)
	}
}

func waitLogCount(t *testing.T, s *server, re string, n int) {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(8 * time.Second)
	for len(rx.FindAllString(s.log.String(), -1)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("log has %d lines matching %s, want %d", len(rx.FindAllString(s.log.String(), -1)), re, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReloadSaysWhatNeedsARestart: reload applies what it can and names,
// in its own output (exit 0), the settings that only a restart applies.
func TestReloadSaysWhatNeedsARestart(t *testing.T) {
	s := startServer(t, `config(minimal_backoff = "1h")`)
	cfg := s.cmd.Args[len(s.cmd.Args)-1]
	orig, _ := os.ReadFile(cfg)
	changed := strings.Replace(string(orig), `"127.0.0.1:0"`, `"127.0.0.1:1"`, 1) + "\nconfig(delivery_workers = 3, minimal_backoff = \"1m\")\n"
	os.WriteFile(cfg, []byte(changed), 0o600)
	out, code := lp(t, "reload", "-c", cfg)
	if code != 0 || !strings.Contains(out, "reloaded "+cfg) || !strings.Contains(out, "restart needed for: delivery_workers, listen") {
		t.Errorf("reload: exit %d:\n%s", code, out)
	}
	waitLog(t, s, "warning: reload: restart needed for: delivery_workers, listen")
	os.WriteFile(cfg, orig, 0o600)
	if out, code := lp(t, "reload", "-c", cfg); code != 0 || strings.Contains(out, "restart needed") {
		t.Errorf("reload back to the start config: exit %d:\n%s", code, out)
	}
}

// queue list pages through a queue in id order and counts it without
// listing; flush, hold and delete work a page at a time.
func TestQueueListPagesAndCounts(t *testing.T) {
	s := startServer(t, `config(minimal_backoff = "1h", maximal_backoff = "1h", relay_domains = ["remote.test"])
def route(rcpt, msg):
    return "smtp:[127.0.0.1]:1"
`)
	cfg := s.cmd.Args[len(s.cmd.Args)-1]
	for i := 0; i < 5; i++ {
		if err := sendOne(s.addr, "ann@example.org", fmt.Sprintf("u%d@remote.test", i), "Subject: page\r\n\r\nhello\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	waitLogCount(t, s, "status=deferred", 5)
	count := func() string {
		out, code := lp(t, "queue", "list", "--count", "-c", cfg)
		if code != 0 {
			t.Fatalf("queue list --count: exit %d\n%s", code, out)
		}
		return out
	}
	// The updates after delivery land in the background: poll.
	out := count()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(out, "deferred  5") && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		out = count()
	}
	if !strings.Contains(out, "deferred  5\n") || !strings.Contains(out, "total     5\n") {
		t.Fatalf("queue list --count:\n%s", out)
	}

	idLine := regexp.MustCompile(`(?m)^([0-9A-Z]{13}) `)
	var ids []string
	after := ""
	for page := 0; page < 5; page++ {
		args := []string{"queue", "list", "--limit", "2", "-c", cfg}
		if after != "" {
			args = append(args, "--after", after)
		}
		out, code := lp(t, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d\n%s", args, code, out)
		}
		for _, m := range idLine.FindAllStringSubmatch(out, -1) {
			ids = append(ids, m[1])
		}
		m := regexp.MustCompile(`more follow: larkpost queue list --after ([0-9A-Z]{13})`).FindStringSubmatch(out)
		if m == nil {
			break
		}
		after = m[1]
	}
	if len(ids) != 5 || !slices.IsSorted(ids) || len(slices.Compact(slices.Clone(ids))) != 5 {
		t.Fatalf("pages of 2 gave %v, want 5 distinct ids in order", ids)
	}

	if out, code := lp(t, "queue", "hold", "-c", cfg, ids[1], ids[3]); code != 0 || !strings.Contains(out, "hold: 2 message(s)") {
		t.Fatalf("hold: exit %d\n%s", code, out)
	}
	if out := count(); !strings.Contains(out, "deferred  3\n") || !strings.Contains(out, "hold      2\n") {
		t.Fatalf("count after hold:\n%s", out)
	}
	if out, _ := lp(t, "queue", "list", "--count", "--state", "hold", "-c", cfg, "--json"); !strings.Contains(out, `"hold": 2`) || strings.Contains(out, "deferred") {
		t.Fatalf("filtered count: %s", out)
	}
	if out, code := lp(t, "queue", "flush", "--limit", "3", "--all", "-c", cfg); code != 2 || !strings.Contains(out, "are for queue list") {
		t.Fatalf("flush --limit: exit %d %s", code, out)
	}
	if out, code := lp(t, "queue", "delete", "--all", "-c", cfg); code != 0 || !strings.Contains(out, "delete: 5 message(s)") {
		t.Fatalf("delete --all: exit %d\n%s", code, out)
	}
	if out := count(); !strings.Contains(out, "total     0\n") {
		t.Fatalf("count after delete:\n%s", out)
	}
}
