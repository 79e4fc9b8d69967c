package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"

	"github.com/larkpost/larkpost/engine"
	"github.com/larkpost/larkpost/engine/deliver"
	"github.com/larkpost/larkpost/engine/deliver/local"
	"github.com/larkpost/larkpost/engine/privsep"
	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
	"github.com/larkpost/larkpost/rules/postfix"
)

// daemonOptions are the engine options of this process: in the daemon of
// a split server, the inherited listeners and the parent's help for what
// needs users' rights; nothing otherwise.
func daemonOptions() (engine.Options, error) {
	conn, listeners, beat, ok, err := inherited()
	if !ok || err != nil {
		return engine.Options{}, err
	}
	c := privsep.NewClient(conn, "") // bodies in TMPDIR, unlinked at once
	daemonReadForward = func(user, path string) ([]byte, error) {
		b, err := c.ReadForward(user, path)
		if errors.Is(err, privsep.ErrUnavailable) {
			err = fmt.Errorf("%w: %w", postfix.ErrTemporary, err)
		}
		return b, err
	}
	daemonRunFilter = privsep.FilterRunner(c, nil)
	return engine.Options{Listeners: listeners, Privileged: parentAgent{c}, OpenDrop: c.OpenDrop, Beat: beat}, nil
}

// serveParent answers the daemon's requests, in the root parent.
func serveParent(set *rules.Settings, log *slog.Logger) func(*net.UnixConn, *queue.Beat) {
	return func(conn *net.UnixConn, commits *queue.Beat) {
		dir, _ := filepath.Abs(set.DataDir)
		srv := &privsep.Server{Log: log, DropDir: filepath.Join(dir, "maildrop", "new"), Filter: &privsep.FilterChildren{}, Commits: commits}
		if err := srv.Serve(conn); err != nil {
			log.Warn("privileged parent: " + err.Error())
		}
	}
}

// parentAgent is local.Privileged through the root parent.
type parentAgent struct{ c *privsep.Client }

func (p parentAgent) Mailbox(ctx context.Context, owner string, lr *local.Request) deliver.Status {
	return p.c.DeliverMailbox(ctx, privsep.DeliverMailbox{User: owner, Mailbox: lr.Mailbox, Folder: lr.Folder,
		QueueID: lr.QueueID, Sender: lr.Sender, Rcpt: lr.Rcpt, OrigRcpt: lr.OrigRcpt, SizeLimit: lr.SizeLimit}, lr.Body)
}

func (p parentAgent) File(ctx context.Context, owner string, lr *local.Request) deliver.Status {
	return p.c.DeliverFile(ctx, privsep.DeliverFile{User: owner, Path: lr.Mailbox, QueueID: lr.QueueID,
		Sender: lr.Sender, Rcpt: lr.Rcpt, OrigRcpt: lr.OrigRcpt, SizeLimit: lr.SizeLimit}, lr.Body)
}

func (p parentAgent) Pipe(ctx context.Context, pr *local.PipeRequest) deliver.Status {
	return p.c.RunPipe(ctx, privsep.RunPipe{User: pr.User, Command: pr.Command, Argv: pr.Argv, Sender: pr.Sender,
		Rcpt: pr.Rcpt, OrigRcpt: pr.OrigRcpt, SizeLimit: pr.SizeLimit, Timeout: pr.Timeout, Dir: pr.Dir}, pr.Body)
}
