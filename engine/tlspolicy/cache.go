package tlspolicy

import (
	"context"
	"strings"
	"sync"
	"time"
)

// CacheEntry is one cached MTA-STS policy: what was fetched, under which
// TXT id, and when. The policy's MaxAge counts from Fetched.
type CacheEntry struct {
	Policy  Policy
	ID      string
	Fetched time.Time
}

// Expires returns when the entry stops being usable.
func (e CacheEntry) Expires() time.Time {
	return e.Fetched.Add(e.Policy.MaxAge)
}

// Cache stores MTA-STS policies by domain (lower-case, no trailing dot).
// RFC 8461 relies on the cache for its protection: an attacker who blocks
// the TXT lookup or the HTTPS fetch only defeats a sender that forgot, so a
// production cache should survive restarts (the queue's store backs it).
// Errors are reported and otherwise treated as a miss or a lost write.
type Cache interface {
	Get(ctx context.Context, domain string) (e CacheEntry, ok bool, err error)
	Put(ctx context.Context, domain string, e CacheEntry) error
}

var _ Cache = (*MemoryCache)(nil)

// defaultMaxEntries bounds a MemoryCache whose MaxEntries is zero.
const defaultMaxEntries = 10000

// MemoryCache is a Cache in process memory, for tests and for setups that
// accept losing policies on restart. It holds at most MaxEntries (0 means
// 10000) domains; when full, expired entries go first, then arbitrary ones.
type MemoryCache struct {
	MaxEntries int
	// Now is the clock for eviction; nil means time.Now.
	Now func() time.Time

	mu sync.Mutex
	m  map[string]CacheEntry
}

// Get implements Cache. Expired entries are returned too: the caller decides.
func (c *MemoryCache) Get(_ context.Context, domain string) (CacheEntry, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[cacheKey(domain)]
	return e, ok, nil
}

// Put implements Cache.
func (c *MemoryCache) Put(_ context.Context, domain string, e CacheEntry) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]CacheEntry)
	}
	key := cacheKey(domain)
	if _, ok := c.m[key]; !ok && len(c.m) >= c.max() {
		c.evict()
	}
	c.m[key] = e
	return nil
}

func (c *MemoryCache) max() int {
	if c.MaxEntries > 0 {
		return c.MaxEntries
	}
	return defaultMaxEntries
}

// evict makes room for one entry. The caller holds c.mu.
func (c *MemoryCache) evict() {
	now := time.Now()
	if c.Now != nil {
		now = c.Now()
	}
	for k, e := range c.m {
		if !now.Before(e.Expires()) {
			delete(c.m, k)
		}
	}
	for k := range c.m {
		if len(c.m) < c.max() {
			break
		}
		delete(c.m, k)
	}
}

func cacheKey(domain string) string {
	return strings.ToLower(strings.TrimSuffix(domain, "."))
}
