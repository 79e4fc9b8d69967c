package local

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/larkpost/larkpost/engine/cleanup"
	"github.com/larkpost/larkpost/engine/deliver"
	"github.com/larkpost/larkpost/engine/deliver/maildir"
	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
	"github.com/larkpost/larkpost/rules/postfix"
)

// Settings are what the agent reads at each delivery.
type Settings struct {
	Hostname         string
	SizeLimit        int64         // mailbox_size_limit
	CommandTimeLimit time.Duration // command_time_limit
	DefaultPrivs     string        // the user alias pipes run as when root (default_privs)
}

// Agent is the local delivery agent as the scheduler sees it: mailboxes
// (with what the file step decided: a folder, a forward, discarding, a
// vacation reply), files and commands from aliases and .forward.
type Agent struct {
	Settings func() Settings
	// Cleanup queues forwarded copies and vacation replies.
	Cleanup *cleanup.Cleanup
	// Once reports whether key was not seen within ttl, and records it:
	// a vacation reply goes once per sender per period.
	Once func(key string, ttl time.Duration) (bool, error)
	Log  *slog.Logger
	// Privileged writes and runs with other users' rights for a server
	// that cannot take them itself (the daemon of a split server asks its
	// root parent); nil: this process does it, with those rights when it
	// runs as root.
	Privileged Privileged
	// Commits are the queue's, for Maildir deliveries on its file system
	// to sync in its journal commits (maildir.Commits); nil: they sync
	// among themselves.
	Commits maildir.Commits
}

// Privileged does the deliveries a user controls with that user's
// rights, for a process that has none to give.
type Privileged interface {
	// Mailbox writes a mailbox as owner.
	Mailbox(ctx context.Context, owner string, lr *Request) deliver.Status
	// File appends to a file target from an alias or .forward as owner.
	File(ctx context.Context, owner string, lr *Request) deliver.Status
	// Pipe runs a command as pr.User.
	Pipe(ctx context.Context, pr *PipeRequest) deliver.Status
}

var _ deliver.Agent = (*Agent)(nil)

// Deliver delivers to each recipient of req in turn.
func (a *Agent) Deliver(ctx context.Context, req *deliver.Request) []deliver.Result {
	out := make([]deliver.Result, len(req.Rcpts))
	set := a.Settings()
	first := "" // the recipient whose copy is in the mailbox already
	for i, rc := range req.Rcpts {
		if ctx.Err() != nil {
			out[i].Status = deliver.Temp("4.3.0", "delivery interrupted (server stopping)")
			continue
		}
		switch req.Route.Kind {
		case deliver.Local:
			// local(8) delivers one copy per mailbox and folder: "alice"
			// and alice@other-local-domain in one alias list are one
			// person (the scheduler gives such recipients one request).
			if first != "" && req.Route.Filing.Plain() {
				out[i].Status = deliver.Sent("duplicate of <" + first + ">, delivered once")
				continue
			}
			out[i].Status = a.mailbox(ctx, req, rc, set)
			if out[i].OK() && req.Route.Filing.Plain() {
				first = rc.Addr
			}
		case deliver.File:
			out[i].Status = a.file(req, rc, set)
		case deliver.Pipe:
			out[i].Status = a.pipe(ctx, req, rc, set)
		default:
			out[i].Status = deliver.Temp("4.3.5", "the local agent does not deliver "+req.Route.Kind.String())
		}
	}
	return out
}

// file appends to a file target from an alias or .forward, with the
// rights of the route's owner when larkpost runs as root: a user's
// .forward can only reach files that user could write.
func (a *Agent) file(req *deliver.Request, rc deliver.Rcpt, set Settings) deliver.Status {
	lr := &Request{QueueID: req.QueueID, Sender: req.Sender, Rcpt: rc.Orig, OrigRcpt: rc.Orig,
		Mailbox: req.Route.Mailbox, Body: req.Body, SizeLimit: set.SizeLimit, Commits: a.Commits}
	owner := cmp.Or(req.Route.Owner, set.DefaultPrivs)
	if a.Privileged != nil {
		return a.Privileged.File(context.Background(), owner, lr)
	}
	if os.Geteuid() != 0 {
		return Deliver(lr)
	}
	acct, ok := postfix.LookupAccount(owner)
	if !ok || acct.UID == 0 {
		return deliver.Temp("4.3.0", "cannot deliver to file "+req.Route.Mailbox+": no unprivileged account "+strconv.Quote(owner))
	}
	var st deliver.Status
	if err := acct.Do(func() error { st = Deliver(lr); return nil }); err != nil {
		return deliver.Temp("4.3.0", "cannot take the rights of "+owner+": "+err.Error())
	}
	return st
}

