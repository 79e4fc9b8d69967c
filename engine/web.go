package engine

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/larkpost/larkpost/engine/webui"
	"github.com/larkpost/larkpost/queue"
)

// webHandler is the status web page (package webui) over the engine's
// queue, activity feed and metrics. Its actions go through the control
// socket's commands, so they do what `larkpost queue VERB ID` does.
func (e *Engine) webHandler() (http.Handler, error) {
	return webui.New(webui.Backend{
		Walk:    e.queue.Walk,
		Counts:  func() (map[queue.State]int, error) { return e.queue.Counts(time.Now()) },
		Message: e.webMessage,
		Act:     e.webAct,
		Feed:    e.feed,
		HookStats: func() []webui.HookStat {
			if e.metrics == nil {
				return nil
			}
			var out []webui.HookStat
			for _, h := range e.metrics.HookStats() {
				out = append(out, webui.HookStat{Hook: h.Hook, Calls: h.Calls, Failures: h.Failures, Overruns: h.Overruns, Mean: h.Mean, P99: h.P99})
			}
			return out
		},
		// The token file is read at each request that needs it, so a
		// new token applies at once and ends the old token's sessions.
		Token: func() (string, bool) {
			return webui.TokenFile(e.policy.Load().Settings.Observe.WebTokenFile)()
		},
		Done: e.done,
		Log:  e.log,
	})
}

// webHeaderMax bounds what is read of a message to show its header.
const webHeaderMax = 64 << 10

// webMessage is `queue show` without the body: the record and the
// header, read from at most the message's first 64 KiB.
func (e *Engine) webMessage(id string) (*queue.Record, string, error) {
	rec, err := e.queue.Get(id)
	if err != nil {
		return nil, "", err
	}
	b, err := e.queue.OpenBody(rec)
	if err != nil {
		return rec, "", err
	}
	defer b.Close()
	head, err := b.Head(webHeaderMax)
	if err != nil {
		return rec, "", err
	}
	s := string(head)
	if i := strings.Index(s, "\r\n\r\n"); i >= 0 {
		s = s[:i+2]
	} else if int64(len(head)) < b.Size() {
		s += "\r\n[header longer than 64 KiB: cut]\r\n"
	}
	return rec, strings.ReplaceAll(s, "\r\n", "\n"), nil
}

// webAct runs one queue action for the admin at remote and logs it.
func (e *Engine) webAct(verb, id, remote string) (string, error) {
	rep := e.control(Request{Cmd: "queue." + verb, IDs: []string{id}, Via: "web, " + remote}, nil)
	if rep.Error != "" {
		e.log.Warn(id + ": " + verb + " by the admin (web, " + remote + ") failed: " + rep.Error)
		return "", errors.New(rep.Error)
	}
	switch {
	case len(rep.Busy) > 0:
		e.log.Info(id + ": " + verb + " by the admin (web, " + remote + ") left alone: being delivered")
		return id + " is being delivered right now: left alone, try again", nil
	case rep.Touched == 0:
		return verb + " " + id + ": nothing to do in its state", nil
	}
	return verb + " " + id + ": done", nil
}
