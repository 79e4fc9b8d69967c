// Package webui is the status web page: the queue by state with its
// oldest messages, one message's envelope, attempts and decision log,
// the last deliveries and rejects (live over server-sent events), the
// traffic per minute and the hook latency table.
//
// The page is read-only unless an admin token is configured. Then a login
// form posts the token, the server sets a session cookie, and every
// action form (flush, hold, release, delete) carries a CSRF token bound to
// that session. The token is read again at each action, so a changed
// token ends the sessions opened with the old one.
//
// It does not import package engine: the engine hands it a Backend.
package webui

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/larkpost/larkpost/engine/activity"
	"github.com/larkpost/larkpost/queue"
)

//go:embed templates/*.html static/*
var files embed.FS

// Limits.
const (
	MaxPerState = 100            // messages listed per queue state, oldest first
	RecentN     = 50             // events in the "recent" table
	SessionTTL  = 12 * time.Hour // an admin session's life
	MaxSessions = 64             // the oldest session goes when a new one would exceed this
	maxBody     = 8 << 10        // a POST's form
	maxStreams  = 32             // concurrent live event streams
	maxLogins   = 10             // failed logins per minute, from anywhere
	headerMax   = 64 << 10       // bytes of a message read to show its header
	cookieName  = "larkpost_session"
)

// Verbs are the queue actions, as the control socket's queue.VERB.
var Verbs = []string{"flush", "hold", "release", "delete"}

// HookStat is one row of the hook latency table (as metrics.HookStat).
type HookStat struct {
	Hook                      string
	Calls, Failures, Overruns uint64
	Mean, P99                 time.Duration
}

// Feed is what the page reads of the activity feed (*activity.Feed).
type Feed interface {
	Recent(n int) []activity.Event
	Subscribe(buf int) (<-chan activity.Event, func())
	Minutes(now time.Time, n int) []activity.Minute
}

// Backend is what the page needs from the server.
type Backend struct {
	// Walk calls fn for every queued record (never a body), oldest id
	// first, until fn returns false.
	Walk func(fn func(r *queue.Record) bool) error
	// Counts, when set, gives the number of messages by state without
	// reading them (the queue's index): the page then reads records only
	// until it has its rows, at most ScanMax of them.
	Counts func() (map[queue.State]int, error)
	// Message returns one record and its header (a bounded prefix of the
	// message up to the blank line); an unknown id is queue.ErrNotFound.
	Message func(id string) (*queue.Record, string, error)
	// Act runs verb (one of Verbs) on the message id for an admin at
	// remote (an IP address), logs it, and says what happened.
	Act func(verb, id, remote string) (string, error)
	// Feed is the recent activity.
	Feed Feed
	// HookStats is the hook latency table; nil or empty: no calls yet.
	HookStats func() []HookStat
	// Token returns the admin token, read now, and whether one is
	// configured at all. "" disables the actions.
	Token func() (token string, configured bool)
	// Done is closed when the server shuts down: live streams end.
	Done <-chan struct{}
	Log  *slog.Logger
	// Now and Heartbeat are for tests: time.Now and 15 s by default.
	Now       func() time.Time
	Heartbeat time.Duration
}

// TokenFile returns a Backend.Token reading path at each call; "" is no
// token configured. The token is the file's first line, trimmed.
func TokenFile(path string) func() (string, bool) {
	return func() (string, bool) {
		if path == "" {
			return "", false
		}
		f, err := os.Open(path)
		if err != nil {
			return "", true
		}
		defer f.Close()
		b, _ := io.ReadAll(io.LimitReader(f, 4096))
		line, _, _ := strings.Cut(string(b), "\n")
		return strings.TrimSpace(line), true
	}
}

// Handler serves the page.
type Handler struct {
	b       Backend
	tmpl    *template.Template
	h       http.Handler
	mu      sync.Mutex
	sess    map[string]*session
	streams atomic.Int32
	fails   int       // failed logins in the current minute
	failMin time.Time // that minute
}

