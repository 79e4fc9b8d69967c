//go:build browser

// The status page in a real browser: Debian's chromium, headless, driven
// by chromedp against a real engine. Run with
//
//	go test -count=1 -tags browser -run Browser -v ./engine/
//
// CHROMIUM names the browser when it is not "chromium" in PATH. With the
// tag set and no browser the tests fail: CI installs chromium.
package engine

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/larkpost/larkpost/engine/activity"
	"github.com/larkpost/larkpost/engine/enginetest"
	"github.com/larkpost/larkpost/engine/maillog"
	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
)

const browserToken = "browser-test-token-5f0c2a9e71d4"

// webHarness is a real engine with SMTP and the web page on 127.0.0.1.
type webHarness struct {
	e        *Engine
	smtpAddr string
	url      string // the web page, http://127.0.0.1:PORT
	log      *enginetest.LogBuffer
}

func startWeb(t *testing.T) *webHarness {
	t.Helper()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "web.token")
	if err := os.WriteFile(tokenFile, []byte(browserToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`config(listen = {"smtp": "127.0.0.1:0"}, data_dir = %q, hostname = "mx.test", resolvers = [],
    web_listen = "127.0.0.1:0", web_admin_token_file = %q)

def on_rcpt(tx, rcpt):
    if rcpt.user == "review":
        return hold("needs review")
`, filepath.Join(dir, "data"), tokenFile)
	file := filepath.Join(dir, "larkpost.star")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	lb := &enginetest.LogBuffer{}
	log := slog.New(maillog.New(lb, slog.LevelInfo))
	p, err := rules.LoadFileWith(file, rules.Options{Logger: log})
	if err != nil {
		t.Fatalf("load config:\n%v", err)
	}
	e, err := New(p, log)
	if err != nil {
		t.Fatal(err)
	}
	e.Start()
	web := e.HTTPAddr("127.0.0.1:0")
	if web == nil {
		t.Fatal("web_listen not bound")
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		e.Shutdown(ctx)
		// The HTTP server waits a second for open requests before it
		// closes them: a live stream must end by itself at once.
		if took := time.Since(start); took > 900*time.Millisecond {
			t.Errorf("shutdown took %v: a live event stream held it up", took)
		} else {
			t.Logf("shutdown took %v", took.Round(time.Millisecond))
		}
		if t.Failed() {
			t.Logf("server log:\n%s", lb.String())
		}
	})
	return &webHarness{e: e, smtpAddr: e.Addr("smtp").String(), url: "http://" + web.String(), log: lb}
}

// holdOne sends a message the hook holds and returns its queue id.
func (h *webHarness) holdOne(t *testing.T) string {
	t.Helper()
	if _, err := enginetest.Send(h.smtpAddr, "ann@example.org", []string{"review@mx.test"}, "Subject: park me\r\n\r\nhello\r\n"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if held := h.heldIDs(t); len(held) == 1 {
			return held[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no held message; queue: %v", h.heldIDs(t))
	return ""
}

// heldIDs asks the engine as `larkpost queue list --state hold` does.
func (h *webHarness) heldIDs(t *testing.T) []string {
	t.Helper()
	rep := h.e.control(Request{Cmd: "queue.list", Filter: Filter{State: string(queue.Hold)}}, nil)
	if rep.Error != "" {
		t.Fatal(rep.Error)
	}
	var ids []string
	for _, m := range rep.Messages {
		ids = append(ids, m.ID)
	}
	return ids
}

// startBrowser starts headless chromium; the returned func lists what the
// pages wrote to the console (exceptions, CSP violations).
func startBrowser(t *testing.T) (context.Context, func() []string) {
	t.Helper()
	path := os.Getenv("CHROMIUM")
	if path == "" {
		var err error
		if path, err = exec.LookPath("chromium"); err != nil {
			t.Fatalf("no chromium (install Debian's chromium or set CHROMIUM): %v", err)
		}
	}
	// A start can fail while the previous test's browser is still going
	// away (CI saw "chrome failed to start" once, 0.4 s after one ended):
	// up to three tries, each with a fresh profile.
	var ctx context.Context
	for try := 1; ; try++ {
		opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
			chromedp.UserDataDir(t.TempDir()))
		actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		tctx, cancelTab := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
		tctx, cancelTime := context.WithTimeout(tctx, 90*time.Second)
		err := chromedp.Do(tctx, chromedp.Navigate("about:blank"))
		if err == nil {
			ctx = tctx
			t.Cleanup(func() { cancelTime(); cancelTab(); cancelAlloc() })
			break
		}
		cancelTime()
		cancelTab()
		cancelAlloc()
		if try == 3 {
			t.Fatalf("start chromium %s: %v", path, err)
		}
		t.Logf("start chromium %s (try %d of 3): %v", path, try, err)
		time.Sleep(time.Second)
	}
	var mu sync.Mutex
	var msgs []string
	console := chromedp.Console(ctx)
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			mu.Lock()
			msgs = append(msgs, fmt.Sprintf("%s %s:%d %s", m.Type, m.URL, m.Line+1, m.Text))
			mu.Unlock()
		}
	}()
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), msgs...)
	}
}

