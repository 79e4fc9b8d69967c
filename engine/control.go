package engine

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/larkpost/larkpost/engine/cleanup"
	"github.com/larkpost/larkpost/queue"
)

// The control socket is how the CLI talks to the running server: Badger
// lets one process own the queue, so `larkpost queue ...`, `reload` and
// `status` send one JSON request per connection and read one JSON reply.

// ControlSocket is the socket's name in the data directory.
const ControlSocket = "control.sock"

// Request is one control command.
type Request struct {
	Cmd    string   `json:"cmd"`
	IDs    []string `json:"ids,omitempty"`
	Filter Filter   `json:"filter"`
	DryRun bool     `json:"dry_run,omitempty"`
	Body   bool     `json:"body,omitempty"`
	// Limit and After page queue.list: at most Limit messages (0: all)
	// with ids after After. Count asks for the number by state instead.
	Limit int    `json:"limit,omitempty"`
	After string `json:"after,omitempty"`
	Count bool   `json:"count,omitempty"`
	// Via says where an admin's change came from, for its log line
	// ("web, 192.0.2.7"); the control socket leaves it empty.
	Via string `json:"-"`
}

// Filter selects queued messages, as `larkpost queue` options say.
type Filter struct {
	State     string        `json:"state,omitempty"`
	From      string        `json:"from,omitempty"`   // substring of the sender
	To        string        `json:"to,omitempty"`     // substring of a recipient
	Domain    string        `json:"domain,omitempty"` // a recipient's domain (or its parent)
	OlderThan time.Duration `json:"older_than,omitempty"`
	All       bool          `json:"all,omitempty"`
}

// Reply is the answer to a Request.
type Reply struct {
	Error    string          `json:"error,omitempty"`
	Messages []*queue.Record `json:"messages,omitempty"`
	Body     string          `json:"body,omitempty"`
	Touched  int             `json:"touched"`
	Busy     []string        `json:"busy,omitempty"` // being delivered right now: left alone
	Status   *Status         `json:"status,omitempty"`
	Text     string          `json:"text,omitempty"`
	// Counts answers queue.list with Count: messages by state.
	Counts map[string]int `json:"counts,omitempty"`
	// Next is set when a page of queue.list stopped at its limit: the
	// After that asks for the next page.
	Next string `json:"next,omitempty"`
}

// Status is `larkpost status`.
type Status struct {
	PID       int               `json:"pid"`
	Started   time.Time         `json:"started"`
	Config    string            `json:"config"`
	LoadedAt  time.Time         `json:"loaded_at"`
	Listeners map[string]string `json:"listeners"`
	Queue     map[string]int    `json:"queue"`
	Rate      float64           `json:"deliveries_per_second"`
}

// ReloadFunc reloads the config; set by the serve command, which knows
// where the config comes from. It returns what to tell the admin:
// "reloaded FILE", and a line naming settings that need a restart.
type ReloadFunc func() (string, error)

// ServeControl listens on data_dir/control.sock until Shutdown. The mode is
// 0600: the socket can hold and delete mail.
func (e *Engine) ServeControl(reload ReloadFunc) error {
	path := filepath.Join(e.dataDir, ControlSocket)
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("control socket %s: another server is running", path)
	}
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	mode := os.FileMode(0o600)
	if g := e.policy.Load().Settings.ControlGroup; g != "" {
		grp, err := user.LookupGroup(g)
		if err != nil {
			l.Close()
			return fmt.Errorf("control socket: control_group: %w", err)
		}
		gid, _ := strconv.Atoi(grp.Gid)
		if err := os.Chown(path, -1, gid); err != nil {
			l.Close()
			return fmt.Errorf("control socket: %w", err)
		}
		mode = 0o660
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return fmt.Errorf("control socket: %w", err)
	}
	e.started = time.Now()
	go func() {
		<-e.done
		l.Close()
		os.Remove(path)
	}()
	// Shutdown waits for these before it closes the queue they use.
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				e.handleControl(c, reload)
			}()
		}
	}()
	return nil
}

