package main

import (
	"strings"
	"testing"
	"time"

	"github.com/larkpost/larkpost/queue"
)

// TestPrintNextTry: mailq's line says "next now" for a deferred message
// whose retry time has come or that a flush of everything has made due
// (its NextTry still names the later time), and postcat's output says
// the flush made it due.
func TestPrintNextTry(t *testing.T) {
	later := time.Now().Add(time.Hour)
	for _, tc := range []struct {
		name     string
		rec      queue.Record
		list     string
		show     string
		showNone string
	}{
		{"waiting", queue.Record{NextTry: later}, "next " + later.Local().Format("Jan 2 15:04:05"), "next_try: ", "flushed:"},
		{"due", queue.Record{NextTry: time.Now().Add(-time.Minute)}, "next now", "next_try: ", "flushed:"},
		{"flushed by mark", queue.Record{NextTry: later, Flushed: true}, "next now", "flushed: due now", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.rec
			r.ID, r.State, r.Tries = "1K0TG50Q5SP00", queue.Deferred, 2
			var list, show strings.Builder
			printQueue(&list, []*queue.Record{&r})
			printMessage(&show, &r, "")
			if !strings.Contains(list.String(), tc.list) {
				t.Errorf("queue list:\n%s\nwant %q", list.String(), tc.list)
			}
			if !strings.Contains(show.String(), tc.show) {
				t.Errorf("queue show:\n%s\nwant %q", show.String(), tc.show)
			}
			if tc.showNone != "" && strings.Contains(show.String(), tc.showNone) {
				t.Errorf("queue show:\n%s\nhas %q", show.String(), tc.showNone)
			}
		})
	}
}
