package cleanup

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
)

// arrival is a fixed arrival time in a named zone, so the dates cleanup
// writes are known in advance.
var arrival = time.Date(2024, 3, 5, 10, 11, 12, 0, time.FixedZone("CET", 3600))

// arrivalDate is arrival as the Received and Date fields write it.
const arrivalDate = "Tue, 05 Mar 2024 10:11:12 +0100 (CET)"

// client is a plain SMTP client outside networks.
var client = rules.Conn{IP: netip.MustParseAddr("192.0.2.10"), RDNS: "client.example.org", Helo: "helo.example.org"}

// msg is a complete client message with Message-ID and Date.
const msg = "From: Ann <ann@example.org>\r\nTo: bob@mx.test\r\nSubject: hi\r\n" +
	"Message-ID: <1@example.org>\r\nDate: Mon, 04 Mar 2024 09:00:00 +0000\r\n\r\nhello\r\n"

// bare is a message without Message-ID and Date.
const bare = "From: ann@example.org\r\nSubject: hi\r\n\r\nhello\r\n"

// env is a cleanup stage on a real queue with a real policy; submitted
// collects what cleanup handed to the scheduler.
type env struct {
	c *Cleanup
	q *queue.Queue
	p *rules.Policy

	mu        sync.Mutex
	submitted []*queue.Record
}

func newEnv(t *testing.T, conf string) *env {
	t.Helper()
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	q, err := queue.Open(t.TempDir(), discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	if conf == "" {
		conf = `config(hostname = "mx.test")`
	}
	p, err := rules.Load("test.star", []byte(conf))
	if err != nil {
		t.Fatalf("load policy: %v", err)
	}
	e := &env{q: q, p: p}
	e.c = New(func() *rules.Policy { return p }, q, func(r *queue.Record) {
		e.mu.Lock()
		e.submitted = append(e.submitted, r)
		e.mu.Unlock()
	}, discard)
	return e
}

func (e *env) submissions() []*queue.Record {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*queue.Record(nil), e.submitted...)
}

// inject queues sub and returns the stored record and message.
func (e *env) inject(t *testing.T, sub *Submission) (*queue.Record, string) {
	t.Helper()
	id, err := e.c.Inject(context.Background(), sub)
	if err != nil {
		t.Fatalf("Inject: %v", err)
	}
	if sub.ID != "" && id != sub.ID {
		t.Errorf("Inject returned id %s, want the given %s", id, sub.ID)
	}
	return e.stored(t, id)
}

func (e *env) stored(t *testing.T, id string) (*queue.Record, string) {
	t.Helper()
	rec, err := e.q.Get(id)
	if err != nil {
		t.Fatalf("Get %s: %v", id, err)
	}
	body, err := e.q.Body(id)
	if err != nil {
		t.Fatalf("Body %s: %v", id, err)
	}
	if rec.Size != int64(len(body)) {
		t.Errorf("record size %d, stored message is %d bytes", rec.Size, len(body))
	}
	return rec, string(body)
}

func smtpSub(data string, rcpts ...string) *Submission {
	sub := &Submission{Origin: SMTP, Sender: "ann@example.org", Client: client, Proto: "ESMTP",
		Arrival: arrival, Content: Whole([]byte(data))}
	for _, r := range rcpts {
		sub.Rcpts = append(sub.Rcpts, Rcpt{Addr: r})
	}
	return sub
}

func addrs(rec *queue.Record) []string {
	var out []string
	for _, r := range rec.Rcpts {
		out = append(out, r.Addr)
	}
	return out
}

// received is the Received line cleanup writes for client.
func received(proto, id, forLine string) string {
	s := "Received: from helo.example.org (client.example.org [192.0.2.10])\r\n\tby mx.test (larkpost) with " +
		proto + " id " + id
	if forLine != "" {
		s += "\r\n\tfor <" + forLine + ">"
	}
	return s + "; " + arrivalDate + "\r\n"
}