func webDo(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func webText(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// TestBrowserReleaseHeld: the held message is in the queue table; the
// admin logs in with the token, clicks release, and the message leaves
// the hold table and the hold state. Live events reach the page.
func TestBrowserReleaseHeld(t *testing.T) {
	// The browser first: its cleanup runs last, so the engine shuts down
	// while the page's live event stream is open.
	ctx, console := startBrowser(t)
	h := startWeb(t)
	id := h.holdOne(t)
	hostile := `<img src=x onerror="document.title='pwned'">`
	h.e.feed.Add(activity.Event{Kind: activity.Rejected, Stage: "RCPT", From: hostile, To: "nobody@mx.test", Client: "evil[192.0.2.1]", Status: "5.7.1", Text: hostile})

	webDo(t, ctx, "load the page", chromedp.Navigate(h.url+"/"), chromedp.WaitVisible(chromedp.CSS("#queue-hold")))
	if got := webText(t, ctx, "#queue-hold"); !strings.Contains(got, id) || !strings.Contains(got, "needs review") {
		t.Fatalf("hold table %q lacks %s", got, id)
	}
	if got := webText(t, ctx, "#recent-table"); !strings.Contains(got, hostile) {
		t.Fatalf("recent table %q lacks the reject, shown as text", got)
	}
	if title, _ := chromedp.Run(ctx, chromedp.Title()); title == "pwned" {
		t.Fatal("hostile event text ran as HTML")
	}
	if n, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("button[value=release]").length`)); n != 0 {
		t.Fatalf("release buttons before login: %d", n)
	}

	// Log in with the token.
	webDo(t, ctx, "log in",
		chromedp.SendKeys(chromedp.CSS("#token"), browserToken),
		chromedp.Click(chromedp.CSS("#login-button")),
		chromedp.WaitVisible(chromedp.CSS("#logout")),
		chromedp.WaitVisible(chromedp.CSS(`#queue-hold tr[data-id="`+id+`"] button[value=release]`)))

	// A delivery while the page is open appears without a reload.
	webDo(t, ctx, "live stream open", chromedp.WaitVisible(chromedp.CSS("#live.on")))
	h.e.feed.Add(activity.Event{Kind: activity.Delivered, ID: "LIVE0TEST0001", From: "ann@example.org", To: "bob@mx.test", Relay: "local", Status: "2.0.0", Text: "delivered to maildir"})
	webDo(t, ctx, "live event shown", chromedp.Poll[chromedp.Void](
		`document.querySelector("#recent-table tbody tr") && document.querySelector("#recent-table tbody tr").textContent.includes("LIVE0TEST0001")`,
		chromedp.WithPollingTimeout(10*time.Second)))

	// Release it.
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(`#queue-hold tr[data-id="`+id+`"] button[value=release]`)))
	if err != nil {
		t.Fatalf("release: %v", err)
	}
	if resp.Status != 200 {
		t.Fatalf("release: page status %d", resp.Status)
	}
	webDo(t, ctx, "flash", chromedp.WaitVisible(chromedp.CSS("#flash")))
	if got := webText(t, ctx, "#flash"); !strings.Contains(got, "release "+id) {
		t.Errorf("flash %q", got)
	}
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#queue-hold tr[data-id="`+id+`"]').length`)); err != nil || n != 0 {
		t.Fatalf("message still in the hold table after release (%d, %v)", n, err)
	}
	if held := h.heldIDs(t); len(held) != 0 {
		t.Fatalf("still held in the queue: %v", held)
	}
	if !h.log.WaitFor(id+`: release by the admin \(web, 127\.0\.0\.1\)`, 3*time.Second) {
		t.Errorf("the release is not logged with who and where")
	}
	for _, m := range console() {
		if strings.HasPrefix(m, "exception") || strings.Contains(m, "Content Security Policy") || strings.HasPrefix(m, "error") {
			t.Errorf("browser console: %s", m)
		}
	}
}

