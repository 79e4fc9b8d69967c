package rules

import "context"

// Whole is a message that arrives whole rather than through an SMTP
// dialog: what pickup takes from the maildrop and what a dry run tries.
type Whole struct {
	From string
	To   []string
	Size int64
	UTF8 bool
	// Message gives the header and body prefix for on_data; it is called
	// only when some recipient was accepted.
	Message func() *Message
	// StopOnDefer ends the run at the first deferred recipient: pickup
	// retries the whole message later rather than queue it for some.
	StopOnDefer bool
}

// RcptRefusal is a recipient refused while the others went on.
type RcptRefusal struct {
	Rcpt     string
	Decision Decision
}

// Outcome is where a Drive ended.
type Outcome struct {
	StoppedAt Stage    // "" when the message was accepted (or discarded)
	Refusal   Decision // what stopped it
	Rcpt      string   // the recipient whose deferral stopped it (StopOnDefer)
	Rejected  []RcptRefusal
}

// Drive runs a whole message through the intake stages in the order an
// SMTP client meets them: connect, HELO, MAIL, each RCPT, DATA. Pickup and
// the dry run both use it, so they stop where a client would be stopped.
func (in *Intake) Drive(ctx context.Context, w *Whole) Outcome {
	if d := in.Connect(ctx); d.Refused() {
		return Outcome{StoppedAt: StageConnect, Refusal: d}
	}
	if d := in.Helo(ctx, in.Conn.Helo); d.Refused() {
		return Outcome{StoppedAt: StageHelo, Refusal: d}
	}
	if d := in.Mail(ctx, w.From, w.Size, w.UTF8); d.Refused() {
		return Outcome{StoppedAt: StageMail, Refusal: d}
	}
	var out Outcome
	for _, to := range w.To {
		if to == "" {
			// RCPT TO:<>: go-smtp refuses it before the intake sees it.
			out.Rejected = append(out.Rejected, RcptRefusal{to, Decision{Kind: Reject, Code: 501, Status: "5.1.3",
				Text: "Bad recipient address syntax", Hook: "on_rcpt", Source: "address syntax"}})
			continue
		}
		d := in.Rcpt(ctx, to)
		if d.Kind == Defer && w.StopOnDefer {
			out.StoppedAt, out.Refusal, out.Rcpt = StageRcpt, d, to
			return out
		}
		if d.Refused() {
			out.Rejected = append(out.Rejected, RcptRefusal{to, d})
		}
	}
	if len(in.Tx.Rcpts) == 0 {
		out.StoppedAt = StageRcpt
		return out
	}
	if d := in.Data(ctx, w.Message()); d.Refused() {
		out.StoppedAt, out.Refusal = StageData, d
	}
	return out
}
