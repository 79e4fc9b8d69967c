package milter

import (
	"context"
)

// Result is one milter's whole say on one message.
type Result struct {
	Verdict
	// Stage is where it decided: "connect", "helo", "mail", "rcpt",
	// "data" or "end of message".
	Stage string
	// Mods are its changes, only for a message it lets through. A
	// replaced body's file is the caller's to close (Message.Apply takes
	// it over).
	Mods []Modification
}

// Envelope is a message's sender and recipients as the milter is told
// them (addresses without angle brackets; "" for the null sender).
type Envelope struct {
	Helo  string
	From  string
	Rcpts []string
	ID    string // the queue id, macro i
}

// Check runs one message through the milter on a connection of its own,
// from connect to end of message: what Postfix does for non_smtpd_milters,
// and what a script's milter.check asks. A recipient the milter refuses
// refuses the message (there is no client to tell per recipient). A
// milter that fails gives its default action, with the error.
func (m *Milter) Check(ctx context.Context, info Info, env Envelope, msg *Message) (Result, error) {
	s, v, err := m.Open(ctx, info)
	//lint:ignore SA5001 Open returns a session to close even when it fails
	defer s.Close()
	if err != nil || v.Action != Continue {
		return Result{Verdict: v, Stage: "connect"}, err
	}
	if env.ID != "" {
		s.SetMacro("i", env.ID)
	}
	if v, err := s.Helo(ctx, env.Helo); err != nil || v.Action != Continue {
		return Result{Verdict: v, Stage: "helo"}, err
	}
	if v, err := s.Mail(ctx, env.From, nil); err != nil || v.Action != Continue {
		return Result{Verdict: v, Stage: "mail"}, err
	}
	for _, r := range env.Rcpts {
		if v, err := s.Rcpt(ctx, r, nil); err != nil || v.Action != Continue {
			return Result{Verdict: v, Stage: "rcpt"}, err
		}
	}
	if v, err := s.Data(ctx); err != nil || v.Action != Continue {
		return Result{Verdict: v, Stage: "data"}, err
	}
	v, mods, err := s.EndOfMessage(ctx, msg.Header(), msg.Body())
	return Result{Verdict: v, Stage: "end of message", Mods: mods}, err
}
