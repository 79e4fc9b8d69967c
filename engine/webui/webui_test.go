package webui

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/activity"
	"github.com/larkpost/larkpost/queue"
)

// fake is a queue in memory behind a Backend.
type fake struct {
	mu    sync.Mutex
	recs  map[string]*queue.Record
	acts  []string
	feed  *activity.Feed
	done  chan struct{}
	token string // the token file's path
}

func newFake(t *testing.T, token *string) (*fake, Backend) {
	f := &fake{recs: map[string]*queue.Record{}, feed: activity.New(100), done: make(chan struct{})}
	tokenPath := ""
	if token != nil {
		tokenPath = filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(tokenPath, []byte(*token), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	f.token = tokenPath
	b := Backend{
		Walk: func(fn func(*queue.Record) bool) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			for _, r := range f.recs {
				if !fn(r) {
					break
				}
			}
			return nil
		},
		Message: func(id string) (*queue.Record, string, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			r := f.recs[id]
			if r == nil {
				return nil, "", fmt.Errorf("%s: %w", id, queue.ErrNotFound)
			}
			return r, "Subject: <b>hi</b>\n", nil
		},
		Act: func(verb, id, remote string) (string, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.acts = append(f.acts, verb+" "+id+" "+remote)
			r := f.recs[id]
			if r == nil {
				return "", errors.New("no such message")
			}
			if verb == "release" {
				r.State = queue.Active
			}
			return verb + " " + id + ": done", nil
		},
		Feed:      f.feed,
		Token:     TokenFile(tokenPath),
		Done:      f.done,
		Heartbeat: 50 * time.Millisecond,
	}
	return f, b
}

func (f *fake) add(r *queue.Record) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(r.Rcpts) == 0 {
		r.Rcpts = []queue.Rcpt{{Addr: "bob@example.test", State: queue.Pending}}
	}
	f.recs[r.ID] = r
}

func (f *fake) actions() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.acts...)
}

func strp(s string) *string { return &s }

// serve starts the handler; its client keeps cookies and does not follow
// redirects.
func serve(t *testing.T, b Backend) (*httptest.Server, *http.Client) {
	h, err := New(b)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return srv, c
}

func get(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func post(t *testing.T, c *http.Client, u string, form url.Values, hdr map[string]string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// login logs c in with token and returns the page's CSRF token.
func login(t *testing.T, c *http.Client, base, token string) string {
	t.Helper()
	if code := post(t, c, base+"/login", url.Values{"token": {token}}, nil); code != http.StatusSeeOther {
		t.Fatalf("login: %d, want 303", code)
	}
	_, page := get(t, c, base+"/")
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token on the page after login:\n%s", page)
	}
	return m[1]
}

func TestActions(t *testing.T) {
	const good = "s3cret-token-0123456789"
	cases := []struct {
		name   string
		token  *string // the token file's content; nil: none configured
		login  string  // token to log in with; "" no login
		csrf   string  // "ok": the session's; else this value
		hdr    map[string]string
		change string // new token file content after login
		want   int
	}{
		{name: "read-only, no token file", want: 403},
		{name: "token file empty", token: strp("\n"), want: 403},
		{name: "not logged in", token: strp(good), want: 403},
		{name: "not logged in, guessed csrf", token: strp(good), csrf: "00", want: 403},
		{name: "missing CSRF", token: strp(good), login: good, want: 403},
		{name: "wrong CSRF", token: strp(good), login: good, csrf: strings.Repeat("ab", 32), want: 403},
		{name: "cross-site POST", token: strp(good), login: good, csrf: "ok", hdr: map[string]string{"Sec-Fetch-Site": "cross-site"}, want: 403},
		{name: "other origin", token: strp(good), login: good, csrf: "ok", hdr: map[string]string{"Origin": "http://evil.example"}, want: 403},
		{name: "token changed since login", token: strp(good), login: good, csrf: "ok", change: "another-token-98765", want: 403},
		{name: "token file removed since login", token: strp(good), login: good, csrf: "ok", change: "-", want: 403},
		{name: "allowed", token: strp(good + "\n"), login: good, csrf: "ok", want: 303},
		{name: "allowed, same origin", token: strp(good), login: good, csrf: "ok", hdr: map[string]string{"Sec-Fetch-Site": "same-origin"}, want: 303},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, b := newFake(t, tc.token)
			f.add(&queue.Record{ID: "HELD1", State: queue.Hold, HoldReason: "check", Arrival: time.Now()})
			srv, c := serve(t, b)
			form := url.Values{"action": {"release"}, "id": {"HELD1"}}
			if tc.login != "" {
				csrf := login(t, c, srv.URL, tc.login)
				if tc.csrf == "ok" {
					form.Set("csrf", csrf)
				}
			}
			if tc.csrf != "" && tc.csrf != "ok" {
				form.Set("csrf", tc.csrf)
			}
			switch tc.change {
			case "":
			case "-":
				os.Remove(f.token)
			default:
				os.WriteFile(f.token, []byte(tc.change), 0o600)
			}
			if got := post(t, c, srv.URL+"/action", form, tc.hdr); got != tc.want {
				t.Fatalf("POST /action: %d, want %d", got, tc.want)
			}
			acts := f.actions()
			if tc.want == 303 && (len(acts) != 1 || !strings.HasPrefix(acts[0], "release HELD1 127.0.0.1")) {
				t.Fatalf("actions run: %q, want the release", acts)
			}
			if tc.want != 303 && len(acts) != 0 {
				t.Fatalf("refused, yet ran %q", acts)
			}
		})
	}
}

