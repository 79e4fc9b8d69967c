package rules

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCleanFolder(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"", "", ""}, {"INBOX", "", ""}, {"inbox", "", ""},
		{"Spam", "Spam", ""}, {"Lists/go", "Lists/go", ""}, {"Lists.go", "Lists/go", ""}, {" Somedomain ", "Somedomain", ""},
		{"Café", "Café", ""},
		{"../other", "", "bad folder"}, {"/etc", "", "bad folder"}, {".hidden", "", "bad folder"}, {"a/../b", "", "bad folder"},
		{"a\x00b", "", "bad folder"}, {"a\nb", "", "bad folder"}, {"a\\b", "", "bad folder"}, {"~root", "", "bad folder"},
		{strings.Repeat("x", 300), "", "bad folder"},
	}
	for _, tt := range tests {
		got, err := CleanFolder(tt.in)
		if got != tt.want || (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("CleanFolder(%q) = %q, %v; want %q, %q", tt.in, got, err, tt.want, tt.err)
		}
	}
}

// procmailFilter is the seed's procmail example as a user filter.
const procmailFilter = `
def file(msg):
    if re.search("(?i)somedomain", msg.header("From", "")):
        return "Somedomain"
    if re.search("(?i)viagra", msg.subject):
        return "spam"
    return None
`

func fileFor(t *testing.T, p *Policy, user, raw string) Filing {
	t.Helper()
	return p.FileMessage(context.Background(), FileRequest{User: user, Rcpt: user + "@mx.example.com", Msg: ParseMessage([]byte(raw))})
}

func TestFileMessage(t *testing.T) {
	dir := t.TempDir()
	write := func(user, src string) {
		path := filepath.Join(dir, user+".star")
		os.WriteFile(path, []byte(src), 0o600)
		// A fresh mtime each write, so the cache sees the change.
		os.Chtimes(path, time.Now(), time.Now().Add(time.Duration(len(src))*time.Second))
	}
	p := mustLoad(t, fmt.Sprintf(`
config(hostname = "mx.example.com", filter_path = %q, filter_max_steps = 10000)
def file(msg, user):
    if user == "boss":
        return "Important"
    if msg.header("X-Quarantine") == "yes":
        return discard()
`, filepath.Join(dir, "{user}.star")))
	write("ann", procmailFilter)
	write("broken", "def file(msg):\n    return {}[\"x\"]\n")
	write("syntax", "def file(msg:\n")
	write("loop", "def file(msg):\n    for i in range(1000000):\n        pass\n")
	write("escape", "def file(msg):\n    return \"../../bob\"\n")
	write("fwd", "def file(msg):\n    vacation(\"I am away\", subject = \"Away\", days = 3)\n    if msg.subject == \"fwd\":\n        return forward(\"ann@elsewhere.example\")\n")
	tests := []struct {
		name, user, raw string
		folder, fwd     string
		discard, failed bool
		source          string
	}{
		{"procmail From rule", "ann", "From: Joe <joe@somedomain.com>\r\nSubject: hi\r\n\r\nx\r\n", "Somedomain", "", false, false, "ann.star:4"},
		{"procmail Subject rule", "ann", "From: x@y.example\r\nSubject: Cheap VIAGRA\r\n\r\nx\r\n", "spam", "", false, false, "ann.star:6"},
		{"procmail default inbox", "ann", "From: x@y.example\r\nSubject: hello\r\n\r\nx\r\n", "", "", false, false, "ann.star:7"},
		{"admin hook wins", "boss", "Subject: x\r\n\r\n", "Important", "", false, false, "p.star:5"},
		{"admin discard", "ann", "X-Quarantine: yes\r\n\r\n", "", "", true, false, "p.star:7"},
		{"no script: inbox", "carol", "Subject: x\r\n\r\n", "", "", false, false, "default"},
		{"runtime error: inbox", "broken", "Subject: x\r\n\r\n", "", "", false, true, "default"},
		{"syntax error: inbox", "syntax", "Subject: x\r\n\r\n", "", "", false, true, "default"},
		{"endless loop: inbox", "loop", "Subject: x\r\n\r\n", "", "", false, true, "default"},
		{"path traversal refused", "escape", "Subject: x\r\n\r\n", "", "", false, true, "escape.star:2"},
		{"forward", "fwd", "Subject: fwd\r\n\r\n", "", "ann@elsewhere.example", false, false, "fwd.star:4"},
	}
	for _, tt := range tests {
		f := fileFor(t, p, tt.user, tt.raw)
		if f.Folder != tt.folder || f.Forward != tt.fwd || f.Discard != tt.discard || (f.Err != nil) != tt.failed || !strings.HasSuffix(f.Source, tt.source) {
			t.Errorf("%s: %+v (err %v), want folder %q forward %q discard %v failed %v from %s", tt.name, f, f.Err, tt.folder, tt.fwd, tt.discard, tt.failed, tt.source)
		}
	}
	if f := fileFor(t, p, "fwd", "Subject: x\r\n\r\n"); f.Vacation == nil || f.Vacation.Subject != "Away" || f.Vacation.Days != 3 {
		t.Errorf("vacation not recorded: %+v", f.Vacation)
	}
	if f := fileFor(t, p, "fwd", "Subject: fwd\r\n\r\n"); f.Vacation != nil {
		t.Errorf("vacation requested for forwarded mail: %+v", f.Vacation)
	}
	if f := fileFor(t, p, "loop", "Subject: x\r\n\r\n"); f.Err == nil || !strings.Contains(f.Err.Error(), "too many steps") {
		t.Errorf("loop error %v, want the step limit", f.Err)
	}
	// The script reloads when it changes.
	write("ann", "def file(msg):\n    return \"Everything\"\n")
	if f := fileFor(t, p, "ann", "Subject: x\r\n\r\n"); f.Folder != "Everything" {
		t.Errorf("after editing the script: %+v", f)
	}
}

func TestFilterSandbox(t *testing.T) {
	dir := t.TempDir()
	p := mustLoad(t, fmt.Sprintf("config(filter_path = %q)\n", filepath.Join(dir, "{user}.star")))
	for name, src := range map[string]string{
		"maps":   "def file(msg):\n    return maps.open(\"/etc/passwd\")\n",
		"load":   "load(\"x.star\", \"y\")\ndef file(msg):\n    pass\n",
		"config": "config(hostname = \"x\")\ndef file(msg):\n    pass\n",
	} {
		os.WriteFile(filepath.Join(dir, name+".star"), []byte(src), 0o600)
		if f := fileFor(t, p, name, "Subject: x\r\n\r\n"); f.Err == nil || f.Folder != "" {
			t.Errorf("%s: a user filter reached %s: %+v", name, name, f)
		}
	}
}

func TestForwardFile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "bob.forward"), []byte("# bob's .forward\n\"|/usr/bin/procmail -f-\"\n\\bob, ann@elsewhere.example\n"), 0o600)
	p := mustLoad(t, fmt.Sprintf("config(hostname = \"mx.example.com\", forward_path = %q)\n", filepath.Join(dir, "{user}.forward")))
	ts, err := p.Expand(context.Background(), "bob@mx.example.com")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, x := range ts {
		got = append(got, x.Kind.String()+":"+x.Value)
	}
	want := "pipe:/usr/bin/procmail -f-,address:bob@mx.example.com,address:ann@elsewhere.example"
	if strings.Join(got, ",") != want {
		t.Errorf(".forward expanded to %v, want %s", got, want)
	}
}
