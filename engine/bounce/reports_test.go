package bounce

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/cleanup"
	"github.com/larkpost/larkpost/engine/dsn"
	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
)

// env is a cleanup stage on a real queue; submitted collects what went
// to the scheduler.
type env struct {
	q *queue.Queue
	c *cleanup.Cleanup

	mu        sync.Mutex
	submitted []*queue.Record
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func newEnv(t *testing.T) *env {
	t.Helper()
	q, err := queue.Open(t.TempDir(), discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	p, err := rules.Load("test.star", []byte(`config(hostname = "mx.test")`))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{q: q}
	e.c = cleanup.New(func() *rules.Policy { return p }, q, func(r *queue.Record) {
		e.mu.Lock()
		e.submitted = append(e.submitted, r)
		e.mu.Unlock()
	}, discard)
	return e
}

func (e *env) submissions() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.submitted)
}

// queued lists the records in the queue.
func (e *env) queued(t *testing.T) []*queue.Record {
	t.Helper()
	var out []*queue.Record
	if err := e.q.Walk(func(r *queue.Record) bool { out = append(out, r); return true }); err != nil {
		t.Fatal(err)
	}
	return out
}

// message is an original held in memory.
type message []byte

func (m message) Head(n int64) []byte { return m[:min(n, int64(len(m)))] }
func (m message) Size() int64         { return int64(len(m)) }

const original = "Received: from client.example.org (client.example.org [192.0.2.10])\r\n" +
	"\tby mx.test (larkpost) with ESMTP id 0ORIGINAL00\r\n\tfor <bob@remote.test>; Tue, 05 Mar 2024 10:11:12 +0000 (UTC)\r\n" +
	"From: Ann <ann@example.org>\r\nTo: bob@remote.test\r\nSubject: the original\r\nMessage-ID: <orig.1@example.org>\r\n\r\n" +
	"the original body line\r\n"

// report is a DSN taken apart.
type report struct {
	header   mail.Header
	text     string                 // the human-readable part
	perMsg   textproto.MIMEHeader   // the per-message fields
	perRcpt  []textproto.MIMEHeader // the per-recipient fields
	origType string                 // the third part's type
	orig     string                 // the third part
}

func parseReport(t *testing.T, raw []byte) *report {
	t.Helper()
	m, err := mail.ReadMessage(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatalf("report is no message: %v\n%s", err, raw)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("report type %q %v: %v", mt, params, err)
	}
	r := &report{header: m.Header}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for i := 0; ; i++ {
		p, err := mr.NextPart()
		if err == io.EOF {
			if i != 3 {
				t.Fatalf("report has %d parts, want 3", i)
			}
			return r
		}
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		ct := p.Header.Get("Content-Type")
		switch i {
		case 0:
			if !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("first part is %s", ct)
			}
			r.text = string(b)
		case 1:
			if ct != "message/delivery-status" {
				t.Errorf("second part is %s", ct)
			}
			for j, block := range strings.Split(strings.TrimSpace(string(b)), "\r\n\r\n") {
				h, err := textproto.NewReader(bufio.NewReader(strings.NewReader(block + "\r\n\r\n"))).ReadMIMEHeader()
				if err != nil {
					t.Fatalf("delivery status block %d: %v", j, err)
				}
				if j == 0 {
					r.perMsg = h
				} else {
					r.perRcpt = append(r.perRcpt, h)
				}
			}
		case 2:
			r.origType, r.orig = ct, string(b)
		}
	}
}

// sent is one report as queued: its record and the message taken apart.
type sent struct {
	what string
	rec  *queue.Record
	rep  *report
}

// commit lands the prepared reports in one queue commit, as a delivery
// round does, and reads them back from the queue.
func (e *env) commit(t *testing.T, reps []Report) []sent {
	t.Helper()
	if len(reps) == 0 {
		return nil
	}
	var ops []queue.Op
	size := 0
	for _, r := range reps {
		ops = append(ops, r.Op)
		size += r.Size
	}
	if err := e.q.Commit(context.Background(), size, ops...); err != nil {
		t.Fatal(err)
	}
	var out []sent
	for _, r := range reps {
		e.c.Queued(r.Prepared)
		rec, err := e.q.Get(r.Rec.ID)
		if err != nil {
			t.Fatal(err)
		}
		body, err := e.q.Body(rec.ID)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, sent{what: r.What, rec: rec, rep: parseReport(t, body)})
	}
	return out
}

