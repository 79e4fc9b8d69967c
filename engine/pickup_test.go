package engine

import (
	"context"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/cleanup"
	"github.com/larkpost/larkpost/engine/maildrop"
	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
)

// drop leaves a message in the harness's maildrop, as sendmail does.
func (h *harness) drop(env *maildrop.Envelope, msg string) string {
	h.t.Helper()
	if env.Time.IsZero() {
		env.Time = time.Now()
	}
	if env.UID == 0 {
		env.UID = os.Getuid()
	}
	if _, err := maildrop.Write(filepath.Join(h.data, "maildrop"), env, []byte(msg)); err != nil {
		h.t.Fatal(err)
	}
	return env.ID
}

// waitFor polls cond for up to 5 seconds, well over pickup's interval.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func maildropFiles(t *testing.T, data, sub string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(data, "maildrop", sub))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestPickupDelivers(t *testing.T) {
	t.Parallel()
	h := start(t, `
def on_data(tx, msg):
    if tx.conn.listener == "sendmail":
        return prepend("X-Submitted-By: " + tx.conn.user)
`)
	id := h.drop(&maildrop.Envelope{Sender: "ann@mx.test", Rcpts: []string{"bob@mx.test"}}, "Subject: from cron\n\nline one\nline two\n")
	msgs := h.waitMailbox("bob", 1)
	if len(msgs) != 1 {
		t.Fatalf("%d messages delivered, want 1", len(msgs))
	}
	got := string(msgs[0])
	me, _ := user.Current()
	for _, want := range []string{
		"Received: by mx.test (larkpost, from userid " + strconv.Itoa(os.Getuid()) + ")\n\tid " + id + "; ",
		"X-Submitted-By: " + me.Username + "\n",
		"Subject: from cron\n\nline one\nline two\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("delivered message lacks %q:\n%s", want, got)
		}
	}
	waitFor(t, "the maildrop file to go", func() bool { return len(maildropFiles(t, h.data, "new")) == 0 })
	if !h.log.WaitFor(regexp.QuoteMeta(id+": uid="+strconv.Itoa(os.Getuid())+" from=<ann@mx.test>"), 3*time.Second) {
		t.Errorf("no pickup line in the log:\n%s", h.log.String())
	}
}

func TestPickupRefusals(t *testing.T) {
	t.Parallel()
	h := start(t, `
def on_rcpt(tx, rcpt):
    if tx.conn.listener == "sendmail" and rcpt.user == "nobody":
        return reject("no such user here")
    if rcpt.user == "whoami":
        return reject("listener=%s user=%s" % (tx.conn.listener, tx.conn.user))
    if rcpt.user == "later":
        return defer("try later")

def on_data(tx, msg):
    if msg.subject == "spam":
        return reject("no spam")
`)
	me, _ := user.Current()
	tests := []struct {
		name       string
		env        maildrop.Envelope
		msg        string
		reason     string   // in the rejected/ copy ("" none)
		rejected   []string // its recipients
		delivered  string   // user who gets the message
		log        string
		staysInNew bool
	}{
		{name: "recipient refused", env: maildrop.Envelope{Sender: "ann@mx.test", Rcpts: []string{"nobody@mx.test"}},
			msg: "Subject: a\n\nx\n", reason: "no such user here (to <nobody@mx.test>)", rejected: []string{"nobody@mx.test"},
			log: ": reject: sendmail from local: 550 5.7.1 no such user here; stage=RCPT from=<ann@mx.test> to=<nobody@mx.test>; moved to maildrop/rejected"},
		{name: "one of two refused", env: maildrop.Envelope{Sender: "ann@mx.test", Rcpts: []string{"nobody@mx.test", "carol@mx.test"}},
			msg: "Subject: b\n\nx\n", reason: "no such user here", rejected: []string{"nobody@mx.test"}, delivered: "carol",
			log: "to=<nobody@mx.test>; this recipient's copy moved to maildrop/rejected"},
		{name: "content refused", env: maildrop.Envelope{Sender: "ann@mx.test", Rcpts: []string{"dave@mx.test"}},
			msg: "Subject: spam\n\nx\n", reason: "550 5.7.1 no spam", rejected: []string{"dave@mx.test"},
			log: "stage=END-OF-MESSAGE from=<ann@mx.test>; moved to maildrop/rejected"},
		{name: "conn.user is the file's owner, not what the file claims", env: maildrop.Envelope{Sender: "ann@mx.test", Rcpts: []string{"whoami@mx.test"}, UID: 4242, User: "admin"},
			msg: "Subject: c\n\nx\n", reason: "listener=sendmail user=" + me.Username, rejected: []string{"whoami@mx.test"},
			log: "maildrop file claims uid 4242 but is owned by uid " + strconv.Itoa(os.Getuid())},
		{name: "deferred", env: maildrop.Envelope{Sender: "ann@mx.test", Rcpts: []string{"later@mx.test"}},
			msg: "Subject: d\n\nx\n", staysInNew: true,
			log: ": defer: sendmail from local: RCPT: 451 4.7.1 try later; retry in 5m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := h.drop(&tt.env, tt.msg)
			waitFor(t, "the log line", func() bool { return strings.Contains(h.log.String(), tt.log) })
			if tt.staysInNew {
				if files := maildropFiles(t, h.data, "new"); len(files) != 1 || files[0] != id {
					t.Errorf("deferred message: new/ holds %v, want %s", files, id)
				}
				if _, err := os.Stat(filepath.Join(h.data, "maildrop", "rejected", id)); err == nil {
					t.Errorf("deferred message was rejected")
				}
				os.Remove(filepath.Join(h.data, "maildrop", "new", id))
				return
			}
			path := filepath.Join(h.data, "maildrop", "rejected", id)
			waitFor(t, "the rejected copy", func() bool { _, err := os.Stat(path); return err == nil })
			env, msg, err := maildrop.Read(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(msg) != tt.msg || !strings.Contains(env.Reason, tt.reason) || strings.Join(env.Rcpts, ",") != strings.Join(tt.rejected, ",") {
				t.Errorf("rejected copy: rcpts %v, reason %q, message %q; want %v, %q, %q", env.Rcpts, env.Reason, msg, tt.rejected, tt.reason, tt.msg)
			}
			if tt.delivered != "" {
				if n := len(h.waitMailbox(tt.delivered, 1)); n != 1 {
					t.Errorf("%s got %d messages, want 1", tt.delivered, n)
				}
			}
			waitFor(t, "new/ to empty", func() bool { return len(maildropFiles(t, h.data, "new")) == 0 })
		})
	}

	t.Run("malformed file", func(t *testing.T) {
		os.WriteFile(filepath.Join(h.data, "maildrop", "new", "junk"), []byte("not a maildrop file\n"), 0o600)
		waitFor(t, "the quarantine", func() bool {
			_, err := os.Stat(filepath.Join(h.data, "maildrop", "rejected", "junk.malformed"))
			return err == nil
		})
		if !h.log.WaitFor(`junk: reject: sendmail from local: `, 3*time.Second) {
			t.Errorf("no log line for the malformed file")
		}
	})
}

