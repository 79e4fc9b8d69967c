package sched

import (
	"bytes"
	"context"
	"strings"
	"time"

	"github.com/larkpost/larkpost/engine/bounce"
	"github.com/larkpost/larkpost/engine/cleanup"
	"github.com/larkpost/larkpost/engine/deliver/local"
	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
)

// forward queues a copy of the message for a filter's forward(addr),
// keeping the envelope sender (as a .forward does) and adding
// Delivered-To, so a forwarding loop is caught by the loop check.
func (s *Scheduler) forward(rec *queue.Record, r *queue.Rcpt, to string, body *queue.Body, source string) local.Result {
	if strings.EqualFold(to, r.Addr) {
		return local.Result{Status: "5.4.6", Text: "filter forwards to the same address"}
	}
	sub := &cleanup.Submission{Origin: cleanup.Internal, Sender: rec.Sender, Rcpts: []cleanup.Rcpt{{Addr: to, Orig: r.Addr}},
		Log:    []queue.Step{{Stage: "file", Arg: r.Addr, Decision: "forward " + to, Source: source}},
		Prefix: []byte("Delivered-To: " + r.Addr + "\r\n"), Copy: &cleanup.Copy{Rec: rec, Body: body}}
	id, err := s.config().Cleanup.Inject(context.Background(), sub)
	if err != nil {
		return local.Result{Status: "4.3.0", Text: "cannot queue the forwarded copy: " + err.Error()}
	}
	s.log.Info(rec.ID + ": forwarded as " + id + " to <" + to + "> (" + source + ")")
	return local.Result{Status: "2.0.0", Text: "forwarded to " + to + " as " + id}
}

// vacation sends a filter's auto-reply, at most once per sender per
// period, never to bounces, lists, bulk or automatic mail (RFC 3834).
func (s *Scheduler) vacation(rec *queue.Record, r *queue.Rcpt, v *rules.Vacation, body *Message) {
	sender := strings.ToLower(rec.Sender)
	local, _, _ := strings.Cut(sender, "@")
	if sender == "" || local == "mailer-daemon" || local == "postmaster" || strings.HasPrefix(local, "owner-") ||
		strings.HasSuffix(local, "-request") || strings.HasSuffix(local, "-bounces") {
		return
	}
	h := rules.ParseMessage(body.Head(bounce.HeadBytes)).Header
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
	first, err := s.q.OnceWithin("v/"+strings.ToLower(r.Addr)+"/"+sender, time.Duration(v.Days)*24*time.Hour)
	if err != nil {
		s.log.Warn(rec.ID + ": vacation state: " + err.Error())
		return
	}
	if !first {
		return
	}
	var b bytes.Buffer
	now := time.Now()
	id := queue.NewID()
	b.WriteString("From: <" + r.Addr + ">\r\nTo: <" + rec.Sender + ">\r\n")
	b.WriteString("Subject: " + v.Subject + "\r\n")
	b.WriteString("Date: " + now.Format(time.RFC1123Z) + "\r\n")
	b.WriteString("Message-ID: <" + id + ".vacation@" + s.config().Hostname + ">\r\n")
	if mid := strings.TrimSpace(h.Get("Message-Id")); mid != "" {
		b.WriteString("In-Reply-To: " + mid + "\r\nReferences: " + mid + "\r\n")
	}
	b.WriteString("Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	b.WriteString(strings.ReplaceAll(strings.ReplaceAll(v.Text, "\r\n", "\n"), "\n", "\r\n") + "\r\n")
	// The reply goes out with the null sender, so it can never start a
	// loop of auto-replies or bounces.
	sub := &cleanup.Submission{ID: id, Origin: cleanup.Internal, Arrival: now, Rcpts: []cleanup.Rcpt{{Addr: rec.Sender}},
		Log:     []queue.Step{{Stage: "file", Arg: r.Addr, Decision: "vacation reply", Source: "filter"}},
		Content: cleanup.Whole(b.Bytes())}
	if _, err := s.config().Cleanup.Inject(context.Background(), sub); err != nil {
		s.log.Warn(rec.ID + ": vacation reply not queued: " + err.Error())
		return
	}
	s.log.Info(rec.ID + ": vacation reply " + id + " from <" + r.Addr + "> to <" + rec.Sender + ">")
}