func TestInjectSMTPReceived(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		edit  func(*Submission)
		rcpts []string
		want  string // the Received line; ID stands for the queue id
	}{
		{name: "ESMTP, one recipient", rcpts: []string{"bob@mx.test"},
			want: received("ESMTP", "ID", "bob@mx.test")},
		{name: "two recipients: no for clause", rcpts: []string{"bob@mx.test", "carol@mx.test"},
			want: received("ESMTP", "ID", "")},
		{name: "no protocol word is SMTP", edit: func(s *Submission) { s.Proto = "" }, rcpts: []string{"bob@mx.test"},
			want: received("SMTP", "ID", "bob@mx.test")},
		{name: "SMTPUTF8", edit: func(s *Submission) { s.UTF8 = true }, rcpts: []string{"bob@mx.test"},
			want: received("UTF8ESMTP", "ID", "bob@mx.test")},
		{name: "TLS", edit: func(s *Submission) { s.Client.TLS = true }, rcpts: []string{"bob@mx.test"},
			want: received("ESMTPS", "ID", "bob@mx.test")},
		{name: "authenticated", edit: func(s *Submission) { s.Client.User = "ann" }, rcpts: []string{"bob@mx.test"},
			want: received("ESMTPA", "ID", "bob@mx.test")},
		{name: "TLS and authenticated", edit: func(s *Submission) { s.Client.TLS, s.Client.User = true, "ann" },
			rcpts: []string{"bob@mx.test"}, want: received("ESMTPSA", "ID", "bob@mx.test")},
		{name: "all three", edit: func(s *Submission) { s.UTF8, s.Client.TLS, s.Client.User = true, true, "ann" },
			rcpts: []string{"bob@mx.test"}, want: received("UTF8ESMTPSA", "ID", "bob@mx.test")},
		{name: "no HELO is unknown", edit: func(s *Submission) { s.Client.Helo = "" }, rcpts: []string{"bob@mx.test"},
			want: strings.Replace(received("ESMTP", "ID", "bob@mx.test"), "from helo.example.org", "from unknown", 1)},
		{name: "HELO cannot break the header", edit: func(s *Submission) { s.Client.Helo = "evil)\r\nX-Injected: (1" },
			rcpts: []string{"bob@mx.test"},
			want:  strings.Replace(received("ESMTP", "ID", "bob@mx.test"), "from helo.example.org", "from evil???X-Injected: ?1", 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, "")
			sub := smtpSub(msg, tt.rcpts...)
			if tt.edit != nil {
				tt.edit(sub)
			}
			rec, got := e.inject(t, sub)
			want := strings.Replace(tt.want, "ID", rec.ID, 1) + msg
			if got != want {
				t.Errorf("stored message\ngot  %q\nwant %q", got, want)
			}
			if rec.Client != "client.example.org[192.0.2.10]" || rec.Sender != "ann@example.org" || rec.State != queue.Active {
				t.Errorf("record client %q sender %q state %s", rec.Client, rec.Sender, rec.State)
			}
			if !rec.Arrival.Equal(arrival) || !rec.NextTry.Equal(arrival) {
				t.Errorf("arrival %v next try %v, want %v", rec.Arrival, rec.NextTry, arrival)
			}
			if rec.SMTPUTF8 != sub.UTF8 {
				t.Errorf("SMTPUTF8 %v, want %v", rec.SMTPUTF8, sub.UTF8)
			}
			if !reflect.DeepEqual(addrs(rec), tt.rcpts) {
				t.Errorf("recipients %v, want %v", addrs(rec), tt.rcpts)
			}
			if s := e.submissions(); len(s) != 1 || s[0].ID != rec.ID {
				t.Errorf("submitted %d records, want this one once", len(s))
			}
		})
	}
}

func TestInjectPrependsAndPrefix(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "")
	sub := smtpSub(msg, "bob@mx.test")
	sub.Effects = []rules.Decision{
		{Kind: rules.Prepend, Text: "X-First: 1"},
		{Kind: rules.Warn, Text: "only logged"},
		{Kind: rules.Prepend, Text: "X-Second: 2"},
	}
	sub.Prefix = []byte("X-Submitter: own\r\n")
	rec, got := e.inject(t, sub)
	want := received("ESMTP", rec.ID, "bob@mx.test") + "X-First: 1\r\nX-Second: 2\r\nX-Submitter: own\r\n" + msg
	if got != want {
		t.Errorf("stored message\ngot  %q\nwant %q", got, want)
	}
}

