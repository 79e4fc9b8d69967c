package dsn

import (
	"bufio"
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
)

var update = flag.Bool("update", false, "rewrite golden files")

var (
	arrival = time.Date(2023, 11, 14, 22, 13, 20, 0, time.UTC)
	now     = time.Date(2023, 11, 15, 3, 0, 0, 0, time.UTC)
)

const origMsgID = "<20231114221319.1234@client.example.com>"

// origMessage is a plain message with LF line endings, as a queue file
// might hold it.
const origMessage = "Return-Path: <alice@example.com>\n" +
	"Received: from client.example.com (client.example.com [192.0.2.10])\n" +
	"\tby mx.example.org (larkpost) with ESMTP id 0H5ZK3QW8T1VA\n" +
	"\tfor <bob@example.net>; Tue, 14 Nov 2023 22:13:20 +0000\n" +
	"From: Alice <alice@example.com>\n" +
	"To: Bob <bob@example.net>, carol@mx.example.org\n" +
	"Subject: Lunch on Friday?\n" +
	"Date: Tue, 14 Nov 2023 22:13:19 +0000\n" +
	"Message-Id: " + origMsgID + "\n" +
	"MIME-Version: 1.0\n" +
	"Content-Type: text/plain; charset=us-ascii\n" +
	"\n" +
	"Hi Bob,\n" +
	"\n" +
	"are we still on for lunch on Friday?\n" +
	"\n" +
	"Alice\n"

func report(kind Kind, rcpts ...Recipient) *Report {
	return &Report{
		Kind:         kind,
		ReportingMTA: "mx.example.org",
		QueueID:      "0H5ZK3QW8T1VA",
		Sender:       "alice@example.com",
		ArrivalDate:  arrival,
		To:           "alice@example.com",
		Recipients:   rcpts,
		Original:     []byte(origMessage),
		Now:          now,
		Postmaster:   "postmaster@mx.example.org",
	}
}

var remoteBob = Recipient{
	Original:    "bob@example.net",
	Final:       "bob@example.net",
	Action:      "failed",
	Status:      "5.1.1",
	RemoteMTA:   "mx.example.net",
	Diagnostic:  "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown in virtual mailbox table",
	LastAttempt: now.Add(-time.Minute),
}

var localCarol = Recipient{
	Final:          "carol@mx.example.org",
	Action:         "failed",
	Status:         "5.2.2",
	Diagnostic:     "mail for carol@mx.example.org: maildir /var/mail/carol: disk quota exceeded",
	DiagnosticType: "x-unix",
}

// goldenCases are the reports whose output is pinned in testdata.
var goldenCases = []struct {
	name   string
	report func() *Report
}{
	{"failed_hdrs", func() *Report {
		return report(Failed, remoteBob, localCarol)
	}},
	{"failed_full", func() *Report {
		r := report(Failed, remoteBob)
		r.ReturnFull = true
		return r
	}},
	{"failed_full_too_big", func() *Report {
		r := report(Failed, remoteBob)
		r.ReturnFull = true
		r.Original = []byte(origMessage + strings.Repeat("This line pads the message past the limit.\n", 20))
		r.MaxBodyBytes = 1000
		return r
	}},
	{"delayed", func() *Report {
		return report(Delayed, Recipient{
			Final:          "bob@example.net",
			Action:         "delayed",
			Status:         "4.7.0",
			RemoteMTA:      "mx.example.net",
			Diagnostic:     "421 4.7.0 mx.example.net: Too many concurrent connections from your IP address, try again later",
			LastAttempt:    now.Add(-10 * time.Minute),
			WillRetryUntil: arrival.Add(5 * 24 * time.Hour),
		})
	}},
	{"delivered", func() *Report {
		r := report(Delivered, Recipient{
			Original:       "rfc822;bob.smith@example.org",
			Final:          "bsmith@mx.example.org",
			Action:         "delivered",
			Status:         "2.0.0",
			Diagnostic:     "delivered to maildir",
			DiagnosticType: "x-unix",
		})
		r.EnvelopeID = "QQ314159"
		// Success reports carry the header only, whatever RET says.
		r.ReturnFull = true
		return r
	}},
	{"relayed", func() *Report {
		return report(Relayed, Recipient{
			Original:   "dave@example.com",
			Final:      "dave@example.com",
			RemoteMTA:  "legacy.example.com",
			Diagnostic: "250 Ok: queued as 4SXYZ1234",
		})
	}},
	{"utf8", func() *Report {
		return report(Failed, Recipient{
			Original:   "jörg@bücher.example",
			Final:      "jörg@bücher.example",
			Status:     "5.1.1",
			RemoteMTA:  "mx.xn--bcher-kva.example",
			Diagnostic: "550 5.1.1 <jörg@bücher.example>: Recipient address rejected: User unknown",
		})
	}},
}

