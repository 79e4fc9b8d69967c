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

func (s *queueSink) Accept(ctx context.Context, env *smtpd.Envelope, msg []byte) error {
	rec := &queue.Record{
		ID: env.ID, Sender: env.Sender.String(), Arrival: env.Arrival, Size: int64(len(msg)),
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
	if p.RewritesHeaders() {
		msg = rewriteHeaders(msg, func(a, field string, sender bool) string {
			na, err := p.Rewrite(ctx, a, rules.RewriteContext{Sender: sender, Header: field})
			if err != nil {
				s.log.Warn(rec.ID + ": header rewrite: " + err.Error())
				return a
			}
			return na
		})
		rec.Size = int64(len(msg))
	}
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
	if err := s.q.Enqueue(ctx, rec, msg); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	s.log.Info(rec.ID + ": from=<" + rec.Sender + ">, size=" + strconv.FormatInt(rec.Size, 10) + ", nrcpt=" + strconv.Itoa(len(rec.Rcpts)) + " (queue " + string(rec.State) + ")")
	if rec.State == queue.Active {
		s.sched.Submit(rec, msg)
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
