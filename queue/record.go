package queue

import (
	"encoding/json"
	"fmt"
	"time"
)

// State is where a message is in its life.
type State string

// The message states. A message is Active from enqueue until every
// recipient is done, bounced or deferred; Deferred waits in the schedule
// index for its next try; Hold waits for the admin; Corrupt is a record
// that could not be read back (kept for inspection, never delivered).
const (
	Active   State = "active"
	Deferred State = "deferred"
	Hold     State = "hold"
	Corrupt  State = "corrupt"
)

// RcptState is where one recipient is.
type RcptState string

// The recipient states.
const (
	Pending RcptState = "pending" // not yet delivered (never tried, or deferred)
	Sent    RcptState = "sent"
	Bounced RcptState = "bounced"
)

// Attempt is one delivery attempt for one recipient.
type Attempt struct {
	Time   time.Time `json:"time"`
	Relay  string    `json:"relay,omitempty"`
	Status string    `json:"status"` // enhanced status, "4.2.2"
	Reply  string    `json:"reply"`  // the agent's or remote server's reply
}

// maxAttempts bounds each recipient's history, so a message deferred for
// days keeps a small record.
const maxAttempts = 10

// Rcpt is one recipient and its delivery state.
type Rcpt struct {
	Addr     string    `json:"addr"`
	Kind     string    `json:"kind,omitempty"`   // "" an address; "file", "pipe" from aliases; "error" to bounce
	Note     string    `json:"note,omitempty"`   // why, for "error"; what expanded it otherwise
	Orig     string    `json:"orig,omitempty"`   // original recipient (ORCPT, or before expansion)
	Notify   []string  `json:"notify,omitempty"` // DSN NOTIFY: SUCCESS, FAILURE, DELAY, NEVER
	State    RcptState `json:"state"`
	Attempts []Attempt `json:"attempts,omitempty"`
}

// AddAttempt records an attempt, keeping the latest maxAttempts.
func (r *Rcpt) AddAttempt(a Attempt) {
	r.Attempts = append(r.Attempts, a)
	if len(r.Attempts) > maxAttempts {
		r.Attempts = append(r.Attempts[:0], r.Attempts[len(r.Attempts)-maxAttempts:]...)
	}
}

// Last is the latest attempt, or the zero Attempt.
func (r *Rcpt) Last() Attempt {
	if len(r.Attempts) == 0 {
		return Attempt{}
	}
	return r.Attempts[len(r.Attempts)-1]
}

// Step is one entry of the intake decision log, kept with the message so
// `larkpost queue show` can say which rule decided what.
type Step struct {
	Stage    string `json:"stage"`
	Arg      string `json:"arg,omitempty"`
	Decision string `json:"decision"`
	Source   string `json:"source"`
}

// Record is everything about a queued message except its body. It is
// self-contained: the scheduler needs nothing from the SMTP session.
type Record struct {
	ID          string    `json:"id"`
	Sender      string    `json:"sender"` // "" is the null sender <>
	Arrival     time.Time `json:"arrival"`
	Submitted   time.Time `json:"submitted,omitempty"` // pickup: the time the maildrop file claims
	Size        int64     `json:"size"`
	State       State     `json:"state"`
	HoldReason  string    `json:"hold_reason,omitempty"`
	NextTry     time.Time `json:"next_try"`
	Tries       int       `json:"tries"` // delivery rounds so far
	DelayWarned bool      `json:"delay_warned,omitempty"`
	Client      string    `json:"client,omitempty"` // "name[ip]"
	EnvID       string    `json:"envid,omitempty"`
	RetFull     bool      `json:"ret_full,omitempty"`
	SMTPUTF8    bool      `json:"smtputf8,omitempty"`
	BodyFile    bool      `json:"body_file,omitempty"` // the body is in bodies/<id>, after the h/<id> prefix
	BodySkip    int64     `json:"body_skip,omitempty"` // bytes of the body file replaced by the prefix (a rewritten header)
	Rcpts       []Rcpt    `json:"rcpts"`
	Log         []Step    `json:"log,omitempty"`
	// Flushed says that a `queue flush --all` still to reach the message
	// makes it due now, whatever NextTry says (where its schedule entry
	// is, and stays). Get and Resolve set it; it is never stored.
	Flushed bool `json:"flushed,omitempty"`
}

// Pending returns the indexes of recipients still to deliver.
func (r *Record) Pending() []int {
	var out []int
	for i := range r.Rcpts {
		if r.Rcpts[i].State == Pending {
			out = append(out, i)
		}
	}
	return out
}

func encodeRecord(r *Record) ([]byte, error) {
	if r.Flushed {
		c := *r
		c.Flushed = false
		r = &c
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode record %s: %w", r.ID, err)
	}
	return b, nil
}

func decodeRecord(id string, b []byte) (*Record, error) {
	r := &Record{}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("decode record %s: %w", id, err)
	}
	if r.ID != id || len(r.Rcpts) == 0 {
		return nil, fmt.Errorf("decode record %s: inconsistent record", id)
	}
	return r, nil
}