// TestPickupNeverTwice covers the crash window between queueing a
// message and removing its file: the next pickup finds it queued and only
// removes the file. A record that merely shares the id is left alone.
func TestPickupNeverTwice(t *testing.T) {
	t.Parallel()
	h := start(t, "")
	arrival := time.Now().Add(-time.Minute).Round(0)
	queueHeld := func(id string, at time.Time) {
		t.Helper()
		sub := &cleanup.Submission{ID: id, Sender: "ann@mx.test", Rcpts: []cleanup.Rcpt{{Addr: "bob@mx.test"}},
			Client: rules.Conn{IP: netip.AddrFrom4([4]byte{127, 0, 0, 1}), RDNS: "localhost"},
			Hold:   true, Arrival: time.Now(), Submitted: at, Content: cleanup.Whole([]byte("Subject: held\r\n\r\nx\r\n"))}
		if _, err := h.e.cleanup.Inject(context.Background(), sub); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name      string
		recorded  time.Time // the time the queued record's maildrop file claimed
		delivered int       // copies bob gets from the maildrop file
		log       string
	}{
		{"queued before a crash", arrival, 0, ": already queued; removing the maildrop file"},
		{"another message has the id", arrival.Add(-time.Hour), 1, ": queue id in use by another message; queued as "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := maildrop.NewID()
			queueHeld(id, tt.recorded)
			before := len(h.mailbox("bob"))
			h.drop(&maildrop.Envelope{ID: id, Sender: "ann@mx.test", Rcpts: []string{"bob@mx.test"}, Time: arrival}, "Subject: dropped\n\nx\n")
			waitFor(t, "new/ to empty", func() bool { return len(maildropFiles(t, h.data, "new")) == 0 })
			if !h.log.WaitFor(regexp.QuoteMeta(id+tt.log), 3*time.Second) {
				t.Errorf("log lacks %q", id+tt.log)
			}
			h.settle()
			if got := len(h.mailbox("bob")) - before; got != tt.delivered {
				t.Errorf("bob got %d copies from the maildrop, want %d", got, tt.delivered)
			}
			rec, err := h.e.Queue().Get(id)
			if err != nil || rec.State != queue.Hold || !rec.Submitted.Equal(tt.recorded) {
				t.Errorf("the queued record was changed: %+v, %v", rec, err)
			}
		})
	}
}
