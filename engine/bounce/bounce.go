// Package bounce is larkpost's bounce(8): every report the mail system
// writes about mail goes out from here. Delivery reports (bounces, delay
// warnings, success and relay DSNs, their postmaster copies and double
// bounces) are prepared to land in the same queue commit as the result
// that caused them; postmaster notices about the server's own problems
// (notify_classes) are rate-limited per class. All of them enter the
// queue through cleanup.
package bounce

import (
	"bytes"
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/larkpost/larkpost/engine/cleanup"
	"github.com/larkpost/larkpost/engine/dsn"
	"github.com/larkpost/larkpost/queue"
)

// Config is what reports depend on (Postfix's names in comments).
type Config struct {
	Hostname        string
	MaxLifetime     time.Duration // maximal_queue_lifetime, for "will retry until"
	NotifyClasses   []string      // notify_classes
	NotifyRecipient string        // notify_recipient
}

// notifies reports whether notify_classes has class.
func (c *Config) notifies(class string) bool {
	for _, x := range c.NotifyClasses {
		if x == class {
			return true
		}
	}
	return false
}

// Postmaster is where notices go: notify_recipient, qualified.
func (c *Config) Postmaster() string {
	r := c.NotifyRecipient
	if r == "" {
		r = "postmaster"
	}
	if !strings.Contains(r, "@") {
		r += "@" + c.Hostname
	}
	return r
}

// Original is the message a report is about.
type Original interface {
	Head(n int64) []byte
	Size() int64
}

// HeadBytes is how much of a message a report to the sender quotes at
// most: the header, or the whole message up to bounce_size_limit.
const HeadBytes = 1 << 20

// Outcome is what one delivery round did, by recipient index.
type Outcome struct {
	Bounced   []int // failed for good (or expired)
	Delivered []int // delivered here
	HandedOn  []int // sent to another SMTP server, which owes any success DSN
	Relayed   []int // sent to a server without DSN: reported "relayed"
	Delayed   []int // still pending after delay_warning_time (empty: no warning due)
}

// Report is a prepared report and the words the log uses for it.
type Report struct {
	*cleanup.Prepared
	What string // "sender non-delivery notification", ...
}

// Reports prepares the reports a delivery round owes. Never a bounce for
// a bounce: an undeliverable report goes to the postmaster when
// notify_classes has 2bounce (unless it was a notice already), else it is
// dropped, as Postfix does.
func Reports(cfg *Config, c *cleanup.Cleanup, log *slog.Logger, rec *queue.Record, orig Original, o Outcome, now time.Time) []Report {
	b := &builder{cfg: cfg, c: c, log: log, rec: rec, orig: orig, now: now}
	if len(o.Bounced) > 0 {
		b.add(dsn.Failed, notifying(rec, o.Bounced, "FAILURE", true))
	}
	if len(o.Delivered) > 0 {
		// NOTIFY=SUCCESS: we report final deliveries; a relay to a DSN
		// server passes the request on, one without DSN gets "relayed".
		b.add(dsn.Delivered, notifying(rec, minus(o.Delivered, o.HandedOn), "SUCCESS", false))
	}
	if len(o.Relayed) > 0 {
		b.add(dsn.Relayed, notifying(rec, o.Relayed, "SUCCESS", false))
	}
	if len(o.Delayed) > 0 {
		b.add(dsn.Delayed, notifying(rec, o.Delayed, "DELAY", true))
	}
	return b.out
}

type builder struct {
	cfg  *Config
	c    *cleanup.Cleanup
	log  *slog.Logger
	rec  *queue.Record
	orig Original
	now  time.Time
	out  []Report
}

// classes are notify_classes' names for the kinds a postmaster may copy.
var classes = map[dsn.Kind]string{dsn.Failed: "bounce", dsn.Delayed: "delay"}

// what are Postfix's words for the kinds of notice.
var what = map[dsn.Kind]string{dsn.Failed: "sender non-delivery notification",
	dsn.Delayed: "sender delay notification", dsn.Delivered: "sender delivery status notification",
	dsn.Relayed: "sender delivery status notification"}

