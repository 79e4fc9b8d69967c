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
	"sort"
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
	rep := e.control(req, reload)
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
		msgs, err := e.selectMessages(req)
		if err != nil {
			return Reply{Error: err.Error()}
		}
		return Reply{Messages: msgs, Touched: len(msgs)}
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
	e.queue.Walk(func(r *queue.Record) bool {
		st.Queue[string(r.State)]++
		return true
	})
	return st
}

// selectMessages applies IDs or filters.
func (e *Engine) selectMessages(req Request) ([]*queue.Record, error) {
	var out []*queue.Record
	if len(req.IDs) > 0 {
		for _, id := range req.IDs {
			r, err := e.queue.Get(id)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		return out, nil
	}
	f := req.Filter
	now := time.Now()
	err := e.queue.Walk(func(r *queue.Record) bool {
		if f.matches(r, now) {
			out = append(out, r)
		}
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, err
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
// selected messages. Messages being delivered right now are skipped and
// reported: changing them would race with the scheduler's own update.
func (e *Engine) changeMessages(req Request) Reply {
	if len(req.IDs) == 0 && !req.Filter.any() {
		return Reply{Error: "give message ids, filters or --all"}
	}
	msgs, err := e.selectMessages(req)
	if err != nil {
		return Reply{Error: err.Error()}
	}
	var rep Reply
	now := time.Now()
	via := ""
	if req.Via != "" {
		via = " (" + req.Via + ")"
	}
	verb := strings.TrimPrefix(req.Cmd, "queue.")
	var (
		batch     []queue.Op
		batchIDs  []string
		batchSize int
		done      int      // changes on disk
		held      []string // reserved from delivery until their change is on disk
	)
	defer func() { e.sched.Unreserve(held...) }()
	// commit writes the batch in one durable commit, then logs it and
	// lets the scheduler see it, so a long flush delivers as it goes.
	commit := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := e.queue.Commit(context.Background(), batchSize, batch...); err != nil {
			return err
		}
		for _, id := range batchIDs {
			e.log.Info(id + ": " + verb + " by the admin" + via)
			if req.Cmd == "queue.delete" {
				e.log.Info(id + ": removed")
			}
		}
		done += len(batch)
		batch, batchIDs, batchSize = batch[:0], batchIDs[:0], 0
		e.sched.Unreserve(held...)
		held = held[:0]
		e.sched.Wake()
		return nil
	}
	for _, r := range msgs {
		if r.State == queue.Corrupt {
			continue
		}
		if !e.sched.Reserve(r.ID) {
			rep.Busy = append(rep.Busy, r.ID)
			continue
		}
		held = append(held, r.ID)
		old := r.NextTry
		var op queue.Op
		switch req.Cmd {
		case "queue.flush":
			if r.State != queue.Deferred && r.State != queue.Active {
				continue
			}
			r.NextTry = now
		case "queue.hold":
			if r.State == queue.Hold {
				continue
			}
			r.State, r.HoldReason = queue.Hold, "held by the admin"
		case "queue.release":
			if r.State != queue.Hold {
				continue
			}
			r.State, r.HoldReason, r.NextTry = queue.Active, "", now
		case "queue.requeue":
			// Route runs at delivery, so a due-now message is routed by
			// today's policy; expansion is re-run on the pending recipients.
			if req.DryRun {
				break
			}
			if err := e.reexpand(r); err != nil {
				if cerr := commit(); cerr != nil {
					err = errors.Join(err, cerr)
				}
				return Reply{Error: r.ID + ": " + err.Error(), Touched: done}
			}
			if r.State == queue.Deferred {
				r.State = queue.Active
			}
			r.NextTry, r.Tries = now, 0
		case "queue.delete":
			op = queue.RemoveOp(r.ID, old)
		}
		rep.Touched++
		if req.DryRun {
			continue
		}
		size := 1024
		if op.IsZero() {
			op, size, err = queue.UpdateOp(r, old)
			if err != nil {
				return Reply{Error: err.Error(), Touched: done}
			}
		}
		batch = append(batch, op)
		batchIDs = append(batchIDs, r.ID)
		batchSize += size
		if len(batch) == changeBatch {
			if err := commit(); err != nil {
				return Reply{Error: err.Error(), Touched: done}
			}
		}
	}
	if err := commit(); err != nil {
		return Reply{Error: err.Error(), Touched: done}
	}
	return rep
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
	c.SetDeadline(time.Now().Add(2 * time.Minute))
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
