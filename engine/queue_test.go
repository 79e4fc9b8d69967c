package engine

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/enginetest"
	"github.com/larkpost/larkpost/queue"
)

// TestDeferRetryDeliver: a mailbox that cannot be written defers the
// message; once it can, the retry delivers it.
func TestDeferRetryDeliver(t *testing.T) {
	t.Parallel()
	h := start(t, `config(minimal_backoff = "1s", maximal_backoff = "2s")`)
	// A file where bob's Maildir should be makes every write fail.
	os.MkdirAll(filepath.Join(h.data, "mail"), 0o700)
	block := filepath.Join(h.data, "mail", "bob")
	os.WriteFile(block, []byte("in the way"), 0o600)
	if _, err := send(t, h.addr, "ann@example.org", []string{"bob@mx.test"}, "Subject: retry me\r\n\r\nbody\r\n"); err != nil {
		t.Fatal(err)
	}
	if !h.log.WaitFor(`to=<bob@mx.test>, relay=local, .*dsn=4\.3\.0, status=deferred \(cannot update maildir`, 3*time.Second) {
		t.Fatal("no deferral logged")
	}
	// The queue update after a delivery is committed in the background:
	// wait for it to land.
	var rec *queue.Record
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		h.e.Queue().Walk(func(r *queue.Record) bool { rec = r; return false })
		if rec != nil && rec.State == queue.Deferred {
			break
		}
	}
	if rec == nil || rec.State != queue.Deferred || rec.Tries != 1 || rec.Rcpts[0].Last().Status != "4.3.0" {
		t.Fatalf("queued record after deferral: %+v", rec)
	}
	if d := time.Until(rec.NextTry); d < 500*time.Millisecond || d > 1200*time.Millisecond {
		t.Errorf("next try in %v, want about minimal_backoff (1s)", d)
	}
	os.Remove(block)
	if got := h.waitMailbox("bob", 1); len(got) != 1 || !bytes.Contains(got[0], []byte("Subject: retry me")) {
		t.Fatalf("not delivered after the retry")
	}
	if !h.log.WaitFor(`: removed`, 2*time.Second) {
		t.Error("message not removed from the queue")
	}
}

// TestExpiryBounces: a recipient that stays undeliverable past the queue
// lifetime is returned to the sender with a DSN.
func TestExpiryBounces(t *testing.T) {
	t.Parallel()
	h := start(t, `config(minimal_backoff = "1s", maximal_backoff = "1s", maximal_queue_lifetime = "2s")`)
	os.MkdirAll(filepath.Join(h.data, "mail"), 0o700)
	os.WriteFile(filepath.Join(h.data, "mail", "bob"), nil, 0o600)
	if _, err := send(t, h.addr, "ann@mx.test", []string{"bob@mx.test"}, "Subject: doomed\r\nMessage-ID: <doomed@mx.test>\r\n\r\nbody\r\n"); err != nil {
		t.Fatal(err)
	}
	got := h.waitMailbox("ann", 1)
	if len(got) != 1 {
		t.Fatalf("sender got %d bounces, want 1", len(got))
	}
	b := string(got[0])
	for _, want := range []string{
		"Return-Path: <>", "From: MAILER-DAEMON@mx.test", "Subject: Undelivered Mail Returned to Sender",
		"multipart/report; report-type=delivery-status", "Final-Recipient: rfc822; bob@mx.test",
		"Action: failed", "Status: 5.3.0", "message expired after 2s", "Message-ID: <doomed@mx.test>",
	} {
		if !strings.Contains(b, want) {
			t.Errorf("bounce lacks %q:\n%s", want, b)
		}
	}
	h.settle()
	n := 0
	h.e.Queue().Walk(func(*queue.Record) bool { n++; return true })
	if n != 0 {
		t.Errorf("%d messages left in the queue", n)
	}
}

// TestBounceNotBounced: a bounce (null sender) that cannot be delivered
// is dropped, not bounced again: no loop between two MAILER-DAEMONs.
func TestBounceNotBounced(t *testing.T) {
	t.Parallel()
	h := start(t, `config(mailbox_size_limit = 600)`)
	big := "Subject: a bounce\r\n\r\n" + strings.Repeat("x", 1000) + "\r\n"
	if _, err := send(t, h.addr, "", []string{"bob@mx.test"}, big); err != nil {
		t.Fatal(err)
	}
	if !h.log.WaitFor(`to=<bob@mx.test>, relay=local, .*dsn=5\.2\.2, status=bounced \(message exceeds mailbox_size_limit`, 3*time.Second) {
		t.Fatal("no size-limit bounce logged")
	}
	if !h.log.WaitFor(`undeliverable bounce discarded \(double bounce\): to=<bob@mx\.test>: 5\.2\.2 .*mailbox_size_limit`, 3*time.Second) {
		t.Error("double bounce not discarded")
	}
	h.settle()
	n := 0
	h.e.Queue().Walk(func(*queue.Record) bool { n++; return true })
	if n != 0 {
		t.Errorf("%d messages left in the queue", n)
	}
}

