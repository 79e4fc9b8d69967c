// Package cleanup is larkpost's cleanup(8): the one way into the queue.
// The SMTP server, pickup (sendmail), postmaster notices, bounces and
// DSNs, filter forwards and vacation replies all hand their message to
// Inject (or Prepare, when the new message must land in the same commit
// as another change). Cleanup adds the trace and missing headers, applies
// canonical mapping and masquerading to the envelope and the header,
// expands aliases and virtual addresses, applies redirect and bcc,
// attaches the decision log and writes the message durably; then the
// scheduler gets it.
package cleanup

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/larkpost/larkpost/engine/maillog"
	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
	"github.com/larkpost/larkpost/stdlib/maps"
)

// ErrPolicy is wrapped by Inject's error when the policy (a rewrite or
// expand hook) failed rather than the disk: the SMTP reply is 451 4.3.5.
var ErrPolicy = errors.New("policy failure")

// Origin is where a message comes from; it decides what cleanup does.
type Origin int

const (
	// SMTP is a client's message: the whole of cleanup applies.
	SMTP Origin = iota
	// Sendmail is a local submission taken by pickup: the whole of
	// cleanup, with pickup's Received line.
	Sendmail
	// Internal is mail the system writes itself (notices, DSNs, vacation
	// replies) or re-sends (filter forwards): recipients are final and the
	// message is complete, so nothing is rewritten or expanded.
	Internal
)

// Rcpt is one recipient as the submitter gave it.
type Rcpt struct {
	Addr   string
	Orig   string   // DSN ORCPT, or the address this one stands for
	Notify []string // DSN NOTIFY
}

// Content is the message as received: the client's data, which starts
// with its header block. Small messages are in memory, large ones in the
// body file the SMTP session spooled them to as they arrived.
type Content struct {
	Header []byte            // the header block: complete field lines, no blank line
	Data   []byte            // the data when in memory
	File   *queue.BodyWriter // the data when spooled
	Size   int64             // bytes of data
}

// Whole is the Content of a message held whole in memory.
func Whole(msg []byte) *Content {
	return &Content{Header: msg[:HeaderLen(msg)], Data: msg, Size: int64(len(msg))}
}

// Submission is one message for the queue.
type Submission struct {
	ID     string // "" for a new id
	Origin Origin
	Sender string
	Rcpts  []Rcpt

	// Client is who submitted it (SMTP, Sendmail); Proto the protocol
	// word of the Received line ("SMTP", "ESMTP"); UID the submitting
	// user of a sendmail message.
	Client rules.Conn
	Proto  string
	UID    int

	Arrival   time.Time
	Submitted time.Time // pickup: the time the maildrop file claims
	UTF8      bool
	EnvID     string // DSN ENVID
	RetFull   bool   // DSN RET=FULL

	Hold       bool
	HoldReason string
	Decisions  []rules.Step     // what the intake decided, in order
	Effects    []rules.Decision // prepend, redirect and bcc
	Log        []queue.Step     // Internal: why the system sends it

	// AuthResults is an Authentication-Results field to add, from what
	// the hooks checked (rules.Intake.AuthResults); "" adds none.
	AuthResults string

	Prefix  []byte // lines put in front of the message (Internal: e.g. Delivered-To)
	Content *Content
	// Header, when not nil, replaces Content.Header in the queued
	// message: the header as milters edited it.
	Header []byte
	// MilterLog is what milters changed, for the decision log after
	// Decisions.
	MilterLog []queue.Step
	// Copy is a queued message whose content a new one reuses (a
	// forward), instead of Content: a body file is linked, not copied.
	Copy *queue.Body
}

// Cleanup takes submissions into the queue.
type Cleanup struct {
	policy func() *rules.Policy
	q      *queue.Queue
	submit func(*queue.Record) // the scheduler's active set
	log    *slog.Logger
	// Observe, when set, is told each message queued (metrics, the web
	// page). It must be quick.
	Observe func(rec *queue.Record, sub *Submission)
	// Claim and Unclaim, when set, keep the scheduler's scanner off a
	// message from before its write until submit hands it over (Unclaim:
	// the write failed, or it is not for delivery). Without the claim a
	// scan woken meanwhile can find the new message on disk, deliver and
	// remove it, and then the hand-over delivers it a second time.
	Claim, Unclaim func(id string)
}