type session struct {
	csrf     string
	tokenSum [32]byte // the token it logged in with
	expires  time.Time
	flash    string // said once on the next page
}

// New builds the handler.
func New(b Backend) (*Handler, error) {
	if b.Walk == nil || b.Message == nil || b.Act == nil || b.Feed == nil {
		return nil, errors.New("webui: incomplete backend")
	}
	if b.Token == nil {
		b.Token = TokenFile("")
	}
	if b.HookStats == nil {
		b.HookStats = func() []HookStat { return nil }
	}
	if b.Log == nil {
		b.Log = slog.New(slog.DiscardHandler)
	}
	if b.Now == nil {
		b.Now = time.Now
	}
	if b.Heartbeat <= 0 {
		b.Heartbeat = 15 * time.Second
	}
	h := &Handler{b: b, sess: map[string]*session{}}
	var err error
	h.tmpl, err = template.New("").Funcs(template.FuncMap{
		"when":    func(t time.Time) string { return fmtTime(t) },
		"age":     func(t time.Time) string { return age(b.Now().Sub(t)) },
		"ms":      func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) },
		"actions": actionsFor,
		"rcpts":   rcptSummary,
		"live":    liveKind,
	}).ParseFS(files, "templates/*.html")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", h.index)
	mux.HandleFunc("GET /msg/{id}", h.message)
	mux.HandleFunc("GET /events", h.events)
	mux.HandleFunc("GET /chart.svg", h.chartSVG)
	mux.HandleFunc("GET /api/traffic", h.traffic)
	mux.HandleFunc("GET /api/queue", h.queueJSON)
	mux.Handle("GET /static/", http.FileServerFS(files))
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("POST /login", h.login)
	mux.HandleFunc("POST /logout", h.logout)
	mux.HandleFunc("POST /action", h.action)
	// A browser's cross-site POST is refused before any handler runs.
	h.h = http.NewCrossOriginProtection().Handler(mux)
	return h, nil
}

// ServeHTTP sets the security headers and bounds the request body.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-store")
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	h.h.ServeHTTP(w, r)
}

// mode is what the visitor may do.
type mode struct {
	Kind string // "off": no token configured; "unset": configured but empty or unreadable; "login"; "admin"
	CSRF string
}

// admin returns the visitor's valid session, if any, and the mode. The
// session must be unexpired and opened with the current token.
func (h *Handler) admin(r *http.Request) (*session, string, mode) {
	tok, configured := h.b.Token()
	if !configured {
		return nil, "", mode{Kind: "off"}
	}
	if tok == "" {
		return nil, "", mode{Kind: "unset"}
	}
	c, err := r.Cookie(cookieName)
	if err != nil {
		return nil, "", mode{Kind: "login"}
	}
	sum := sha256.Sum256([]byte(tok))
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.sess[c.Value]
	if s == nil || !h.b.Now().Before(s.expires) || subtle.ConstantTimeCompare(s.tokenSum[:], sum[:]) != 1 {
		if s != nil {
			delete(h.sess, c.Value)
		}
		return nil, "", mode{Kind: "login"}
	}
	return s, c.Value, mode{Kind: "admin", CSRF: s.csrf}
}

func randomHex() string {
	var b [32]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, what, why string) {
	h.b.Log.Warn(fmt.Sprintf("web: %s refused from %s: %s", what, remoteIP(r), why))
	http.Error(w, "forbidden: "+why, http.StatusForbidden)
}

