// Package http is the Starlark `http` module: webhooks from hooks.
//
//	http.post(url, json=None, body="", headers={})   queue a POST; True if queued
//
// A POST is never made while the hook waits: it is queued and sent by a
// small pool of senders, each request bounded by a timeout and retried with
// backoff on a network error or a 5xx reply, so that a slow or dead
// endpoint costs a hook nothing and never delays mail. The queue is
// bounded; when it is full post returns False and the request is dropped
// (and counted in the log). Only http and https URLs are accepted.
package http

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.starlark.net/lib/json"
	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
)

// Sender sends queued requests. Its zero value is not usable: use New.
type Sender struct {
	client  *http.Client
	queue   chan *request
	log     *slog.Logger
	retries int
	backoff time.Duration

	dropped atomic.Int64
	workers int
	once    sync.Once // the workers start with the first request
	ctx     context.Context
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

type request struct {
	url     string
	body    []byte
	headers map[string]string
}

// Options tune a Sender; zero values take the defaults.
type Options struct {
	Queue   int           // requests waiting (1000)
	Workers int           // concurrent requests (2)
	Timeout time.Duration // per attempt (10s)
	Retries int           // further attempts after a failure (0: 3; -1: none)
	Backoff time.Duration // before the first retry, doubling (1s)
	Log     *slog.Logger
	Client  *http.Client // tests; nil: a client with Timeout and no redirects
}

// maxBody bounds a request body: a webhook is a notification, not a
// transfer.
const maxBody = 64 << 10

// New returns a Sender; its workers start with the first request, and
// Close stops them.
func New(o Options) *Sender {
	if o.Queue <= 0 {
		o.Queue = 1000
	}
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Retries < 0 {
		o.Retries = 0
	} else if o.Retries == 0 {
		o.Retries = 3
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	client := o.Client
	if client == nil {
		client = &http.Client{Timeout: o.Timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Sender{client: client, queue: make(chan *request, o.Queue), log: o.Log, retries: o.Retries, backoff: o.Backoff,
		workers: o.Workers, ctx: ctx, stop: cancel}
}

// Close stops the senders; queued requests are dropped.
func (s *Sender) Close() {
	s.stop()
	s.wg.Wait()
}

func (s *Sender) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-s.queue:
			s.send(ctx, r)
		}
	}
}

func (s *Sender) send(ctx context.Context, r *request) {
	wait := s.backoff
	var err error
	for attempt := 0; attempt <= s.retries; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait *= 2
		}
		var retry bool
		if retry, err = s.post(ctx, r); err == nil || !retry {
			break
		}
	}
	if err != nil {
		s.log.Warn("warning: webhook " + r.url + ": " + err.Error())
	}
}

// post makes one attempt; retry says whether another may succeed.
func (s *Sender) post(ctx context.Context, r *request) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url, bytes.NewReader(r.body))
	if err != nil {
		return false, err
	}
	req.Header.Set("User-Agent", "larkpost")
	for k, v := range r.headers {
		req.Header.Set(k, v)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return true, err
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 500:
		return true, errors.New(resp.Status)
	case resp.StatusCode >= 300:
		return false, errors.New(resp.Status)
	}
	return false, nil
}

// enqueue reports whether r was queued.
func (s *Sender) enqueue(r *request) bool {
	s.once.Do(func() {
		for range s.workers {
			s.wg.Go(func() { s.work(s.ctx) })
		}
	})
	select {
	case s.queue <- r:
		return true
	default:
		if n := s.dropped.Add(1); n == 1 || n%100 == 0 {
			s.log.Warn("warning: webhook queue full: " + strconv.FormatInt(n, 10) + " request(s) dropped")
		}
		return false
	}
}

// Module returns the `http` module sending through s.
func Module(s *Sender) *starlarkstruct.Module {
	return &starlarkstruct.Module{Name: "http", Members: starlark.StringDict{
		"post": starlark.NewBuiltin("http.post", s.postBuiltin),
	}}
}

func (s *Sender) postBuiltin(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var (
		rawURL  string
		js      starlark.Value = starlark.None
		body    string
		headers *starlark.Dict
	)
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "url", &rawURL, "json?", &js, "body?", &body, "headers?", &headers); err != nil {
		return nil, err
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%s: want an http or https URL, got %q", b.Name(), rawURL)
	}
	r := &request{url: rawURL, body: []byte(body), headers: map[string]string{}}
	if js != starlark.None {
		if body != "" {
			return nil, fmt.Errorf("%s: json and body are exclusive", b.Name())
		}
		v, err := starlark.Call(th, json.Module.Members["encode"], starlark.Tuple{js}, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.Name(), err)
		}
		r.body = []byte(string(v.(starlark.String)))
		r.headers["Content-Type"] = "application/json"
	}
	if len(r.body) > maxBody {
		return nil, fmt.Errorf("%s: body of %d bytes, at most %d", b.Name(), len(r.body), maxBody)
	}
	if headers != nil {
		for _, kv := range headers.Items() {
			k, ok1 := starlark.AsString(kv[0])
			v, ok2 := starlark.AsString(kv[1])
			if !ok1 || !ok2 || !validHeader(k, v) {
				return nil, fmt.Errorf("%s: headers: want string names and values without control characters", b.Name())
			}
			r.headers[k] = v
		}
	}
	return starlark.Bool(s.enqueue(r)), nil
}

func validHeader(k, v string) bool {
	if k == "" {
		return false
	}
	for _, c := range k + v {
		if c < ' ' || c == 0x7f {
			return false
		}
	}
	return true
}
