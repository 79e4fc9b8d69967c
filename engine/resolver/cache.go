package resolver

import (
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

// Cache keeps answers for their TTL, so that the policy's checks (SPF,
// DKIM, DMARC, DNSBLs) and delivery ask the network once for what they
// all need. NXDOMAIN and NODATA are kept as RFC 2308 says, for the
// smaller of the SOA's TTL and its MINIMUM; without an SOA they are not
// kept. Failures are never kept: the next lookup asks again. Answers are
// shared and must not be modified.
type Cache struct {
	// Max is the number of answers kept (0: 10000); when full, expired
	// ones go first, then the ones that expire soonest among a sample.
	Max int
	// MaxTTL caps how long an answer is kept (0: one day), whatever its
	// records say.
	MaxTTL time.Duration
	// Now is the clock (nil: time.Now); tests move it.
	Now func() time.Time

	mu sync.Mutex
	m  map[cacheKey]cacheEntry

	hits, misses atomic.Int64
}

type cacheKey struct {
	name  string // lower-case, fully qualified
	qtype uint16
}

type cacheEntry struct {
	msg     *mdns.Msg // nil for NXDOMAIN
	expires time.Time
}

// NewCache returns an empty cache with the defaults.
func NewCache() *Cache { return &Cache{} }

// Stats returns how many lookups the cache answered and how many it did not.
func (c *Cache) Stats() (hits, misses int64) { return c.hits.Load(), c.misses.Load() }

// Len returns the number of answers held, expired ones included.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

func (c *Cache) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// get returns a kept answer: msg nil and nx true for NXDOMAIN.
func (c *Cache) get(name string, qtype uint16) (msg *mdns.Msg, nx, ok bool) {
	c.mu.Lock()
	e, found := c.m[cacheKey{name, qtype}]
	c.mu.Unlock()
	if !found || !c.now().Before(e.expires) {
		c.misses.Add(1)
		return nil, false, false
	}
	c.hits.Add(1)
	return e.msg, e.msg == nil, true
}

// put keeps in (nil: NXDOMAIN with soa) for the TTL it carries.
func (c *Cache) put(name string, qtype uint16, in *mdns.Msg, ns []mdns.RR) {
	ttl, ok := answerTTL(in, ns)
	if !ok || ttl == 0 {
		return
	}
	d := time.Duration(ttl) * time.Second
	maxTTL := c.MaxTTL
	if maxTTL <= 0 {
		maxTTL = 24 * time.Hour
	}
	d = min(d, maxTTL)
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[cacheKey]cacheEntry{}
	}
	limit := c.Max
	if limit <= 0 {
		limit = 10000
	}
	if len(c.m) >= limit {
		c.evict(now, limit)
	}
	c.m[cacheKey{name, qtype}] = cacheEntry{msg: in, expires: now.Add(d)}
}

// evict drops expired answers, and when that is not enough, the ones
// expiring soonest in a sample of the map (whose iteration order is
// random), so that a flood of distinct names costs a bounded amount of
// work per insert.
func (c *Cache) evict(now time.Time, limit int) {
	for k, e := range c.m {
		if !now.Before(e.expires) {
			delete(c.m, k)
		}
	}
	for len(c.m) >= limit {
		var victim cacheKey
		var soonest time.Time
		n := 0
		for k, e := range c.m {
			if n == 0 || e.expires.Before(soonest) {
				victim, soonest = k, e.expires
			}
			if n++; n == 16 {
				break
			}
		}
		delete(c.m, victim)
	}
}

// answerTTL is how long an answer may be kept: the smallest TTL of its
// answer records, or for a negative answer (in nil, or no answer
// records) the negative TTL of the SOA in ns.
func answerTTL(in *mdns.Msg, ns []mdns.RR) (uint32, bool) {
	if in != nil && len(in.Answer) > 0 {
		ttl := in.Answer[0].Header().Ttl
		for _, rr := range in.Answer[1:] {
			ttl = min(ttl, rr.Header().Ttl)
		}
		return ttl, true
	}
	for _, rr := range ns {
		if soa, ok := rr.(*mdns.SOA); ok {
			return min(soa.Hdr.Ttl, soa.Minttl), true
		}
	}
	return 0, false
}
