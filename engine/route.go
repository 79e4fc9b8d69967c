package engine

import (
	"cmp"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/larkpost/larkpost/engine/deliver"
	"github.com/larkpost/larkpost/engine/sched"
	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
	"github.com/larkpost/larkpost/rules/postfix"
	"github.com/larkpost/larkpost/stdlib/addr"
	"github.com/larkpost/larkpost/stdlib/maps"
)

// Route decides where one recipient's copy goes: the policy's transport
// (route hook, transport_maps, or the default), turned into what the
// scheduler's agents need. The scheduler calls it for every delivery and
// `larkpost trace` to show the same answer; it runs at delivery time, so a
// changed policy applies to mail already queued.
func Route(p *rules.Policy, r *queue.Rcpt, m *sched.Message) deliver.Route {
	switch r.Kind {
	case "file":
		return deliver.Route{Kind: deliver.File, Mailbox: r.Addr, Dest: r.Addr, Owner: runAs(r.Note, p.Settings.DefaultPrivs)}
	case "pipe":
		return deliver.Route{Kind: deliver.Pipe, Mailbox: r.Addr, Dest: "pipe", AllowMinUser: p.Settings.AllowMinUser,
			Owner: runAs(r.Note, p.Settings.DefaultPrivs)}
	case "error":
		return deliver.Route{Kind: deliver.Error, Status: deliver.Perm("5.4.6", r.Note)}
	}
	var msg *rules.Message
	if m != nil && p.Has(rules.HookRoute) {
		msg = p.ParseHead(m.Head(p.Settings.HeadBytes()), m.Size())
	}
	t, err := p.Route(context.Background(), r.Addr, msg)
	if err != nil {
		if lookupFailed(err) {
			// A transport table that fails defers, as Postfix's
			// trivial-rewrite does: the default route could be wrong.
			return deliver.Route{Kind: deliver.Defer, Status: deliver.Temp("4.3.0", "route: "+err.Error())}
		}
		// A broken route hook defers: mail waits for the fix.
		return deliver.Route{Kind: deliver.Defer, Status: deliver.Temp("4.3.5", "route: "+err.Error())}
	}
	rt := transportRoute(p, r, m, msg, t)
	rt.Source = t.Source
	return rt
}

// runAs is whose rights a file or command target from expansion is
// delivered with, as local(8) does: the owner of the file that named it
// (a .forward, an aliases file), unless that is root; then, and for
// targets a hook or table named, default_privs. Never root.
func runAs(via, defaultPrivs string) string {
	fi, err := os.Stat(via)
	if errors.Is(err, fs.ErrPermission) {
		// A split server's daemon cannot look into a 0700 home, where the
		// .forward was read by the parent with the user's rights: the
		// home's owner is then whose rights the target runs with, which
		// is never more than that user could do in the home anyway.
		fi, err = os.Stat(filepath.Dir(via))
	}
	if err != nil {
		return defaultPrivs
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return defaultPrivs
	}
	if a, ok := postfix.LookupAccountID(int(st.Uid)); ok {
		return a.Name
	}
	return defaultPrivs
}

// transportRoute turns the policy's transport into what the agents need.
func transportRoute(p *rules.Policy, r *queue.Rcpt, m *sched.Message, msg *rules.Message, t rules.Transport) deliver.Route {
	a, _ := addr.Parse(r.Addr)
	switch t.Kind {
	case "local":
		rt := localRoute(p, a)
		if rt.Kind == deliver.Local && m != nil && (p.Has(rules.HookFile) || p.Settings.FilterPath != "") {
			if msg == nil {
				msg = p.ParseHead(m.Head(p.Settings.HeadBytes()), m.Size())
			}
			box, _ := p.Mailbox(a)
			req := rules.FileRequest{User: box, Rcpt: a.String(), Msg: msg}
			if m.ID != "" && p.Settings.FilterPath != "" {
				dir := filepath.Join(p.Settings.DataDir, "filtering")
				if os.MkdirAll(dir, 0o700) == nil {
					req.Marker = filepath.Join(dir, m.ID+"."+box)
				}
			}
			f := p.FileMessage(context.Background(), req)
			rt.Filing = &f
		}
		return rt
	case "smtp", "lmtp":
		return remoteRoute(p, t)
	case "pipe":
		return deliver.Route{Kind: deliver.Pipe, Argv: t.Argv, Vars: pipeVars(r, a, p.Settings.RecipientDelimiter),
			Dest: "pipe " + t.Nexthop, AllowMinUser: p.Settings.AllowMinUser}
	case "error":
		return deliver.Route{Kind: deliver.Error, Status: deliver.Status{Enhanced: t.Status, Text: t.Text}}
	case "discard":
		return deliver.Route{Kind: deliver.Discard}
	case "hold":
		return deliver.Route{Kind: deliver.Hold, Text: "held by the transport: " + t.Text}
	}
	return deliver.Route{Kind: deliver.Defer, Status: deliver.Temp("4.3.5", "unknown transport "+t.Kind)}
}