func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	tok, _ := h.b.Token()
	if tok == "" {
		h.refuse(w, r, "login", "the page is read-only")
		return
	}
	now := h.b.Now()
	h.mu.Lock()
	if m := now.Truncate(time.Minute); !m.Equal(h.failMin) {
		h.failMin, h.fails = m, 0
	}
	tooMany := h.fails >= maxLogins
	h.mu.Unlock()
	if tooMany {
		h.b.Log.Warn("web: login refused from " + remoteIP(r) + ": too many failed logins, wait a minute")
		http.Error(w, "too many failed logins: wait a minute", http.StatusTooManyRequests)
		return
	}
	given := sha256.Sum256([]byte(strings.TrimSpace(r.PostFormValue("token"))))
	want := sha256.Sum256([]byte(tok))
	if subtle.ConstantTimeCompare(given[:], want[:]) != 1 {
		h.mu.Lock()
		h.fails++
		h.mu.Unlock()
		h.refuse(w, r, "login", "wrong token")
		return
	}
	id := randomHex()
	h.mu.Lock()
	for k, s := range h.sess {
		if !now.Before(s.expires) {
			delete(h.sess, k)
		}
	}
	for len(h.sess) >= MaxSessions {
		var oldest string
		for k, s := range h.sess {
			if oldest == "" || s.expires.Before(h.sess[oldest].expires) {
				oldest = k
			}
		}
		delete(h.sess, oldest)
	}
	h.sess[id] = &session{csrf: randomHex(), tokenSum: want, expires: now.Add(SessionTTL), flash: "Logged in: the queue actions are enabled."}
	h.mu.Unlock()
	h.b.Log.Info("web: admin login from " + remoteIP(r))
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https", MaxAge: int(SessionTTL / time.Second)})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	s, id, _ := h.admin(r)
	if s == nil || subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(s.csrf)) != 1 {
		h.refuse(w, r, "logout", "no session or a bad CSRF token")
		return
	}
	h.mu.Lock()
	delete(h.sess, id)
	h.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func validVerb(v string) bool {
	for _, x := range Verbs {
		if v == x {
			return true
		}
	}
	return false
}

// ValidID is a queue id's shape: letters and digits, at most 64.
func ValidID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}

func (h *Handler) action(w http.ResponseWriter, r *http.Request) {
	verb, id := r.PostFormValue("action"), r.PostFormValue("id")
	what := "action"
	if validVerb(verb) && ValidID(id) {
		what = verb + " of " + id
	}
	s, _, m := h.admin(r)
	switch {
	case m.Kind == "off" || m.Kind == "unset":
		h.refuse(w, r, what, "the page is read-only (no admin token)")
		return
	case s == nil:
		h.refuse(w, r, what, "not logged in (or the session expired, or the token changed)")
		return
	case subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(s.csrf)) != 1:
		h.refuse(w, r, what, "missing or wrong CSRF token")
		return
	}
	if what == "action" {
		http.Error(w, "bad request: unknown action or message id", http.StatusBadRequest)
		return
	}
	said, err := h.b.Act(verb, id, remoteIP(r))
	if err != nil {
		said = verb + " " + id + ": " + err.Error()
	}
	h.mu.Lock()
	s.flash = said
	h.mu.Unlock()
	back := "/"
	if r.PostFormValue("back") == "msg" && verb != "delete" {
		back = "/msg/" + id
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}

// StateGroup is one queue state's count and oldest messages.
type StateGroup struct {
	State  queue.State     `json:"state"`
	Count  int             `json:"count"`
	Oldest []*queue.Record `json:"oldest"`
}

// States are the queue states in the page's order.
var States = []queue.State{queue.Hold, queue.Deferred, queue.Active, queue.Corrupt}

// Summarize walks the queue once, counting each state and keeping its
// limit oldest messages (by arrival, then id).
func Summarize(walk func(fn func(*queue.Record) bool) error, limit int) ([]StateGroup, error) {
	return summarize(walk, nil, limit)
}

// ScanMax bounds the records the page reads when the counts come from
// the index: the rows are then the oldest of the first ScanMax messages.
const ScanMax = 20000

