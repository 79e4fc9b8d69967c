package engine

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestUserFiltersEndToEnd(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "bob.star"), []byte(`
def file(msg):
    if re.search("(?i)somedomain", msg.header("From", "")):
        return "Somedomain"
    if re.search("(?i)viagra", msg.subject):
        return "spam"
    if msg.subject == "escape":
        return "../../carol"
    return None
`), 0o600)
	os.WriteFile(filepath.Join(dir, "dave.star"), []byte("def file(msg):\n    while True:\n        pass\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "erin.star"), []byte("def file(msg):\n    vacation(\"Back on Monday.\", subject = \"Away\")\n"), 0o600)
	h := start(t, fmt.Sprintf(`config(filter_path = %q, filter_timeout = "500ms")`, filepath.Join(dir, "{user}.star")))

	msgs := map[string]string{
		"Somedomain": "From: Joe <joe@somedomain.com>\r\nSubject: lunch\r\n\r\nsee you\r\n",
		"spam":       "From: x@y.example\r\nSubject: cheap Viagra\r\n\r\nbuy\r\n",
		"":           "From: x@y.example\r\nSubject: hello\r\n\r\nplain\r\n",
	}
	for _, body := range msgs {
		if _, err := send(t, h.addr, "x@y.example", []string{"bob@mx.test"}, body); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := send(t, h.addr, "x@y.example", []string{"bob@mx.test"}, "Subject: escape\r\n\r\nx\r\n"); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(h.data, "mail", "bob")
	deadline := time.Now().Add(5 * time.Second)
	count := func(folder string) []string {
		d := base
		if folder != "" {
			d = filepath.Join(base, "."+folder)
		}
		files, _ := filepath.Glob(filepath.Join(d, "new", "*"))
		return files
	}
	for time.Now().Before(deadline) && (len(count("Somedomain")) < 1 || len(count("spam")) < 1 || len(count("")) < 2) {
		time.Sleep(20 * time.Millisecond)
	}
	for folder, body := range msgs {
		files := count(folder)
		want := 1
		if folder == "" {
			want = 2 // the plain one and the refused "../../carol"
		}
		if len(files) != want {
			t.Errorf("folder %q has %d messages, want %d", folder, len(files), want)
			continue
		}
		if folder != "" {
			got, _ := os.ReadFile(files[0])
			if !bytes.HasSuffix(got, bytes.ReplaceAll([]byte(body), []byte("\r\n"), []byte("\n"))) {
				t.Errorf("folder %s: message not byte-exact:\n%s", folder, got)
			}
			if _, err := os.Stat(filepath.Join(base, "."+folder, "maildirfolder")); err != nil {
				t.Errorf("folder %s lacks the maildirfolder marker", folder)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(h.data, "mail", "carol")); err == nil {
		t.Error("a filter escaped into another user's mailbox")
	}
	if !h.log.WaitFor(`to=<bob@mx.test>: filter failed, filed to INBOX: bad folder name "../../carol"`, 2*time.Second) {
		t.Error("refused folder not logged")
	}

	// An endless filter costs its budget, then the message goes to INBOX.
	if _, err := send(t, h.addr, "x@y.example", []string{"dave@mx.test"}, "Subject: x\r\n\r\ny\r\n"); err != nil {
		t.Fatal(err)
	}
	if got := h.waitMailbox("dave", 1); len(got) != 1 {
		t.Errorf("endless filter: dave has %d messages in INBOX", len(got))
	}
	if !h.log.WaitFor(`to=<dave@mx.test>: filter failed, filed to INBOX: .*dave\.star:\d+(:\d+)?: .*(too many steps|deadline)`, 2*time.Second) {
		t.Error("endless filter not logged with its script line")
	}

	// Vacation: once per sender, never to a list.
	for i, hdr := range []string{"Subject: one\r\n", "Subject: two\r\n", "Subject: list\r\nList-Id: <dev.lists.example>\r\n"} {
		sender := "ann@mx.test"
		if i == 2 {
			sender = "carol@mx.test"
		}
		if _, err := send(t, h.addr, sender, []string{"erin@mx.test"}, hdr+"Message-ID: <m"+fmt.Sprint(i)+"@x>\r\n\r\nhi\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	h.waitMailbox("erin", 3)
	h.waitMailbox("ann", 1)
	time.Sleep(300 * time.Millisecond) // a second reply would have come by now
	replies := h.mailbox("ann")
	if len(replies) != 1 || !bytes.Contains(replies[0], []byte("Auto-Submitted: auto-replied")) ||
		!bytes.Contains(replies[0], []byte("Subject: Away")) || !bytes.Contains(replies[0], []byte("Return-Path: <>")) {
		t.Errorf("ann got %d vacation replies, want exactly one auto-replied from <>", len(replies))
	}
	if n := len(h.mailbox("carol")); n != 0 {
		t.Errorf("a list message got a vacation reply")
	}
}