func TestLogin(t *testing.T) {
	const good = "s3cret-token-0123456789"
	_, b := newFake(t, strp(good))
	srv, c := serve(t, b)
	if code := post(t, c, srv.URL+"/login", url.Values{"token": {"wrong"}}, nil); code != 403 {
		t.Fatalf("wrong token: %d, want 403", code)
	}
	if code := post(t, c, srv.URL+"/login", url.Values{"token": {good}}, map[string]string{"Sec-Fetch-Site": "cross-site"}); code != 403 {
		t.Fatalf("cross-site login: %d, want 403", code)
	}
	// A body past the limit is not read: no login.
	big := url.Values{"pad": {strings.Repeat("x", 2*maxBody)}, "token": {good}}
	if code := post(t, c, srv.URL+"/login", big, nil); code == http.StatusSeeOther {
		t.Fatalf("oversized login body accepted")
	}
	_, page := get(t, c, srv.URL+"/")
	if !strings.Contains(page, `id="login"`) || csrfRE.MatchString(page) {
		t.Fatalf("not logged in, yet the page has no login form or has action forms")
	}
	resp, err := c.PostForm(srv.URL+"/login", url.Values{"token": {good}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	ck := resp.Header.Get("Set-Cookie")
	for _, want := range []string{"HttpOnly", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(ck, want) {
			t.Errorf("session cookie %q lacks %s", ck, want)
		}
	}
	// Too many failures in a minute: refused even with the right token.
	_, b2 := newFake(t, strp(good))
	srv2, c2 := serve(t, b2)
	for range maxLogins {
		post(t, c2, srv2.URL+"/login", url.Values{"token": {"guess"}}, nil)
	}
	if code := post(t, c2, srv2.URL+"/login", url.Values{"token": {good}}, nil); code != http.StatusTooManyRequests {
		t.Fatalf("after %d failures: %d, want 429", maxLogins, code)
	}
}

func TestSessionsBounded(t *testing.T) {
	_, b := newFake(t, strp("tok-tok-tok-tok"))
	h, err := New(b)
	if err != nil {
		t.Fatal(err)
	}
	for range MaxSessions + 5 {
		req := httptest.NewRequest("POST", "/login", strings.NewReader("token=tok-tok-tok-tok"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 303 {
			t.Fatalf("login %d", rec.Code)
		}
	}
	if n := len(h.sess); n != MaxSessions {
		t.Fatalf("%d sessions, want %d", n, MaxSessions)
	}
}

func TestReadOnlyPage(t *testing.T) {
	f, b := newFake(t, nil)
	f.add(&queue.Record{ID: "HELD1", State: queue.Hold, HoldReason: "check", Arrival: time.Now().Add(-time.Hour)})
	srv, c := serve(t, b)
	resp, err := c.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for k, want := range map[string]string{
		"Content-Security-Policy": "default-src 'self'",
		"X-Content-Type-Options":  "nosniff",
		"X-Frame-Options":         "DENY",
		"Content-Type":            "text/html; charset=utf-8",
	} {
		if got := resp.Header.Get(k); !strings.Contains(got, want) {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	page := string(body)
	for _, want := range []string{"Read-only", `data-id="HELD1"`, "No hook calls yet", `id="chart"`, `<script src="/static/app.js"`} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, bad := range []string{`action="/action"`, `id="login"`, "<script>", " style="} {
		if strings.Contains(page, bad) {
			t.Errorf("read-only page has %q", bad)
		}
	}
	if code, js := get(t, c, srv.URL+"/static/app.js"); code != 200 || !strings.Contains(js, "EventSource") {
		t.Errorf("app.js: %d", code)
	}
	if code, _ := get(t, c, srv.URL+"/msg/..%2f..%2fetc"); code != 404 {
		t.Errorf("bad id: %d, want 404", code)
	}
	if code, _ := get(t, c, srv.URL+"/msg/NOSUCH"); code != 404 {
		t.Errorf("unknown id: %d, want 404", code)
	}
	if code, _ := get(t, c, srv.URL+"/action"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /action: %d, want 405", code)
	}
}

func TestHostileDataEscaped(t *testing.T) {
	f, b := newFake(t, strp("tok-tok-tok-tok"))
	evil := `<script>alert(1)</script>"'><img src=x onerror=alert(2)>`
	f.add(&queue.Record{ID: "EVIL1", State: queue.Hold, Sender: evil + "@x.test", HoldReason: evil, Client: evil, Arrival: time.Now(),
		Rcpts: []queue.Rcpt{{Addr: evil, State: queue.Pending, Attempts: []queue.Attempt{{Reply: evil, Relay: evil}}}},
		Log:   []queue.Step{{Stage: "RCPT", Arg: evil, Decision: evil, Source: evil}}})
	f.feed.Add(activity.Event{Kind: activity.Rejected, From: evil, To: evil, Text: evil, Client: evil, Stage: "RCPT"})
	b.HookStats = func() []HookStat { return []HookStat{{Hook: evil, Calls: 3, Mean: time.Millisecond}} }
	srv, c := serve(t, b)
	login(t, c, srv.URL, "tok-tok-tok-tok")
	for _, path := range []string{"/", "/msg/EVIL1", "/api/queue"} {
		code, page := get(t, c, srv.URL+path)
		if code != 200 {
			t.Fatalf("%s: %d", path, code)
		}
		for _, bad := range []string{"<script>alert", "<img src=x", "<b>hi"} {
			if strings.Contains(page, bad) {
				t.Errorf("%s: unescaped %q", path, bad)
			}
		}
		if path != "/api/queue" && !strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;") {
			t.Errorf("%s: the hostile sender is not shown escaped", path)
		}
	}
}

func TestSummarizeKeepsOldest(t *testing.T) {
	var recs []*queue.Record
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 500; i > 0; i-- { // newest first: the walk's order must not matter
		recs = append(recs, &queue.Record{ID: fmt.Sprintf("D%04d", i), State: queue.Deferred, Arrival: t0.Add(time.Duration(i) * time.Second)})
	}
	recs = append(recs, &queue.Record{ID: "H1", State: queue.Hold}, &queue.Record{ID: "C1", State: queue.Corrupt})
	groups, err := Summarize(func(fn func(*queue.Record) bool) error {
		for _, r := range recs {
			fn(r)
		}
		return nil
	}, 10)
	if err != nil {
		t.Fatal(err)
	}
	got := map[queue.State]StateGroup{}
	for _, g := range groups {
		got[g.State] = g
	}
	d := got[queue.Deferred]
	if d.Count != 500 || len(d.Oldest) != 10 || d.Oldest[0].ID != "D0001" || d.Oldest[9].ID != "D0010" {
		t.Fatalf("deferred: count %d, %d listed, first %s", d.Count, len(d.Oldest), d.Oldest[0].ID)
	}
	if got[queue.Hold].Count != 1 || got[queue.Corrupt].Count != 1 || got[queue.Active].Count != 0 {
		t.Fatalf("counts: %+v", got)
	}
}

// With the counts from the index the walk stops once each state has
// its rows: a page load reads a few records of a million.
func TestSummarizeWithCountsStopsEarly(t *testing.T) {
	walked := 0
	walk := func(fn func(*queue.Record) bool) error {
		for i := 0; i < 100000; i++ {
			st := queue.Deferred
			if i == 7 || i == 900 {
				st = queue.Hold
			}
			walked++
			if !fn(&queue.Record{ID: fmt.Sprintf("M%06d", i), State: st}) {
				return nil
			}
		}
		return nil
	}
	counts := map[queue.State]int{queue.Deferred: 99998, queue.Hold: 2}
	groups, err := summarize(walk, counts, 10)
	if err != nil {
		t.Fatal(err)
	}
	if walked != 901 {
		t.Errorf("walked %d records, want 901 (up to the second held one)", walked)
	}
	got := map[queue.State]StateGroup{}
	for _, g := range groups {
		got[g.State] = g
	}
	if d := got[queue.Deferred]; d.Count != 99998 || len(d.Oldest) != 10 || d.Oldest[0].ID != "M000000" {
		t.Errorf("deferred: %d, %d rows", d.Count, len(d.Oldest))
	}
	if h := got[queue.Hold]; h.Count != 2 || len(h.Oldest) != 2 || h.Oldest[1].ID != "M000900" {
		t.Errorf("hold: %+v", h)
	}
	// A held message beyond ScanMax is counted but not listed.
	walked = 0
	counts[queue.Hold] = 3
	summarize(walk, counts, 10)
	if walked != ScanMax {
		t.Errorf("walked %d, want the bound %d", walked, ScanMax)
	}
}

func TestEventsStream(t *testing.T) {
	f, b := newFake(t, nil)
	srv, c := serve(t, b)
	resp, err := c.Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func(want func(string) bool) string {
		t.Helper()
		timeout := time.After(5 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatal("stream ended")
				}
				if want(l) {
					return l
				}
			case <-timeout:
				t.Fatal("timed out")
			}
		}
	}
	next(func(l string) bool { return strings.HasPrefix(l, ": larkpost") }) // subscribed
	f.feed.Add(activity.Event{Kind: activity.Accepted, ID: "ACC1"})         // not a delivery: not sent
	f.feed.Add(activity.Event{Kind: activity.Delivered, ID: "DLV1", To: "<bob@example.test>", Relay: "local"})
	l := next(func(l string) bool { return strings.HasPrefix(l, "data: ") })
	if !strings.Contains(l, `"id":"DLV1"`) || !strings.Contains(l, `"kind":"delivered"`) || strings.Contains(l, "<bob") {
		t.Fatalf("event %q", l)
	}
	next(func(l string) bool { return l == ": heartbeat" })
	close(f.done) // the server shuts down: the stream ends
	select {
	case <-time.After(5 * time.Second):
		t.Fatal("stream did not end at shutdown")
	case <-func() chan struct{} {
		ch := make(chan struct{})
		go func() {
			for range lines {
			}
			close(ch)
		}()
		return ch
	}():
	}
}

func TestTrafficChart(t *testing.T) {
	f, b := newFake(t, nil)
	now := time.Now()
	b.Now = func() time.Time { return now }
	for range 4 {
		f.feed.Add(activity.Event{Time: now, Kind: activity.Delivered})
	}
	f.feed.Add(activity.Event{Time: now.Add(-5 * time.Minute), Kind: activity.Rejected})
	srv, c := serve(t, b)
	code, svg := get(t, c, srv.URL+"/chart.svg")
	if code != 200 || strings.Count(svg, "<g>") != 60 || !strings.Contains(svg, `height="120" class="k-delivered"`) || !strings.Contains(svg, "max 4/min") {
		t.Fatalf("chart (%d):\n%s", code, svg)
	}
	if code, js := get(t, c, srv.URL+"/api/traffic"); code != 200 || strings.Count(js, `"start"`) != 60 {
		t.Fatalf("traffic JSON (%d): %s", code, js)
	}
}