func TestNotifySuccessAndMbox(t *testing.T) {
	t.Parallel()
	h := start(t, `config(mailbox_path = "{data_dir}/spool/{user}", local_recipients = ["ann", "bob"])`)
	enginetest.Dialog(t, h.addr, `
		<~ ^220
		-> EHLO c.example
		<+ ^250 LIMITS
		-> MAIL FROM:<ann@mx.test> RET=HDRS ENVID=env42
		<- 250 2.1.0 Ok
		-> RCPT TO:<bob@mx.test> NOTIFY=SUCCESS ORCPT=rfc822;bob@mx.test
		<- 250 2.1.5 Ok
		-> DATA
		<~ ^354
		-> Subject: please confirm
		->
		-> From the start of a line
		-> .
		<~ ^250 2.0.0 Ok: queued as
		-> QUIT
		<- 221 2.0.0 Bye`)
	deadline := time.Now().Add(5 * time.Second)
	var bob, ann []byte
	for time.Now().Before(deadline) {
		bob, _ = os.ReadFile(filepath.Join(h.data, "spool", "bob"))
		ann, _ = os.ReadFile(filepath.Join(h.data, "spool", "ann"))
		if len(bob) > 0 && len(ann) > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !bytes.HasPrefix(bob, []byte("From ann@mx.test ")) || !bytes.Contains(bob, []byte("\n>From the start of a line\n")) {
		t.Errorf("bob's mbox:\n%s", bob)
	}
	for _, want := range []string{"Successful Mail Delivery Report", "Action: delivered", "Original-Envelope-Id: env42", "Status: 2.0.0"} {
		if !bytes.Contains(ann, []byte(want)) {
			t.Errorf("success DSN lacks %q:\n%s", want, ann)
		}
	}
	// An unknown local user is refused at RCPT when local_recipients is set.
	enginetest.Dialog(t, h.addr, `
		<~ ^220
		-> EHLO c.example
		<+ ^250 LIMITS
		-> MAIL FROM:<ann@mx.test>
		<- 250 2.1.0 Ok
		-> RCPT TO:<carol@mx.test>
		<- 550 5.1.1 <carol@mx.test>: Recipient address rejected: User unknown in local recipient table`)
}

// TestCorruptRecordDoesNotStopDelivery: a record that cannot be decoded
// is moved aside and everything else is still delivered.
func TestCorruptRecordDoesNotStopDelivery(t *testing.T) {
	t.Parallel()
	h := start(t, `def on_data(tx, msg):
    if msg.subject == "park":
        return hold("parked")
`)
	if _, err := send(t, h.addr, "ann@example.org", []string{"bob@mx.test"}, "Subject: park\r\n\r\nx\r\n"); err != nil {
		t.Fatal(err)
	}
	held := h.held()
	if len(held) != 1 {
		t.Fatalf("held %d", len(held))
	}
	// Damage the held record, then make it due.
	id := held[0].ID
	q := h.e.Queue()
	if err := q.RawSet(queue.RecordKey(id), []byte("\x00garbage")); err != nil {
		t.Fatal(err)
	}
	op, size, _ := queue.PutOp(&queue.Record{ID: "DUE" + id, State: queue.Active, NextTry: time.Now(),
		Rcpts: []queue.Rcpt{{Addr: "bob@mx.test", State: queue.Pending}}}, []byte("Subject: second\r\n\r\n"))
	q.Commit(context.Background(), size, op)
	q.RawSet(queue.RecordKey("DUE"+id), []byte("{\"id\": \"broken"))
	h.e.sched.Wake()
	if _, err := send(t, h.addr, "ann@example.org", []string{"bob@mx.test"}, "Subject: after\r\n\r\ny\r\n"); err != nil {
		t.Fatal(err)
	}
	if got := h.waitMailbox("bob", 1); len(got) != 1 {
		t.Fatalf("good message not delivered next to a corrupt one")
	}
	if !h.log.WaitFor(`DUE`+id+`: queue record is corrupt, moved aside`, 3*time.Second) {
		t.Error("corrupt record not reported")
	}
	states := map[queue.State]int{}
	q.Walk(func(r *queue.Record) bool { states[r.State]++; return true })
	if states[queue.Corrupt] < 2 {
		t.Errorf("states %v, want the damaged records listed as corrupt", states)
	}
}
