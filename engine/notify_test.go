package engine

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestPostmasterNotices(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "aliases"), []byte("team: ghost\n"), 0o600)
	h := start(t, `config(notify_classes = ["software", "policy", "bounce", "2bounce"], alias_maps = ["`+filepath.Join(dir, "aliases")+`"],
    local_recipients = ["ann", "bob", "postmaster"])
def on_rcpt(tx, rcpt):
    if rcpt.user == "crash":
        return {}["x"]
    if rcpt.user == "nope":
        return reject("not here", code = 550, status = "5.1.1")
`)
	send(t, h.addr, "ann@example.org", []string{"crash@mx.test"}, "Subject: x\r\n\r\n")
	send(t, h.addr, "ann@example.org", []string{"nope@mx.test"}, "Subject: x\r\n\r\n")
	// team@ expands to an unknown user: the delivery bounces.
	send(t, h.addr, "ann@mx.test", []string{"team@mx.test"}, "Subject: to the team\r\n\r\nhi\r\n") // copy to the postmaster
	send(t, h.addr, "", []string{"team@mx.test"}, "Subject: a bounce\r\n\r\nhi\r\n")               // a bounce that bounces: 2bounce
	got := h.waitMailbox("postmaster", 4)
	var all [][]byte
	all = append(all, got...)
	kinds := map[string]bool{}
	for _, m := range all {
		switch {
		case bytes.Contains(m, []byte("Subject: Postmaster notice: software problem")) && bytes.Contains(m, []byte(`key "x" not in dict`)):
			kinds["software"] = true
		case bytes.Contains(m, []byte("Subject: Postmaster notice: policy problem")) && bytes.Contains(m, []byte("550 5.1.1 not here")):
			kinds["policy"] = true
		case bytes.Contains(m, []byte("Undelivered Mail Returned to Sender")) && bytes.Contains(m, []byte("X-Larkpost-Sender: rfc822; ann@mx.test")):
			kinds["bounce"] = true
		case bytes.Contains(m, []byte("Undelivered Mail Returned to Sender")) && bytes.Contains(m, []byte("X-Larkpost-Sender: rfc822; MAILER-DAEMON")):
			kinds["2bounce"] = true
		}
	}
	for _, k := range []string{"software", "policy", "bounce", "2bounce"} {
		if !kinds[k] {
			t.Errorf("postmaster got no %s notice (%d messages)", k, len(all))
		}
	}
	if n := len(h.waitMailbox("ann", 1)); n != 1 {
		t.Errorf("the sender got %d bounces, want 1", n)
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(h.mailbox("postmaster")); n != 4 {
		t.Errorf("postmaster has %d messages, want exactly 4 (no notice loops)", n)
	}
}