func (e *Engine) handleControl(c net.Conn, reload ReloadFunc) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	var req Request
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(&req); err != nil {
		json.NewEncoder(c).Encode(Reply{Error: "bad request: " + err.Error()})
		return
	}
	// A change to a million messages takes minutes: the deadline bounds
	// the client's reading and writing, not the server's work.
	c.SetDeadline(time.Time{})
	rep := e.control(req, reload)
	c.SetDeadline(time.Now().Add(time.Minute))
	json.NewEncoder(c).Encode(rep)
}

// control runs one command.
func (e *Engine) control(req Request, reload ReloadFunc) Reply {
	switch req.Cmd {
	case "status":
		return Reply{Status: e.status()}
	case "reload":
		if reload == nil {
			return Reply{Error: "reload is not available"}
		}
		text, err := reload()
		if err != nil {
			return Reply{Error: err.Error()}
		}
		return Reply{Text: text}
	case "queue.list":
		if req.Count {
			counts, err := e.countMessages(req)
			if err != nil {
				return Reply{Error: err.Error()}
			}
			return Reply{Counts: counts}
		}
		msgs, next, err := e.selectPage(req, req.After, req.Limit)
		if err != nil {
			return Reply{Error: err.Error()}
		}
		return Reply{Messages: msgs, Touched: len(msgs), Next: next}
	case "queue.show":
		if len(req.IDs) != 1 {
			return Reply{Error: "queue show takes one id"}
		}
		rec, err := e.queue.Get(req.IDs[0])
		if err != nil {
			return Reply{Error: err.Error()}
		}
		rep := Reply{Messages: []*queue.Record{rec}}
		body, err := e.queue.Body(rec.ID)
		if err != nil {
			return Reply{Error: err.Error()}
		}
		if !req.Body {
			// Headers only unless --body: the first blank line ends them.
			if i := strings.Index(string(body), "\r\n\r\n"); i >= 0 {
				body = body[:i+2]
			}
		}
		rep.Body = string(body)
		return rep
	case "queue.flush", "queue.hold", "queue.release", "queue.requeue", "queue.delete":
		return e.changeMessages(req)
	}
	return Reply{Error: "unknown command " + req.Cmd}
}

func (e *Engine) status() *Status {
	p := e.policy.Load()
	st := &Status{PID: os.Getpid(), Started: e.started, Config: p.File, LoadedAt: p.LoadedAt,
		Listeners: map[string]string{}, Queue: map[string]int{}, Rate: e.sched.Rate()}
	for name, l := range e.listeners {
		st.Listeners[name] = l.Addr().String()
	}
	// The index census: a million messages count in about 0.3 s.
	counts, _ := e.queue.Counts(time.Now())
	for s, n := range counts {
		st.Queue[string(s)] = n
	}
	return st
}

// countMessages is `queue list --count`: from the index alone without
// filters; with them every record is read, but none kept.
func (e *Engine) countMessages(req Request) (map[string]int, error) {
	out := map[string]int{}
	if len(req.IDs) == 0 && req.Filter == (Filter{}) {
		counts, err := e.queue.Counts(time.Now())
		for s, n := range counts {
			out[string(s)] = n
		}
		return out, err
	}
	err := e.eachMessage(req, func(r *queue.Record) bool {
		out[string(r.State)]++
		return true
	})
	return out, err
}

// selectPage returns up to limit (0: no limit) of the messages req
// selects with ids after after, in id order, and the id to continue
// from when the page is full and more may follow.
func (e *Engine) selectPage(req Request, after string, limit int) ([]*queue.Record, string, error) {
	var out []*queue.Record
	next := ""
	err := e.eachMessageAfter(req, after, func(r *queue.Record) bool {
		if limit > 0 && len(out) == limit {
			next = out[len(out)-1].ID
			return false
		}
		out = append(out, r)
		return true
	})
	if err == nil {
		// A flushed message's entry is not at its record's NextTry:
		// listed, it says when it is tried; changed, its entry moves
		// from where it is.
		err = e.queue.Resolve(out)
	}
	return out, next, err
}

