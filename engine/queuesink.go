package engine

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/larkpost/larkpost/engine/sched"
	"github.com/larkpost/larkpost/engine/smtpd"
	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
)

// queueSink is cleanup's last step: the accepted message becomes a queue
// record, committed durably before the SMTP server answers 250, and is
// then handed to the scheduler.
type queueSink struct {
	policy func() *rules.Policy
	q      *queue.Queue
	sched  *sched.Scheduler
	log    *slog.Logger
}

var _ smtpd.Sink = (*queueSink)(nil)

func (s *queueSink) Accept(ctx context.Context, env *smtpd.Envelope, c *smtpd.Content) error {
	rec := &queue.Record{
		ID: env.ID, Sender: env.Sender.String(), Arrival: env.Arrival, Submitted: env.Submitted,
		State: queue.Active, NextTry: env.Arrival,
		Client: env.Client.RDNS + "[" + env.Client.IP.String() + "]",
		EnvID:  env.EnvID, RetFull: env.RetFull, SMTPUTF8: env.UTF8,
	}
	if env.Hold {
		rec.State, rec.HoldReason = queue.Hold, "held by policy"
		if env.HoldReason != "" {
			rec.HoldReason += ": " + env.HoldReason
		}
	}
	// Cleanup: canonical rewriting and alias expansion, the same code
	// larkpost trace shows.
	p := s.policy()
	smtpRcpts := make([]string, len(env.Rcpts))
	for i, r := range env.Rcpts {
		smtpRcpts[i] = r.String()
	}
	cleaned, err := p.CleanupEnvelope(ctx, rec.Sender, smtpRcpts)
	if err != nil {
		return fmt.Errorf("cleanup: %w: %v", smtpd.ErrPolicy, err)
	}
	rec.Sender = cleaned.Sender
	seen := map[string]bool{}
	for _, cr := range cleaned.Rcpts {
		qr := QueueRcpt(cr)
		i := cr.From
		if i < len(env.Notify) {
			qr.Notify = env.Notify[i]
		}
		qr.Orig = cr.Orig
		if i < len(env.ORcpt) && env.ORcpt[i] != "" {
			qr.Orig = env.ORcpt[i]
		}
		seen[strings.ToLower(qr.Addr)] = true
		rec.Rcpts = append(rec.Rcpts, qr)
	}
	// A rewritten header replaces the client's in the stored message.
	header, skip := c.Header, int64(0)
	if p.RewritesHeaders() {
		if h := rewriteHeaders(c.Header, func(a, field string, sender bool) string {
			na, err := p.Rewrite(ctx, a, rules.RewriteContext{Sender: sender, Header: field})
			if err != nil {
				s.log.Warn(rec.ID + ": header rewrite: " + err.Error())
				return a
			}
			return na
		}); h != nil {
			header, skip = h, int64(len(c.Header))
		}
	}
	prefix := c.Prefix
	if skip > 0 {
		prefix = append(append([]byte{}, prefix...), header...)
	}
	rec.Size = int64(len(prefix)) + c.Size - skip
	// Access-table REDIRECT replaces the recipients; BCC adds one.
	for _, e := range env.Effects {
		switch e.Kind {
		case rules.Redirect:
			rec.Rcpts = []queue.Rcpt{{Addr: e.Text, State: queue.Pending}}
			seen = map[string]bool{strings.ToLower(e.Text): true}
			s.log.Info(rec.ID + ": redirect: " + e.Text + " (" + e.Source + ")")
		case rules.Bcc:
			if !seen[strings.ToLower(e.Text)] {
				seen[strings.ToLower(e.Text)] = true
				rec.Rcpts = append(rec.Rcpts, queue.Rcpt{Addr: e.Text, State: queue.Pending})
			}
		}
	}
	for _, st := range env.Decisions {
		rec.Log = append(rec.Log, queue.Step{Stage: string(st.Stage), Arg: st.Arg, Decision: st.Decision.String(), Source: st.Source})
	}
	for _, st := range cleaned.Steps {
		rec.Log = append(rec.Log, queue.Step{Stage: string(st.Stage), Arg: st.Arg, Decision: st.Decision.Text, Source: st.Source})
	}
	if err := s.enqueue(ctx, rec, prefix, c, skip); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	s.log.Info(rec.ID + ": from=<" + rec.Sender + ">, size=" + strconv.FormatInt(rec.Size, 10) + ", nrcpt=" + strconv.Itoa(len(rec.Rcpts)) + " (queue " + string(rec.State) + ")")
	if rec.State == queue.Active {
		s.sched.Submit(rec)
	}
	return nil
}

// enqueue stores the message inline when small, else with its body file
// (which the SMTP session wrote as the message arrived, or which is
// written here for a large message that came whole, from pickup).
func (s *queueSink) enqueue(ctx context.Context, rec *queue.Record, prefix []byte, c *smtpd.Content, skip int64) error {
	if c.File == nil && rec.Size <= queue.InlineMax {
		msg := make([]byte, 0, rec.Size)
		msg = append(append(msg, prefix...), c.Data[skip:]...)
		return s.q.Enqueue(ctx, rec, msg)
	}
	f := c.File
	if f == nil {
		var err error
		if f, err = s.q.CreateBody(rec.ID); err != nil {
			return err
		}
		if _, err := f.Write(c.Data); err != nil {
			f.Discard()
			return err
		}
	}
	if err := s.q.EnqueueFile(ctx, rec, prefix, f, skip); err != nil {
		if c.File == nil {
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
