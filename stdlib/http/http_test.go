package http_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.starlark.net/starlark"
	"go.starlark.net/syntax"

	lphttp "github.com/larkpost/larkpost/stdlib/http"
)

func eval(t *testing.T, s *lphttp.Sender, expr string) (starlark.Value, error) {
	t.Helper()
	return starlark.EvalOptions(&syntax.FileOptions{}, &starlark.Thread{}, "test", expr, starlark.StringDict{"http": lphttp.Module(s)})
}

// TestPost: a JSON body arrives with its content type and headers; a 5xx
// is retried until it succeeds; the hook never waits for the endpoint.
func TestPost(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []string
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, r.Header.Get("Content-Type")+" "+r.Header.Get("X-Token")+" "+string(b))
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	s := lphttp.New(lphttp.Options{Backoff: 10 * time.Millisecond})
	t.Cleanup(s.Close)
	v, err := eval(t, s, `http.post("`+srv.URL+`/hook", json = {"event": "bounced", "rcpt": "a@b.example", "n": 1}, headers = {"X-Token": "s3cret"})`)
	if err != nil || v != starlark.True {
		t.Fatalf("post = %v, %v", v, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	want := `application/json s3cret {"event":"bounced","n":1,"rcpt":"a@b.example"}`
	if len(got) != 1 || got[0] != want || calls.Load() != 2 {
		t.Errorf("server got %q after %d calls, want [%q] after 2", got, calls.Load(), want)
	}
}

// TestQueueFull: a dead-slow endpoint fills the queue; post then returns
// False at once instead of blocking the hook.
func TestQueueFull(t *testing.T) {
	t.Parallel()
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	t.Cleanup(func() { close(block); srv.Close() })
	s := lphttp.New(lphttp.Options{Queue: 2, Workers: 1, Retries: -1})
	t.Cleanup(s.Close)
	var results []string
	start := time.Now()
	for range 5 {
		v, err := eval(t, s, `http.post("`+srv.URL+`", body = "x")`)
		if err != nil {
			t.Fatal(err)
		}
		results = append(results, v.String())
		time.Sleep(20 * time.Millisecond) // let the worker take the first
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("posts took %v", took)
	}
	if strings.Join(results, " ") != "True True True False False" {
		t.Errorf("results %v, want three queued (one in flight) and two dropped", results)
	}
}

func TestPostErrors(t *testing.T) {
	t.Parallel()
	s := lphttp.New(lphttp.Options{})
	t.Cleanup(s.Close)
	for _, expr := range []string{
		`http.post("ftp://example.com/x")`,
		`http.post("file:///etc/passwd")`,
		`http.post("/relative")`,
		`http.post("http://example.com", headers = {"X-A": "a\r\nX-B: b"})`,
		`http.post("http://example.com", json = {"a": 1}, body = "x")`,
		`http.post("http://example.com", body = "x" * 70000)`,
		`http.post("http://example.com", json = {"f": lambda: 1})`,
	} {
		if _, err := eval(t, s, expr); err == nil {
			t.Errorf("%s: no error", expr)
		}
	}
}