// eachMessage calls fn for the messages req selects: its ids, or those
// its filter matches, in id order.
func (e *Engine) eachMessage(req Request, fn func(r *queue.Record) bool) error {
	return e.eachMessageAfter(req, "", fn)
}

func (e *Engine) eachMessageAfter(req Request, after string, fn func(r *queue.Record) bool) error {
	if len(req.IDs) > 0 {
		ids := slices.Clone(req.IDs)
		slices.Sort(ids)
		ids = slices.Compact(ids)
		for _, id := range ids {
			if id <= after {
				continue
			}
			r, err := e.queue.Get(id)
			if err != nil {
				return err
			}
			if !fn(r) {
				return nil
			}
		}
		return nil
	}
	f := req.Filter
	now := time.Now()
	return e.queue.WalkAfterRaw(after, f.maybe(), func(r *queue.Record) bool {
		if !f.matches(r, now) {
			return true
		}
		return fn(r)
	})
}

// maybe is matches' test on a record's stored bytes, before it is
// decoded: a record that lacks the sender or every recipient text the
// filter asks for cannot match (nil when the filter names none).
func (f Filter) maybe() func(raw []byte) bool {
	if f.From == "" && f.To == "" && f.Domain == "" {
		return nil
	}
	return func(raw []byte) bool {
		if !queue.ContainsFold(raw, f.From) {
			return false
		}
		if f.To == "" && f.Domain == "" {
			return true
		}
		return f.To != "" && queue.ContainsFold(raw, f.To) || f.Domain != "" && queue.ContainsFold(raw, f.Domain)
	}
}

func (f Filter) matches(r *queue.Record, now time.Time) bool {
	if f.State != "" && string(r.State) != f.State {
		return false
	}
	if f.From != "" && !strings.Contains(strings.ToLower(r.Sender), strings.ToLower(f.From)) {
		return false
	}
	if f.OlderThan > 0 && now.Sub(r.Arrival) < f.OlderThan {
		return false
	}
	if f.To == "" && f.Domain == "" {
		return true
	}
	for _, rc := range r.Rcpts {
		a := strings.ToLower(rc.Addr)
		if f.To != "" && strings.Contains(a, strings.ToLower(f.To)) {
			return true
		}
		if d := strings.ToLower(f.Domain); d != "" {
			if at := strings.LastIndexByte(a, '@'); at >= 0 && (a[at+1:] == d || strings.HasSuffix(a[at+1:], "."+d)) {
				return true
			}
		}
	}
	return false
}