func TestInjectMissingHeaders(t *testing.T) {
	t.Parallel()
	const always = `config(hostname = "mx.test", always_add_missing_headers = True)`
	msgID := func(id string) string { return "Message-ID: <20240305091112." + id + "@mx.test>\r\n" }
	date := "Date: " + arrivalDate + "\r\n"
	tests := []struct {
		name       string
		conf       string
		origin     Origin
		inNetworks bool
		data       string
		wantID     bool
		wantDate   bool
	}{
		{name: "outside client: nothing added", data: bare},
		{name: "client in networks: both added", inNetworks: true, data: bare, wantID: true, wantDate: true},
		{name: "always_add_missing_headers: both added", conf: always, data: bare, wantID: true, wantDate: true},
		{name: "complete message: nothing added", conf: always, inNetworks: true, data: msg},
		{name: "only Date missing", inNetworks: true, wantDate: true,
			data: "From: ann@example.org\r\nMessage-ID: <x@y>\r\n\r\nhello\r\n"},
		{name: "only Message-ID missing", inNetworks: true, wantID: true,
			data: "From: ann@example.org\r\nDate: Mon, 04 Mar 2024 09:00:00 +0000\r\n\r\nhello\r\n"},
		{name: "field names are case-insensitive", conf: always,
			data: "message-id: <x@y>\r\nDATE: Mon, 04 Mar 2024 09:00:00 +0000\r\n\r\nhello\r\n"},
		{name: "a name in the body does not count", conf: always, wantID: true, wantDate: true,
			data: "From: ann@example.org\r\n\r\nMessage-ID: <x@y>\r\nDate: today\r\n"},
		{name: "sendmail: always added", origin: Sendmail, data: bare, wantID: true, wantDate: true},
		{name: "internal: never added", origin: Internal, conf: always, data: bare},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, tt.conf)
			sub := smtpSub(tt.data, "bob@mx.test", "carol@mx.test")
			sub.Origin, sub.Client.InNetworks, sub.UID = tt.origin, tt.inNetworks, 1000
			rec, got := e.inject(t, sub)
			var trace string
			switch tt.origin {
			case SMTP:
				trace = received("ESMTP", rec.ID, "")
			case Sendmail:
				trace = "Received: by mx.test (larkpost, from userid 1000)\r\n\tid " + rec.ID + "; " + arrivalDate + "\r\n"
			}
			added := ""
			if tt.wantID {
				added += msgID(rec.ID)
			}
			if tt.wantDate {
				added += date
			}
			if want := trace + added + tt.data; got != want {
				t.Errorf("stored message\ngot  %q\nwant %q", got, want)
			}
		})
	}
}