// summarize is Summarize with counts known beforehand (nil: counted on
// the walk, which then reads every record).
func summarize(walk func(fn func(*queue.Record) bool) error, counts map[queue.State]int, limit int) ([]StateGroup, error) {
	by := map[queue.State]*StateGroup{}
	for _, s := range States {
		by[s] = &StateGroup{State: s, Count: counts[s]}
	}
	for s, n := range counts {
		if by[s] == nil {
			by[s] = &StateGroup{State: s, Count: n}
		}
	}
	// Ids sort by arrival, so once each state has its rows (or all its
	// messages) the oldest are found.
	scanned, filled := 0, 0
	want := func(s queue.State) int { return min(limit, counts[s]) }
	for _, s := range States {
		if want(s) == 0 {
			filled++
		}
	}
	older := func(a, b *queue.Record) bool {
		if !a.Arrival.Equal(b.Arrival) {
			return a.Arrival.Before(b.Arrival)
		}
		return a.ID < b.ID
	}
	trim := func(g *StateGroup) {
		sort.Slice(g.Oldest, func(i, j int) bool { return older(g.Oldest[i], g.Oldest[j]) })
		if len(g.Oldest) > limit {
			g.Oldest = append([]*queue.Record(nil), g.Oldest[:limit]...)
		}
	}
	err := walk(func(r *queue.Record) bool {
		g := by[r.State]
		if g == nil {
			g = &StateGroup{State: r.State}
			by[r.State] = g
		}
		if counts == nil {
			g.Count++
			g.Oldest = append(g.Oldest, r)
			if len(g.Oldest) >= 2*limit+1 {
				trim(g)
			}
			return true
		}
		scanned++
		if len(g.Oldest) < limit {
			g.Oldest = append(g.Oldest, r)
			if len(g.Oldest) == want(r.State) {
				filled++
			}
		}
		return scanned < ScanMax && filled < len(States)
	})
	var out []StateGroup
	for _, s := range States {
		trim(by[s])
		out = append(out, *by[s])
		delete(by, s)
	}
	for _, g := range by { // a state this page does not know
		trim(g)
		out = append(out, *g)
	}
	return out, err
}

// pageData is what the templates see.
type pageData struct {
	Title  string
	Mode   mode
	Flash  string
	Now    time.Time
	Groups []StateGroup
	Total  int
	Err    string
	Recent []activity.Event
	Chart  chart
	Hooks  []HookStat
	// message detail
	Msg     *queue.Record
	Headers string
}

func (h *Handler) page(r *http.Request, title string) pageData {
	s, _, m := h.admin(r)
	d := pageData{Title: title, Mode: m, Now: h.b.Now()}
	if s != nil {
		h.mu.Lock()
		d.Flash, s.flash = s.flash, ""
		h.mu.Unlock()
	}
	return d
}

func (h *Handler) render(w http.ResponseWriter, status int, name string, d pageData) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	var buf strings.Builder
	if err := h.tmpl.ExecuteTemplate(&buf, name, d); err != nil {
		h.b.Log.Error("web page: " + err.Error())
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(status)
	io.WriteString(w, buf.String())
}

// shown are the activity kinds the page lists: delivery results and rejects.
func shown(ev activity.Event) bool { return ev.Kind != activity.Accepted }

func (h *Handler) recent() []activity.Event {
	var out []activity.Event
	for _, ev := range h.b.Feed.Recent(4 * RecentN) {
		if shown(ev) && len(out) < RecentN {
			out = append(out, ev)
		}
	}
	return out
}

// summary is the queue table: counted from the index when the backend
// can, so that a page load at a million messages reads a few records.
func (h *Handler) summary() ([]StateGroup, error) {
	if h.b.Counts == nil {
		return Summarize(h.b.Walk, MaxPerState)
	}
	counts, err := h.b.Counts()
	if err != nil {
		return nil, err
	}
	return summarize(h.b.Walk, counts, MaxPerState)
}

func (h *Handler) index(w http.ResponseWriter, r *http.Request) {
	d := h.page(r, "status")
	groups, err := h.summary()
	if err != nil {
		d.Err = "reading the queue: " + err.Error()
	}
	d.Groups = groups
	for _, g := range groups {
		d.Total += g.Count
	}
	d.Recent = h.recent()
	d.Chart = makeChart(h.b.Feed.Minutes(d.Now, 60))
	d.Hooks = h.b.HookStats()
	h.render(w, http.StatusOK, "index", d)
}

