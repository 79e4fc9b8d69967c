package engine

import (
	"net/http"
	"strconv"
	"time"

	"github.com/larkpost/larkpost/engine/activity"
	"github.com/larkpost/larkpost/engine/cleanup"
	"github.com/larkpost/larkpost/engine/metrics"
	"github.com/larkpost/larkpost/engine/resolver"
	"github.com/larkpost/larkpost/engine/sched"
	"github.com/larkpost/larkpost/engine/smtpd"
	"github.com/larkpost/larkpost/queue"
)

// metricsHandler serves the Prometheus metrics.
func (e *Engine) metricsHandler() http.Handler { return e.metrics.Handler() }

// observe connects the parts' observers to the metrics and the web
// page's feed. Everything here runs on the hot path: counters and a
// ring buffer, no I/O.
func (e *Engine) observe() {
	e.smtpd.Observe = sessionObserver{e.metrics, e.feed}
	e.cleanup.Observe = func(rec *queue.Record, sub *cleanup.Submission) {
		origin, listener := "internal", ""
		switch sub.Origin {
		case cleanup.SMTP:
			origin, listener = "smtp", sub.Client.Listener
		case cleanup.Sendmail:
			origin = "sendmail"
		}
		e.metrics.Accepted(origin, listener)
		ev := activity.Event{Kind: activity.Accepted, ID: rec.ID, From: rec.Sender}
		if len(rec.Rcpts) > 0 {
			ev.To = rec.Rcpts[0].Addr
			if len(rec.Rcpts) > 1 {
				ev.To += " (+" + strconv.Itoa(len(rec.Rcpts)-1) + ")"
			}
		}
		if origin == "smtp" {
			ev.Client = sub.Client.RDNS + "[" + sub.Client.IP.String() + "]"
		} else {
			ev.Client = origin
		}
		if rec.State == queue.Hold {
			ev.Text = "held"
		}
		e.feed.Add(ev)
	}
	e.policy.Load().ObserveHooks(e.metrics.Hook)
	resolver.Observe(e.metrics.DNS)
}

// deliveryObserver is the scheduler's Config.Observe.
func (e *Engine) deliveryObserver(o sched.Observed) {
	e.metrics.Delivered(o.Kind.String(), o.State, o.QueueDelay, o.Transmission)
	kind := activity.Deferred
	switch o.State {
	case "sent":
		kind = activity.Delivered
	case "bounced":
		kind = activity.Bounced
	case "expired":
		kind = activity.Expired
	}
	e.feed.Add(activity.Event{Kind: kind, ID: o.ID, From: o.Sender, To: o.Rcpt, Relay: o.Relay, Status: o.Status.Enhanced, Text: o.Status.Text})
}

// sessionObserver is the SMTP server's smtpd.Observer.
type sessionObserver struct {
	m    *metrics.Metrics
	feed *activity.Feed
}

func (o sessionObserver) Connected(listener string)             { o.m.Connected(listener) }
func (o sessionObserver) Disconnected(listener, outcome string) { o.m.Disconnected(listener, outcome) }
func (o sessionObserver) TLS(listener, version string, _ error) { o.m.TLS(listener, version) }
func (o sessionObserver) Rejected(r smtpd.Reject) {
	o.m.Rejected(r.Listener, r.Stage, r.Code, r.Decider)
	o.feed.Add(activity.Event{Kind: activity.Rejected, ID: r.ID, From: r.From, To: r.To, Client: r.Client, Stage: r.Stage,
		Status: strconv.Itoa(r.Code) + " " + r.Status, Text: r.Text})
}

// Census counts the queue for the metrics' gauges.
func (e *Engine) Census(now time.Time) (map[metrics.QueueKey]int, error) {
	out := map[metrics.QueueKey]int{}
	// From the index keys: the age is the one the queue id carries.
	err := e.queue.Census(now, func(st queue.State, id string) {
		arrival, _ := queue.IDTime(id)
		out[metrics.QueueKey{State: string(st), Age: metrics.AgeLabel(now, arrival)}]++
	})
	return out, err
}

// Sizes are the queue database's sizes.
func (e *Engine) Sizes() (lsm, vlog int64) { return e.queue.Sizes() }