func TestInjectExpansion(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	aliases := filepath.Join(dir, "aliases")
	if err := os.WriteFile(aliases, []byte("staff: ann, bob\nrobot: |/usr/bin/robot\narchive: /var/archive\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		conf      string
		sender    string
		rcpts     []Rcpt
		want      []queue.Rcpt // Addr, Kind, Orig, Notify (Note checked for non-empty when set)
		wantSteps []queue.Step // the cleanup steps after the intake's
	}{
		{name: "no tables: recipients as given",
			rcpts: []Rcpt{{Addr: "bob@mx.test"}},
			want:  []queue.Rcpt{{Addr: "bob@mx.test", Orig: "bob@mx.test"}}},
		{name: "virtual alias to two addresses",
			conf:  `config(hostname = "mx.test", virtual_alias_maps = ["inline:{ { sales@lark.test = ann@mx.test, bob@mx.test } }"])`,
			rcpts: []Rcpt{{Addr: "sales@lark.test", Notify: []string{"SUCCESS"}}},
			want: []queue.Rcpt{{Addr: "ann@mx.test", Orig: "sales@lark.test", Notify: []string{"SUCCESS"}},
				{Addr: "bob@mx.test", Orig: "sales@lark.test", Notify: []string{"SUCCESS"}}},
			wantSteps: []queue.Step{{Stage: "expand", Arg: "sales@lark.test", Decision: "ann@mx.test, bob@mx.test"}}},
		{name: "ORCPT wins over the pre-expansion address",
			conf:      `config(hostname = "mx.test", virtual_alias_maps = ["inline:{sales@lark.test=ann@mx.test}"])`,
			rcpts:     []Rcpt{{Addr: "sales@lark.test", Orig: "rfc822;boss@lark.test"}},
			want:      []queue.Rcpt{{Addr: "ann@mx.test", Orig: "rfc822;boss@lark.test"}},
			wantSteps: []queue.Step{{Stage: "expand", Arg: "sales@lark.test", Decision: "ann@mx.test"}}},
		{name: "duplicates across recipients are dropped",
			conf:      `config(hostname = "mx.test", virtual_alias_maps = ["inline:{sales@lark.test=ann@mx.test}"])`,
			rcpts:     []Rcpt{{Addr: "sales@lark.test"}, {Addr: "ANN@mx.test"}},
			want:      []queue.Rcpt{{Addr: "ann@mx.test", Orig: "sales@lark.test"}},
			wantSteps: []queue.Step{{Stage: "expand", Arg: "sales@lark.test", Decision: "ann@mx.test"}}},
		{name: "local aliases: addresses, pipe and file",
			conf:  `config(hostname = "mx.test", alias_maps = ["` + aliases + `"])`,
			rcpts: []Rcpt{{Addr: "staff@mx.test"}, {Addr: "robot@mx.test"}, {Addr: "archive@mx.test"}},
			want: []queue.Rcpt{{Addr: "ann@mx.test", Orig: "staff@mx.test"}, {Addr: "bob@mx.test", Orig: "staff@mx.test"},
				{Addr: "/usr/bin/robot", Kind: "pipe", Orig: "robot@mx.test"},
				{Addr: "/var/archive", Kind: "file", Orig: "archive@mx.test"}},
			wantSteps: []queue.Step{{Stage: "expand", Arg: "staff@mx.test", Decision: "ann@mx.test, bob@mx.test"},
				{Stage: "expand", Arg: "robot@mx.test", Decision: "|/usr/bin/robot"},
				{Stage: "expand", Arg: "archive@mx.test", Decision: "/var/archive"}}},
		{name: "expansion over the limit: the recipient is kept to bounce",
			conf: `config(hostname = "mx.test", virtual_alias_expansion_limit = 1,
    virtual_alias_maps = ["inline:{ { sales@lark.test = ann@mx.test, bob@mx.test } }"])`,
			rcpts: []Rcpt{{Addr: "sales@lark.test"}},
			want:  []queue.Rcpt{{Addr: "sales@lark.test", Kind: "error", Orig: "sales@lark.test"}}},
		{name: "canonical envelope rewriting",
			conf:   `config(hostname = "mx.test", canonical_maps = ["inline:{ann@old.test=ann@example.org, bob@old.test=bob@mx.test}"])`,
			sender: "ann@old.test",
			rcpts:  []Rcpt{{Addr: "bob@old.test"}},
			want:   []queue.Rcpt{{Addr: "bob@mx.test", Orig: "bob@old.test"}},
			wantSteps: []queue.Step{{Stage: "rewrite", Arg: "ann@old.test", Decision: "ann@example.org"},
				{Stage: "rewrite", Arg: "bob@old.test", Decision: "bob@mx.test"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, tt.conf)
			sub := smtpSub(msg)
			sub.Rcpts = tt.rcpts
			if tt.sender != "" {
				sub.Sender = tt.sender
			}
			intake := rules.Step{Stage: rules.StageRcpt, Arg: tt.rcpts[0].Addr,
				Decision: rules.Decision{Kind: rules.Accept, Source: "test.star:1"}}
			sub.Decisions = []rules.Step{intake}
			rec, _ := e.inject(t, sub)
			if len(rec.Rcpts) != len(tt.want) {
				t.Fatalf("recipients %+v, want %+v", rec.Rcpts, tt.want)
			}
			for i, w := range tt.want {
				r := rec.Rcpts[i]
				if r.Addr != w.Addr || r.Kind != w.Kind || r.Orig != w.Orig || !reflect.DeepEqual(r.Notify, w.Notify) || r.State != queue.Pending {
					t.Errorf("recipient %d: %+v, want %+v", i, r, w)
				}
				if r.Kind == "error" && !strings.Contains(r.Note, "unreasonable alias expansion") {
					t.Errorf("recipient %d: error note %q", i, r.Note)
				}
				for _, st := range tt.wantSteps {
					if st.Stage == "expand" && st.Arg == r.Orig && r.Note == "" {
						t.Errorf("recipient %d: expanded without saying by what", i)
					}
				}
			}
			if tt.sender != "" && rec.Sender != "ann@example.org" {
				t.Errorf("sender %q, want the canonical ann@example.org", rec.Sender)
			}
			if len(rec.Log) != 1+len(tt.wantSteps) {
				t.Fatalf("log %+v, want the intake step and %+v", rec.Log, tt.wantSteps)
			}
			if l := rec.Log[0]; l != (queue.Step{Stage: "rcpt", Arg: tt.rcpts[0].Addr, Decision: "accept", Source: "test.star:1"}) {
				t.Errorf("intake step %+v", l)
			}
			for i, w := range tt.wantSteps {
				l := rec.Log[1+i]
				if l.Stage != w.Stage || l.Arg != w.Arg || l.Decision != w.Decision || l.Source == "" {
					t.Errorf("log step %d: %+v, want %+v with a source", 1+i, l, w)
				}
			}
		})
	}
}

func TestInjectRedirectBcc(t *testing.T) {
	t.Parallel()
	redirect := func(a string) rules.Decision {
		return rules.Decision{Kind: rules.Redirect, Text: a, Source: "test.star:2"}
	}
	bcc := func(a string) rules.Decision { return rules.Decision{Kind: rules.Bcc, Text: a, Source: "test.star:3"} }
	tests := []struct {
		name    string
		effects []rules.Decision
		want    []string
	}{
		{name: "none", want: []string{"bob@mx.test", "carol@mx.test"}},
		{name: "redirect replaces the recipients", effects: []rules.Decision{redirect("jail@mx.test")},
			want: []string{"jail@mx.test"}},
		{name: "bcc adds one", effects: []rules.Decision{bcc("archive@mx.test")},
			want: []string{"bob@mx.test", "carol@mx.test", "archive@mx.test"}},
		{name: "bcc of a recipient is not added twice", effects: []rules.Decision{bcc("BOB@mx.test")},
			want: []string{"bob@mx.test", "carol@mx.test"}},
		{name: "the same bcc twice is one", effects: []rules.Decision{bcc("archive@mx.test"), bcc("Archive@mx.test")},
			want: []string{"bob@mx.test", "carol@mx.test", "archive@mx.test"}},
		{name: "redirect then bcc", effects: []rules.Decision{redirect("jail@mx.test"), bcc("archive@mx.test")},
			want: []string{"jail@mx.test", "archive@mx.test"}},
		{name: "bcc of the redirect address", effects: []rules.Decision{redirect("jail@mx.test"), bcc("jail@mx.test")},
			want: []string{"jail@mx.test"}},
		{name: "a replaced recipient may come back as bcc", effects: []rules.Decision{redirect("jail@mx.test"), bcc("bob@mx.test")},
			want: []string{"jail@mx.test", "bob@mx.test"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, "")
			sub := smtpSub(msg, "bob@mx.test", "carol@mx.test")
			sub.Effects = tt.effects
			rec, got := e.inject(t, sub)
			if !reflect.DeepEqual(addrs(rec), tt.want) {
				t.Errorf("recipients %v, want %v", addrs(rec), tt.want)
			}
			for _, r := range rec.Rcpts {
				if r.State != queue.Pending {
					t.Errorf("%s is %s, want pending", r.Addr, r.State)
				}
			}
			// The trace line names the envelope as the client gave it.
			if !strings.HasPrefix(got, received("ESMTP", rec.ID, "")) {
				t.Errorf("stored message starts %q", got[:min(len(got), 200)])
			}
		})
	}
}

