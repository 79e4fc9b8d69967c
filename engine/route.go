package engine

import (
	"path/filepath"

	"github.com/larkpost/larkpost/engine/sched"
	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
	"github.com/larkpost/larkpost/stdlib/addr"
)

// Route decides where one recipient's copy goes. The scheduler calls it
// for every delivery and `larkpost trace` to show the same answer; it runs
// at delivery time, so a changed policy applies to mail already queued.
func Route(p *rules.Policy, dataDir string, r *queue.Rcpt) sched.Route {
	switch r.Kind {
	case "file":
		return sched.Route{Transport: "file", Mailbox: r.Addr, Dest: r.Addr}
	case "pipe":
		return sched.Route{Transport: "pipe", Mailbox: r.Addr, Dest: "pipe"}
	case "error":
		return sched.Route{Transport: "error", Status: "5.4.6", Text: r.Note}
	}
	rcpt := r.Addr
	a, err := addr.Parse(rcpt)
	if err != nil {
		return sched.Route{Transport: "error", Status: "5.1.3", Text: "bad recipient address syntax"}
	}
	if p.IsVirtualMailboxDomain(a.Domain) {
		settings := *p.Settings
		settings.DataDir = dataDir
		pp := *p
		pp.Settings = &settings
		path, ok := pp.VirtualMailbox(a.String())
		if !ok {
			return sched.Route{Transport: "error", Status: "5.1.1", Text: "unknown user: \"" + a.String() + "\" in virtual mailbox table"}
		}
		return sched.Route{Transport: "local", Mailbox: path, Dest: path}
	}
	if !p.Settings.IsLocalDomain(a.Domain) {
		return sched.Route{Transport: "hold", Text: "no transport for remote delivery yet (the smtp transport is planned)"}
	}
	box, ok := p.Mailbox(a)
	if !ok || !p.IsLocalUser(box) {
		return sched.Route{Transport: "error", Status: "5.1.1", Text: "unknown user: \"" + box + "\""}
	}
	settings := *p.Settings
	settings.DataDir = dataDir
	pp := *p
	pp.Settings = &settings
	path := pp.MailboxPath(box, a.Domain)
	if !filepath.IsAbs(path) {
		path, _ = filepath.Abs(path)
		if p.Settings.MailboxPath[len(p.Settings.MailboxPath)-1] == '/' {
			path += "/"
		}
	}
	return sched.Route{Transport: "local", Mailbox: path, Dest: path}
}
