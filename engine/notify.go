package engine

import (
	"github.com/larkpost/larkpost/engine/bounce"
	"github.com/larkpost/larkpost/rules"
)

// notify reports a problem to the postmaster when notify_classes asks
// for its class (see bounce.Notifier).
func (e *Engine) notify(class, text string) { e.notices.Notify(class, text) }

// bounceConfig is the reports' part of the settings.
func bounceConfig(set *rules.Settings) *bounce.Config {
	return &bounce.Config{Hostname: set.Hostname, MaxLifetime: set.MaxQueueLifetime,
		NotifyClasses: set.NotifyClasses, NotifyRecipient: set.NotifyRecipient}
}