func (h *Handler) message(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	d := h.page(r, "message "+id)
	if !ValidID(id) {
		d.Err = "not a message id"
		h.render(w, http.StatusNotFound, "msg", d)
		return
	}
	rec, hdr, err := h.b.Message(id)
	switch {
	case errors.Is(err, queue.ErrNotFound):
		d.Err = "no message " + id + " in the queue (delivered or deleted?)"
		h.render(w, http.StatusNotFound, "msg", d)
		return
	case err != nil:
		d.Err = err.Error()
	}
	d.Msg, d.Headers = rec, hdr
	h.render(w, http.StatusOK, "msg", d)
}

func (h *Handler) queueJSON(w http.ResponseWriter, r *http.Request) {
	groups, err := h.summary()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	// The list without the decision logs and attempts: the detail page has them.
	type row struct {
		ID, Sender, Hold string
		Arrival          time.Time
		Size             int64
		Rcpts            int
	}
	type grp struct {
		State  queue.State `json:"state"`
		Count  int         `json:"count"`
		Oldest []row       `json:"oldest"`
	}
	var out []grp
	for _, g := range groups {
		o := grp{State: g.State, Count: g.Count, Oldest: []row{}}
		for _, m := range g.Oldest {
			o.Oldest = append(o.Oldest, row{m.ID, m.Sender, m.HoldReason, m.Arrival, m.Size, len(m.Rcpts)})
		}
		out = append(out, o)
	}
	writeJSON(w, out)
}

func (h *Handler) traffic(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, h.b.Feed.Minutes(h.b.Now(), 60))
}

func (h *Handler) chartSVG(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "image/svg+xml")
	h.tmpl.ExecuteTemplate(w, "chart", makeChart(h.b.Feed.Minutes(h.b.Now(), 60)))
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// events streams each delivery result and reject as one JSON event, with
// a comment line as heartbeat, until the client goes or the server stops.
func (h *Handler) events(w http.ResponseWriter, r *http.Request) {
	if h.streams.Add(1) > maxStreams {
		h.streams.Add(-1)
		http.Error(w, "too many live streams", http.StatusServiceUnavailable)
		return
	}
	defer h.streams.Add(-1)
	ch, cancel := h.b.Feed.Subscribe(64)
	defer cancel()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, ": larkpost live events\nretry: 5000\n\n")
	if rc.Flush() != nil {
		return
	}
	tick := time.NewTicker(h.b.Heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-h.b.Done:
			return
		case <-tick.C:
			io.WriteString(w, ": heartbeat\n\n")
		case ev := <-ch:
			if !shown(ev) {
				continue
			}
			b, _ := json.Marshal(ev) // JSON has no raw newlines: one data line
			fmt.Fprintf(w, "data: %s\n\n", b)
		}
		if rc.Flush() != nil {
			return
		}
	}
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05")
}

func age(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// actionForms is one message's action buttons.
type actionForms struct {
	ID, CSRF, Back string
	Verbs          []string
}

// actionsFor is the actions that apply to a message in state st.
func actionsFor(m mode, id string, st queue.State, back string) *actionForms {
	if m.Kind != "admin" {
		return nil
	}
	var v []string
	switch st {
	case queue.Hold:
		v = []string{"release", "delete"}
	case queue.Deferred:
		v = []string{"flush", "hold", "delete"}
	case queue.Active:
		v = []string{"hold", "delete"}
	default:
		return nil
	}
	return &actionForms{ID: id, CSRF: m.CSRF, Back: back, Verbs: v}
}

// rcptSummary is the first recipients and how many more.
func rcptSummary(rs []queue.Rcpt) string {
	var names []string
	for i, r := range rs {
		if i == 3 {
			return strings.Join(names, ", ") + fmt.Sprintf(" and %d more", len(rs)-3)
		}
		names = append(names, r.Addr)
	}
	return strings.Join(names, ", ")
}

// liveKind is an event kind's CSS class.
func liveKind(k string) string {
	switch k {
	case activity.Delivered, activity.Deferred, activity.Bounced, activity.Expired, activity.Rejected:
		return "k-" + k
	}
	return "k-other"
}
