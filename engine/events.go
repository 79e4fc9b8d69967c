package engine

import (
	"context"
	"log/slog"
	"strconv"
	"sync/atomic"

	"github.com/larkpost/larkpost/engine/sched"
	"github.com/larkpost/larkpost/rules"
)

// eventQueueSize bounds the delivery results waiting for the post-queue
// hooks. Past it results are dropped and counted: a slow hook (a webhook
// that hangs until hook_timeout) must never hold delivery up.
const eventQueueSize = 4096

// events runs on_delivered, on_deferred and on_bounced off the delivery
// path, one at a time, in the order the results landed on disk.
type events struct {
	ch      chan sched.Event
	policy  func() *rules.Policy
	log     *slog.Logger
	dropped atomic.Int64
}

func newEvents(policy func() *rules.Policy, log *slog.Logger) *events {
	return &events{ch: make(chan sched.Event, eventQueueSize), policy: policy, log: log}
}

// push is the scheduler's Config.Events: it never blocks.
func (q *events) push(evs []sched.Event) {
	if !q.policy().HasEventHooks() {
		return
	}
	for _, ev := range evs {
		select {
		case q.ch <- ev:
		default:
			if n := q.dropped.Add(1); n == 1 || n%1000 == 0 {
				q.log.Warn("warning: post-queue hooks are behind: " + strconv.FormatInt(n, 10) + " delivery result(s) not given to them")
			}
		}
	}
}

// run calls the hooks until ctx ends; what is still queued then is
// dropped (the results themselves are on disk).
func (q *events) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-q.ch:
			err := q.policy().Event(ctx, rules.DeliveryEvent{
				ID: ev.ID, Sender: ev.Sender, Rcpt: ev.Rcpt, Orig: ev.Orig, State: ev.State, Relay: ev.Relay,
				Status: ev.Status.Enhanced, Text: ev.Status.Text, Delay: ev.Delay, Attempts: ev.Attempts, Size: ev.Size,
			})
			if err != nil {
				q.log.Error(ev.ID + ": hook failed: " + err.Error())
			}
		}
	}
}