// asOwner writes a mailbox in a user's home with the user's rights when
// larkpost runs as root, so the user owns it, and a virtual mailbox with
// the ids its owner names ("#UID:GID", see deliver.NumericOwner); other
// mailboxes are the server's.
func (a *Agent) asOwner(owner string, lr *Request) deliver.Status {
	if owner != "" && a.Privileged != nil {
		return a.Privileged.Mailbox(context.Background(), owner, lr)
	}
	if uid, gid, ok := deliver.ParseNumericOwner(owner); ok {
		return asIDs(owner, uid, gid, lr)
	}
	if owner == "" || os.Geteuid() != 0 {
		return Deliver(lr)
	}
	acct, ok := postfix.LookupAccount(owner)
	if !ok || acct.UID == 0 {
		return Deliver(lr)
	}
	var st deliver.Status
	if err := acct.Do(func() error { st = Deliver(lr); return nil }); err != nil {
		return deliver.Temp("4.3.0", "cannot take the rights of "+owner+": "+err.Error())
	}
	return st
}

// asIDs writes a virtual mailbox as uid and gid, which need no account:
// as root with that file-system identity, so the files and directories
// the delivery creates are theirs; without root only when uid is this
// process's own (the files then have its group).
func asIDs(owner string, uid, gid int, lr *Request) deliver.Status {
	if me := os.Geteuid(); me != 0 {
		if uid == me {
			return Deliver(lr)
		}
		return deliver.Temp("4.3.0", fmt.Sprintf("virtual mailbox owner uid %d: larkpost runs as uid %d and cannot write as another user "+
			"(start it as root, or set virtual_mailbox_owner to \"%d:%d\")", uid, me, me, os.Getegid()))
	}
	if uid == 0 || gid == 0 {
		return deliver.Temp("4.3.0", "virtual mailbox owner uid "+strconv.Itoa(uid)+" gid "+strconv.Itoa(gid)+": refusing to write a mailbox as root")
	}
	acct := postfix.Account{Name: owner, UID: uid, GID: gid, Groups: []int{gid}}
	var st deliver.Status
	if err := acct.Do(func() error { st = Deliver(lr); return nil }); err != nil {
		return deliver.Temp("4.3.0", "cannot take the rights of uid "+strconv.Itoa(uid)+" gid "+strconv.Itoa(gid)+": "+err.Error())
	}
	return st
}

// mailbox delivers one recipient's copy as the file step decided.
func (a *Agent) mailbox(ctx context.Context, req *deliver.Request, rc deliver.Rcpt, set Settings) deliver.Status {
	lr := &Request{QueueID: req.QueueID, Sender: req.Sender, Rcpt: rc.Addr, OrigRcpt: rc.Orig,
		Mailbox: req.Route.Mailbox, Body: req.Body, SizeLimit: set.SizeLimit, Commits: a.Commits}
	if f := req.Route.Filing; f != nil {
		if f.Err != nil {
			a.Log.Warn(req.QueueID + ": to=<" + rc.Addr + ">: filter failed, filed to INBOX: " + f.Err.Error())
		}
		switch {
		case f.Discard:
			return deliver.Sent("discarded by " + f.Source)
		case f.Forward != "":
			return a.forward(ctx, req, rc, f.Forward, f.Source)
		}
		lr.Folder = f.Folder
	}
	st := a.asOwner(req.Route.Owner, lr)
	if f := req.Route.Filing; f != nil && f.Vacation != nil && st.OK() {
		a.vacation(req, rc, f.Vacation, set)
	}
	return st
}

// pipe runs a command for one recipient, refusing addresses that start
// with "-" unless allow_min_user (the command could take them for
// options).
func (a *Agent) pipe(ctx context.Context, req *deliver.Request, rc deliver.Rcpt, set Settings) deliver.Status {
	rt := req.Route
	rcpt := rc.Orig
	if len(rt.Argv) > 0 {
		rcpt = rc.Addr
	}
	pr := &PipeRequest{Command: rt.Mailbox, Sender: req.Sender, Rcpt: rcpt, OrigRcpt: rc.Orig, Body: req.Body,
		Timeout: set.CommandTimeLimit, User: cmp.Or(rt.Owner, set.DefaultPrivs), SizeLimit: set.SizeLimit}
	bad := func(what string) deliver.Status {
		return deliver.Perm("5.1.3", "bad address syntax: "+what+" starts with \"-\" (allow_min_user = False)")
	}
	if len(rt.Argv) == 0 {
		user, _, _ := strings.Cut(rcpt, "@")
		if d := deliver.Dashed(req.Sender, rcpt, rc.Orig, user); d != "" && !rt.AllowMinUser {
			return bad("<" + d + ">")
		}
	} else {
		argv, name, ok := rt.Command(req.Sender)
		if !ok {
			return bad("${" + name + "}")
		}
		pr.Argv = argv
	}
	if a.Privileged != nil {
		return a.Privileged.Pipe(ctx, pr)
	}
	return DeliverPipe(ctx, pr)
}

