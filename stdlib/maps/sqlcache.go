package maps

import (
	"container/list"
	"sync"
	"time"
)

// resultCache keeps the answers of a SQL table for a while, found and
// not found alike, so that a busy server does not ask the database for
// every recipient of every message: the same few addresses come back
// again and again, and most keys a virtual table is asked (user+ext@,
// @domain) are not in it. Failures are never kept. It holds at most max
// keys, dropping the least recently used.
type resultCache struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu  sync.Mutex
	m   map[string]*list.Element
	lru list.List // of *cacheEntry, most recently used first
}

type cacheEntry struct {
	key     string
	value   string
	ok      bool
	expires time.Time
}

// newResultCache returns a cache, or nil (no caching) when ttl is 0.
func newResultCache(ttl time.Duration, max int) *resultCache {
	if ttl <= 0 || max <= 0 {
		return nil
	}
	return &resultCache{ttl: ttl, max: max, now: time.Now, m: map[string]*list.Element{}}
}

// get returns the answer kept for key; hit is false when there is none
// or it expired.
func (c *resultCache) get(key string) (value string, ok, hit bool) {
	if c == nil {
		return "", false, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, found := c.m[key]
	if !found {
		return "", false, false
	}
	e := el.Value.(*cacheEntry)
	if !c.now().Before(e.expires) {
		c.lru.Remove(el)
		delete(c.m, key)
		return "", false, false
	}
	c.lru.MoveToFront(el)
	return e.value, e.ok, true
}

// put keeps an answer for the cache's TTL.
func (c *resultCache) put(key, value string, ok bool) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	exp := c.now().Add(c.ttl)
	if el, found := c.m[key]; found {
		e := el.Value.(*cacheEntry)
		e.value, e.ok, e.expires = value, ok, exp
		c.lru.MoveToFront(el)
		return
	}
	for c.lru.Len() >= c.max {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.m, old.Value.(*cacheEntry).key)
	}
	c.m[key] = c.lru.PushFront(&cacheEntry{key: key, value: value, ok: ok, expires: exp})
}

// len returns the number of keys kept, expired ones included.
func (c *resultCache) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