func (c *Cleanup) claim(id string) {
	if c.Claim != nil {
		c.Claim(id)
	}
}

func (c *Cleanup) unclaim(id string) {
	if c.Unclaim != nil {
		c.Unclaim(id)
	}
}

// New returns the cleanup stage writing to q; submit hands each queued
// active message to the scheduler.
func New(policy func() *rules.Policy, q *queue.Queue, submit func(*queue.Record), log *slog.Logger) *Cleanup {
	return &Cleanup{policy: policy, q: q, submit: submit, log: log}
}

// Inject cleans a message up and queues it durably; on success it is on
// disk and with the scheduler. It takes over sub.Content.File.
func (c *Cleanup) Inject(ctx context.Context, sub *Submission) (string, error) {
	rec, prefix, skip, err := c.build(ctx, sub)
	if err != nil {
		return "", err
	}
	c.claim(rec.ID)
	if err := c.enqueue(ctx, rec, prefix, sub, skip); err != nil {
		c.unclaim(rec.ID)
		return "", fmt.Errorf("queue: %w", err)
	}
	c.queued(rec, sub, prefix)
	return rec.ID, nil
}

// Prepared is a message cleaned up and ready to commit with other queue
// changes: a bounce lands in the same commit as the delivery result that
// caused it, so a crash cannot lose one or send one twice.
type Prepared struct {
	Rec  *queue.Record
	Op   queue.Op
	Size int // bytes the commit writes
	sub  *Submission
}

// Prepare is Inject up to the write, for an Internal message held in
// memory. The caller commits p.Op and then calls Queued.
func (c *Cleanup) Prepare(sub *Submission) (*Prepared, error) {
	if sub.Origin != Internal || sub.Content == nil || sub.Content.File != nil {
		return nil, errors.New("cleanup: Prepare takes internal messages in memory")
	}
	rec, prefix, _, err := c.build(context.Background(), sub)
	if err != nil {
		return nil, err
	}
	msg := append(append(make([]byte, 0, rec.Size), prefix...), sub.Content.Data...)
	op, n, err := queue.PutOp(rec, msg)
	if err != nil {
		return nil, err
	}
	c.claim(rec.ID)
	return &Prepared{Rec: rec, Op: op, Size: n, sub: sub}, nil
}

// Queued logs a prepared message whose commit succeeded and hands it to
// the scheduler.
func (c *Cleanup) Queued(p *Prepared) { c.queued(p.Rec, p.sub, nil) }

// Abandon gives up a prepared message whose commit failed or was never
// made.
func (c *Cleanup) Abandon(p *Prepared) { c.unclaim(p.Rec.ID) }

// queued logs Postfix's lines for a queued message (the Message-ID the
// client sent, or the one cleanup added in prefix) and hands it on.
func (c *Cleanup) queued(rec *queue.Record, sub *Submission, prefix []byte) {
	// Postfix's order: cleanup's message-id line, then qmgr's.
	if sub.Content != nil && sub.Origin != Internal {
		id := fieldValue(prefix, "message-id")
		if id == "" {
			id = fieldValue(sub.Content.Header, "message-id")
		}
		if id != "" {
			c.log.Info(rec.ID + ": message-id=" + id)
		}
	}
	c.log.Info(rec.ID+": from=<"+rec.Sender+">, size="+strconv.FormatInt(rec.Size, 10)+
		", nrcpt="+strconv.Itoa(len(rec.Rcpts))+" (queue "+string(rec.State)+")", maillog.Program("qmgr"))
	if c.Observe != nil {
		c.Observe(rec, sub)
	}
	if rec.State == queue.Active && c.submit != nil {
		c.submit(rec) // takes the claim over
		return
	}
	c.unclaim(rec.ID)
}

