// Package state is where greylist triplets, rate limits and "already
// replied" (vacation) records live: in the queue's Badger database on a
// single node, or in Redis when several MX nodes must share them.
//
// # Atomicity
//
// Every Store method is one atomic read-modify-write: two nodes taking
// from one bucket never both get its last token. The Badger backend runs
// each in one Badger transaction (queue.StateUpdate); the Redis backend
// runs each as one Lua script, which Redis executes without interleaving
// other commands.
//
// # Clocks
//
// The Badger backend judges time by the caller's now: it is one process,
// so there is one clock. The Redis backend ignores now and reads the Redis
// server's clock (TIME) inside each script, so that nodes whose clocks
// disagree still agree on when a bucket refills or a greylist delay ends.
//
// # Algorithms
//
// Take is GCRA, the token bucket kept as one number: the time at which the
// bucket would be full again (its "theoretical arrival time"). An absent
// key is a full bucket, and the key may expire once the bucket is full.
//
// Count keeps the window in 60 slots of window/60 each: an addition counts
// from when it is made until its slot is 60 slots old, that is for at
// least window - window/60 and at most window. Counts for one key with
// different windows are separate counters.
//
// Greylist is postgrey's; see Store.Greylist.
package state

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/larkpost/larkpost/queue"
)

// Store is where greylist, rate-limit and once-per-period records live.
// Every method is atomic across nodes sharing the store (two nodes taking
// from one bucket never both get the last token). Keys are any bytes.
type Store interface {
	// Take takes cost tokens from the token bucket key, which refills at
	// r up to burst tokens and starts full. cost 0 only looks. A cost
	// above burst is an error: it could never be taken.
	Take(ctx context.Context, key string, r Rate, burst, cost int, now time.Time) (TakeResult, error)
	// Count adds add (0 or more) to key's count in a sliding window and
	// returns the count in the window, this addition included.
	Count(ctx context.Context, key string, window time.Duration, add int, now time.Time) (int64, error)
	// Greylist records a delivery attempt of triplet from the network
	// client and says whether it passes, with postgrey's rules: the
	// first attempt of a triplet is recorded and refused; a retry after
	// p.Delay and no later than p.RetryWindow after the first attempt
	// passes; a triplet that passed passes at once for p.Expire after its
	// last pass; every pass counts for client, and a client with
	// p.AutoWhitelist passes (0: never) passes everything, without
	// triplet checks, until it has not passed for p.Expire.
	Greylist(ctx context.Context, triplet, client string, p GreyParams, now time.Time) (GreyResult, error)
	// Once reports whether key is new within ttl: true the first time,
	// false until ttl has passed (a vacation reply per sender and period).
	Once(ctx context.Context, key string, ttl time.Duration) (first bool, err error)
	// Close releases the store's connections; a Badger store leaves the
	// queue open.
	Close() error
}

// TakeResult is what Take decided.
type TakeResult struct {
	Allowed bool
	// Remaining is the whole tokens left after this take (or, when
	// refused, available now).
	Remaining int
	// RetryAfter is how long until cost tokens are there, when refused.
	RetryAfter time.Duration
}

// GreyParams are greylisting's settings. A zero Delay, RetryWindow or
// Expire is the default (DefaultGreyParams); AutoWhitelist is taken as it
// is, 0 turning auto-whitelisting off.
type GreyParams struct {
	Delay         time.Duration // postgrey --delay: 5m
	RetryWindow   time.Duration // postgrey --retry-window: 2 days
	Expire        time.Duration // postgrey --max-age: 35 days
	AutoWhitelist int           // postgrey --auto-whitelist-clients: 5
}

// DefaultGreyParams are postgrey's defaults.
var DefaultGreyParams = GreyParams{Delay: 5 * time.Minute, RetryWindow: 48 * time.Hour, Expire: 35 * 24 * time.Hour, AutoWhitelist: 5}

// GreyResult is what Greylist decided.
type GreyResult struct {
	Pass bool
	// New is true when this attempt (re)started the triplet's record.
	New bool
	// Wait is how long before a retry passes, when refused.
	Wait time.Duration
	// Whitelisted is true when the client passed on its auto-whitelist.
	Whitelisted bool
	// FirstSeen is the triplet's first attempt (zero for a whitelisted
	// client, whose triplets are not looked at).
	FirstSeen time.Time
}

// ErrUnavailable is wrapped by every error of a store that could not be
// asked (Redis down, slow or refusing): the caller fails open or closed.
var ErrUnavailable = errors.New("state store unavailable")

func (p GreyParams) withDefaults() (GreyParams, error) {
	d := DefaultGreyParams
	if p.Delay == 0 {
		p.Delay = d.Delay
	}
	if p.RetryWindow == 0 {
		p.RetryWindow = d.RetryWindow
	}
	if p.Expire == 0 {
		p.Expire = d.Expire
	}
	switch {
	case p.Delay < 0, p.RetryWindow < 0, p.Expire < 0, p.AutoWhitelist < 0:
		return p, fmt.Errorf("greylist: negative setting in %+v", p)
	case p.RetryWindow <= p.Delay:
		return p, fmt.Errorf("greylist: retry window %s not longer than the delay %s", p.RetryWindow, p.Delay)
	}
	return p, nil
}

// Rate is N tokens per Per.
type Rate struct {
	N   int
	Per time.Duration
}

func (r Rate) String() string { return strconv.Itoa(r.N) + "/" + FormatDuration(r.Per) }

// interval is the time one token takes to refill, in ns, rounded up:
// rounding down would let a bucket refill faster than its rate.
func (r Rate) interval(tokens int) int64 {
	return mulDivCeil(uint64(tokens), uint64(r.Per), uint64(r.N))
}

