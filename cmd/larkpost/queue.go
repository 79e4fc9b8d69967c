package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/larkpost/larkpost/engine"
	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
)

// control sends a request to the server that owns the config's data
// directory. Exit status 2 with one line when none runs.
func control(file string, req engine.Request, stderr io.Writer) (*engine.Reply, int) {
	dir, _ := filepath.Abs(controlDataDir(file, stderr))
	rep, err := engine.Control(dir, req)
	if errors.Is(err, engine.ErrNoServer) {
		fmt.Fprintf(stderr, "larkpost: %v\n", err)
		return nil, 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "larkpost: %v\n", err)
		return rep, 1
	}
	return rep, 0
}

// dataDirSetting finds data_dir = "..." in a config's text.
var dataDirSetting = regexp.MustCompile(`\bdata_dir\s*=\s*"([^"\\]*)"`)

// controlDataDir is the data directory of the server a read-only or
// queue command talks to. A config with errors must not lock the admin
// out of a server that runs fine on its last good version: the
// data_dir written in it, or the default, is used, with a warning.
func controlDataDir(file string, stderr io.Writer) string {
	var diags bytes.Buffer
	if p, ok := loadPolicy(file, &diags, nil); ok {
		return p.Settings.DataDir
	}
	first, _, _ := strings.Cut(diags.String(), "\n")
	dir := rules.DefaultSettings().DataDir
	if src, err := os.ReadFile(file); err == nil {
		if m := dataDirSetting.FindSubmatch(src); m != nil {
			dir = string(m[1])
		}
	}
	fmt.Fprintf(stderr, "larkpost: warning: the config has errors (larkpost check lists them; first: %s); asking the server of data_dir %s\n", first, dir)
	return dir
}

// runQueue is `larkpost queue list|show|flush|hold|release|requeue|delete`:
// mailq, postcat, postqueue -f and postsuper in one place.
func runQueue(args []string, stdout, stderr io.Writer) int {
	const usage = "usage: larkpost queue list|show|flush|hold|release|requeue|delete [options] [ID...]\n(larkpost queue list -h lists the options)"
	if len(args) > 0 && isHelpArg(args[0]) {
		fmt.Fprintln(stdout, usage)
		return 0
	}
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	sub := args[0]
	if !slices.Contains(queueCmds, sub) {
		fmt.Fprintf(stderr, "larkpost queue: unknown command %q (want one of %s)\n", sub, strings.Join(queueCmds, ", "))
		return 2
	}
	fs := newFlagSet("queue "+sub, stderr)
	file := configFlag(fs)
	var f engine.Filter
	fs.StringVar(&f.State, "state", "", "only messages in `STATE` (active, deferred, hold, corrupt)")
	fs.StringVar(&f.From, "from", "", "only senders containing `TEXT`")
	fs.StringVar(&f.To, "to", "", "only messages with a recipient containing `TEXT`")
	fs.StringVar(&f.Domain, "domain", "", "only messages with a recipient in `DOMAIN` (or a subdomain)")
	older := fs.String("older-than", "", "only messages queued longer than `DURATION` (\"1h\", \"2d\")")
	fs.BoolVar(&f.All, "all", false, "every message (for flush, hold, release, requeue, delete)")
	asJSON := fs.Bool("json", false, "print JSON")
	dry := fs.Bool("dry-run", false, "count what would be touched, change nothing")
	body := fs.Bool("body", false, "show: print the body as well as the header")
	limit := fs.Int("limit", defaultListLimit, "list: at most `N` messages, oldest first (0: all)")
	after := fs.String("after", "", "list: the messages after queue id `ID` (the next page)")
	count := fs.Bool("count", false, "list: only the number of messages by state")
	if code, ok := parseFlags(fs, interleaved(args[1:], fs.Lookup), stdout, stderr); !ok {
		return code
	}
	ids := configArg(fs, file, fs.Args(), nil)
	if f.State != "" && !slices.Contains(queueStates, queue.State(f.State)) {
		fmt.Fprintf(stderr, "larkpost queue: unknown --state %q (want one of %s)\n", f.State, joinStates(queueStates))
		return 2
	}
	if *older != "" {
		d, err := rules.ParseDuration(*older)
		if err != nil {
			fmt.Fprintf(stderr, "larkpost queue: %v\n", err)
			return 2
		}
		f.OlderThan = d
	}
	switch {
	case sub == "show" && len(ids) != 1:
		fmt.Fprintln(stderr, "larkpost queue show: give one message id; usage: larkpost queue show [-c FILE] [--body] [--json] ID")
		return 2
	case sub != "list" && sub != "show" && len(ids) == 0 && f == (engine.Filter{}):
		fmt.Fprintf(stderr, "larkpost queue %s: give message ids, filters or --all\n", sub)
		return 2
	}
	if sub != "list" && (*count || *after != "" || *limit != defaultListLimit) {
		fmt.Fprintf(stderr, "larkpost queue %s: --limit, --after and --count are for queue list\n", sub)
		return 2
	}
	if *limit < 0 {
		fmt.Fprintf(stderr, "larkpost queue: --limit %d: want 0 (all) or more\n", *limit)
		return 2
	}
	req := engine.Request{Cmd: "queue." + sub, IDs: ids, Filter: f, DryRun: *dry, Body: *body}
	if sub == "list" {
		req.Limit, req.After, req.Count = *limit, *after, *count
	}
	rep, code := control(*file, req, stderr)
	if code != 0 {
		return code
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if sub == "list" && *count {
			enc.Encode(rep.Counts)
			return 0
		}
		if sub == "list" {
			// An empty queue is "messages": [], not a missing key.
			msgs := rep.Messages
			if msgs == nil {
				msgs = []*queue.Record{}
			}
			enc.Encode(listReply{rep, msgs})
			return 0
		}
		enc.Encode(rep)
		return 0
	}
	switch sub {
	case "list":
		if *count {
			printCounts(stdout, rep.Counts)
			return 0
		}
		printQueue(stdout, rep.Messages)
		if rep.Next != "" {
			fmt.Fprintf(stdout, "-- more follow: larkpost queue list --after %s (or --limit 0 for all; --count counts them)\n", rep.Next)
		}
	case "show":
		printMessage(stdout, rep.Messages[0], rep.Body)
	default:
		verb := sub
		if *dry {
			verb = "would " + sub
		}
		fmt.Fprintf(stdout, "%s: %d message(s)\n", verb, rep.Touched)
		if len(rep.Busy) > 0 {
			fmt.Fprintf(stdout, "left alone while being delivered: %s\n", strings.Join(rep.Busy, " "))
		}
	}
	return 0
}

