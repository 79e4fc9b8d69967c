package engine

import (
	"bytes"
	"context"
	"io"

	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"time"

	"github.com/larkpost/larkpost/engine/deliver/maildir"
	"github.com/larkpost/larkpost/engine/smtpd"
	"github.com/larkpost/larkpost/rules"
	"github.com/larkpost/larkpost/stdlib/addr"
)

// directSink delivers before the 250 reply: the foundation's stand-in for
// the durable queue. Local recipients get a Maildir copy under
// data_dir/mail/USER/. Mail that would need relaying, or that a hook held,
// cannot be delivered yet; it is kept whole in the Maildir data_dir/hold/
// with its envelope in X-Larkpost-* headers, so nothing accepted is lost.
type directSink struct {
	dataDir string
	policy  *rules.Policy
	log     *slog.Logger
}

var _ smtpd.Sink = (*directSink)(nil)

func (d *directSink) Accept(ctx context.Context, env *smtpd.Envelope, msg []byte) error {
	lf := bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))
	if len(lf) > 0 && lf[len(lf)-1] != '\n' {
		lf = append(lf, '\n')
	}
	d.log.Info(env.ID + ": from=<" + env.Sender.String() + ">, size=" + strconv.Itoa(len(msg)) + ", nrcpt=" + strconv.Itoa(len(env.Rcpts)))

	var held []addr.Address
	seen := map[string]bool{}
	for _, r := range env.Rcpts {
		key := r.String()
		if seen[key] {
			continue
		}
		seen[key] = true
		disp := Dispose(d.policy, d.dataDir, r, env.Hold)
		if disp.Transport != "local" {
			held = append(held, r)
			continue
		}
		var hdr bytes.Buffer
		hdr.WriteString("Return-Path: <" + env.Sender.String() + ">\nDelivered-To: " + r.String() + "\n")
		dir := disp.Dest
		if _, err := maildir.Deliver(dir, ioMulti(hdr.Bytes(), lf)); err != nil {
			return fmt.Errorf("deliver to %s: %w", r, err)
		}
		d.log.Info(env.ID + ": to=<" + r.String() + ">, relay=local, delay=" + delay(env.Arrival) +
			", dsn=2.0.0, status=sent (delivered to maildir " + dir + ")")
	}
	if len(held) > 0 {
		if err := d.hold(env, held, lf); err != nil {
			return err
		}
	}
	d.log.Info(env.ID + ": removed")
	return nil
}

// Disposition is where an accepted recipient's copy goes.
type Disposition struct {
	Transport string // "local" or "hold"
	Dest      string // the Maildir
	Reason    string // why it is held
}

// Dispose decides a recipient's disposition. Delivery and `larkpost
// trace` both use it, so trace shows what delivery will do.
func Dispose(p *rules.Policy, dataDir string, rcpt addr.Address, hold bool) Disposition {
	box, ok := p.Mailbox(rcpt)
	switch {
	case hold:
		return Disposition{Transport: "hold", Dest: filepath.Join(dataDir, "hold"), Reason: "held by policy"}
	case !p.Settings.IsLocalDomain(rcpt.Domain):
		return Disposition{Transport: "hold", Dest: filepath.Join(dataDir, "hold"), Reason: "relay delivery arrives with the queue"}
	case !ok:
		return Disposition{Transport: "hold", Dest: filepath.Join(dataDir, "hold"), Reason: "no safe mailbox name"}
	}
	return Disposition{Transport: "local", Dest: filepath.Join(dataDir, "mail", box) + "/"}
}

func (d *directSink) hold(env *smtpd.Envelope, rcpts []addr.Address, lf []byte) error {
	var hdr bytes.Buffer
	hdr.WriteString("X-Larkpost-Queue-Id: " + env.ID + "\n")
	hdr.WriteString("X-Larkpost-Envelope-From: <" + env.Sender.String() + ">\n")
	for _, r := range rcpts {
		hdr.WriteString("X-Larkpost-Envelope-To: <" + r.String() + ">\n")
	}
	reason := Dispose(d.policy, d.dataDir, rcpts[0], env.Hold).Reason
	if env.Hold {
		if env.HoldReason != "" {
			reason += ": " + env.HoldReason
		}
		hdr.WriteString("X-Larkpost-Hold-Reason: " + env.HoldReason + "\n")
	}
	dir := filepath.Join(d.dataDir, "hold")
	if _, err := maildir.Deliver(dir, ioMulti(hdr.Bytes(), lf)); err != nil {
		return fmt.Errorf("hold %s: %w", env.ID, err)
	}
	for _, r := range rcpts {
		d.log.Info(env.ID + ": to=<" + r.String() + ">, relay=none, delay=" + delay(env.Arrival) +
			", status=held (" + reason + "; kept in " + dir + ")")
	}
	return nil
}

func delay(since time.Time) string {
	return strconv.FormatFloat(time.Since(since).Seconds(), 'f', 2, 64)
}
func ioMulti(parts ...[]byte) io.Reader {
	rs := make([]io.Reader, len(parts))
	for i, p := range parts {
		rs[i] = bytes.NewReader(p)
	}
	return io.MultiReader(rs...)
}