// build makes the queue record and the lines in front of the message;
// skip is how much of the client's data a rewritten header replaces.
func (c *Cleanup) build(ctx context.Context, sub *Submission) (rec *queue.Record, prefix []byte, skip int64, err error) {
	p := c.policy()
	id := sub.ID
	if id == "" {
		id = queue.NewID()
	}
	arrival := sub.Arrival
	if arrival.IsZero() {
		arrival = time.Now()
	}
	rec = &queue.Record{
		ID: id, Sender: sub.Sender, Arrival: arrival, Submitted: sub.Submitted,
		State: queue.Active, NextTry: arrival, Client: "local",
		EnvID: sub.EnvID, RetFull: sub.RetFull, SMTPUTF8: sub.UTF8, Log: sub.Log,
	}
	if sub.Origin != Internal {
		rec.Client = sub.Client.RDNS + "[" + sub.Client.IP.String() + "]"
	}
	if sub.Hold {
		rec.State, rec.HoldReason = queue.Hold, "held by policy"
		if sub.HoldReason != "" {
			rec.HoldReason += ": " + sub.HoldReason
		}
	}
	var header []byte
	if sub.Content != nil {
		header = sub.Content.Header
	}
	if sub.Origin == Internal {
		for _, r := range sub.Rcpts {
			rec.Rcpts = append(rec.Rcpts, queue.Rcpt{Addr: r.Addr, Orig: r.Orig, Notify: r.Notify, State: queue.Pending})
		}
	} else {
		if err := c.envelope(ctx, p, sub, rec); err != nil {
			return nil, nil, 0, err
		}
		orig := header
		replaced := false
		if sub.Header != nil && sub.Content != nil {
			header, replaced = sub.Header, true
		}
		h, err := c.rewriteHeader(ctx, p, rec.ID, header)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("cleanup: %w: %v", ErrPolicy, err)
		}
		if h != nil {
			header, replaced = h, true
		}
		if sub.Origin == SMTP && !sub.Client.InNetworks && sub.Client.User == "" {
			// RFC 8601 section 5: a field that claims to be ours but
			// came from outside is forged; left in, a filter or MUA
			// downstream would trust it.
			if h, n := stripAuthResults(header, p.Settings.Hostname); n > 0 {
				header, replaced = h, true
				c.log.Info(rec.ID + ": removed " + strconv.Itoa(n) + " Authentication-Results header(s) claiming to be from " + p.Settings.Hostname)
			}
		}
		if replaced {
			skip = int64(len(orig))
		}
	}
	prefix = c.prefix(p, sub, rec, header, skip > 0)
	if sig := c.sign(p, sub, rec.ID, prefix, skip); sig != "" {
		prefix = append([]byte(sig), prefix...)
	}
	rec.Size = int64(len(prefix)) - skip
	if sub.Content != nil {
		rec.Size += sub.Content.Size
	} else if sub.Copy != nil {
		rec.Size += sub.Copy.Size()
	}
	return rec, prefix, skip, nil
}

// envelope applies canonical mapping, masquerading and expansion (the
// code larkpost trace shows), redirect and bcc, and the decision log.
func (c *Cleanup) envelope(ctx context.Context, p *rules.Policy, sub *Submission, rec *queue.Record) error {
	smtpRcpts := make([]string, len(sub.Rcpts))
	for i, r := range sub.Rcpts {
		smtpRcpts[i] = r.Addr
	}
	cleaned, err := p.CleanupEnvelope(ctx, rec.Sender, smtpRcpts)
	if err != nil {
		return fmt.Errorf("cleanup: %w: %v", ErrPolicy, err)
	}
	rec.Sender = cleaned.Sender
	seen := map[string]bool{}
	for _, cr := range cleaned.Rcpts {
		qr := QueueRcpt(cr)
		if i := cr.From; i < len(sub.Rcpts) {
			qr.Notify = sub.Rcpts[i].Notify
			if sub.Rcpts[i].Orig != "" {
				qr.Orig = sub.Rcpts[i].Orig
			}
		}
		seen[strings.ToLower(qr.Addr)] = true
		rec.Rcpts = append(rec.Rcpts, qr)
	}
	// Access-table REDIRECT replaces the recipients; BCC adds one.
	for _, e := range sub.Effects {
		switch e.Kind {
		case rules.Redirect:
			rec.Rcpts = []queue.Rcpt{{Addr: e.Text, State: queue.Pending}}
			seen = map[string]bool{strings.ToLower(e.Text): true}
			c.log.Info(rec.ID + ": redirect: " + e.Text + " (" + e.Source + ")")
		case rules.Bcc:
			if !seen[strings.ToLower(e.Text)] {
				seen[strings.ToLower(e.Text)] = true
				rec.Rcpts = append(rec.Rcpts, queue.Rcpt{Addr: e.Text, State: queue.Pending})
			}
		}
	}
	for _, st := range sub.Decisions {
		rec.Log = append(rec.Log, queue.Step{Stage: string(st.Stage), Arg: st.Arg, Decision: st.Decision.String(), Source: st.Source})
	}
	rec.Log = append(rec.Log, sub.MilterLog...)
	for _, st := range cleaned.Steps {
		rec.Log = append(rec.Log, queue.Step{Stage: string(st.Stage), Arg: st.Arg, Decision: st.Decision.Text, Source: st.Source})
	}
	return nil
}

