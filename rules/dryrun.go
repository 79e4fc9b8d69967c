package rules

import (
	"bufio"
	"bytes"
	"context"

	"github.com/emersion/go-message/textproto"

	"github.com/larkpost/larkpost/stdlib/addr"
)

// ParseMessage reads the header of a raw message for the hooks. A
// malformed header is no reason to refuse mail (Postfix takes the rest as
// body), so a parse error gives an empty header.
func ParseMessage(raw []byte) *Message {
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		return &Message{Header: textproto.Header{}, Size: int64(len(raw)), Body: raw, Raw: bytes.NewReader(raw)}
	}
	var body []byte
	if i := bytes.Index(raw, []byte("\r\n\r\n")); i >= 0 {
		body = raw[i+4:]
	} else if i := bytes.Index(raw, []byte("\n\n")); i >= 0 {
		body = raw[i+2:]
	}
	return &Message{Header: h, Size: int64(len(raw)), Body: body, Raw: bytes.NewReader(raw)}
}

// HeadBytes is how much of a message the hooks need: the header block
// and the body prefix msg.body shows.
func (s *Settings) HeadBytes() int64 { return s.HeaderTotalLimit + s.BodyChecksSizeLimit }

// ParseHead is ParseMessage for the first bytes of a message of size
// bytes: msg.size is the whole size, msg.body at most
// body_checks_size_limit bytes.
func (p *Policy) ParseHead(head []byte, size int64) *Message {
	m := ParseMessage(head)
	m.Size = size
	if limit := p.Settings.BodyChecksSizeLimit; int64(len(m.Body)) > limit {
		m.Body = m.Body[:limit]
	}
	return m
}

// Envelope is the input of a dry run: who connects and what they send.
type Envelope struct {
	Conn    Conn // IP, RDNS, Helo, TLS, User, Listener
	From    string
	To      []string
	UTF8    bool
	Message []byte // raw message; nil gives a minimal one
}

// Result is what a dry run found: every decision in order, and whether and
// for whom the message would be queued.
type Result struct {
	Steps      []Step
	ID         string
	Queued     bool           // a 250 would be given to DATA and the message kept
	Recipients []addr.Address // accepted recipients
	StoppedAt  Stage          // the stage that ended the dialog, "" when queued or discarded
	Hold       bool
	HoldReason string
	Discard    bool
	Cleaned    *Cleaned // rewriting and expansion, when the message was accepted
	CleanupErr error    // a failing rewrite or expand hook: the server answers 451
	// AuthResults is the Authentication-Results field the server would
	// add, from what the hooks checked; "" for none.
	AuthResults string
}

// DryRunID is the queue id a dry run hands out.
const DryRunID = "DRYRUN"

// DryRun runs env through the intake stages exactly as the SMTP server
// does, through Intake, without sending, queueing or writing anything. It
// stops where a client would be stopped: a refused connect, HELO or MAIL,
// no accepted recipient, or a refused message.
func (p *Policy) DryRun(ctx context.Context, env *Envelope) *Result {
	conn := env.Conn
	conn.InNetworks = p.Settings.InNetworks(conn.IP)
	if conn.RDNS == "" {
		conn.RDNS = "unknown"
	}
	if conn.Listener == "" {
		conn.Listener = "smtp"
	}
	in := NewIntake(p, &conn, func() string { return DryRunID })
	res := &Result{}
	finish := func(stage Stage) *Result {
		res.Steps = in.Log()
		res.StoppedAt = stage
		res.Hold, res.HoldReason, res.Discard = in.Hold, in.HoldReason, in.Discard
		res.AuthResults = in.AuthResults()
		if in.Tx != nil {
			res.ID = in.Tx.ID
			res.Recipients = in.Tx.Rcpts
		}
		return res
	}
	raw := env.Message
	if raw == nil {
		raw = []byte("From: <" + env.From + ">\r\nSubject: dry run\r\n\r\n")
	}
	// The size MAIL sees is the message the client would send.
	out := in.Drive(ctx, &Whole{From: env.From, To: env.To, Size: int64(len(env.Message)), UTF8: env.UTF8,
		Message: func() *Message { return ParseMessage(raw) }})
	if out.StoppedAt != "" {
		return finish(out.StoppedAt)
	}
	r := finish("")
	r.Queued = !in.Discard
	if r.Queued {
		rcpts := make([]string, len(r.Recipients))
		for i, a := range r.Recipients {
			rcpts[i] = a.String()
		}
		sender := in.Tx.Sender.String()
		r.Cleaned, r.CleanupErr = p.CleanupEnvelope(ctx, sender, rcpts)
		if r.CleanupErr != nil {
			r.Queued, r.StoppedAt = false, StageData
		} else {
			r.Steps = append(r.Steps, r.Cleaned.Steps...)
		}
	}
	return r
}
