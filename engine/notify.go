package engine

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"time"

	"github.com/larkpost/larkpost/queue"
)

// notifier sends the postmaster notices of notify_classes that are not
// DSN copies: resource, software, policy and protocol problems seen by
// the SMTP server. At most one notice per class per minute goes out;
// the rest are counted into the next one, so a flood of rejects cannot
// flood the postmaster.
type notifier struct {
	mu         sync.Mutex
	last       map[string]time.Time
	suppressed map[string]int
}

// notify queues a notice for class if the policy asks for that class.
func (e *Engine) notify(class, text string) {
	p := e.policy.Load()
	wanted := false
	for _, c := range p.Settings.NotifyClasses {
		wanted = wanted || c == class
	}
	if !wanted {
		return
	}
	n := &e.notices
	n.mu.Lock()
	if n.last == nil {
		n.last, n.suppressed = map[string]time.Time{}, map[string]int{}
	}
	now := time.Now()
	if now.Sub(n.last[class]) < time.Minute {
		n.suppressed[class]++
		n.mu.Unlock()
		return
	}
	n.last[class] = now
	more := n.suppressed[class]
	n.suppressed[class] = 0
	n.mu.Unlock()

	host := p.Settings.Hostname
	to := p.Settings.NotifyRecipient
	if !strings.Contains(to, "@") {
		to += "@" + host
	}
	id := queue.NewID()
	var b bytes.Buffer
	b.WriteString("From: MAILER-DAEMON@" + host + " (Mail Delivery System)\r\nTo: <" + to + ">\r\n")
	b.WriteString("Subject: Postmaster notice: " + class + " problem on " + host + "\r\n")
	b.WriteString("Date: " + now.Format(time.RFC1123Z) + "\r\nMessage-ID: <" + id + ".notice@" + host + ">\r\n")
	b.WriteString("Auto-Submitted: auto-generated\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	b.WriteString("The mail system at " + host + " reports a " + class + " problem:\r\n\r\n")
	b.WriteString(strings.ReplaceAll(text, "\n", "\r\n") + "\r\n")
	if more > 0 {
		b.WriteString("\r\n(and " + itoa(more) + " more of this class in the last minute, not sent separately)\r\n")
	}
	rec := &queue.Record{ID: id, Sender: "", Arrival: now, Size: int64(b.Len()), State: queue.Active, NextTry: now,
		Client: "local", Rcpts: []queue.Rcpt{{Addr: to, State: queue.Pending}},
		Log: []queue.Step{{Stage: "notice", Arg: class, Decision: "postmaster notice", Source: "notify_classes"}}}
	if err := e.queue.Enqueue(context.Background(), rec, b.Bytes()); err != nil {
		e.log.Warn("postmaster notice not queued: " + err.Error())
		return
	}
	e.log.Info(id + ": postmaster notice (" + class + ") to <" + to + ">")
	e.sched.Submit(rec)
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
