package state

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/larkpost/larkpost/queue"
)

func openQueue(t testing.TB) *queue.Queue {
	t.Helper()
	q, err := queue.Open(t.TempDir(), slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

// badgerBackend is one queue per test, judged by a fake clock.
var badgerBackend = backend{
	name: "badger",
	unit: time.Minute,
	open: func(t testing.TB, nodes int) ([]Store, clock) {
		q := openQueue(t)
		stores := make([]Store, nodes)
		for i := range stores {
			stores[i] = NewBadger(q)
		}
		return stores, newFakeClock(nil)
	},
}

// memoryBackend is one memory store per test, shared by its nodes.
var memoryBackend = backend{
	name: "memory",
	unit: time.Minute,
	open: func(t testing.TB, nodes int) ([]Store, clock) {
		st := NewMemory()
		stores := make([]Store, nodes)
		for i := range stores {
			stores[i] = st
		}
		return stores, newFakeClock(nil)
	},
}

// miniredisBackend is one miniredis per test, whose clock (TIME and
// key expiry alike) the fake clock moves; each node is a client of its
// own.
var miniredisBackend = backend{
	name:      "miniredis",
	unit:      time.Minute,
	onceClock: true,
	open: func(t testing.TB, nodes int) ([]Store, clock) {
		m := miniredis.RunT(t)
		m.ClockTTL(true)
		clk := newFakeClock(m.SetTime)
		return redisNodes(t, "redis://"+m.Addr()+"/0", RedisOptions{}, nodes), clk
	},
}

func redisNodes(t testing.TB, url string, o RedisOptions, nodes int) []Store {
	t.Helper()
	stores := make([]Store, nodes)
	for i := range stores {
		s, err := NewRedis(url, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores[i] = s
	}
	return stores
}

func TestBadger(t *testing.T) {
	t.Parallel()
	runSuite(t, badgerBackend)
}

func TestMemory(t *testing.T) {
	t.Parallel()
	runSuite(t, memoryBackend)
}

func TestMiniredis(t *testing.T) {
	t.Parallel()
	runSuite(t, miniredisBackend)
}

// TestRedisKeysExpire: every key the scripts write has a TTL.
func TestRedisKeysExpire(t *testing.T) {
	t.Parallel()
	m := miniredis.RunT(t)
	s := redisNodes(t, "redis://"+m.Addr()+"/0", RedisOptions{Prefix: "lp:"}, 1)[0]
	ctx, now := t.Context(), time.Now()
	s.Take(ctx, "k", Rate{N: 5, Per: time.Second}, 5, 1, now)
	s.Count(ctx, "k", time.Hour, 1, now)
	s.Greylist(ctx, "t", "c", GreyParams{AutoWhitelist: 5}, now)
	m.SetTime(time.Now().Add(time.Hour))
	s.Greylist(ctx, "t", "c", GreyParams{AutoWhitelist: 5}, now)
	s.Once(ctx, "k", time.Hour)
	keys := m.Keys()
	if len(keys) != 5 {
		t.Errorf("keys %q, want 5", keys)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, "lp:") {
			t.Errorf("key %q without the prefix", k)
		}
		if m.TTL(k) <= 0 {
			t.Errorf("key %q has no TTL", k)
		}
	}
}

// TestRedisUnavailable: a Redis that is down, or that accepts and never
// answers, costs a caller the timeout at most, then ErrUnavailable.
func TestRedisUnavailable(t *testing.T) {
	t.Parallel()
	m := miniredis.RunT(t)
	downURL := "redis://" + m.Addr() + "/0"
	m.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	t.Cleanup(func() { ln.Close(); conns.Wait() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Go(func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			})
		}
	}()
	servers := map[string]string{"down": downURL, "silent": "redis://" + ln.Addr().String() + "/0"}
	for name, url := range servers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := redisNodes(t, url, RedisOptions{}, 1)[0]
			defer s.Close()
			ctx, now := context.Background(), time.Now()
			ops := map[string]func() error{
				"take":     func() error { _, err := s.Take(ctx, "k", Rate{N: 1, Per: time.Second}, 1, 1, now); return err },
				"count":    func() error { _, err := s.Count(ctx, "k", time.Hour, 1, now); return err },
				"greylist": func() error { _, err := s.Greylist(ctx, "t", "c", GreyParams{AutoWhitelist: 5}, now); return err },
				"once":     func() error { _, err := s.Once(ctx, "k", time.Hour); return err },
			}
			var wg sync.WaitGroup
			for op, f := range ops {
				wg.Go(func() {
					start := time.Now()
					err := f()
					if elapsed := time.Since(start); elapsed >= 2*time.Second {
						t.Errorf("%s: returned after %s", op, elapsed)
					}
					if !errors.Is(err, ErrUnavailable) {
						t.Errorf("%s: %v, want ErrUnavailable", op, err)
					}
				})
			}
			wg.Wait()
		})
	}
}