func TestGolden(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Compose(tc.report())
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s (go test -update rewrites it)\ngot:\n%s", path, got)
			}
		})
	}
}

// structureCases add to the golden reports the hostile and awkward inputs
// whose exact bytes matter less than their staying well-formed.
func structureCases() []struct {
	name   string
	report func() *Report
} {
	cases := append([]struct {
		name   string
		report func() *Report
	}{}, goldenCases...)
	add := func(name string, f func() *Report) {
		cases = append(cases, struct {
			name   string
			report func() *Report
		}{name, f})
	}
	add("long diagnostic", func() *Report {
		rc := remoteBob
		rc.Diagnostic = "550 " + strings.Repeat("word ", 400) + strings.Repeat("x", 1500) + " end"
		rc.RemoteMTA = strings.Repeat("a", 1200) + ".example.net"
		return report(Failed, rc)
	})
	add("long original lines", func() *Report {
		r := report(Failed, remoteBob)
		r.ReturnFull = true
		r.Original = []byte("X-Long: " + strings.Repeat("h", 2500) + "\r\n" + strings.TrimPrefix(origMessage, "Return-Path: <alice@example.com>\n") +
			strings.Repeat("b", 3000) + "\nbare\rcr\n")
		return r
	})
	add("boundary in original", func() *Report {
		r := report(Failed, remoteBob)
		r.ReturnFull = true
		r.Original = []byte(origMessage + "--0H5ZK3QW8T1VA.1700017200/mx.example.org--\n")
		return r
	})
	add("injection", func() *Report {
		r := report(Failed, injected)
		r.To = "alice@example.com\r\nBcc: victim@example.com"
		r.EnvelopeID = "id\nBcc: victim@example.com"
		return r
	})
	add("no original", func() *Report {
		r := report(Failed, remoteBob)
		r.Original = nil
		return r
	})
	add("defaults", func() *Report {
		r := report(Delayed, Recipient{Final: "<bob@example.net>"})
		r.ArrivalDate = time.Time{}
		r.Sender = ""
		r.Postmaster = ""
		return r
	})
	return cases
}

var injected = Recipient{
	Final:      "bob@example.net",
	Status:     "5.1.1",
	RemoteMTA:  "mx.example.net\r\nBcc: victim@example.com",
	Diagnostic: "550 5.1.1 no such user\r\nBcc: victim@example.com\r\n\r\n--evil",
}

func TestStructure(t *testing.T) {
	for _, tc := range structureCases() {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.report()
			out, err := Compose(r)
			if err != nil {
				t.Fatal(err)
			}
			checkStructure(t, r, out)
		})
	}
}