// forward queues a copy of the message for a filter's forward(addr),
// keeping the envelope sender (as a .forward does) and adding
// Delivered-To, so a forwarding loop is caught by the loop check.
func (a *Agent) forward(ctx context.Context, req *deliver.Request, rc deliver.Rcpt, to, source string) deliver.Status {
	if strings.EqualFold(to, rc.Addr) {
		return deliver.Perm("5.4.6", "filter forwards to the same address")
	}
	sub := &cleanup.Submission{Origin: cleanup.Internal, Sender: req.Sender, Rcpts: []cleanup.Rcpt{{Addr: to, Orig: rc.Addr}},
		Log:    []queue.Step{{Stage: "file", Arg: rc.Addr, Decision: "forward " + to, Source: source}},
		Prefix: []byte("Delivered-To: " + rc.Addr + "\r\n")}
	if qb, ok := req.Body.(*queue.Body); ok {
		sub.Copy = qb
	} else {
		data, err := io.ReadAll(io.NewSectionReader(req.Body, 0, req.Body.Size()))
		if err != nil {
			return deliver.Temp("4.3.0", "cannot read the message: "+err.Error())
		}
		sub.Content = cleanup.Whole(data)
	}
	id, err := a.Cleanup.Inject(ctx, sub)
	if err != nil {
		return deliver.Temp("4.3.0", "cannot queue the forwarded copy: "+err.Error())
	}
	a.Log.Info(req.QueueID + ": forwarded as " + id + " to <" + to + "> (" + source + ")")
	return deliver.Sent("forwarded to " + to + " as " + id)
}

// vacationHead is how much of a message the vacation check reads: the
// header is what it looks at.
const vacationHead = 256 << 10

// vacation sends a filter's auto-reply, at most once per sender per
// period, never to bounces, lists, bulk or automatic mail (RFC 3834).
func (a *Agent) vacation(req *deliver.Request, rc deliver.Rcpt, v *rules.Vacation, set Settings) {
	sender := strings.ToLower(req.Sender)
	local, _, _ := strings.Cut(sender, "@")
	if sender == "" || local == "mailer-daemon" || local == "postmaster" || strings.HasPrefix(local, "owner-") ||
		strings.HasSuffix(local, "-request") || strings.HasSuffix(local, "-bounces") {
		return
	}
	head := make([]byte, min(req.Body.Size(), vacationHead))
	n, _ := req.Body.ReadAt(head, 0)
	h := rules.ParseMessage(head[:n]).Header
	if h.Has("List-Id") || h.Has("List-Unsubscribe") || h.Has("List-Post") {
		return
	}
	switch strings.ToLower(strings.TrimSpace(h.Get("Precedence"))) {
	case "bulk", "list", "junk":
		return
	}
	if as := strings.ToLower(strings.TrimSpace(h.Get("Auto-Submitted"))); as != "" && as != "no" {
		return
	}
	first, err := a.Once("v/"+strings.ToLower(rc.Addr)+"/"+sender, time.Duration(v.Days)*24*time.Hour)
	if err != nil {
		a.Log.Warn(req.QueueID + ": vacation state: " + err.Error())
		return
	}
	if !first {
		return
	}
	var b bytes.Buffer
	now := time.Now()
	id := queue.NewID()
	b.WriteString("From: <" + rc.Addr + ">\r\nTo: <" + req.Sender + ">\r\n")
	b.WriteString("Subject: " + v.Subject + "\r\n")
	b.WriteString("Date: " + now.Format(time.RFC1123Z) + "\r\n")
	b.WriteString("Message-ID: <" + id + ".vacation@" + set.Hostname + ">\r\n")
	if mid := strings.TrimSpace(h.Get("Message-Id")); mid != "" {
		b.WriteString("In-Reply-To: " + mid + "\r\nReferences: " + mid + "\r\n")
	}
	b.WriteString("Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	b.WriteString(strings.ReplaceAll(strings.ReplaceAll(v.Text, "\r\n", "\n"), "\n", "\r\n") + "\r\n")
	// The reply goes out with the null sender, so it can never start a
	// loop of auto-replies or bounces.
	sub := &cleanup.Submission{ID: id, Origin: cleanup.Internal, Arrival: now, Rcpts: []cleanup.Rcpt{{Addr: req.Sender}},
		Log:     []queue.Step{{Stage: "file", Arg: rc.Addr, Decision: "vacation reply", Source: "filter"}},
		Content: cleanup.Whole(b.Bytes())}
	if _, err := a.Cleanup.Inject(context.Background(), sub); err != nil {
		a.Log.Warn(req.QueueID + ": vacation reply not queued: " + err.Error())
		return
	}
	a.Log.Info(req.QueueID + ": vacation reply " + id + " from <" + rc.Addr + "> to <" + req.Sender + ">")
}
