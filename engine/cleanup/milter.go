package cleanup

import (
	"log/slog"
	"strconv"
	"strings"

	"github.com/larkpost/larkpost/engine/milter"
	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
	"github.com/larkpost/larkpost/stdlib/addr"
)

// ApplyMilter applies one milter's changes, in the order it asked:
// header and body changes to msg, which the next milter is given and
// which becomes the queued message (TakeMilterHeader, or the caller's
// body replacement); sender and recipient changes and quarantine to sub.
// Each change is written to the message's decision log with the milter's
// name. A change that would break the message (a bad address, a header
// value that smuggles a field in) is logged and skipped: a milter is as
// untrusted as a client.
func ApplyMilter(sub *Submission, msg *milter.Message, name string, mods []milter.Modification, log *slog.Logger) {
	src := "milter " + name
	note := func(what string) {
		sub.MilterLog = append(sub.MilterLog, queue.Step{Stage: "data", Decision: what, Source: src})
	}
	warn := func(what string) {
		log.Warn("warning: " + sub.ID + ": " + src + ": " + what)
	}
	for _, mod := range mods {
		switch mod.Kind {
		case milter.ModChangeFrom, milter.ModAddRcpt, milter.ModDeleteRcpt:
			a := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(mod.Addr), "<"), ">")
			if _, err := addr.Parse(a); err != nil && !(a == "" && mod.Kind == milter.ModChangeFrom) {
				warn(mod.Kind.String() + ": bad address <" + a + ">, ignored")
				continue
			}
			applyEnvelope(sub, a, mod.Kind, log, src, note)
			continue
		case milter.ModQuarantine:
			sub.Hold, sub.HoldReason = true, src+": "+mod.Reason
			note("quarantine " + mod.Reason)
			continue
		}
		handled, err := msg.Apply(mod)
		switch {
		case err != nil:
			warn(err.Error() + ", ignored")
		case !handled:
			warn(mod.Kind.String() + " is not supported, ignored")
		case mod.Kind == milter.ModReplaceBody:
			log.Info(sub.ID + ": " + src + ": replace body (" + strconv.FormatInt(msg.BodySize(), 10) + " bytes)")
			note("replace body")
		default:
			what := mod.Kind.String() + " " + mod.Name
			switch mod.Kind {
			case milter.ModAddHeader, milter.ModInsertHeader, milter.ModChangeHeader:
				what += ":" + mod.Value
			}
			if mod.Kind != milter.ModAddHeader && mod.Kind != milter.ModInsertHeader {
				log.Info(sub.ID + ": " + src + ": " + what)
			}
			note(what)
		}
	}
}

func applyEnvelope(sub *Submission, a string, kind milter.ModKind, log *slog.Logger, src string, note func(string)) {
	switch kind {
	case milter.ModChangeFrom:
		log.Info(sub.ID + ": " + src + ": sender <" + sub.Sender + "> -> <" + a + ">")
		note("change sender <" + sub.Sender + "> -> <" + a + ">")
		sub.Sender = a
	case milter.ModAddRcpt:
		log.Info(sub.ID + ": " + src + ": add recipient <" + a + ">")
		note("add recipient <" + a + ">")
		sub.Rcpts = append(sub.Rcpts, Rcpt{Addr: a})
	case milter.ModDeleteRcpt:
		kept := sub.Rcpts[:0]
		for _, r := range sub.Rcpts {
			if !strings.EqualFold(r.Addr, a) {
				kept = append(kept, r)
			}
		}
		log.Info(sub.ID + ": " + src + ": delete recipient <" + a + "> (" + strconv.Itoa(len(sub.Rcpts)-len(kept)) + ")")
		note("delete recipient <" + a + ">")
		sub.Rcpts = kept
	}
}

// TakeMilterHeader makes the milters' header the queued message's when
// they changed it and left the body: the client's header block is then
// skipped and this one written in its place.
func (sub *Submission) TakeMilterHeader(msg *milter.Message) {
	if msg.HeaderEdited() && !msg.BodyReplaced() {
		sub.Header = append([]byte(nil), msg.Header()...)
	}
}

// MilterDecision is a milter's verdict as a decision of the intake, with
// the milter's name as its source; Continue for one that lets the
// message go on. A refusal without a reply of its own gets Sendmail's
// and Postfix's default text.
func MilterDecision(name string, v milter.Verdict) rules.Decision {
	d := rules.Decision{Source: "milter " + name, Hook: "milter"}
	switch v.Action {
	case milter.Reject:
		d.Kind, d.Code, d.Status, d.Text = rules.Reject, v.Code, v.Status, v.Text
	case milter.Tempfail:
		d.Kind, d.Code, d.Status, d.Text = rules.Defer, v.Code, v.Status, v.Text
	case milter.Discard:
		d.Kind, d.Text = rules.Discard, "discarded by milter "+name
	case milter.Quarantine:
		d.Kind, d.Text = rules.Hold, "milter "+name+": "+v.Text
	default:
		return d
	}
	if d.Code == 0 && (d.Kind == rules.Reject || d.Kind == rules.Defer) {
		d.Code, d.Status, d.Text = 550, "5.7.1", "Command rejected"
		if d.Kind == rules.Defer {
			d.Code, d.Status, d.Text = 451, "4.7.1", "Service unavailable - try again later"
		}
	}
	return d
}