// checkStructure parses out back as a mail reader would and checks it
// against the report it came from.
func checkStructure(t *testing.T, r *Report, out []byte) {
	t.Helper()
	for i, ch := range out {
		if ch == '\n' && (i == 0 || out[i-1] != '\r') {
			t.Fatalf("bare LF at offset %d", i)
		}
		if ch == '\r' && (i+1 == len(out) || out[i+1] != '\n') {
			t.Fatalf("bare CR at offset %d", i)
		}
	}
	for i, line := range bytes.Split(out, []byte("\r\n")) {
		if len(line) > 998 {
			t.Errorf("line %d is %d octets long", i+1, len(line))
		}
	}

	m, err := message.Read(bytes.NewReader(out))
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	mt, params, err := m.Header.ContentType()
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type %q %v %v, want multipart/report with report-type=delivery-status", mt, params, err)
	}
	for field, want := range map[string]string{
		"Subject":        Subject(r.Kind),
		"Auto-Submitted": "auto-replied",
		"MIME-Version":   "1.0",
		"From":           "MAILER-DAEMON@" + r.ReportingMTA + " (Mail Delivery System)",
	} {
		if got := m.Header.Get(field); got != want {
			t.Errorf("%s: %q, want %q", field, got, want)
		}
	}
	if m.Header.Has("Bcc") {
		t.Error("top-level header has a Bcc field")
	}

	global := false
	for _, rc := range r.Recipients {
		global = global || !isASCII([]byte(rc.Final+rc.Original))
	}
	limit := r.MaxBodyBytes
	if limit == 0 {
		limit = 50000
	}
	full := r.ReturnFull && r.Kind == Failed && len(r.Original) <= limit
	wantTypes := []string{"text/plain", "message/delivery-status", "text/rfc822-headers"}
	switch {
	case global && full:
		wantTypes[1], wantTypes[2] = "message/global-delivery-status", "message/global"
	case global:
		wantTypes[1], wantTypes[2] = "message/global-delivery-status", "message/global-headers"
	case full:
		wantTypes[2] = "message/rfc822"
	}

	var bodies [][]byte
	mr := m.MultipartReader()
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("part %d: %v", len(bodies)+1, err)
		}
		if len(bodies) < len(wantTypes) {
			if got, _, _ := p.Header.ContentType(); got != wantTypes[len(bodies)] {
				t.Errorf("part %d is %s, want %s", len(bodies)+1, got, wantTypes[len(bodies)])
			}
		}
		b, err := io.ReadAll(p.Body)
		if err != nil {
			t.Fatalf("part %d: %v", len(bodies)+1, err)
		}
		bodies = append(bodies, b)
	}
	if len(bodies) != 3 {
		t.Fatalf("%d parts, want 3", len(bodies))
	}

	blocks := dsnBlocks(t, bodies[1])
	if len(blocks) != 1+len(r.Recipients) {
		t.Fatalf("%d delivery-status blocks, want %d", len(blocks), 1+len(r.Recipients))
	}
	if got, want := blocks[0].Get("Reporting-MTA"), "dns; "+r.ReportingMTA; got != want {
		t.Errorf("Reporting-MTA %q, want %q", got, want)
	}
	if got := blocks[0].Get("X-Larkpost-Queue-ID"); got != r.QueueID {
		t.Errorf("X-Larkpost-Queue-ID %q, want %q", got, r.QueueID)
	}
	defaultAction := [...]string{"failed", "delayed", "delivered", "relayed"}[r.Kind]
	for i, rc := range r.Recipients {
		h := blocks[i+1]
		final := strings.Trim(rc.Final, "<>")
		typ := "rfc822; "
		if !isASCII([]byte(final)) {
			typ = "utf-8; "
		}
		action := rc.Action
		if action == "" {
			action = defaultAction
		}
		for field, want := range map[string]string{
			"Final-Recipient": typ + final,
			"Action":          action,
		} {
			if got := h.Get(field); got != want {
				t.Errorf("recipient %d: %s %q, want %q", i+1, field, got, want)
			}
		}
		if rc.Status != "" && h.Get("Status") != rc.Status {
			t.Errorf("recipient %d: Status %q, want %q", i+1, h.Get("Status"), rc.Status)
		}
		if !validStatus(h.Get("Status")) {
			t.Errorf("recipient %d: invalid Status %q", i+1, h.Get("Status"))
		}
		if h.Has("Bcc") {
			t.Errorf("recipient %d: block has a Bcc field", i+1)
		}
	}

	if len(r.Original) == 0 {
		return
	}
	var orig textproto.Header
	if full {
		om, err := message.Read(bytes.NewReader(bodies[2]))
		if err != nil {
			t.Fatalf("returned message: %v", err)
		}
		orig = om.Header.Header
	} else {
		orig, err = textproto.ReadHeader(bufio.NewReader(bytes.NewReader(append(bodies[2], "\r\n"...))))
		if err != nil {
			t.Fatalf("returned headers: %v", err)
		}
	}
	if got := orig.Get("Message-Id"); got != origMsgID {
		t.Errorf("returned Message-Id %q, want %q", got, origMsgID)
	}
}

// dsnBlocks parses a delivery-status body: blocks of fields separated by
// blank lines.
func dsnBlocks(t *testing.T, body []byte) []textproto.Header {
	t.Helper()
	var hs []textproto.Header
	for _, block := range bytes.Split(bytes.TrimRight(body, "\r\n"), []byte("\r\n\r\n")) {
		h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(append(block, "\r\n\r\n"...))))
		if err != nil {
			t.Fatalf("delivery-status block %q: %v", block, err)
		}
		hs = append(hs, h)
	}
	return hs
}