func TestInjectHold(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, reason, want string
	}{
		{"with a reason", "quarantine", "held by policy: quarantine"},
		{"without a reason", "", "held by policy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, "")
			sub := smtpSub(msg, "bob@mx.test")
			sub.Hold, sub.HoldReason = true, tt.reason
			rec, got := e.inject(t, sub)
			if rec.State != queue.Hold || rec.HoldReason != tt.want {
				t.Errorf("state %s, reason %q; want hold, %q", rec.State, rec.HoldReason, tt.want)
			}
			if got != received("ESMTP", rec.ID, "bob@mx.test")+msg {
				t.Errorf("stored message %q", got)
			}
			if s := e.submissions(); len(s) != 0 {
				t.Errorf("a held message went to the scheduler")
			}
			due, err := e.q.Due(arrival.Add(time.Hour), 10, nil)
			if err != nil || len(due) != 0 {
				t.Errorf("a held message is due: %v %v", due, err)
			}
		})
	}
}

func TestInjectHeaderRewrite(t *testing.T) {
	t.Parallel()
	const conf = `config(hostname = "mx.test", canonical_maps = ["inline:{ann@old.test=ann@example.org, bob@old.test=bob@mx.test}"])`
	big := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", queue.InlineMax/64+100)
	tests := []struct {
		name, data, want string // want: the message after the trace lines
	}{
		{name: "From rewritten in place",
			data: "Received: from elsewhere\r\nFrom: Ann <ann@old.test>\r\nSubject: x\r\n\r\nFrom: ann@old.test\r\n",
			want: "Received: from elsewhere\r\nFrom: \"Ann\" <ann@example.org>\r\nSubject: x\r\n\r\nFrom: ann@old.test\r\n"},
		{name: "recipient fields too",
			data: "From: ann@example.org\r\nTo: bob@old.test,\r\n carol@mx.test\r\nCc: bob@old.test\r\n\r\nbody\r\n",
			want: "From: ann@example.org\r\nTo: <bob@mx.test>, <carol@mx.test>\r\nCc: <bob@mx.test>\r\n\r\nbody\r\n"},
		{name: "nothing to rewrite keeps the bytes",
			data: "From:   ann@example.org\r\nTo: carol@mx.test\r\n\r\nbody\r\n",
			want: "From:   ann@example.org\r\nTo: carol@mx.test\r\n\r\nbody\r\n"},
		{name: "a large message keeps its body",
			data: "From: ann@old.test\r\nSubject: big\r\n\r\n" + big,
			want: "From: <ann@example.org>\r\nSubject: big\r\n\r\n" + big},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, conf)
			rec, got := e.inject(t, smtpSub(tt.data, "carol@mx.test"))
			if want := received("ESMTP", rec.ID, "carol@mx.test") + tt.want; got != want {
				if len(want) > 400 {
					t.Errorf("stored message differs (%d bytes, want %d), starts %q", len(got), len(want), got[:min(len(got), 300)])
				} else {
					t.Errorf("stored message\ngot  %q\nwant %q", got, want)
				}
			}
			if large := len(tt.data) > queue.InlineMax; rec.BodyFile != large {
				t.Errorf("body file %v, want %v", rec.BodyFile, large)
			}
		})
	}
}