// changeMessages runs flush, hold, release, requeue or delete on the
// selected messages, a page at a time, so that flushing a million
// messages neither holds them all in memory nor waits for the last one
// to deliver the first. Messages being delivered right now are skipped
// and reported as busy.
func (e *Engine) changeMessages(req Request) Reply {
	if len(req.IDs) == 0 && !req.Filter.any() {
		return Reply{Error: "give message ids, filters or --all"}
	}
	c := &changer{e: e, req: req, now: time.Now(), verb: strings.TrimPrefix(req.Cmd, "queue.")}
	if req.Via != "" {
		c.via = " (" + req.Via + ")"
	}
	defer func() { e.sched.Unreserve(c.held...) }()
	if req.Cmd == "queue.flush" && !req.DryRun {
		// As postqueue -f: an admin who flushes wants the tries now, not
		// after a destination's dead time; first, since each batch is
		// delivered as soon as it is written.
		e.sched.ReviveDestinations()
	}
	walk := c.pages
	if req.Cmd == "queue.flush" && len(req.IDs) == 0 && req.Filter == (Filter{All: true}) {
		walk = c.flushIndex
	}
	if err := walk(); err != nil {
		if cerr := c.commit(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return Reply{Error: err.Error(), Touched: c.done}
	}
	if err := c.commit(); err != nil {
		return Reply{Error: err.Error(), Touched: c.done}
	}
	return c.rep
}

// pages applies the change to the selected records, a page at a time.
func (c *changer) pages() error {
	after := ""
	for {
		msgs, next, err := c.e.selectPage(c.req, after, changeBatch)
		if err != nil {
			return err
		}
		if err := c.page(msgs); err != nil {
			return err
		}
		if next == "" {
			return nil
		}
		after = next
	}
}

// changer is one admin change in progress.
type changer struct {
	e         *Engine
	req       Request
	now       time.Time
	verb, via string
	rep       Reply
	batch     []queue.Op
	batchIDs  []string
	batchSize int
	done      int      // changes on disk
	held      []string // reserved from delivery until their change is on disk
}

// commit writes the batch in one durable commit, then logs it and lets
// the scheduler see it, so a long flush delivers as it goes.
func (c *changer) commit() error {
	if len(c.batch) == 0 {
		return nil
	}
	if err := c.e.queue.Commit(context.Background(), c.batchSize, c.batch...); err != nil {
		return err
	}
	for _, id := range c.batchIDs {
		c.e.log.Info(id + ": " + c.verb + " by the admin" + c.via)
		if c.req.Cmd == "queue.delete" {
			c.e.log.Info(id + ": removed")
		}
	}
	c.done += len(c.batch)
	c.batch, c.batchIDs, c.batchSize = c.batch[:0], c.batchIDs[:0], 0
	c.e.sched.Unreserve(c.held...)
	c.held = c.held[:0]
	c.e.sched.Wake()
	return nil
}

// page applies the change to one page of messages.
func (c *changer) page(msgs []*queue.Record) error {
	for _, r := range msgs {
		if r.State == queue.Corrupt {
			continue
		}
		if !c.e.sched.Reserve(r.ID) {
			c.rep.Busy = append(c.rep.Busy, r.ID)
			continue
		}
		c.held = append(c.held, r.ID)
		old := r.NextTry
		var op queue.Op
		switch c.req.Cmd {
		case "queue.flush":
			if r.State != queue.Deferred && r.State != queue.Active {
				continue
			}
			op = queue.FlushOp(r.ID, old)
		case "queue.hold":
			if r.State == queue.Hold {
				continue
			}
			r.State, r.HoldReason = queue.Hold, "held by the admin"
		case "queue.release":
			if r.State != queue.Hold {
				continue
			}
			r.State, r.HoldReason, r.NextTry = queue.Active, "", c.now
		case "queue.requeue":
			// Route runs at delivery, so a due-now message is routed by
			// today's policy; expansion is re-run on the pending recipients.
			if c.req.DryRun {
				break
			}
			if err := c.e.reexpand(r); err != nil {
				return fmt.Errorf("%s: %w", r.ID, err)
			}
			if r.State == queue.Deferred {
				r.State = queue.Active
			}
			r.NextTry, r.Tries = c.now, 0
		case "queue.delete":
			op = queue.RemoveOp(r, old)
		}
		c.rep.Touched++
		if c.req.DryRun {
			continue
		}
		size := 1024
		if c.req.Cmd == "queue.flush" {
			size = 64
		}
		if op.IsZero() {
			var err error
			if op, size, err = queue.UpdateOp(r, old); err != nil {
				return err
			}
		}
		c.batch = append(c.batch, op)
		c.batchIDs = append(c.batchIDs, r.ID)
		c.batchSize += size
		if len(c.batch) == changeBatch {
			if err := c.commit(); err != nil {
				return err
			}
		}
	}
	return nil
}

// flushIndex is `queue flush --all`: one durable mark under which every
// message waiting in the schedule index counts as due (queue.MarkFlush),
// taken by the scheduler in index order as room allows. Nothing is
// written per message: moving each entry took 31 s at a million
// messages, with deliveries at 40% of their pace meanwhile. Messages
// being delivered are reported busy, as a flush by id reports them.
func (c *changer) flushIndex() error {
	// Counted first: what the scheduler takes once the mark is down
	// would be busy by then.
	n, busy, err := c.e.queue.CountMarked(0, c.e.sched.IsActive)
	if err != nil {
		return err
	}
	c.rep.Touched += n
	c.rep.Busy = append(c.rep.Busy, busy...)
	if c.req.DryRun {
		return nil
	}
	if _, err := c.e.queue.MarkFlush(context.Background()); err != nil {
		return err
	}
	plural := "s"
	if n == 1 {
		plural = ""
	}
	c.e.log.Info(fmt.Sprintf("queue: flush of %d waiting message%s by the admin%s", n, plural, c.via))
	c.e.sched.Wake()
	return nil
}

// changeBatch is how many changed records share one commit: one fsync
// per message made flushing 100,000 messages take 34 s, with nothing
// delivered until the end.
const changeBatch = 512

func (f Filter) any() bool {
	return f.All || f.State != "" || f.From != "" || f.To != "" || f.Domain != "" || f.OlderThan > 0
}

// reexpand runs expansion again on a message's pending recipients, so an
// alias or virtual table changed since the message arrived applies.
func (e *Engine) reexpand(r *queue.Record) error {
	p := e.policy.Load()
	var out []queue.Rcpt
	seen := map[string]bool{}
	for _, rc := range r.Rcpts {
		if rc.State != queue.Pending || rc.Kind != "" {
			out = append(out, rc)
			continue
		}
		cleaned, err := p.CleanupEnvelope(context.Background(), r.Sender, []string{rc.Addr})
		if err != nil {
			return err
		}
		for _, cr := range cleaned.Rcpts {
			qr := cleanup.QueueRcpt(cr)
			qr.Orig, qr.Notify = orDefault(rc.Orig, rc.Addr), rc.Notify
			if !seen[strings.ToLower(qr.Addr)] {
				seen[strings.ToLower(qr.Addr)] = true
				out = append(out, qr)
			}
		}
	}
	r.Rcpts = out
	return nil
}

// Control sends one request to the server owning dataDir. It returns
// ErrNoServer when nothing listens there.
func Control(dataDir string, req Request) (*Reply, error) {
	path := filepath.Join(dataDir, ControlSocket)
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if errors.Is(err, os.ErrPermission) {
		// The server runs, but this user may not talk to it: saying
		// "no server" here sent admins looking for a crash.
		return nil, fmt.Errorf("%w on %s (run as root, as the server's user, or as a member of control_group)", ErrControlPermission, path)
	}
	if err != nil {
		return nil, fmt.Errorf("%w (cannot connect to %s)", ErrNoServer, path)
	}
	defer c.Close()
	// Flushing or deleting a million messages takes about two minutes
	// here; anything else answers in seconds.
	wait := 2 * time.Minute
	if strings.HasPrefix(req.Cmd, "queue.") && req.Cmd != "queue.list" && req.Cmd != "queue.show" {
		wait = 30 * time.Minute
	}
	c.SetDeadline(time.Now().Add(wait))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return nil, err
	}
	var rep Reply
	if err := json.NewDecoder(c).Decode(&rep); err != nil {
		return nil, fmt.Errorf("control reply: %w", err)
	}
	if rep.Error != "" {
		return &rep, errors.New(rep.Error)
	}
	return &rep, nil
}

// ErrControlPermission means the control socket (or its directory) may
// not be opened by this user.
var ErrControlPermission = errors.New("permission denied")

// ErrNoServer means no larkpost serves the data directory.
var ErrNoServer = errors.New("no larkpost server is running")
