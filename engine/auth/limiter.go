package auth

import (
	"container/list"
	"net/netip"
	"sync"
	"time"
)

// LimiterConfig sets a Limiter's thresholds. Zero fields take the defaults.
type LimiterConfig struct {
	// MaxFailures failed logins within Window block the client.
	// Default: 5.
	MaxFailures int
	// Window is how long a failure counts. Default: 10 minutes.
	Window time.Duration
	// Backoff is the first block. Each further block doubles it, up to
	// MaxBackoff. Defaults: 1 minute and 1 hour.
	Backoff    time.Duration
	MaxBackoff time.Duration
	// MaxEntries bounds the clients remembered; past it the one whose
	// last failure is oldest is forgotten. Default: 100,000 (about
	// 24 MB).
	MaxEntries int
	// Now is the clock. Default: time.Now.
	Now func() time.Time
}

// Limiter slows down password guessing per client network: an IPv4 address,
// or an IPv6 /64, since one host usually holds a whole /64 and would
// otherwise get 2^64 fresh starts.
//
// A block ends only when its time is up: a success during it is not
// possible (Allow refuses the attempt before any password is checked) and
// Succeed does not lift it. After a block, the next one from the same
// network is twice as long, until the network has been quiet for
// MaxBackoff. A success outside a block clears the failures counted so
// far, so a user who mistypes now and then is never blocked; the price is
// that someone holding one valid account can interleave logins with
// guesses, which a per-IP limiter cannot tell from a clumsy user.
type Limiter struct {
	cfg LimiterConfig

	mu  sync.Mutex
	m   map[netip.Prefix]*list.Element
	lru list.List // of *limitEntry, most recent failure in front
}

type limitEntry struct {
	key      netip.Prefix
	failures int       // within the window starting at first
	first    time.Time // first failure of the window
	until    time.Time // blocked before this
	level    uint      // blocks so far, for the doubling
	last     time.Time // last failure
}

// NewLimiter returns a Limiter with cfg's zero fields set to the defaults.
func NewLimiter(cfg LimiterConfig) *Limiter {
	if cfg.MaxFailures <= 0 {
		cfg.MaxFailures = 5
	}
	if cfg.Window <= 0 {
		cfg.Window = 10 * time.Minute
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = time.Minute
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = time.Hour
	}
	if cfg.MaxBackoff < cfg.Backoff {
		cfg.MaxBackoff = cfg.Backoff
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 100_000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Limiter{cfg: cfg, m: map[netip.Prefix]*list.Element{}}
}

// limitKey is the network a client is counted in. The zero Addr (client
// unknown) is one network of its own.
func limitKey(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	switch {
	case ip.Is4():
		return netip.PrefixFrom(ip, 32)
	case ip.Is6():
		p, _ := ip.WithZone("").Prefix(64)
		return p
	}
	return netip.Prefix{}
}

// Allow reports whether ip may try to authenticate, and if not, how long
// until it may.
func (l *Limiter) Allow(ip netip.Addr) (ok bool, retryAfter time.Duration) {
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	el := l.m[limitKey(ip)]
	if el == nil {
		return true, 0
	}
	e := el.Value.(*limitEntry)
	if now.Before(e.until) {
		return false, e.until.Sub(now)
	}
	return true, 0
}

// Fail counts a failed login from ip and starts a block when it is the
// MaxFailures-th within Window.
func (l *Limiter) Fail(ip netip.Addr) {
	now := l.cfg.Now()
	key := limitKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now, 2)
	var e *limitEntry
	if el := l.m[key]; el != nil {
		e = el.Value.(*limitEntry)
		l.lru.MoveToFront(el)
	} else {
		for len(l.m) >= l.cfg.MaxEntries {
			l.remove(l.lru.Back())
		}
		e = &limitEntry{key: key}
		l.m[key] = l.lru.PushFront(e)
	}
	if now.Before(e.until) {
		// A login that was let in before the block began; the block
		// already answers for it.
		return
	}
	if e.level > 0 && now.Sub(e.until) >= l.cfg.MaxBackoff {
		e.level = 0
	}
	if e.failures == 0 || now.Sub(e.first) >= l.cfg.Window {
		e.failures, e.first = 0, now
	}
	e.failures++
	e.last = now
	if e.failures < l.cfg.MaxFailures {
		return
	}
	d := l.cfg.Backoff
	for i := uint(0); i < e.level && d < l.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, l.cfg.MaxBackoff)
	e.until = now.Add(d)
	e.level++
	e.failures = 0
}

// Succeed records a successful login from ip: the failures counted so far
// are forgotten, a block and the back-off level are not.
func (l *Limiter) Succeed(ip netip.Addr) {
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	el := l.m[limitKey(ip)]
	if el == nil {
		return
	}
	e := el.Value.(*limitEntry)
	if now.Before(e.until) {
		return
	}
	e.failures = 0
	if l.idle(e, now) {
		l.remove(el)
	}
}

// Len returns the number of client networks remembered.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// idle reports whether e no longer affects anything: no block, no
// failures in the window, no back-off level left.
func (l *Limiter) idle(e *limitEntry, now time.Time) bool {
	return !now.Before(e.until) &&
		(e.failures == 0 || now.Sub(e.first) >= l.cfg.Window) &&
		(e.level == 0 || now.Sub(e.until) >= l.cfg.MaxBackoff)
}

// sweep forgets up to n idle entries from the old end, so memory follows
// the clients actually failing rather than MaxEntries.
func (l *Limiter) sweep(now time.Time, n int) {
	for ; n > 0; n-- {
		el := l.lru.Back()
		if el == nil || !l.idle(el.Value.(*limitEntry), now) {
			return
		}
		l.remove(el)
	}
}

func (l *Limiter) remove(el *list.Element) {
	delete(l.m, el.Value.(*limitEntry).key)
	l.lru.Remove(el)
}
