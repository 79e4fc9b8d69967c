package engine

import (
	"context"
	"encoding/json"
	"time"

	"github.com/larkpost/larkpost/engine/tlspolicy"
	"github.com/larkpost/larkpost/queue"
)

// stsCache keeps MTA-STS policies in the queue's store, so that a restart
// neither refetches every policy nor, worse, forgets an enforce policy
// an attacker could then strip (RFC 8461 section 10.3: the cache is
// what protects the first delivery after a downgrade).
type stsCache struct{ q *queue.Queue }

var _ tlspolicy.Cache = stsCache{}

func (c stsCache) Get(_ context.Context, domain string) (tlspolicy.CacheEntry, bool, error) {
	b, ok, err := c.q.StateGet("mta-sts/" + domain)
	if err != nil || !ok {
		return tlspolicy.CacheEntry{}, false, err
	}
	var e tlspolicy.CacheEntry
	if err := json.Unmarshal(b, &e); err != nil {
		return tlspolicy.CacheEntry{}, false, nil // unreadable: as if absent
	}
	return e, true, nil
}

func (c stsCache) Put(_ context.Context, domain string, e tlspolicy.CacheEntry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	ttl := time.Until(e.Expires())
	if ttl <= 0 {
		return nil
	}
	return c.q.StatePut("mta-sts/"+domain, b, ttl)
}