func TestInjection(t *testing.T) {
	r := report(Failed, injected)
	r.To = "alice@example.com\r\nBcc: victim@example.com"
	r.EnvelopeID = "id\nBcc: victim@example.com"
	out, err := Compose(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(out), "\r\n") {
		if strings.HasPrefix(strings.ToLower(line), "bcc:") {
			t.Errorf("injected line %q", line)
		}
		if line == "--evil" {
			t.Errorf("injected boundary-like line %q", line)
		}
	}
	m, err := message.Read(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	mr := m.MultipartReader()
	mr.NextPart()
	p, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(p.Body)
	blocks := dsnBlocks(t, body)
	if got, want := blocks[1].Get("Diagnostic-Code"), "smtp; 550 5.1.1 no such user  Bcc: victim@example.com --evil"; got != want {
		t.Errorf("Diagnostic-Code %q, want %q", got, want)
	}
}

func TestBoundaryAvoidsOriginal(t *testing.T) {
	r := report(Failed, remoteBob)
	r.ReturnFull = true
	r.Original = []byte(origMessage + "--0H5ZK3QW8T1VA.1700017200/mx.example.org\n")
	out, err := Compose(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out, []byte(`boundary="0H5ZK3QW8T1VA.1700017200/mx.example.org.1"`)) {
		t.Errorf("derived boundary not moved off the one in the original:\n%s", out)
	}

	r.Boundary = "0H5ZK3QW8T1VA.1700017200/mx.example.org"
	if _, err := Compose(r); err == nil {
		t.Error("a caller's boundary that occurs in the message was accepted")
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Report)
		want   string
	}{
		{"no recipients", func(r *Report) { r.Recipients = nil }, "dsn: no recipients"},
		{"no reporting MTA", func(r *Report) { r.ReportingMTA = "" }, "dsn: no reporting MTA"},
		{"bad reporting MTA", func(r *Report) { r.ReportingMTA = "mx example org" }, "dsn: invalid reporting MTA"},
		{"no queue id", func(r *Report) { r.QueueID = "" }, "dsn: no queue id"},
		{"bad queue id", func(r *Report) { r.QueueID = "A<B>" }, "dsn: invalid queue id"},
		{"no To", func(r *Report) { r.To = " <> " }, "dsn: no To address"},
		{"no date", func(r *Report) { r.Now = time.Time{} }, "dsn: no date"},
		{"bad kind", func(r *Report) { r.Kind = 7 }, "dsn: unknown kind 7"},
		{"no final", func(r *Report) { r.Recipients[0].Final = "" }, "dsn: recipient 1: no final address"},
		{"bad action", func(r *Report) { r.Recipients[0].Action = "bounced" }, "dsn: recipient 1: invalid action"},
		{"bad diagnostic type", func(r *Report) { r.Recipients[0].DiagnosticType = "smtp; x" }, "dsn: recipient 1: invalid diagnostic type"},
		{"bad boundary", func(r *Report) { r.Boundary = "a\"b" }, "dsn: invalid boundary"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := report(Failed, remoteBob)
			tc.change(r)
			_, err := Compose(r)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := Compose(nil); err == nil {
		t.Error("nil report accepted")
	}
}

func TestSubject(t *testing.T) {
	tests := []struct {
		kind Kind
		want string
	}{
		{Failed, "Undelivered Mail Returned to Sender"},
		{Delayed, "Delayed Mail (still being retried)"},
		{Delivered, "Successful Mail Delivery Report"},
		{Relayed, "Successful Mail Delivery Report"},
	}
	for _, tc := range tests {
		if got := Subject(tc.kind); got != tc.want {
			t.Errorf("Subject(%d) = %q, want %q", tc.kind, got, tc.want)
		}
	}
}

func TestStatusFallback(t *testing.T) {
	tests := []struct {
		action, status, want string
	}{
		{"failed", "", "5.0.0"},
		{"failed", "550", "5.0.0"},
		{"delayed", "", "4.0.0"},
		{"delivered", "2.1.5", "2.1.5"},
		{"relayed", "9.9.9", "2.0.0"},
		{"expanded", "", "2.0.0"},
		{"failed", "4.4.1", "4.4.1"}, // Postfix reports expired mail this way
	}
	for _, tc := range tests {
		c := &composer{r: &Report{Kind: Failed}}
		got, err := c.recipient(Recipient{Final: "a@b", Action: tc.action, Status: tc.status})
		if err != nil || got.Status != tc.want {
			t.Errorf("%s %q: Status %q (%v), want %q", tc.action, tc.status, got.Status, err, tc.want)
		}
	}
}

func TestWrap(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		width int
		want  []string
	}{
		{"short", "Status: 5.1.1", 79, []string{"Status: 5.1.1"}},
		{"at spaces", "aaaa bbbb cccc dddd", 10, []string{"aaaa bbbb", "    cccc", "    dddd"}},
		{"long word kept", "a " + strings.Repeat("x", 20) + " b", 10, []string{"a", "    " + strings.Repeat("x", 20), "    b"}},
		{"hard cut", strings.Repeat("y", 1000), 79, []string{strings.Repeat("y", 998), "    yy"}},
		{"hard cut at rune", strings.Repeat("y", 997) + "ü", 79, []string{strings.Repeat("y", 997), "    ü"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := wrap(tc.in, tc.width, 4)
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("wrap = %q, want %q", got, tc.want)
			}
		})
	}
}
