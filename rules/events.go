package rules

import (
	"context"
	"time"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
)

// DeliveryEvent is one recipient's delivery result, for the post-queue
// hooks on_delivered, on_deferred and on_bounced.
type DeliveryEvent struct {
	ID, Sender string
	Rcpt, Orig string
	State      string // "sent", "deferred" or "bounced"
	Relay      string
	Status     string // enhanced status code, "2.0.0"
	Text       string
	Delay      time.Duration
	Attempts   int
	Size       int64
}

// HasEventHooks reports whether the script defines a post-queue hook.
func (p *Policy) HasEventHooks() bool {
	return p.hooks[HookDelivered] != nil || p.hooks[HookDeferred] != nil || p.hooks[HookBounced] != nil
}

// Event runs the post-queue hook for ev, if the script has one. What the
// hook returns is ignored: delivery has happened and cannot be changed.
// A failure is returned for the caller to log.
func (p *Policy) Event(ctx context.Context, ev DeliveryEvent) error {
	h := HookDelivered
	switch ev.State {
	case "deferred":
		h = HookDeferred
	case "bounced":
		h = HookBounced
	}
	if p.hooks[h] == nil {
		return nil
	}
	msg := starlarkstruct.FromStringDict(starlark.String("msg"), starlark.StringDict{
		"id": starlark.String(ev.ID), "sender": starlark.String(ev.Sender), "size": starlark.MakeInt64(ev.Size),
	})
	result := starlarkstruct.FromStringDict(starlark.String("result"), starlark.StringDict{
		"status":   starlark.String(ev.State),
		"dsn":      starlark.String(ev.Status),
		"text":     starlark.String(ev.Text),
		"relay":    starlark.String(ev.Relay),
		"delay":    starlark.Float(ev.Delay.Seconds()),
		"attempts": starlark.MakeInt(ev.Attempts),
		"orig":     optString(ev.Orig),
	})
	if _, _, err := p.callValue(ctx, h, msg, starlark.String(ev.Rcpt), result); err != nil {
		return p.scriptError(h, err)
	}
	return nil
}