// TestBrowserActionRefused: without the token, with a wrong token, and
// from another site's page (with the admin's session, without the CSRF
// token) the release is refused with 403 and the message stays held.
func TestBrowserActionRefused(t *testing.T) {
	ctx, _ := startBrowser(t)
	h := startWeb(t)
	id := h.holdOne(t)
	form := url.Values{"action": {"release"}, "id": {id}}

	// No token at all: the page offers no action, and a POST is refused.
	webDo(t, ctx, "load the page", chromedp.Navigate(h.url+"/"), chromedp.WaitVisible(chromedp.CSS("#queue-hold")))
	if n, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("form[action='/action']").length`)); n != 0 {
		t.Fatalf("%d action forms without login", n)
	}
	if code := webPost(t, nil, h.url+"/action", form); code != 403 {
		t.Errorf("release without a token: %d, want 403", code)
	}

	// A wrong token: the login is refused, and so is the action after it.
	webDo(t, ctx, "type a wrong token", chromedp.SendKeys(chromedp.CSS("#token"), "not-the-token"))
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS("#login-button")))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 403 {
		t.Errorf("login with a wrong token: %d, want 403", resp.Status)
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if code := webPost(t, c, h.url+"/login", url.Values{"token": {"wrong"}}); code != 403 {
		t.Errorf("wrong token login: %d, want 403", code)
	}
	if code := webPost(t, c, h.url+"/action", form); code != 403 {
		t.Errorf("release after a wrong token: %d, want 403", code)
	}
	// The right token but no CSRF token: refused.
	if code := webPost(t, c, h.url+"/login", url.Values{"token": {browserToken}}); code != 303 {
		t.Fatalf("login: %d", code)
	}
	if code := webPost(t, c, h.url+"/action", form); code != 403 {
		t.Errorf("release without the CSRF token: %d, want 403", code)
	}

	// The admin is logged in in the browser and opens another site's page
	// that posts the form to the status page: refused.
	webDo(t, ctx, "log in", chromedp.Navigate(h.url+"/"), chromedp.SendKeys(chromedp.CSS("#token"), browserToken),
		chromedp.Click(chromedp.CSS("#login-button")), chromedp.WaitVisible(chromedp.CSS("#logout")))
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><form id="f" method="post" action="%s/action"><input name="action" value="release"><input name="id" value="%s"></form>
<button id="go" onclick="document.getElementById('f').submit()">win a prize</button>`, h.url, id)
	}))
	defer evil.Close()
	// "localhost" is another site than 127.0.0.1 to the browser.
	evilURL := strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)
	webDo(t, ctx, "open the other site", chromedp.Navigate(evilURL), chromedp.WaitVisible(chromedp.CSS("#go")))
	resp, err = chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS("#go")))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 403 {
		t.Errorf("cross-site release: %d, want 403", resp.Status)
	}
	// From the same host on another port (same-site to the browser, so the
	// session cookie goes along): refused as well.
	webDo(t, ctx, "open the other port", chromedp.Navigate(evil.URL), chromedp.WaitVisible(chromedp.CSS("#go")))
	resp, err = chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS("#go")))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 403 {
		t.Errorf("same-site cross-origin release: %d, want 403", resp.Status)
	}

	if held := h.heldIDs(t); len(held) != 1 || held[0] != id {
		t.Fatalf("held now %v, want %s still held", held, id)
	}
	webDo(t, ctx, "reload", chromedp.Navigate(h.url+"/"), chromedp.WaitVisible(chromedp.CSS(`#queue-hold tr[data-id="`+id+`"]`)))
	if !strings.Contains(h.log.String(), "refused from 127.0.0.1") {
		t.Errorf("refusals not logged")
	}
}

func webPost(t *testing.T, c *http.Client, u string, form url.Values) int {
	t.Helper()
	if c == nil {
		c = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	resp, err := c.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