var (
	arrival = time.Date(2024, 3, 5, 10, 11, 12, 0, time.UTC)
	now     = arrival.Add(2 * time.Hour)
	tried   = now.Add(-time.Minute)
)

// remote is a remote server's refusal as the SMTP agent words it.
const remote = "host mx.remote.test[192.0.2.20] said: 550 5.1.1 <bob@remote.test>: User unknown (in reply to RCPT TO command)"

func rcpt(addr string, state queue.RcptState, status, reply string, notify ...string) queue.Rcpt {
	r := queue.Rcpt{Addr: addr, Orig: addr, State: state, Notify: notify}
	if status != "" {
		r.AddAttempt(queue.Attempt{Time: tried, Relay: "smtp", Status: status, Reply: reply})
	}
	return r
}

// wantRcpt is one recipient's per-recipient fields.
type wantRcpt struct {
	final, action, status, diag, remoteMTA, orig string
}

type wantReport struct {
	to, stage, what string
	kind            dsn.Kind
	rcpts           []wantRcpt
	text            string // in the human-readable part
	full            bool   // the whole original attached
}

func TestReports(t *testing.T) {
	t.Parallel()
	bobFailed := wantRcpt{final: "bob@remote.test", action: "failed", status: "5.1.1",
		diag: "smtp; 550 5.1.1 <bob@remote.test>: User unknown", remoteMTA: "dns; mx.remote.test"}
	bounced := []queue.Rcpt{rcpt("bob@remote.test", queue.Bounced, "5.1.1", remote)}
	toSender := wantReport{to: "ann@example.org", stage: "bounce", what: "sender non-delivery notification", kind: dsn.Failed,
		rcpts: []wantRcpt{bobFailed}, text: "<bob@remote.test>: 550 5.1.1 <bob@remote.test>: User unknown"}
	toPostmaster := func(to string) wantReport {
		w := toSender
		w.to, w.stage, w.what = to, "notice", "postmaster non-delivery notification"
		return w
	}
	delivered := func(notify ...string) []queue.Rcpt {
		return []queue.Rcpt{rcpt("bob@remote.test", queue.Sent, "2.0.0", "250 2.0.0 Ok: queued as X", notify...)}
	}
	tests := []struct {
		name       string
		sender     string
		firstStage string // the first step of the record's log
		retFull    bool
		rcpts      []queue.Rcpt
		out        Outcome
		cfg        Config
		want       []wantReport
	}{
		{name: "bounce to the sender", sender: "ann@example.org", rcpts: bounced, out: Outcome{Bounced: []int{0}},
			want: []wantReport{toSender}},
		{name: "a local failure is quoted as x-unix", sender: "ann@example.org",
			rcpts: []queue.Rcpt{rcpt("carol@mx.test", queue.Bounced, "5.2.2", "mailbox full")},
			out:   Outcome{Bounced: []int{0}},
			want: []wantReport{{to: "ann@example.org", stage: "bounce", what: "sender non-delivery notification", kind: dsn.Failed,
				rcpts: []wantRcpt{{final: "carol@mx.test", action: "failed", status: "5.2.2", diag: "x-unix; mailbox full"}},
				text:  "<carol@mx.test>: mailbox full"}}},
		{name: "only the bounced recipients are named", sender: "ann@example.org",
			rcpts: []queue.Rcpt{rcpt("carol@mx.test", queue.Pending, "4.2.0", "locked"), bounced[0], rcpt("dave@mx.test", queue.Sent, "2.0.0", "ok")},
			out:   Outcome{Bounced: []int{1}, Delivered: []int{2}}, want: []wantReport{toSender}},
		{name: "the original recipient is reported when it differs", sender: "ann@example.org",
			rcpts: []queue.Rcpt{func() queue.Rcpt { r := bounced[0]; r.Orig = "sales@example.org"; return r }()},
			out:   Outcome{Bounced: []int{0}},
			want: []wantReport{func() wantReport {
				w := toSender
				w.rcpts = []wantRcpt{bobFailed}
				w.rcpts[0].orig = "rfc822; sales@example.org"
				return w
			}()}},
		{name: "RET=FULL returns the message", sender: "ann@example.org", retFull: true, rcpts: bounced,
			out: Outcome{Bounced: []int{0}}, want: []wantReport{func() wantReport { w := toSender; w.full = true; return w }()}},
		{name: "NOTIFY=NEVER: no bounce", sender: "ann@example.org",
			rcpts: []queue.Rcpt{rcpt("bob@remote.test", queue.Bounced, "5.1.1", remote, "NEVER")}, out: Outcome{Bounced: []int{0}}},
		{name: "a bounce of a bounce is dropped", rcpts: bounced, out: Outcome{Bounced: []int{0}}},
		{name: "a bounce of a bounce goes to the postmaster with 2bounce", rcpts: bounced, out: Outcome{Bounced: []int{0}},
			cfg: Config{NotifyClasses: []string{"2bounce"}}, want: []wantReport{toPostmaster("postmaster@mx.test")}},
		{name: "2bounce goes to notify_recipient", rcpts: bounced, out: Outcome{Bounced: []int{0}},
			cfg:  Config{NotifyClasses: []string{"2bounce"}, NotifyRecipient: "admin"},
			want: []wantReport{toPostmaster("admin@mx.test")}},
		{name: "the bounce class copies the postmaster, header only", sender: "ann@example.org", retFull: true,
			rcpts: bounced, out: Outcome{Bounced: []int{0}}, cfg: Config{NotifyClasses: []string{"bounce"}},
			want: []wantReport{func() wantReport { w := toSender; w.full = true; return w }(), toPostmaster("postmaster@mx.test")}},
		{name: "a notice never bounces", firstStage: "notice", rcpts: bounced, out: Outcome{Bounced: []int{0}},
			cfg: Config{NotifyClasses: []string{"2bounce", "bounce"}}},
		{name: "a notice never gets a delay warning", firstStage: "notice",
			rcpts: []queue.Rcpt{rcpt("postmaster@mx.test", queue.Pending, "4.2.0", "locked")}, out: Outcome{Delayed: []int{0}},
			cfg: Config{NotifyClasses: []string{"2bounce", "delay"}}},
		{name: "delivered with NOTIFY=SUCCESS", sender: "ann@example.org", rcpts: delivered("SUCCESS", "FAILURE"),
			out: Outcome{Delivered: []int{0}},
			want: []wantReport{{to: "ann@example.org", stage: "bounce", what: "sender delivery status notification", kind: dsn.Delivered,
				rcpts: []wantRcpt{{final: "bob@remote.test", action: "delivered", status: "2.0.0", diag: "x-unix; 250 2.0.0 Ok: queued as X"}},
				text:  "<bob@remote.test>: 250 2.0.0 Ok: queued as X"}}},
		{name: "delivered without NOTIFY: nothing", sender: "ann@example.org", rcpts: delivered(), out: Outcome{Delivered: []int{0}}},
		{name: "delivered for the null sender: nothing", rcpts: delivered("SUCCESS"), out: Outcome{Delivered: []int{0}},
			cfg: Config{NotifyClasses: []string{"2bounce"}}},
		{name: "handed on to a DSN server: nothing", sender: "ann@example.org", rcpts: delivered("SUCCESS"),
			out: Outcome{Delivered: []int{0}, HandedOn: []int{0}}},
		{name: "relayed to a server without DSN", sender: "ann@example.org", rcpts: delivered("SUCCESS"),
			out: Outcome{Delivered: []int{0}, HandedOn: []int{0}, Relayed: []int{0}},
			want: []wantReport{{to: "ann@example.org", stage: "bounce", what: "sender delivery status notification", kind: dsn.Relayed,
				rcpts: []wantRcpt{{final: "bob@remote.test", action: "relayed", status: "2.0.0", diag: "x-unix; 250 2.0.0 Ok: queued as X"}}}}},
		{name: "delay warning", sender: "ann@example.org",
			rcpts: []queue.Rcpt{rcpt("bob@remote.test", queue.Pending, "4.4.1", "connect to mx.remote.test: timed out")},
			out:   Outcome{Delayed: []int{0}},
			want: []wantReport{{to: "ann@example.org", stage: "bounce", what: "sender delay notification", kind: dsn.Delayed,
				rcpts: []wantRcpt{{final: "bob@remote.test", action: "delayed", status: "4.4.1", diag: "x-unix; connect to mx.remote.test: timed out"}},
				text:  "THIS IS A WARNING ONLY"}}},
		{name: "delay warning copied with the delay class", sender: "ann@example.org",
			rcpts: []queue.Rcpt{rcpt("bob@remote.test", queue.Pending, "4.4.1", "timed out")},
			out:   Outcome{Delayed: []int{0}}, cfg: Config{NotifyClasses: []string{"delay", "bounce"}},
			want: []wantReport{
				{to: "ann@example.org", stage: "bounce", what: "sender delay notification", kind: dsn.Delayed,
					rcpts: []wantRcpt{{final: "bob@remote.test", action: "delayed", status: "4.4.1", diag: "x-unix; timed out"}}},
				// The log words of the copy are checked in TestReportsPostmasterDelayWords.
				{to: "postmaster@mx.test", stage: "notice", kind: dsn.Delayed,
					rcpts: []wantRcpt{{final: "bob@remote.test", action: "delayed", status: "4.4.1", diag: "x-unix; timed out"}}}}},
		{name: "bounce and success in one round", sender: "ann@example.org",
			rcpts: []queue.Rcpt{bounced[0], rcpt("carol@mx.test", queue.Sent, "2.0.0", "delivered to maildir", "SUCCESS")},
			out:   Outcome{Bounced: []int{0}, Delivered: []int{1}},
			want: []wantReport{toSender, {to: "ann@example.org", stage: "bounce", what: "sender delivery status notification", kind: dsn.Delivered,
				rcpts: []wantRcpt{{final: "carol@mx.test", action: "delivered", status: "2.0.0", diag: "x-unix; delivered to maildir"}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			tt.cfg.Hostname, tt.cfg.MaxLifetime = "mx.test", 5*24*time.Hour
			rec := &queue.Record{ID: queue.NewID(), Sender: tt.sender, Arrival: arrival, State: queue.Active,
				RetFull: tt.retFull, EnvID: "env-1", Rcpts: tt.rcpts}
			if tt.firstStage != "" {
				rec.Log = []queue.Step{{Stage: tt.firstStage, Arg: "x", Decision: "postmaster notice", Source: "notify_classes"}}
			} else if tt.sender == "" {
				rec.Log = []queue.Step{{Stage: "bounce", Arg: "0EARLIER0", Decision: "Undelivered Mail Returned to Sender", Source: "scheduler"}}
			}
			got := e.commit(t, Reports(&tt.cfg, e.c, discard, rec, message(original), tt.out, now))
			if len(got) != len(tt.want) {
				var tos []string
				for _, g := range got {
					tos = append(tos, g.rec.Rcpts[0].Addr+" "+g.rec.Log[0].Stage)
				}
				t.Fatalf("%d reports %v, want %d", len(got), tos, len(tt.want))
			}
			if n := e.submissions(); n != len(tt.want) {
				t.Errorf("%d reports went to the scheduler, want %d", n, len(tt.want))
			}
			ids := map[string]bool{}
			for i, w := range tt.want {
				g := got[i]
				checkReport(t, rec, g, w)
				// The reports to the sender differ in Message-Id (the
				// postmaster's copies: TestReportsCopyMessageID).
				if id := g.rep.header.Get("Message-Id"); w.stage == "bounce" {
					if id == "" || ids[id] {
						t.Errorf("report %d has Message-Id %q, used before or empty", i, id)
					}
					ids[id] = true
				}
			}
		})
	}
}

func checkReport(t *testing.T, orig *queue.Record, g sent, w wantReport) {
	t.Helper()
	rec, rep := g.rec, g.rep
	if rec.Sender != "" || rec.State != queue.Active || len(rec.Rcpts) != 1 || rec.Rcpts[0].Addr != w.to {
		t.Errorf("report record from <%s> to %v (%s), want from <> to %s", rec.Sender, rec.Rcpts, rec.State, w.to)
	}
	wantStep := queue.Step{Stage: w.stage, Arg: orig.ID, Decision: dsn.Subject(w.kind), Source: "scheduler"}
	if !reflect.DeepEqual(rec.Log, []queue.Step{wantStep}) {
		t.Errorf("report log %+v, want %+v", rec.Log, wantStep)
	}
	if w.what != "" && g.what != w.what {
		t.Errorf("report to %s logged as %q, want %q", w.to, g.what, w.what)
	}
	if !rec.Arrival.Equal(now) {
		t.Errorf("report arrival %v, want %v", rec.Arrival, now)
	}
	h := rep.header
	if h.Get("To") != w.to || h.Get("Subject") != dsn.Subject(w.kind) || h.Get("From") != "MAILER-DAEMON@mx.test (Mail Delivery System)" ||
		h.Get("Auto-Submitted") != "auto-replied" || h.Get("In-Reply-To") != "<orig.1@example.org>" {
		t.Errorf("report header To %q Subject %q From %q Auto-Submitted %q In-Reply-To %q", h.Get("To"), h.Get("Subject"),
			h.Get("From"), h.Get("Auto-Submitted"), h.Get("In-Reply-To"))
	}
	if !strings.Contains(rep.text, w.text) || !strings.Contains(rep.text, "This is the mail system at host mx.test.") {
		t.Errorf("human part does not say %q:\n%s", w.text, rep.text)
	}
	pm := rep.perMsg
	if pm.Get("Reporting-MTA") != "dns; mx.test" || pm.Get("X-Larkpost-Queue-ID") != orig.ID ||
		pm.Get("Original-Envelope-Id") != "env-1" || pm.Get("Arrival-Date") != "Tue, 5 Mar 2024 10:11:12 +0000" {
		t.Errorf("per-message fields %v", pm)
	}
	if len(rep.perRcpt) != len(w.rcpts) {
		t.Fatalf("%d recipients reported, want %d: %v", len(rep.perRcpt), len(w.rcpts), rep.perRcpt)
	}
	for i, wr := range w.rcpts {
		f := rep.perRcpt[i]
		// A long Diagnostic-Code is folded; unfolded it must match.
		diag := strings.Join(strings.Fields(f.Get("Diagnostic-Code")), " ")
		if f.Get("Final-Recipient") != "rfc822; "+wr.final || f.Get("Action") != wr.action || f.Get("Status") != wr.status ||
			diag != wr.diag || f.Get("Remote-MTA") != wr.remoteMTA || f.Get("Original-Recipient") != wr.orig ||
			f.Get("Last-Attempt-Date") != "Tue, 5 Mar 2024 12:10:12 +0000" {
			t.Errorf("recipient %d fields %v, want %+v", i, f, wr)
		}
		until := f.Get("Will-Retry-Until")
		if wr.action == "delayed" && until != "Sun, 10 Mar 2024 10:11:12 +0000" || wr.action != "delayed" && until != "" {
			t.Errorf("recipient %d: Will-Retry-Until %q", i, until)
		}
	}
	if w.full {
		if rep.origType != "message/rfc822" || rep.orig != original {
			t.Errorf("attached %s %q, want the whole message", rep.origType, rep.orig)
		}
	} else {
		head := original[:strings.Index(original, "\r\n\r\n")+2]
		if rep.origType != "text/rfc822-headers" || rep.orig != head {
			t.Errorf("attached %s %q, want the header %q", rep.origType, rep.orig, head)
		}
	}
}

// The postmaster's copy of a delay warning is logged with Postfix's
// words for it, "postmaster delay notification" (bounce_warn_service.c),
// not as a non-delivery notification.
func TestReportsPostmasterDelayWords(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rec := &queue.Record{ID: queue.NewID(), Sender: "ann@example.org", Arrival: arrival, State: queue.Deferred,
		Rcpts: []queue.Rcpt{rcpt("bob@remote.test", queue.Pending, "4.4.1", "timed out")}}
	cfg := &Config{Hostname: "mx.test", MaxLifetime: time.Hour, NotifyClasses: []string{"delay"}}
	reps := Reports(cfg, e.c, discard, rec, message(original), Outcome{Delayed: []int{0}}, now)
	if len(reps) != 2 {
		t.Fatalf("%d reports, want the warning and its copy", len(reps))
	}
	if reps[1].What != "postmaster delay notification" {
		t.Errorf("copy logged as %q, want \"postmaster delay notification\"", reps[1].What)
	}
}

// Without the original (its body gone), a report still goes out, with
// Postfix's placeholder.
func TestReportsWithoutOriginal(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rec := &queue.Record{ID: queue.NewID(), Sender: "ann@example.org", Arrival: arrival,
		Rcpts: []queue.Rcpt{rcpt("bob@remote.test", queue.Bounced, "5.1.1", remote)}}
	cfg := &Config{Hostname: "mx.test"}
	got := e.commit(t, Reports(cfg, e.c, discard, rec, nil, Outcome{Bounced: []int{0}}, now))
	if len(got) != 1 {
		t.Fatalf("%d reports, want 1", len(got))
	}
	if !strings.Contains(got[0].rep.orig, "--- Undelivered message unavailable ---") {
		t.Errorf("attached %q, want the placeholder", got[0].rep.orig)
	}
}

// A report that cannot be composed (a queue id DSNs refuse) is logged and
// skipped: the delivery round goes on without it.
func TestReportsUncomposable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rec := &queue.Record{ID: "bad id", Sender: "ann@example.org", Arrival: arrival,
		Rcpts: []queue.Rcpt{rcpt("bob@remote.test", queue.Bounced, "5.1.1", remote)}}
	if reps := Reports(&Config{Hostname: "mx.test"}, e.c, discard, rec, message(original), Outcome{Bounced: []int{0}}, now); len(reps) != 0 {
		t.Errorf("%d reports for an uncomposable DSN, want none", len(reps))
	}
}

func TestPostmaster(t *testing.T) {
	t.Parallel()
	tests := []struct{ recipient, want string }{
		{"", "postmaster@mx.test"},
		{"admin", "admin@mx.test"},
		{"ops@example.org", "ops@example.org"},
	}
	for _, tt := range tests {
		c := &Config{Hostname: "mx.test", NotifyRecipient: tt.recipient}
		if got := c.Postmaster(); got != tt.want {
			t.Errorf("notify_recipient %q: postmaster %q, want %q", tt.recipient, got, tt.want)
		}
	}
}

func TestIsNotice(t *testing.T) {
	t.Parallel()
	tests := []struct {
		log  []queue.Step
		want bool
	}{
		{nil, false},
		{[]queue.Step{{Stage: "notice"}}, true},
		{[]queue.Step{{Stage: "bounce"}}, false},
		{[]queue.Step{{Stage: "rcpt"}, {Stage: "notice"}}, false},
	}
	for _, tt := range tests {
		if got := IsNotice(&queue.Record{Log: tt.log}); got != tt.want {
			t.Errorf("IsNotice(%v) = %v, want %v", tt.log, got, tt.want)
		}
	}
}

// notices lists the postmaster notices in the queue, by class.
func (e *env) notices(t *testing.T) map[string][]*queue.Record {
	t.Helper()
	out := map[string][]*queue.Record{}
	for _, r := range e.queued(t) {
		if len(r.Log) > 0 && r.Log[0].Stage == "notice" {
			out[r.Log[0].Arg] = append(out[r.Log[0].Arg], r)
		}
	}
	return out
}

func TestNotifier(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		classes []string
		calls   []string // classes notified, in order
		want    map[string]int
	}{
		{name: "one notice", classes: []string{"software"}, calls: []string{"software"}, want: map[string]int{"software": 1}},
		{name: "twice within a minute is one", classes: []string{"software"}, calls: []string{"software", "software"},
			want: map[string]int{"software": 1}},
		{name: "a class not in notify_classes", classes: []string{"software"}, calls: []string{"resource", "policy"},
			want: map[string]int{}},
		{name: "no notify_classes", calls: []string{"software"}, want: map[string]int{}},
		{name: "classes are independent", classes: []string{"software", "resource"},
			calls: []string{"software", "resource", "software", "resource"}, want: map[string]int{"software": 1, "resource": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			n := &Notifier{Config: func() *Config { return &Config{Hostname: "mx.test", NotifyClasses: tt.classes} },
				Cleanup: e.c, Log: discard}
			for _, c := range tt.calls {
				n.Notify(c, c+" trouble\nsecond line")
			}
			got := e.notices(t)
			for class, want := range tt.want {
				if len(got[class]) != want {
					t.Errorf("%d %s notices, want %d", len(got[class]), class, want)
				}
			}
			total, want := 0, 0
			for _, rs := range got {
				total += len(rs)
			}
			for _, w := range tt.want {
				want += w
			}
			if total != want || len(e.queued(t)) != want || e.submissions() != want {
				t.Errorf("%d notices, %d messages queued, %d submitted; want %d", total, len(e.queued(t)), e.submissions(), want)
			}
		})
	}
}