// defaultListLimit is queue list's page: at a million messages the
// whole list is a gigabyte of text nobody reads.
const defaultListLimit = 1000

// printCounts is queue list --count: the number by state, and in all.
func printCounts(w io.Writer, counts map[string]int) {
	total := 0
	for _, s := range queueStates {
		fmt.Fprintf(w, "%-9s %d\n", s, counts[string(s)])
		total += counts[string(s)]
	}
	fmt.Fprintf(w, "%-9s %d\n", "total", total)
}

// queueCmds are queue's sub-commands.
var queueCmds = []string{"list", "show", "flush", "hold", "release", "requeue", "delete"}

// queueStates are the values --state takes.
var queueStates = []queue.State{queue.Active, queue.Deferred, queue.Hold, queue.Corrupt}

func joinStates(ss []queue.State) string {
	var names []string
	for _, s := range ss {
		names = append(names, string(s))
	}
	return strings.Join(names, ", ")
}

// listReply is queue list's JSON: the reply, with its messages always
// present (the field shadows the embedded reply's omitempty one).
type listReply struct {
	*engine.Reply
	Messages []*queue.Record `json:"messages"`
}

// printQueue is mailq's layout: one line per message, one per recipient.
func printQueue(w io.Writer, msgs []*queue.Record) {
	counts := map[queue.State]int{}
	for _, m := range msgs {
		counts[m.State]++
		state := string(m.State)
		switch m.State {
		case queue.Deferred:
			next := m.NextTry.Local().Format("Jan 2 15:04:05")
			if m.Flushed || !m.NextTry.After(time.Now()) {
				next = "now" // flushed, or its retry time has come
			}
			state += fmt.Sprintf(", %d tries, next %s", m.Tries, next)
		case queue.Hold:
			state += ": " + m.HoldReason
		}
		sender := "<" + m.Sender + ">"
		fmt.Fprintf(w, "%-14s %s %8d  %s  (%s)\n", m.ID, m.Arrival.Local().Format("Jan 2 15:04:05"), m.Size, sender, state)
		for _, r := range m.Rcpts {
			line := fmt.Sprintf("    %-32s %-8s", r.Addr, r.State)
			if n := len(r.Attempts); n > 0 {
				last := r.Last()
				line += fmt.Sprintf(" %d attempt(s), last %s %s", n, last.Status, last.Reply)
			}
			fmt.Fprintln(w, strings.TrimRight(line, " "))
		}
	}
	var parts []string
	for _, s := range []queue.State{queue.Active, queue.Deferred, queue.Hold, queue.Corrupt} {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
		}
	}
	if len(msgs) == 0 {
		fmt.Fprintln(w, "Mail queue is empty")
		return
	}
	fmt.Fprintf(w, "-- %d message(s): %s\n", len(msgs), strings.Join(parts, ", "))
}

