package auth

import (
	"net/netip"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.1")
	a2 := netip.MustParseAddr("192.0.2.2")
	mapped := netip.MustParseAddr("::ffff:192.0.2.1")
	v6 := netip.MustParseAddr("2001:db8:1:2::1")
	v6same := netip.MustParseAddr("2001:db8:1:2:ffff::9")
	v6other := netip.MustParseAddr("2001:db8:1:3::1")

	// step is one call at a time offset from the previous step. For
	// "allow", ok and retry are what Allow must return.
	type step struct {
		after time.Duration
		op    string // fail, succeed, allow
		ip    netip.Addr
		ok    bool
		retry time.Duration
	}
	fails := func(ip netip.Addr, n int) []step {
		var s []step
		for range n {
			s = append(s, step{op: "fail", ip: ip})
		}
		return s
	}
	cat := func(parts ...[]step) []step {
		var s []step
		for _, p := range parts {
			s = append(s, p...)
		}
		return s
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"four failures do not block", cat(fails(a, 4), []step{{op: "allow", ip: a, ok: true}})},
		{"five failures block for a minute", cat(fails(a, 5), []step{
			{op: "allow", ip: a, ok: false, retry: time.Minute},
			{after: 59 * time.Second, op: "allow", ip: a, ok: false, retry: time.Second},
			{after: time.Second, op: "allow", ip: a, ok: true},
		})},
		{"other addresses are not blocked", cat(fails(a, 5), []step{{op: "allow", ip: a2, ok: true}})},
		{"IPv4-mapped IPv6 is the IPv4 address", cat(fails(mapped, 5), []step{{op: "allow", ip: a, ok: false, retry: time.Minute}})},
		{"IPv6 counts per /64", cat(fails(v6, 3), fails(v6same, 2), []step{
			{op: "allow", ip: v6, ok: false, retry: time.Minute},
			{op: "allow", ip: v6other, ok: true},
		})},
		{"failures outside the window do not count", cat(fails(a, 4), []step{
			{after: 10 * time.Minute, op: "fail", ip: a},
			{op: "allow", ip: a, ok: true},
		})},
		{"success clears the failures", cat(fails(a, 4), []step{{op: "succeed", ip: a}}, fails(a, 4), []step{{op: "allow", ip: a, ok: true}})},
		{"success does not lift a block", cat(fails(a, 5), []step{
			{op: "succeed", ip: a},
			{after: 30 * time.Second, op: "allow", ip: a, ok: false, retry: 30 * time.Second},
		})},
		{"failures during a block do not extend it", cat(fails(a, 5), []step{
			{after: 30 * time.Second, op: "fail", ip: a},
			{op: "allow", ip: a, ok: false, retry: 30 * time.Second},
		})},
		{"the back-off doubles", cat(fails(a, 5),
			[]step{{after: time.Minute, op: "allow", ip: a, ok: true}}, fails(a, 5),
			[]step{{op: "allow", ip: a, ok: false, retry: 2 * time.Minute}, {after: 2 * time.Minute, op: "allow", ip: a, ok: true}}, fails(a, 5),
			[]step{{op: "allow", ip: a, ok: false, retry: 4 * time.Minute}},
		)},
		{"success does not reset the back-off", cat(fails(a, 5),
			[]step{{after: time.Minute, op: "succeed", ip: a}}, fails(a, 5),
			[]step{{op: "allow", ip: a, ok: false, retry: 2 * time.Minute}},
		)},
		{"the back-off stops at the maximum", func() []step {
			var s []step
			for range 8 { // 1, 2, 4, 8, 16, 32, 60, 60 minutes
				s = append(s, fails(a, 5)...)
				s = append(s, step{after: time.Hour, op: "allow", ip: a, ok: true})
			}
			return cat(s, fails(a, 5), []step{{op: "allow", ip: a, ok: false, retry: time.Hour}})
		}()},
		{"the back-off is forgotten after a quiet hour", cat(fails(a, 5),
			[]step{{after: time.Minute, op: "allow", ip: a, ok: true}}, fails(a, 5),
			[]step{{after: 2*time.Minute + time.Hour, op: "allow", ip: a, ok: true}}, fails(a, 5),
			[]step{{op: "allow", ip: a, ok: false, retry: time.Minute}},
		)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			l := NewLimiter(LimiterConfig{Now: clock.Now})
			for i, s := range tt.steps {
				clock.Add(s.after)
				switch s.op {
				case "fail":
					l.Fail(s.ip)
				case "succeed":
					l.Succeed(s.ip)
				case "allow":
					ok, retry := l.Allow(s.ip)
					if ok != s.ok || retry != s.retry {
						t.Fatalf("step %d: Allow(%s) = %v, %v; want %v, %v", i, s.ip, ok, retry, s.ok, s.retry)
					}
				}
			}
		})
	}
}

func TestLimiterBounded(t *testing.T) {
	clock := newFakeClock()
	l := NewLimiter(LimiterConfig{Now: clock.Now, MaxEntries: 100, MaxFailures: 2})
	first := netip.MustParseAddr("10.0.0.1")
	l.Fail(first)
	l.Fail(first) // blocked
	for i := range 1000 {
		l.Fail(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}))
	}
	if n := l.Len(); n != 100 {
		t.Errorf("Len() = %d, want 100", n)
	}
	// The oldest entry went first, block and all.
	if ok, _ := l.Allow(first); !ok {
		t.Error("oldest entry not evicted")
	}
	// The newest entries are kept: with MaxFailures 2, one more
	// failure blocks.
	last := netip.AddrFrom4([4]byte{10, 1, 999 >> 8, 999 & 0xff})
	l.Fail(last)
	if ok, _ := l.Allow(last); ok {
		t.Error("newest entry evicted")
	}
}

func TestLimiterForgetsIdle(t *testing.T) {
	clock := newFakeClock()
	l := NewLimiter(LimiterConfig{Now: clock.Now})
	for i := range 50 {
		l.Fail(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}))
	}
	clock.Add(11 * time.Minute)
	// Each Fail sweeps two idle entries from the old end.
	for i := range 25 {
		l.Fail(netip.AddrFrom4([4]byte{10, 0, 1, byte(i)}))
	}
	if n := l.Len(); n != 25 {
		t.Errorf("Len() = %d, want 25", n)
	}
	// A success with nothing left to remember drops the entry.
	ip := netip.MustParseAddr("10.9.9.9")
	l.Fail(ip)
	l.Succeed(ip)
	if n := l.Len(); n != 25 {
		t.Errorf("Len() after success = %d, want 25", n)
	}
}

func TestLimitKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":            "192.0.2.1/32",
		"::ffff:192.0.2.1":     "192.0.2.1/32",
		"2001:db8::1":          "2001:db8::/64",
		"fe80::1%eth0":         "fe80::/64",
		"2001:db8:a:b:c:d:e:f": "2001:db8:a:b::/64",
	} {
		if got := limitKey(netip.MustParseAddr(in)).String(); got != want {
			t.Errorf("limitKey(%s) = %s, want %s", in, got, want)
		}
	}
	if got := limitKey(netip.Addr{}); got != (netip.Prefix{}) {
		t.Errorf("limitKey(zero) = %v", got)
	}
}