// A notice is a message to the postmaster from <>, with the text; the
// ones held back within the minute are counted into the next.
func TestNotifierMessage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := &Notifier{Config: func() *Config {
		return &Config{Hostname: "mx.test", NotifyClasses: []string{"policy"}, NotifyRecipient: "admin"}
	}, Cleanup: e.c, Log: discard}
	n.Notify("policy", "first\nproblem")
	n.Notify("policy", "second")
	n.Notify("policy", "third")
	recs := e.notices(t)["policy"]
	if len(recs) != 1 {
		t.Fatalf("%d notices, want 1", len(recs))
	}
	rec := recs[0]
	want := queue.Step{Stage: "notice", Arg: "policy", Decision: "postmaster notice", Source: "notify_classes"}
	if rec.Sender != "" || len(rec.Rcpts) != 1 || rec.Rcpts[0].Addr != "admin@mx.test" || !reflect.DeepEqual(rec.Log, []queue.Step{want}) {
		t.Errorf("notice record from <%s> to %v log %+v", rec.Sender, rec.Rcpts, rec.Log)
	}
	body, err := e.q.Body(rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	m, err := mail.ReadMessage(strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(m.Body)
	if m.Header.Get("To") != "<admin@mx.test>" || m.Header.Get("Subject") != "Postmaster notice: policy problem on mx.test" ||
		m.Header.Get("Message-Id") != "<"+rec.ID+".notice@mx.test>" || m.Header.Get("Auto-Submitted") != "auto-generated" {
		t.Errorf("notice header %v", m.Header)
	}
	if _, err := mail.ParseDate(m.Header.Get("Date")); err != nil {
		t.Errorf("notice Date %q: %v", m.Header.Get("Date"), err)
	}
	if string(text) != "The mail system at mx.test reports a policy problem:\r\n\r\nfirst\r\nproblem\r\n" {
		t.Errorf("notice text %q", text)
	}
	// A minute later the next notice goes out and counts the two held back.
	n.mu.Lock()
	n.last["policy"] = n.last["policy"].Add(-time.Minute)
	n.mu.Unlock()
	n.Notify("policy", "fourth")
	recs = e.notices(t)["policy"]
	if len(recs) != 2 {
		t.Fatalf("%d notices after a minute, want 2", len(recs))
	}
	var later string
	for _, r := range recs {
		if r.ID != rec.ID {
			b, err := e.q.Body(r.ID)
			if err != nil {
				t.Fatal(err)
			}
			later = string(b)
		}
	}
	if !strings.Contains(later, "\r\n\r\nfourth\r\n\r\n(and 2 more of this class in the last minute, not sent separately)\r\n") {
		t.Errorf("later notice does not count the held-back ones:\n%s", later)
	}
}

// Notices from many goroutines at once: still one per class per minute.
func TestNotifierConcurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := &Notifier{Config: func() *Config { return &Config{Hostname: "mx.test", NotifyClasses: []string{"resource", "software"}} },
		Cleanup: e.c, Log: discard}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.Notify([]string{"resource", "software"}[i%2], "disk full")
		}()
	}
	wg.Wait()
	got := e.notices(t)
	if len(got["resource"]) != 1 || len(got["software"]) != 1 || len(e.queued(t)) != 2 {
		t.Errorf("%d resource and %d software notices, %d messages; want one each", len(got["resource"]), len(got["software"]), len(e.queued(t)))
	}
}