func (b *builder) add(kind dsn.Kind, idx []int) {
	if len(idx) == 0 {
		return
	}
	rec := b.rec
	to, class := rec.Sender, classes[kind]
	if rec.Sender == "" {
		if kind != dsn.Failed || !b.cfg.notifies("2bounce") || IsNotice(rec) {
			if kind == dsn.Failed {
				// Say what was lost and why: a postmaster notice that
				// cannot be delivered has nobody else to tell.
				what := "bounce"
				if IsNotice(rec) {
					what = "postmaster notice"
				}
				for _, i := range idx {
					r := rec.Rcpts[i]
					why := r.Note
					if n := len(r.Attempts); n > 0 {
						why = r.Attempts[n-1].Status + " " + r.Attempts[n-1].Reply
					}
					b.log.Warn(rec.ID + ": undeliverable " + what + " discarded (double bounce): to=<" + r.Addr + ">: " + strings.TrimSpace(why))
				}
			}
			return
		}
		to, class = b.cfg.Postmaster(), ""
	}
	tos := []string{to}
	if class != "" && b.cfg.notifies(class) {
		tos = append(tos, b.cfg.Postmaster())
	}
	for n, to := range tos {
		notice := n > 0 || rec.Sender == ""
		p := b.prepare(kind, idx, to, notice)
		if p == nil {
			continue
		}
		w := what[kind]
		if to != rec.Sender {
			w = "postmaster non-delivery notification"
			if kind == dsn.Delayed {
				w = "postmaster delay notification"
			}
		}
		b.out = append(b.out, Report{Prepared: p, What: w})
	}
}

// prepare composes one report and prepares it for the queue.
func (b *builder) prepare(kind dsn.Kind, idx []int, to string, notice bool) *cleanup.Prepared {
	rec, cfg := b.rec, b.cfg
	sender := rec.Sender
	if sender == "" {
		sender = "MAILER-DAEMON"
	}
	rep := &dsn.Report{Kind: kind, ReportingMTA: cfg.Hostname, QueueID: rec.ID, Sender: sender,
		ArrivalDate: rec.Arrival, EnvelopeID: rec.EnvID, To: to, ReturnFull: rec.RetFull && !notice,
		Now: b.now, Postmaster: "postmaster@" + cfg.Hostname}
	if b.orig != nil {
		rep.Original, rep.OriginalSize = b.orig.Head(HeadBytes), b.orig.Size()
	}
	for _, i := range idx {
		r := rec.Rcpts[i]
		dr := recipient(r)
		if kind == dsn.Delayed {
			dr.WillRetryUntil = rec.Arrival.Add(cfg.MaxLifetime)
		}
		rep.Recipients = append(rep.Recipients, dr)
	}
	msg, err := dsn.Compose(rep)
	if err != nil {
		b.log.Error(rec.ID + ": cannot compose DSN: " + err.Error())
		return nil
	}
	step := queue.Step{Stage: "bounce", Arg: rec.ID, Decision: dsn.Subject(kind), Source: "scheduler"}
	if notice {
		step.Stage = "notice"
	}
	p, err := b.c.Prepare(&cleanup.Submission{Origin: cleanup.Internal, Arrival: b.now,
		Rcpts: []cleanup.Rcpt{{Addr: to}}, Log: []queue.Step{step}, Content: cleanup.Whole(msg)})
	if err != nil {
		b.log.Error(rec.ID + ": cannot prepare DSN: " + err.Error())
		return nil
	}
	return p
}

// recipient is one recipient's part of a report, from its last attempt.
func recipient(r queue.Rcpt) dsn.Recipient {
	last := r.Last()
	dr := dsn.Recipient{Final: r.Addr, Status: last.Status,
		Diagnostic: last.Reply, DiagnosticType: "x-unix", LastAttempt: last.Time}
	if r.Orig != "" && !strings.EqualFold(r.Orig, r.Addr) {
		dr.Original = r.Orig
	}
	// A remote server's reply: "host mx[ip] said: 550 5.1.1 text (in
	// reply to RCPT TO command)" is quoted as smtp; 550 5.1.1 text.
	if host, said, ok := strings.Cut(last.Reply, " said: "); ok && strings.HasPrefix(host, "host ") {
		dr.DiagnosticType = "smtp"
		dr.Diagnostic = said
		if i := strings.LastIndex(said, " (in reply to "); i > 0 {
			dr.Diagnostic = said[:i]
		}
		name := strings.TrimPrefix(host, "host ")
		if i := strings.IndexByte(name, '['); i > 0 {
			name = name[:i]
		}
		dr.RemoteMTA = name
	}
	return dr
}