func localRoute(p *rules.Policy, a addr.Address) deliver.Route {
	if p.IsVirtualMailboxDomain(a.Domain) {
		path, ok, err := p.VirtualMailbox(a.String())
		if err != nil {
			return deliver.Route{Kind: deliver.Defer, Status: deliver.Temp("4.3.0", err.Error())}
		}
		if !ok {
			return deliver.Route{Kind: deliver.Error, Status: deliver.Perm("5.1.1", "unknown user: \""+a.String()+"\" in virtual mailbox table")}
		}
		rt := deliver.Route{Kind: deliver.Local, Mailbox: path, Dest: path}
		// virtual(8)'s virtual_uid_maps and virtual_gid_maps, or
		// larkpost's virtual_mailbox_owner: the mailbox is written with
		// those ids; without them it is the server's.
		uid, gid, owned, err := p.VirtualOwner(a.String())
		if err != nil {
			return deliver.Route{Kind: deliver.Defer, Status: deliver.Temp("4.3.0", err.Error())}
		}
		if owned {
			rt.Owner = deliver.NumericOwner(uid, gid)
		}
		return rt
	}
	box, ok := p.Mailbox(a)
	if !ok || !p.IsLocalUser(box) {
		return deliver.Route{Kind: deliver.Error, Status: deliver.Perm("5.1.1", "unknown user: \""+box+"\"")}
	}
	path := p.MailboxPath(box, a.Domain)
	if !filepath.IsAbs(path) {
		path, _ = filepath.Abs(path)
		if strings.HasSuffix(p.Settings.MailboxPath, "/") {
			path += "/"
		}
	}
	return deliver.Route{Kind: deliver.Local, Mailbox: path, Dest: path, Owner: homeOwner(box, path, postfix.LookupHome)}
}

// homeOwner names the account a mailbox is written as: the user's own
// when the mailbox is in the user's home (~/Maildir/, ~/mbox), as
// local(8) writes it, so the user owns it. A mailbox elsewhere (under
// data_dir, a spool) stays the server's.
func homeOwner(box, path string, lookup func(string) (postfix.Account, bool)) string {
	acct, ok := lookup(box)
	if !ok || acct.UID == 0 || acct.Home == "" || acct.Home == "/" {
		return ""
	}
	home := filepath.Clean(acct.Home)
	if rel, err := filepath.Rel(home, filepath.Clean(path)); err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return ""
	}
	return acct.Name
}

// remoteRoute is an smtp or lmtp destination with the TLS level and
// credentials the policy has for its nexthop. A table that fails defers:
// without its answer the mail could go in the clear, or without the login
// the relay wants.
func remoteRoute(p *rules.Policy, t rules.Transport) deliver.Route {
	kind, port := deliver.SMTP, 25
	if t.Kind == "lmtp" {
		kind, port = deliver.LMTP, 24
	}
	d := deliver.Destination{Host: t.Host, Port: cmp.Or(t.Port, port), NoMX: t.NoMX, Unix: t.Unix, LMTP: kind == deliver.LMTP}
	level, err := p.TLSLevel(t.Nexthop)
	if err != nil {
		return deliver.Route{Kind: deliver.Defer, Status: deliver.Temp("4.3.0", err.Error())}
	}
	d.TLSLevel = level
	switch d.TLSLevel {
	case "none":
		d.NoTLS = true
	case "encrypt":
		d.RequireTLS = true
	}
	user, pass, ok, err := p.SASLCredentials(t.Nexthop)
	if err != nil {
		return deliver.Route{Kind: deliver.Defer, Status: deliver.Temp("4.3.0", err.Error())}
	}
	if ok {
		d.Auth = &deliver.Auth{User: user, Password: pass}
	}
	return deliver.Route{Kind: kind, Remote: &d, Dest: t.String()}
}

// lookupFailed reports an error that is a table's failed lookup.
func lookupFailed(err error) bool {
	var le *maps.LookupError
	return errors.As(err, &le)
}

// pipeVars are pipe(8)'s macro values for a recipient: ${recipient},
// ${user}, ${extension}, ${domain}, ${nexthop}, ${original_recipient}.
// The scheduler adds ${sender}, which comes from the envelope, and fills
// them into the command's words (each word one argument; no shell).
func pipeVars(r *queue.Rcpt, a addr.Address, delims string) map[string]string {
	user, ext, _ := addr.Split(a.Local, delims)
	return map[string]string{"recipient": r.Addr, "user": strings.ToLower(user), "extension": ext,
		"domain": a.Domain, "nexthop": a.Domain, "original_recipient": orDefault(r.Orig, r.Addr)}
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