// printMessage is postcat: envelope, decision log, attempts, then the message.
func printMessage(w io.Writer, m *queue.Record, body string) {
	fmt.Fprintf(w, "*** ENVELOPE RECORDS %s ***\n", m.ID)
	fmt.Fprintf(w, "arrival_time: %s\nsize: %d\nstate: %s\nsender: <%s>\nclient: %s\n", m.Arrival.Format(time.RFC1123Z), m.Size, m.State, m.Sender, m.Client)
	if m.HoldReason != "" {
		fmt.Fprintf(w, "hold_reason: %s\n", m.HoldReason)
	}
	if m.State == queue.Deferred {
		fmt.Fprintf(w, "next_try: %s (tries %d)\n", m.NextTry.Format(time.RFC1123Z), m.Tries)
		if m.Flushed {
			fmt.Fprintf(w, "flushed: due now (queue flush --all)\n")
		}
	}
	for _, r := range m.Rcpts {
		fmt.Fprintf(w, "recipient: %s (%s)", r.Addr, r.State)
		if r.Orig != "" && r.Orig != r.Addr {
			fmt.Fprintf(w, " orig_to=%s", r.Orig)
		}
		fmt.Fprintln(w)
		for _, a := range r.Attempts {
			fmt.Fprintf(w, "    %s relay=%s dsn=%s %s\n", a.Time.Format(time.RFC3339), a.Relay, a.Status, a.Reply)
		}
	}
	fmt.Fprintf(w, "*** DECISION LOG ***\n")
	for _, s := range m.Log {
		fmt.Fprintf(w, "%-8s %-30s %s [%s]\n", s.Stage, s.Arg, s.Decision, s.Source)
	}
	fmt.Fprintf(w, "*** MESSAGE CONTENTS %s ***\n%s", m.ID, strings.ReplaceAll(body, "\r\n", "\n"))
}

func runReload(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("reload", stderr)
	file := configFlag(fs)
	if code, ok := parseFlags(fs, interleaved(args, fs.Lookup), stdout, stderr); !ok {
		return code
	}
	if extraArgs("reload", configArg(fs, file, fs.Args(), nil), 0, stderr) {
		return 2
	}
	rep, code := control(*file, engine.Request{Cmd: "reload"}, stderr)
	if code == 0 {
		fmt.Fprintln(stdout, rep.Text)
	}
	return code
}

func runStatus(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("status", stderr)
	file := configFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if code, ok := parseFlags(fs, interleaved(args, fs.Lookup), stdout, stderr); !ok {
		return code
	}
	if extraArgs("status", configArg(fs, file, fs.Args(), nil), 0, stderr) {
		return 2
	}
	rep, code := control(*file, engine.Request{Cmd: "status"}, stderr)
	if code != 0 {
		return code
	}
	st := rep.Status
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(st)
		return 0
	}
	fmt.Fprintf(stdout, "larkpost running, pid %d, up %s\n", st.PID, time.Since(st.Started).Round(time.Second))
	fmt.Fprintf(stdout, "config   %s (loaded %s)\n", st.Config, st.LoadedAt.Local().Format(time.RFC1123))
	for name, a := range st.Listeners {
		fmt.Fprintf(stdout, "listen   %s %s\n", name, a)
	}
	var q []string
	for _, s := range []string{"active", "deferred", "hold", "corrupt"} {
		q = append(q, fmt.Sprintf("%s %d", s, st.Queue[s]))
	}
	fmt.Fprintf(stdout, "queue    %s\n", strings.Join(q, ", "))
	fmt.Fprintf(stdout, "delivery %.2f/s over the last minute\n", st.Rate)
	return 0
}
