package rules

import (
	"time"

	"go.starlark.net/starlark"
)

// RateDelays are Postfix's *_destination_rate_delay settings: the pause
// between the end of one delivery and the start of the next to the same
// destination, which also makes that destination's concurrency 1. 0 is
// off. SMTP, LMTP and Local apply only when the script set them; the
// others follow Default, as Postfix's $default_destination_rate_delay
// (read them with Settings.RateDelay).
type RateDelays struct {
	Default time.Duration // default_destination_rate_delay
	SMTP    time.Duration // smtp_destination_rate_delay (and Postfix's relay_destination_rate_delay)
	LMTP    time.Duration // lmtp_destination_rate_delay
	Local   time.Duration // local_destination_rate_delay
}

// rateDelaySettings are the rate delay settings by transport; "" is
// default_destination_rate_delay.
var rateDelaySettings = map[string]struct {
	field func(*RateDelays) *time.Duration
	doc   string
}{
	"": {func(r *RateDelays) *time.Duration { return &r.Default },
		"pause between the end of one delivery and the start of the next to the same destination, for every transport without its own setting: a nexthop for smtp and lmtp, a mailbox or file for local; a non-zero delay also makes the destination's concurrency 1 (at most one message per delay, e.g. \"2s\" is 30 a minute); 0 is off; default 0s"},
	"smtp": {func(r *RateDelays) *time.Duration { return &r.SMTP },
		"default_destination_rate_delay for smtp deliveries (relay: routes included), per nexthop: stays under a big provider's rate limit; default: default_destination_rate_delay"},
	"lmtp": {func(r *RateDelays) *time.Duration { return &r.LMTP },
		"default_destination_rate_delay for lmtp deliveries, per nexthop; default: default_destination_rate_delay"},
	"local": {func(r *RateDelays) *time.Duration { return &r.Local },
		"default_destination_rate_delay for local deliveries (mbox, Maildir, file), per mailbox or file; pipe commands have none; default: default_destination_rate_delay"},
}

// rateDelayName is the setting of transport kind ("" for the default).
func rateDelayName(kind string) string {
	if kind == "" {
		return "default_destination_rate_delay"
	}
	return kind + "_destination_rate_delay"
}

// RateDelay is the rate delay of transport kind ("smtp", "relay",
// "lmtp" or "local"): its own setting when the script set it, else
// default_destination_rate_delay. Other transports have the default.
func (s *Settings) RateDelay(kind string) time.Duration {
	if kind == "relay" {
		kind = "smtp" // relay: routes are delivered by the smtp agent
	}
	if rd, ok := rateDelaySettings[kind]; ok && kind != "" && s.IsSet(rateDelayName(kind)) {
		return *rd.field(&s.RateDelays)
	}
	return s.RateDelays.Default
}

func init() {
	for kind, rd := range rateDelaySettings {
		name := rateDelayName(kind)
		settingTable[name] = setting{"duration", func(s *Settings, v starlark.Value) error {
			return setDuration(rd.field(&s.RateDelays), v)
		}, rd.doc}
		bindings[name] = BindDelivery
		postfixEquivalents[name] = name
	}
	postfixEquivalents["smtp_destination_rate_delay"] = "smtp_destination_rate_delay, relay_destination_rate_delay"
	settingExamples["default_destination_rate_delay"] = `"1s"`
	settingExamples["smtp_destination_rate_delay"] = `"2s"`
	settingExamples["lmtp_destination_rate_delay"] = `"500ms"`
	settingExamples["local_destination_rate_delay"] = `0`
}