func (r Rate) check(burst, cost int) error {
	switch {
	case r.N < 1 || r.Per <= 0:
		return fmt.Errorf("rate %d per %s: want at least 1 per a positive period", r.N, r.Per)
	case burst < 1:
		return fmt.Errorf("burst %d: want at least 1", burst)
	case cost < 0:
		return fmt.Errorf("cost %d: want 0 or more", cost)
	case cost > burst:
		return fmt.Errorf("cost %d exceeds burst %d: it could never be taken", cost, burst)
	}
	return nil
}

// ParseRate reads "N/period": "100/h", "10/min", "5/s", "1000/d",
// "20/10m" (a period without a number is one of that unit; units as in
// ParseDuration).
func ParseRate(s string) (Rate, error) {
	ns, per, ok := strings.Cut(s, "/")
	n, err := strconv.Atoi(strings.TrimSpace(ns))
	if !ok || err != nil || n < 1 {
		return Rate{}, fmt.Errorf("rate %q: want N/period with N at least 1, e.g. \"100/h\", \"20/10m\"", s)
	}
	per = strings.TrimSpace(per)
	if per != "" && (per[0] < '0' || per[0] > '9') {
		per = "1" + per
	}
	d, err := ParseDuration(per)
	if err != nil || d <= 0 {
		return Rate{}, fmt.Errorf("rate %q: want N/period with a period such as s, min, h, d or 10m", s)
	}
	return Rate{N: n, Per: d}, nil
}

var units = map[string]time.Duration{
	"ms": time.Millisecond,
	"s":  time.Second, "sec": time.Second,
	"m": time.Minute, "min": time.Minute,
	"h": time.Hour, "hour": time.Hour,
	"d": 24 * time.Hour, "day": 24 * time.Hour,
	"w": 7 * 24 * time.Hour, "week": 7 * 24 * time.Hour,
}

// ParseDuration reads a duration as scripts write it: whole numbers with
// units ms, s, m (or min), h, d (days) and w (weeks), as in "5m", "35d",
// "1h30m". time.ParseDuration has no days, which greylisting lives in.
func ParseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("empty duration")
	}
	var total time.Duration
	for rest := s; rest != ""; {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		j := i
		for j < len(rest) && (rest[j] < '0' || rest[j] > '9') {
			j++
		}
		n, err := strconv.ParseInt(rest[:i], 10, 64)
		unit, ok := units[rest[i:j]]
		if err != nil || !ok {
			return 0, fmt.Errorf("bad duration %q: want e.g. \"90s\", \"5m\", \"2h\", \"35d\"", s)
		}
		if n > int64((1<<63-1)/unit) || total+time.Duration(n)*unit < total {
			return 0, fmt.Errorf("duration %q out of range", s)
		}
		total += time.Duration(n) * unit
		rest = rest[j:]
	}
	return total, nil
}

// FormatDuration writes d in ParseDuration's units, largest first.
func FormatDuration(d time.Duration) string {
	if d <= 0 || d%time.Millisecond != 0 {
		return d.String()
	}
	var b strings.Builder
	for _, u := range []struct {
		name string
		d    time.Duration
	}{{"d", 24 * time.Hour}, {"h", time.Hour}, {"m", time.Minute}, {"s", time.Second}, {"ms", time.Millisecond}} {
		if n := d / u.d; n > 0 {
			b.WriteString(strconv.FormatInt(int64(n), 10) + u.name)
			d -= n * u.d
		}
	}
	return b.String()
}

// mulDivCeil is ceil(a*b/c) without overflowing, saturated at MaxInt64.
func mulDivCeil(a, b, c uint64) int64 {
	hi, lo := bits.Mul64(a, b)
	if hi >= c {
		return 1<<63 - 1
	}
	q, r := bits.Div64(hi, lo, c)
	if r != 0 {
		q++
	}
	return int64(min(q, 1<<63-1))
}

// mulDivFloor is floor(a*b/c), saturated at MaxInt64.
func mulDivFloor(a, b, c uint64) int64 {
	hi, lo := bits.Mul64(a, b)
	if hi >= c {
		return 1<<63 - 1
	}
	q, _ := bits.Div64(hi, lo, c)
	return int64(min(q, 1<<63-1))
}

// countSlots is how many slots Count divides a window into.
const countSlots = 60

func checkWindow(window time.Duration, add int) error {
	if window < time.Millisecond {
		return fmt.Errorf("window %s: want at least 1ms", window)
	}
	if add < 0 {
		return fmt.Errorf("add %d: want 0 or more", add)
	}
	return nil
}

// Options are Open's settings.
type Options struct {
	Redis RedisOptions
}

// Open opens the store spec names: "" or "badger" is the queue's Badger
// database (q), "redis://host:port/db" or "rediss://..." (TLS) a Redis
// server shared by the nodes.
func Open(spec string, q *queue.Queue, o Options) (Store, error) {
	switch {
	case spec == "" || spec == "badger":
		if q == nil {
			return nil, errors.New("state store badger: no queue to keep it in")
		}
		return NewBadger(q), nil
	case strings.HasPrefix(spec, "redis://"), strings.HasPrefix(spec, "rediss://"):
		return NewRedis(spec, o.Redis)
	}
	return nil, fmt.Errorf("state store %q: want \"badger\", \"redis://host:port/db\" or \"rediss://host:port/db\"", redact(spec))
}

// redact hides a password in a mistyped URL before it reaches a log.
func redact(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		return u.Redacted()
	}
	return s
}