// Every report is a message of its own and needs a Message-Id of its own
// (RFC 5322 3.6.4): the postmaster's copy of a bounce or delay warning is
// not the sender's report (it has another To: and only the header of the
// original), and when both land in one mailbox (the sender is the
// postmaster, or notify_recipient forwards to the sender) duplicate
// elimination drops one of them.
func TestReportsCopyMessageID(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"bounce", "delay"} {
		e := newEnv(t)
		rec := &queue.Record{ID: queue.NewID(), Sender: "ann@example.org", Arrival: arrival,
			Rcpts: []queue.Rcpt{rcpt("bob@remote.test", queue.Bounced, "5.1.1", remote)}}
		out := Outcome{Bounced: []int{0}}
		if kind == "delay" {
			rec.Rcpts[0] = rcpt("bob@remote.test", queue.Pending, "4.4.1", "timed out")
			out = Outcome{Delayed: []int{0}}
		}
		cfg := &Config{Hostname: "mx.test", MaxLifetime: time.Hour, NotifyClasses: []string{kind}}
		got := e.commit(t, Reports(cfg, e.c, discard, rec, message(original), out, now))
		if len(got) != 2 {
			t.Fatalf("%s: %d reports, want the sender's and the postmaster's", kind, len(got))
		}
		if a, b := got[0].rep.header.Get("Message-Id"), got[1].rep.header.Get("Message-Id"); a == b {
			t.Errorf("%s: the sender's report and the postmaster's copy share Message-Id %s", kind, a)
		}
	}
}
