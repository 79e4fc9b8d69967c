package sched

import (
	"time"

	"github.com/larkpost/larkpost/engine/deliver"
)

// Event is one recipient's delivery result, handed to Config.Events
// after the queue update that records it has landed: the post-queue
// hooks (on_delivered, on_deferred, on_bounced) see only what is on disk.
type Event struct {
	ID, Sender string
	Rcpt, Orig string
	State      string // "sent", "deferred" or "bounced"
	Relay      string
	Status     deliver.Status
	Delay      time.Duration // since arrival
	Attempts   int
	Size       int64
}

// Observed is one recipient's delivery result for Config.Observe.
type Observed struct {
	ID, Sender, Rcpt string
	Kind             deliver.Kind // the transport; Defer for a message that could not be read or expired
	Relay            string
	State            string // "sent", "deferred", "bounced" or "expired"
	Status           deliver.Status
	QueueDelay       time.Duration // from arrival to the start of this attempt
	Transmission     time.Duration // the agent's time for this attempt
}

// event notes the result of rcpt i for the events of the round.
func (r *round) event(i int, relay, state string, st deliver.Status) {
	if r.s.config().Events == nil {
		return
	}
	q := &r.rec.Rcpts[i]
	r.events = append(r.events, Event{
		ID: r.rec.ID, Sender: r.rec.Sender, Rcpt: q.Addr, Orig: q.Orig, State: state, Relay: relay,
		Status: st, Delay: time.Since(r.rec.Arrival), Attempts: len(q.Attempts), Size: r.rec.Size,
	})
}