func TestOpen(t *testing.T) {
	t.Parallel()
	q := openQueue(t)
	for _, spec := range []string{"", "badger", "redis://127.0.0.1:1/0", "rediss://127.0.0.1:1/2"} {
		s, err := Open(spec, q, Options{})
		if err != nil {
			t.Errorf("Open(%q): %v", spec, err)
			continue
		}
		s.Close()
	}
	bad := []struct{ spec, want string }{
		{"memcached://127.0.0.1:11211", `want "badger", "redis://host:port/db" or "rediss://host:port/db"`},
		{"http://user:secret@example.org/", `http://user:xxxxx@example.org/`},
		{"redis://127.0.0.1:1/notadb", `invalid database number`},
	}
	for _, b := range bad {
		_, err := Open(b.spec, q, Options{})
		if err == nil || !strings.Contains(err.Error(), b.want) || strings.Contains(err.Error(), "secret") {
			t.Errorf("Open(%q): %v, want an error with %q", b.spec, err, b.want)
		}
	}
	if _, err := Open("badger", nil, Options{}); err == nil {
		t.Error("Open(badger) without a queue: no error")
	}
}

func TestParseRate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want Rate
	}{
		{"100/h", Rate{100, time.Hour}},
		{"10/min", Rate{10, time.Minute}},
		{"5/s", Rate{5, time.Second}},
		{"1000/d", Rate{1000, 24 * time.Hour}},
		{"20/10m", Rate{20, 10 * time.Minute}},
		{" 3 / 2h ", Rate{3, 2 * time.Hour}},
		{"1/1h30m", Rate{1, 90 * time.Minute}},
	}
	for _, tt := range tests {
		if got, err := ParseRate(tt.in); err != nil || got != tt.want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"", "100", "0/h", "-1/h", "x/h", "10/", "10/0s", "10/fortnight", "10/h/2", "1.5/h"} {
		if r, err := ParseRate(in); err == nil {
			t.Errorf("ParseRate(%q) = %v, want an error", in, r)
		}
	}
}

func TestParseDuration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"5m", 5 * time.Minute},
		{"35d", 35 * 24 * time.Hour},
		{"2d", 48 * time.Hour},
		{"1h30m", 90 * time.Minute},
		{"90s", 90 * time.Second},
		{"500ms", 500 * time.Millisecond},
		{"1w", 7 * 24 * time.Hour},
		{"0s", 0},
	}
	for _, tt := range tests {
		if got, err := ParseDuration(tt.in); err != nil || got != tt.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
		if tt.want > 0 {
			if back, err := ParseDuration(FormatDuration(tt.want)); err != nil || back != tt.want {
				t.Errorf("ParseDuration(FormatDuration(%s)) = %v, %v", tt.want, back, err)
			}
		}
	}
	for _, in := range []string{"", "5", "m", "5 m", "-5m", "1.5h", "5x", "99999999999999999999d", "200000d"} {
		if d, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", in, d)
		}
	}
}
