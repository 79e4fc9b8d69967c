package state

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisOptions are the Redis backend's settings. Zero values are the
// defaults; a setting given in the URL's query (dial_timeout=...,
// pool_size=...) counts as set.
type RedisOptions struct {
	// Prefix begins every key: "larkpost:", so that other users of the
	// server keep their keys apart while the nodes share theirs.
	Prefix string
	// Timeout bounds every call, from waiting for a connection to the
	// script's reply: 1s. A Redis that is down or hangs costs a caller
	// this much at most, then ErrUnavailable.
	Timeout time.Duration
	// DialTimeout, ReadTimeout and WriteTimeout bound one connection's
	// dial, reads and writes: Timeout.
	DialTimeout, ReadTimeout, WriteTimeout time.Duration
	// PoolSize is the most connections open at once: 8. Each call holds
	// one for a single round trip.
	PoolSize int
}

// The Redis backend's keys, after the prefix. Each operation is one Lua
// script, which Redis runs without interleaving other commands, and
// every key has a TTL.
//
//	b:<key>                 bucket: string, full-at time (unix µs, server clock)
//	w:<slot µs>:<key>       window: hash, slot number -> count
//	g:<triplet>             greylist triplet: hash f (first attempt, unix µs), p (1 once passed)
//	c:<client>              greylist client: string, passes
//	o:<key>                 once: string "1"
//
// The greylist script touches two keys: with Redis Cluster they would
// need a common hash tag, which the keys do not have; use one server (or
// Sentinel).
type redisStore struct {
	c       *redis.Client
	prefix  string
	timeout time.Duration
	addr    string
}

var _ Store = (*redisStore)(nil)

// quietRedis drops go-redis's own log lines (failed dials, to stderr):
// each failed call comes back as ErrUnavailable and its module logs it
// in the server's log.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

var quietOnce sync.Once

// NewRedis returns a store on the Redis server at url
// ("redis://[user:password@]host:port/db", "rediss://..." for TLS). It
// does not connect: a Redis that is down at start fails the calls, not
// the server.
func NewRedis(url string, o RedisOptions) (Store, error) {
	quietOnce.Do(func() { redis.SetLogger(quietRedis{}) })
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("state store %s: %w", redact(url), err)
	}
	if o.Prefix == "" {
		o.Prefix = "larkpost:"
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	for _, d := range []struct{ url, o *time.Duration }{{&opt.DialTimeout, &o.DialTimeout}, {&opt.ReadTimeout, &o.ReadTimeout}, {&opt.WriteTimeout, &o.WriteTimeout}} {
		switch {
		case *d.o > 0:
			*d.url = *d.o
		case *d.url == 0:
			*d.url = o.Timeout
		}
	}
	switch {
	case o.PoolSize > 0:
		opt.PoolSize = o.PoolSize
	case opt.PoolSize == 0:
		opt.PoolSize = 8
	}
	opt.MaxActiveConns = opt.PoolSize
	if opt.PoolTimeout == 0 {
		opt.PoolTimeout = o.Timeout
	}
	// A script whose reply was lost may have run: retrying it could take
	// a token twice. The caller's timeout, not a retry, handles a failure.
	opt.MaxRetries = -1
	// One dial per call: go-redis would otherwise dial 5 times with
	// back-off, which only the timeout would cut short.
	opt.DialerRetries = 1
	opt.ContextTimeoutEnabled = true
	opt.DisableIdentity = true
	return &redisStore{c: redis.NewClient(opt), prefix: o.Prefix, timeout: o.Timeout, addr: opt.Addr}, nil
}

// prelude reads the server's clock into now (unix µs). Redis before 5
// refuses writes after TIME unless the script replicates its effects
// rather than itself; later versions do that anyway.
const prelude = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function int(x) return string.format('%.0f', x) end
local function ms(us) return int(math.max(1, math.ceil(us / 1000))) end
`

// takeScript is GCRA (see the package documentation). ARGV: µs per
// token (may be fractional), burst, cost. Returns allowed, remaining,
// retry after (µs).
var takeScript = redis.NewScript(prelude + `
local interval, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '') or now
if tat < now then tat = now end
local span = burst * interval
local nxt = tat + cost * interval
local allow_at = nxt - span
if now < allow_at then
  return {0, math.floor((now - tat + span) / interval), math.ceil(allow_at - now)}
end
if cost > 0 then
  nxt = math.ceil(nxt)
  redis.call('SET', KEYS[1], int(nxt), 'PX', ms(nxt - now))