// rewriteHeader applies canonical mapping to the header's address fields;
// nil means the client's header stays as it came. A canonical table that
// cannot be read (a database down) is an error, as in Postfix: the
// message is deferred rather than queued half-rewritten.
func (c *Cleanup) rewriteHeader(ctx context.Context, p *rules.Policy, id string, header []byte) ([]byte, error) {
	if len(header) == 0 || !p.RewritesHeaders() {
		return nil, nil
	}
	var failed error
	h := rewriteHeaders(header, func(a, field string, sender bool) string {
		na, err := p.Rewrite(ctx, a, rules.RewriteContext{Sender: sender, Header: field})
		var le *maps.LookupError
		switch {
		case errors.As(err, &le):
			failed = cmp.Or(failed, err)
			return a
		case err != nil:
			c.log.Warn(id + ": header rewrite: " + err.Error())
			return a
		}
		return na
	})
	if failed != nil {
		return nil, fmt.Errorf("header rewrite: %w", failed)
	}
	return h, nil
}

// prefix is what goes in front of the client's data: the Received line,
// the intake's prepends, the submitter's own lines, the Message-ID and
// Date a message lacks, and a rewritten header that replaces the
// client's.
func (c *Cleanup) prefix(p *rules.Policy, sub *Submission, rec *queue.Record, header []byte, rewritten bool) []byte {
	var b []byte
	host := p.Settings.Hostname
	switch sub.Origin {
	case SMTP:
		b = append(b, smtpReceived(host, sub, rec, p.Settings.TLS.ReceivedHeader)...)
		b = append(b, sub.AuthResults...)
	case Sendmail:
		b = append(b, pickupReceived(host, sub.UID, rec.ID, rec.Arrival)...)
	}
	for _, e := range sub.Effects {
		if e.Kind == rules.Prepend {
			b = append(b, e.Text+"\r\n"...)
		}
	}
	b = append(b, sub.Prefix...)
	if addsMissing(p, sub) {
		b = append(b, missingHeaders(host, rec, header)...)
	}
	if rewritten {
		b = append(b, header...)
	}
	return b
}

// enqueue stores the message inline when small, else with its body file
// (which the SMTP session wrote as the message arrived, or which is
// written here for a large message that came whole, from pickup).
func (c *Cleanup) enqueue(ctx context.Context, rec *queue.Record, prefix []byte, sub *Submission, skip int64) error {
	if sub.Copy != nil {
		return c.q.EnqueueCopy(ctx, rec, prefix, sub.Copy)
	}
	ct := sub.Content
	if ct.File == nil && rec.Size <= queue.InlineMax {
		msg := make([]byte, 0, rec.Size)
		msg = append(append(msg, prefix...), ct.Data[skip:]...)
		return c.q.Enqueue(ctx, rec, msg)
	}
	f := ct.File
	if f == nil {
		var err error
		if f, err = c.q.CreateBody(rec.ID); err != nil {
			return err
		}
		if _, err := f.Write(ct.Data); err != nil {
			f.Discard()
			return err
		}
	}
	if err := c.q.EnqueueFile(ctx, rec, prefix, f, skip); err != nil {
		if ct.File == nil {
			f.Discard()
		}
		return err
	}
	return nil
}

// QueueRcpt turns a cleaned recipient into its queue form; delivery and
// trace both route from it.
func QueueRcpt(cr rules.CleanRcpt) queue.Rcpt {
	qr := queue.Rcpt{Addr: cr.Value, State: queue.Pending, Note: cr.Via, Orig: cr.Orig}
	switch {
	case cr.Error != "":
		qr.Kind, qr.Note = "error", cr.Error
	case cr.Kind == rules.TargetFile:
		qr.Kind = "file"
	case cr.Kind == rules.TargetPipe:
		qr.Kind = "pipe"
	}
	return qr
}
