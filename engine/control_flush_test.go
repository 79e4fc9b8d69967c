package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/larkpost/larkpost/queue"
)

// TestFlushAllFromTheIndex: `queue flush --all` (a mark on the schedule
// index) makes every waiting message due once, leaves held ones alone,
// ends when the scheduler has walked the index, and a dry run counts
// without changing anything.
func TestFlushAllFromTheIndex(t *testing.T) {
	t.Parallel()
	h := start(t, `config(minimal_backoff = "1h", maximal_backoff = "1h")`)
	// A file where bob's Maildir should be defers every delivery.
	os.MkdirAll(filepath.Join(h.data, "mail"), 0o700)
	os.WriteFile(filepath.Join(h.data, "mail", "bob"), []byte("in the way"), 0o600)
	const n = 6
	for i := range n {
		if _, err := send(t, h.addr, "ann@example.org", []string{"bob@mx.test"}, fmt.Sprintf("Subject: %d\r\n\r\nx\r\n", i)); err != nil {
			t.Fatal(err)
		}
	}
	deferrals := func() int {
		return len(regexp.MustCompile(`to=<bob@mx.test>.*status=deferred`).FindAllString(h.log.String(), -1))
	}
	waitDeferrals := func(want int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); deferrals() < want && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		if got := deferrals(); got != want {
			t.Fatalf("%d deferrals logged, want %d", got, want)
		}
	}
	census := func() map[queue.State]int {
		t.Helper()
		c, err := h.e.Queue().Counts(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// Each deferral's record update lands after its log line: wait until
	// the index says all are deferred an hour out.
	waitCensus := func(deferred, hold int) {
		t.Helper()
		var c map[queue.State]int
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if c = census(); c[queue.Deferred] == deferred && c[queue.Hold] == hold && c[queue.Active] == 0 {
				return
			}
		}
		t.Fatalf("census %v, want %d deferred and %d held", c, deferred, hold)
	}
	waitDeferrals(n)
	waitCensus(n, 0)

	var one string
	h.e.Queue().Walk(func(r *queue.Record) bool { one = r.ID; return false })
	if rep := h.e.control(Request{Cmd: "queue.hold", IDs: []string{one}}, nil); rep.Error != "" || rep.Touched != 1 {
		t.Fatalf("hold: %+v", rep)
	}
	waitCensus(n-1, 1)

	rep := h.e.control(Request{Cmd: "queue.flush", Filter: Filter{All: true}, DryRun: true}, nil)
	if rep.Error != "" || rep.Touched != n-1 {
		t.Fatalf("flush --all --dry-run: %+v, want %d touched", rep, n-1)
	}
	if c := census(); c[queue.Deferred] != n-1 || c[queue.Active] != 0 || h.e.Queue().FlushMark() != 0 {
		t.Fatalf("a dry run changed something: census %v, flush mark %d", c, h.e.Queue().FlushMark())
	}

	rep = h.e.control(Request{Cmd: "queue.flush", Filter: Filter{All: true}}, nil)
	if rep.Error != "" || rep.Touched+len(rep.Busy) != n-1 || len(rep.Busy) != 0 {
		t.Fatalf("flush --all: %+v, want %d touched", rep, n-1)
	}
	// Each waiting message is tried once more and deferred again; the
	// held one is not tried.
	waitDeferrals(2*n - 1)
	waitCensus(n-1, 1)
	time.Sleep(300 * time.Millisecond)
	if got := deferrals(); got != 2*n-1 {
		t.Fatalf("%d deferrals after the flush settled, want %d: a message was tried twice", got, 2*n-1)
	}
	if got := regexp.MustCompile(`queue: flush of \d+ waiting messages? by the admin|queue: flush done`).FindAllString(h.log.String(), -1); fmt.Sprint(got) != fmt.Sprintf("[queue: flush of %d waiting messages by the admin queue: flush done]", n-1) {
		t.Errorf("flush logged %q, want its start and its end", got)
	}
	if m := h.e.Queue().FlushMark(); m != 0 {
		t.Errorf("flush mark %d left after the walk ended", m)
	}
	if got := len(regexp.MustCompile(one+`.*status=deferred`).FindAllString(h.log.String(), -1)); got != 1 {
		t.Errorf("the held message was tried %d times, want only before the hold", got)
	}
}