end
return {1, math.floor((now - allow_at) / interval), 0}
`)

// countScript keeps a sliding window in slots. ARGV: slot length (µs),
// slots, add. Returns the count.
var countScript = redis.NewScript(prelude + `
local slot, slots, add = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cur = math.floor(now / slot)
if add > 0 then redis.call('HINCRBY', KEYS[1], int(cur), add) end
local all = redis.call('HGETALL', KEYS[1])
local total, old = 0, {}
for i = 1, #all, 2 do
  if tonumber(all[i]) <= cur - slots then old[#old + 1] = all[i] else total = total + tonumber(all[i + 1]) end
end
if #old > 0 then redis.call('HDEL', KEYS[1], unpack(old)) end
if add > 0 then redis.call('PEXPIRE', KEYS[1], ms(slot * (slots + 1))) end
return total
`)

// greylistScript is postgrey's rule (see Store.Greylist). KEYS: triplet,
// client. ARGV: delay, retry window, expire (µs), auto-whitelist. Returns
// pass, new, wait (µs), whitelisted, first seen (unix µs).
var greylistScript = redis.NewScript(prelude + `
local delay, retry, expire, awl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if awl > 0 and (tonumber(redis.call('GET', KEYS[2]) or '') or 0) >= awl then
  redis.call('PEXPIRE', KEYS[2], ms(expire))
  return {1, 0, 0, 1, 0}
end
local r = redis.call('HMGET', KEYS[1], 'f', 'p')
local first = r[1] and tonumber(r[1])
local pass = false
if first then
  local age = now - first
  if r[2] == '1' then
    pass = true
  elseif age >= 0 and age < delay then
    return {0, 0, math.ceil(delay - age), 0, first}
  elseif age >= 0 and age <= retry then
    pass = true
  end
end
if pass then
  redis.call('HSET', KEYS[1], 'p', '1')
  redis.call('PEXPIRE', KEYS[1], ms(expire))
  if awl > 0 then
    redis.call('INCR', KEYS[2])
    redis.call('PEXPIRE', KEYS[2], ms(expire))
  end
  return {1, 0, 0, 0, first}
end
redis.call('HSET', KEYS[1], 'f', int(now), 'p', '0')
redis.call('PEXPIRE', KEYS[1], ms(retry))
return {0, 1, delay, 0, now}
`)

// onceScript is SET NX, a script only so that every operation goes
// through one path. ARGV: ttl (ms).
var onceScript = redis.NewScript(`
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 1 end
return 0
`)

// run runs one script within the timeout; every failure is
// ErrUnavailable.
func (s *redisStore) run(ctx context.Context, sc *redis.Script, keys []string, args ...any) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	v, err := sc.Run(ctx, s.c, keys, args...).Result()
	if err != nil {
		return nil, fmt.Errorf("%w: redis %s: %w", ErrUnavailable, s.addr, err)
	}
	return v, nil
}

// ints reads a script's array of n integers.
func (s *redisStore) ints(v any, n int) ([]int64, error) {
	a, ok := v.([]any)
	if !ok || len(a) != n {
		return nil, fmt.Errorf("%w: redis %s: unexpected reply %v", ErrUnavailable, s.addr, v)
	}
	out := make([]int64, n)
	for i, x := range a {
		if out[i], ok = x.(int64); !ok {
			return nil, fmt.Errorf("%w: redis %s: unexpected reply %v", ErrUnavailable, s.addr, v)
		}
	}
	return out, nil
}

func micros(d time.Duration) string { return strconv.FormatInt(d.Microseconds(), 10) }

// Take ignores now: the bucket runs on the Redis server's clock.
func (s *redisStore) Take(ctx context.Context, key string, r Rate, burst, cost int, _ time.Time) (TakeResult, error) {
	if err := r.check(burst, cost); err != nil {
		return TakeResult{}, err
	}
	interval := strconv.FormatFloat(float64(r.Per)/float64(time.Microsecond)/float64(r.N), 'f', -1, 64)
	v, err := s.run(ctx, takeScript, []string{s.prefix + "b:" + key}, interval, burst, cost)
	if err != nil {
		return TakeResult{}, fmt.Errorf("take %q: %w", key, err)
	}
	a, err := s.ints(v, 3)
	if err != nil {
		return TakeResult{}, fmt.Errorf("take %q: %w", key, err)
	}
	return TakeResult{Allowed: a[0] == 1, Remaining: int(min(max(a[1], 0), int64(burst))), RetryAfter: time.Duration(a[2]) * time.Microsecond}, nil
}

// Count ignores now: the window runs on the Redis server's clock.
func (s *redisStore) Count(ctx context.Context, key string, window time.Duration, add int, _ time.Time) (int64, error) {
	if err := checkWindow(window, add); err != nil {
		return 0, err
	}
	slot := max(window/countSlots, time.Microsecond)
	v, err := s.run(ctx, countScript, []string{s.prefix + "w:" + micros(slot) + ":" + key}, micros(slot), countSlots, add)
	if err != nil {
		return 0, fmt.Errorf("count %q: %w", key, err)
	}
	n, ok := v.(int64)
	if !ok {
		return 0, fmt.Errorf("count %q: %w: redis %s: unexpected reply %v", key, ErrUnavailable, s.addr, v)
	}
	return n, nil
}

// Greylist ignores now: delays run on the Redis server's clock.
func (s *redisStore) Greylist(ctx context.Context, triplet, client string, p GreyParams, _ time.Time) (GreyResult, error) {
	p, err := p.withDefaults()
	if err != nil {
		return GreyResult{}, err
	}
	v, err := s.run(ctx, greylistScript, []string{s.prefix + "g:" + triplet, s.prefix + "c:" + client},
		micros(p.Delay), micros(p.RetryWindow), micros(p.Expire), p.AutoWhitelist)
	if err != nil {
		return GreyResult{}, fmt.Errorf("greylist %q: %w", triplet, err)
	}
	a, err := s.ints(v, 5)
	if err != nil {
		return GreyResult{}, fmt.Errorf("greylist %q: %w", triplet, err)
	}
	res := GreyResult{Pass: a[0] == 1, New: a[1] == 1, Wait: time.Duration(a[2]) * time.Microsecond, Whitelisted: a[3] == 1}
	if a[4] != 0 {
		res.FirstSeen = time.UnixMicro(a[4])
	}
	return res, nil
}

func (s *redisStore) Once(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	if ttl <= 0 {
		return false, errors.New("once: ttl must be positive")
	}
	ms := strconv.FormatInt(int64((ttl+time.Millisecond-1)/time.Millisecond), 10)
	v, err := s.run(ctx, onceScript, []string{s.prefix + "o:" + key}, ms)
	if err != nil {
		return false, fmt.Errorf("once %q: %w", key, err)
	}
	return v == int64(1), nil
}

func (s *redisStore) Close() error { return s.c.Close() }
