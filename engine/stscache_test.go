package engine

import (
	"context"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/tlspolicy"
)

// TestSTSCachePersists: an MTA-STS policy is kept in the queue's Badger
// store (which outlives a restart) whole, and is gone once its max_age
// has passed.
func TestSTSCachePersists(t *testing.T) {
	h := start(t, "")
	c := stsCache{h.e.Queue()}
	ctx := context.Background()
	if _, ok, err := c.Get(ctx, "example.org"); ok || err != nil {
		t.Fatalf("empty cache: %v %v", ok, err)
	}
	e := tlspolicy.CacheEntry{Policy: tlspolicy.Policy{Mode: tlspolicy.ModeEnforce, MX: []string{"mx.example.org"}, MaxAge: 86400 * time.Second},
		ID: "20261204", Fetched: time.Now().Truncate(time.Second)}
	if err := c.Put(ctx, "example.org", e); err != nil {
		t.Fatal(err)
	}
	short := e
	short.Policy.MaxAge, short.Fetched = time.Second, time.Now()
	c.Put(ctx, "short.example", short)
	got, ok, err := c.Get(ctx, "example.org")
	if !ok || err != nil || got.ID != e.ID || got.Policy.Mode != e.Policy.Mode || got.Policy.MX[0] != "mx.example.org" || !got.Fetched.Equal(e.Fetched) {
		t.Fatalf("got %+v %v %v", got, ok, err)
	}
	time.Sleep(1100 * time.Millisecond)
	if _, ok, _ := c.Get(ctx, "short.example"); ok {
		t.Error("an expired policy is still there")
	}
}