// A header rewrite of a message spooled to a body file replaces the
// client's header with the rewritten one; the file is not copied.
func TestInjectSpooledHeaderRewrite(t *testing.T) {
	t.Parallel()
	e := newEnv(t, `config(hostname = "mx.test", canonical_maps = ["inline:{ann@old.test=ann@example.org}"])`)
	head := "From: ann@old.test\r\nSubject: spooled\r\n"
	data := head + "\r\n" + strings.Repeat("x", 200) + "\r\n"
	id := queue.NewID()
	f, err := e.q.CreateBody(id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(data)); err != nil {
		t.Fatal(err)
	}
	sub := smtpSub("", "carol@mx.test")
	sub.ID = id
	sub.Content = &Content{Header: []byte(head), File: f, Size: int64(len(data))}
	rec, got := e.inject(t, sub)
	want := received("ESMTP", id, "carol@mx.test") + "From: <ann@example.org>\r\nSubject: spooled\r\n" + data[len(head):]
	if got != want {
		t.Errorf("stored message\ngot  %q\nwant %q", got, want)
	}
	if !rec.BodyFile || rec.BodySkip != int64(len(head)) {
		t.Errorf("body file %v skip %d, want true and %d", rec.BodyFile, rec.BodySkip, len(head))
	}
}

func TestInjectSpooled(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "")
	id := queue.NewID()
	f, err := e.q.CreateBody(id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	sub := smtpSub("", "bob@mx.test")
	sub.ID = id
	sub.Content = &Content{Header: []byte(msg[:HeaderLen([]byte(msg))]), File: f, Size: int64(len(msg))}
	rec, got := e.inject(t, sub)
	if want := received("ESMTP", id, "bob@mx.test") + msg; got != want {
		t.Errorf("stored message\ngot  %q\nwant %q", got, want)
	}
	if !rec.BodyFile || rec.BodySkip != 0 {
		t.Errorf("body file %v skip %d, want a body file from 0", rec.BodyFile, rec.BodySkip)
	}
}

func TestInjectPolicyFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "config(hostname = \"mx.test\")\n\ndef rewrite(addr, ctx):\n    return {}[\"nope\"]\n")
	sub := smtpSub(msg, "bob@mx.test")
	sub.ID = queue.NewID()
	_, err := e.c.Inject(context.Background(), sub)
	if !errors.Is(err, ErrPolicy) {
		t.Fatalf("Inject: %v, want ErrPolicy", err)
	}
	if _, err := e.q.Get(sub.ID); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("a refused message is in the queue: %v", err)
	}
	if len(e.submissions()) != 0 {
		t.Errorf("a refused message went to the scheduler")
	}
}

func TestInjectInternal(t *testing.T) {
	t.Parallel()
	// The tables would expand and rewrite, were this an SMTP message.
	e := newEnv(t, `config(hostname = "mx.test", always_add_missing_headers = True,
    canonical_maps = ["inline:{ann@old.test=ann@example.org}"],
    virtual_alias_maps = ["inline:{sales@lark.test=ann@mx.test}"])`)
	log := []queue.Step{{Stage: "notice", Arg: "software", Decision: "postmaster notice", Source: "notify_classes"}}
	data := "From: ann@old.test\r\nSubject: internal\r\n\r\nbody\r\n"
	sub := &Submission{Origin: Internal, Sender: "ann@old.test", Arrival: arrival, Client: client,
		Rcpts: []Rcpt{{Addr: "sales@lark.test", Orig: "boss@lark.test", Notify: []string{"NEVER"}}, {Addr: "bob@mx.test"}},
		Log:   log, Prefix: []byte("Delivered-To: sales@lark.test\r\n"), Content: Whole([]byte(data)),
		Effects: []rules.Decision{{Kind: rules.Redirect, Text: "jail@mx.test"}}}
	rec, got := e.inject(t, sub)
	if got != "Delivered-To: sales@lark.test\r\n"+data {
		t.Errorf("stored message %q, want the prefix and the message only", got)
	}
	want := []queue.Rcpt{{Addr: "sales@lark.test", Orig: "boss@lark.test", Notify: []string{"NEVER"}, State: queue.Pending},
		{Addr: "bob@mx.test", State: queue.Pending}}
	if !reflect.DeepEqual(rec.Rcpts, want) {
		t.Errorf("recipients %+v, want %+v", rec.Rcpts, want)
	}
	if !reflect.DeepEqual(rec.Log, log) {
		t.Errorf("log %+v, want %+v", rec.Log, log)
	}
	if rec.Sender != "ann@old.test" || rec.Client != "local" {
		t.Errorf("sender %q client %q, want them untouched and local", rec.Sender, rec.Client)
	}
	if s := e.submissions(); len(s) != 1 || s[0].ID != rec.ID {
		t.Errorf("submitted %v, want this message once", s)
	}
}