// notifying picks the recipients whose NOTIFY asks for this kind of
// report; with no NOTIFY, only failures (and delays) are reported, as RFC
// 3461 says.
func notifying(rec *queue.Record, idx []int, kind string, byDefault bool) []int {
	var out []int
	for _, i := range idx {
		n := rec.Rcpts[i].Notify
		if len(n) == 0 && byDefault || containsFold(n, kind) {
			out = append(out, i)
		}
	}
	return out
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

func minus(a, b []int) []int {
	var out []int
	for _, x := range a {
		found := false
		for _, y := range b {
			found = found || x == y
		}
		if !found {
			out = append(out, x)
		}
	}
	return out
}

// IsNotice reports a message the mail system sent to the postmaster.
func IsNotice(rec *queue.Record) bool {
	return len(rec.Log) > 0 && rec.Log[0].Stage == "notice"
}

// Notifier sends the postmaster notices of notify_classes that are not
// DSN copies: resource, software, policy and protocol problems seen by
// the SMTP server and pickup. At most one notice per class per minute
// goes out; the rest are counted into the next one, so a flood of rejects
// cannot flood the postmaster.
type Notifier struct {
	Config  func() *Config
	Cleanup *cleanup.Cleanup
	Log     *slog.Logger

	mu         sync.Mutex
	last       map[string]time.Time
	suppressed map[string]int
}

// Notify queues a notice for class if notify_classes asks for it.
func (n *Notifier) Notify(class, text string) {
	cfg := n.Config()
	if !cfg.notifies(class) {
		return
	}
	now := time.Now()
	more, ok := n.due(class, now)
	if !ok {
		return
	}
	host, to := cfg.Hostname, cfg.Postmaster()
	id := queue.NewID()
	var b bytes.Buffer
	b.WriteString("From: MAILER-DAEMON@" + host + " (Mail Delivery System)\r\nTo: <" + to + ">\r\n")
	b.WriteString("Subject: Postmaster notice: " + class + " problem on " + host + "\r\n")
	b.WriteString("Date: " + now.Format(time.RFC1123Z) + "\r\nMessage-ID: <" + id + ".notice@" + host + ">\r\n")
	b.WriteString("Auto-Submitted: auto-generated\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	b.WriteString("The mail system at " + host + " reports a " + class + " problem:\r\n\r\n")
	b.WriteString(strings.ReplaceAll(text, "\n", "\r\n") + "\r\n")
	if more > 0 {
		b.WriteString("\r\n(and " + strconv.Itoa(more) + " more of this class in the last minute, not sent separately)\r\n")
	}
	sub := &cleanup.Submission{ID: id, Origin: cleanup.Internal, Arrival: now, Rcpts: []cleanup.Rcpt{{Addr: to}},
		Log:     []queue.Step{{Stage: "notice", Arg: class, Decision: "postmaster notice", Source: "notify_classes"}},
		Content: cleanup.Whole(b.Bytes())}
	if _, err := n.Cleanup.Inject(context.Background(), sub); err != nil {
		n.Log.Warn("postmaster notice not queued: " + err.Error())
		return
	}
	n.Log.Info(id + ": postmaster notice (" + class + ") to <" + to + ">")
}

// due reports whether a notice of class may go out now, and how many
// were held back since the last one.
func (n *Notifier) due(class string, now time.Time) (more int, ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.last == nil {
		n.last, n.suppressed = map[string]time.Time{}, map[string]int{}
	}
	if now.Sub(n.last[class]) < time.Minute {
		n.suppressed[class]++
		return 0, false
	}
	n.last[class] = now
	more = n.suppressed[class]
	n.suppressed[class] = 0
	return more, true
}
