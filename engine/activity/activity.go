// Package activity keeps what the server did lately in memory, for the
// web page: the last deliveries, deferrals, bounces and rejects, a live
// feed of them, and counts per minute for the traffic chart.
//
// It is fed from the hot path (every reject and delivery result), so Add
// never blocks: a subscriber that does not keep up loses events, and the
// ring keeps a fixed number of them.
package activity

import (
	"sync"
	"time"
)

// Event is one thing that happened to mail.
type Event struct {
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"` // accepted, delivered, deferred, bounced, expired, reject
	ID     string    `json:"id,omitempty"`
	From   string    `json:"from,omitempty"`
	To     string    `json:"to,omitempty"`
	Client string    `json:"client,omitempty"` // host[ip] for accepted and reject
	Relay  string    `json:"relay,omitempty"`
	Stage  string    `json:"stage,omitempty"`  // for reject: CONNECT, HELO, MAIL, RCPT, DATA, END-OF-MESSAGE
	Status string    `json:"status,omitempty"` // the enhanced status code (dsn) or reply code
	Text   string    `json:"text,omitempty"`   // the reply or the reason
}

// The kinds of Event.
const (
	Accepted  = "accepted"
	Delivered = "delivered"
	Deferred  = "deferred"
	Bounced   = "bounced"
	Expired   = "expired"
	Rejected  = "reject"
)

// Minute counts the events of one minute.
type Minute struct {
	Start     time.Time `json:"start"`
	Accepted  int       `json:"accepted"`
	Delivered int       `json:"delivered"`
	Deferred  int       `json:"deferred"`
	Bounced   int       `json:"bounced"`
	Rejected  int       `json:"rejected"`
}

// minutes is how much traffic history is kept.
const minutes = 60

// Feed is the recent activity. The zero value is not usable: use New.
type Feed struct {
	mu     sync.Mutex
	ring   []Event
	next   int // where the next event goes
	full   bool
	subs   map[chan Event]struct{}
	counts [minutes]Minute // by unix minute modulo minutes
}

// New returns a feed keeping the last size events.
func New(size int) *Feed {
	if size < 1 {
		size = 1
	}
	return &Feed{ring: make([]Event, size), subs: map[chan Event]struct{}{}}
}

// Add records ev (its Time is set to now if zero) and hands it to the
// subscribers that have room for it.
func (f *Feed) Add(ev Event) {
	if f == nil {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ring[f.next] = ev
	f.next++
	if f.next == len(f.ring) {
		f.next, f.full = 0, true
	}
	start := ev.Time.Truncate(time.Minute)
	m := &f.counts[(start.Unix()/60)%minutes]
	if !m.Start.Equal(start) {
		*m = Minute{Start: start}
	}
	switch ev.Kind {
	case Accepted:
		m.Accepted++
	case Delivered:
		m.Delivered++
	case Deferred:
		m.Deferred++
	case Bounced, Expired:
		m.Bounced++
	case Rejected:
		m.Rejected++
	}
	for ch := range f.subs {
		select {
		case ch <- ev:
		default: // a slow reader loses events, never the server's time
		}
	}
}

// Recent returns up to n events, newest first.
func (f *Feed) Recent(n int) []Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	have := f.next
	if f.full {
		have = len(f.ring)
	}
	if n > have || n < 0 {
		n = have
	}
	out := make([]Event, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, f.ring[(f.next-i+len(f.ring))%len(f.ring)])
	}
	return out
}

// Subscribe returns a channel of the events added from now on, buffered
// by buf, and the function that ends the subscription.
func (f *Feed) Subscribe(buf int) (<-chan Event, func()) {
	ch := make(chan Event, buf)
	f.mu.Lock()
	f.subs[ch] = struct{}{}
	f.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			f.mu.Lock()
			delete(f.subs, ch)
			f.mu.Unlock()
		})
	}
}

// Minutes returns the counts of the n minutes up to now's, oldest first;
// minutes without events are there with zero counts.
func (f *Feed) Minutes(now time.Time, n int) []Minute {
	if n > minutes {
		n = minutes
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	cur := now.Truncate(time.Minute)
	out := make([]Minute, n)
	for i := 0; i < n; i++ {
		start := cur.Add(-time.Duration(n-1-i) * time.Minute)
		m := f.counts[(start.Unix()/60)%minutes]
		if !m.Start.Equal(start) {
			m = Minute{Start: start}
		}
		out[i] = m
	}
	return out
}