func TestInjectLargeWhole(t *testing.T) {
	t.Parallel()
	big := []byte("Subject: big\r\n\r\n" + strings.Repeat("line of a large message\r\n", queue.InlineMax/25+10))
	for _, origin := range []Origin{Internal, SMTP} {
		e := newEnv(t, "")
		sub := smtpSub(string(big), "bob@mx.test")
		sub.Origin = origin
		rec, got := e.inject(t, sub)
		if !rec.BodyFile {
			t.Errorf("origin %d: a %d-byte message stored inline", origin, len(big))
		}
		prefix := ""
		if origin == SMTP {
			prefix = received("ESMTP", rec.ID, "bob@mx.test")
		}
		if got != prefix+string(big) {
			t.Errorf("origin %d: stored message differs: %d bytes, want %d", origin, len(got), len(prefix)+len(big))
		}
		b, err := e.q.OpenBody(rec)
		if err != nil {
			t.Fatal(err)
		}
		all, err := io.ReadAll(b.Reader())
		b.Close()
		if err != nil || !bytes.Equal(all, []byte(prefix+string(big))) {
			t.Errorf("origin %d: streamed body differs (%d bytes, err %v)", origin, len(all), err)
		}
	}
}

func TestInjectCopy(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "")
	big := "Subject: big\r\n\r\n" + strings.Repeat("y", queue.InlineMax+10)
	for _, data := range []string{msg, big} {
		first, _ := e.inject(t, &Submission{Origin: Internal, Sender: "ann@example.org", Arrival: arrival,
			Rcpts: []Rcpt{{Addr: "bob@mx.test"}}, Content: Whole([]byte(data))})
		b, err := e.q.OpenBody(first)
		if err != nil {
			t.Fatal(err)
		}
		rec, got := e.inject(t, &Submission{Origin: Internal, Sender: "bob@mx.test", Arrival: arrival,
			Rcpts: []Rcpt{{Addr: "carol@mx.test"}}, Prefix: []byte("Delivered-To: bob@mx.test\r\n"), Copy: b})
		b.Close()
		if got != "Delivered-To: bob@mx.test\r\n"+data {
			t.Errorf("copy of a %d-byte message differs: %d bytes", len(data), len(got))
		}
		if rec.BodyFile != first.BodyFile {
			t.Errorf("copy body file %v, original %v", rec.BodyFile, first.BodyFile)
		}
	}
}

func TestPrepareQueued(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "")
	data := []byte("Subject: report\r\n\r\nbody\r\n")
	log := []queue.Step{{Stage: "bounce", Arg: "X", Decision: "Undelivered Mail Returned to Sender", Source: "scheduler"}}
	p, err := e.c.Prepare(&Submission{Origin: Internal, Arrival: arrival, Rcpts: []Rcpt{{Addr: "ann@example.org"}},
		Log: log, Prefix: []byte("X-Pre: 1\r\n"), Content: Whole(data)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.q.Get(p.Rec.ID); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("prepared message stored before the commit: %v", err)
	}
	if len(e.submissions()) != 0 {
		t.Errorf("prepared message submitted before Queued")
	}
	if err := e.q.Commit(context.Background(), p.Size, p.Op); err != nil {
		t.Fatal(err)
	}
	e.c.Queued(p)
	rec, got := e.stored(t, p.Rec.ID)
	if got != "X-Pre: 1\r\n"+string(data) {
		t.Errorf("stored message %q", got)
	}
	if rec.Sender != "" || !reflect.DeepEqual(rec.Log, log) || !reflect.DeepEqual(addrs(rec), []string{"ann@example.org"}) {
		t.Errorf("record %+v", rec)
	}
	if s := e.submissions(); len(s) != 1 || s[0] != p.Rec {
		t.Errorf("submitted %d records, want the prepared one once", len(s))
	}
}

