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
)

// queueSink is cleanup's last step: the accepted message becomes a queue
// record, committed durably before the SMTP server answers 250, and is
// then handed to the scheduler.
type queueSink struct {
	q     *queue.Queue
	sched *sched.Scheduler
	log   *slog.Logger
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
	seen := map[string]bool{}
	for i, r := range env.Rcpts {
		a := r.String()
		if key := strings.ToLower(a); seen[key] {
			continue // duplicate elimination, as Postfix's cleanup does
		} else {
			seen[key] = true
		}
		qr := queue.Rcpt{Addr: a, State: queue.Pending}
		if i < len(env.Notify) {
			qr.Notify = env.Notify[i]
		}
		if i < len(env.ORcpt) {
			qr.Orig = env.ORcpt[i]
		}
		rec.Rcpts = append(rec.Rcpts, qr)
	}
	for _, st := range env.Decisions {
		rec.Log = append(rec.Log, queue.Step{Stage: string(st.Stage), Arg: st.Arg, Decision: st.Decision.String(), Source: st.Source})
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