func TestPrepareRefuses(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "")
	f, err := e.q.CreateBody(queue.NewID())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Discard()
	rcpts := []Rcpt{{Addr: "ann@example.org"}}
	tests := []struct {
		name string
		sub  *Submission
	}{
		{"SMTP origin", &Submission{Origin: SMTP, Client: client, Rcpts: rcpts, Content: Whole([]byte(msg))}},
		{"sendmail origin", &Submission{Origin: Sendmail, Rcpts: rcpts, Content: Whole([]byte(msg))}},
		{"no content", &Submission{Origin: Internal, Rcpts: rcpts}},
		{"spooled content", &Submission{Origin: Internal, Rcpts: rcpts, Content: &Content{File: f}}},
	}
	for _, tt := range tests {
		if p, err := e.c.Prepare(tt.sub); err == nil || p != nil {
			t.Errorf("%s: Prepare gave %v, %v; want an error", tt.name, p, err)
		}
	}
}

func TestWhole(t *testing.T) {
	t.Parallel()
	c := Whole([]byte(msg))
	if string(c.Header) != msg[:strings.Index(msg, "\r\n\r\n")+2] || string(c.Data) != msg || c.Size != int64(len(msg)) || c.File != nil {
		t.Errorf("Whole: header %q size %d", c.Header, c.Size)
	}
	if got := fieldValue([]byte("Subject: a\r\nMessage-ID:\r\n <x@y>\r\n"), "message-id"); got != "<x@y>" {
		t.Errorf("folded Message-ID read as %q", got)
	}
	if got := fieldValue([]byte("Subject: a\r\n"), "message-id"); got != "" {
		t.Errorf("missing Message-ID read as %q", got)
	}
}

// A failing rewrite hook in the header leaves the field as it came:
// rewriting never loses mail.
func TestInjectHeaderRewriteFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "config(hostname = \"mx.test\")\n\ndef rewrite(addr, ctx):\n"+
		"    if ctx.header == \"To\":\n        return {}[\"nope\"]\n"+
		"    if ctx.header == \"From\":\n        return \"ann@example.org\"\n    return None\n")
	data := "From: ann@old.test\r\nTo: bob@mx.test\r\n\r\nbody\r\n"
	rec, got := e.inject(t, smtpSub(data, "bob@mx.test"))
	want := received("ESMTP", rec.ID, "bob@mx.test") + "From: <ann@example.org>\r\nTo: bob@mx.test\r\n\r\nbody\r\n"
	if got != want {
		t.Errorf("stored message\ngot  %q\nwant %q", got, want)
	}
}

// A full queue file system refuses the message with ErrNoSpace, whether
// it would be stored inline or in a body file, and nothing is queued.
func TestInjectNoSpace(t *testing.T) {
	t.Parallel()
	var free atomic.Int64
	free.Store(2 << 20) // enough to open, not to write
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	q, err := queue.OpenWith(dir, queue.Options{Log: discard, Statfs: func(string) (int64, error) { return free.Load(), nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	p, err := rules.Load("test.star", []byte(`config(hostname = "mx.test")`))
	if err != nil {
		t.Fatal(err)
	}
	submitted := 0
	c := New(func() *rules.Policy { return p }, q, func(*queue.Record) { submitted++ }, discard)
	big := "Subject: big\r\n\r\n" + strings.Repeat("z", queue.InlineMax+1)
	for _, data := range []string{msg, big} {
		sub := smtpSub(data, "bob@mx.test")
		sub.ID = queue.NewID()
		if _, err := c.Inject(context.Background(), sub); !errors.Is(err, queue.ErrNoSpace) {
			t.Errorf("%d-byte message on a full disk: %v, want ErrNoSpace", len(data), err)
		}
		if _, err := q.Get(sub.ID); !errors.Is(err, queue.ErrNotFound) {
			t.Errorf("%d-byte message stored on a full disk: %v", len(data), err)
		}
		if _, err := os.Stat(filepath.Join(dir, "bodies", sub.ID)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%d-byte message left a body file: %v", len(data), err)
		}
	}
	if submitted != 0 {
		t.Errorf("%d refused messages went to the scheduler", submitted)
	}
}

// An IPv6 client is named in the Received line by an RFC 5321 address
// literal, "[IPv6:2001:db8::25]" (TCP-info, section 4.4), as Postfix
// writes it (smtpd's rfc_addr); the record's client keeps the bare form
// of the log lines.
func TestInjectReceivedIPv6(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "")
	sub := smtpSub(msg, "bob@mx.test")
	sub.Client.IP = netip.MustParseAddr("2001:db8::25")
	rec, got := e.inject(t, sub)
	want := "Received: from helo.example.org (client.example.org [IPv6:2001:db8::25])\r\n"
	if !strings.HasPrefix(got, want) {
		t.Errorf("stored message starts %q, want %q", got[:strings.Index(got, "\r\n")+2], want)
	}
	if rec.Client != "client.example.org[2001:db8::25]" {
		t.Errorf("record client %q", rec.Client)
	}
}
