package resolver_test

import (
	"net"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/larkpost/larkpost/engine/resolver"
	"github.com/larkpost/larkpost/engine/resolver/dnstest"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestCache: answers are kept for their smallest TTL, NXDOMAIN and NODATA
// for the SOA's negative TTL, failures not at all.
func TestCache(t *testing.T) {
	t.Parallel()
	srv := dnstest.NewServer(t,
		"short.test. 30 IN TXT \"a\"",
		"short.test. 60 IN TXT \"b\"",
		"long.test. 3600 IN A 192.0.2.1",
		"test. 300 IN SOA ns.test. host.test. 1 7200 3600 1209600 120",
	)
	clock := &fakeClock{t: time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)}
	r := resolver.New([]string{srv.Addr}, time.Second)
	r.Cache = &resolver.Cache{Now: clock.Now}
	ctx := t.Context()

	ask := func(name string, qtype uint16) error {
		t.Helper()
		_, err := r.Query(ctx, name, qtype)
		return err
	}
	// want: how many queries reach the server for each step.
	steps := []struct {
		name    string
		qtype   uint16
		advance time.Duration
		sent    int
	}{
		{"short.test", mdns.TypeTXT, 0, 1},
		{"short.test", mdns.TypeTXT, 29 * time.Second, 0},
		{"short.test", mdns.TypeTXT, time.Second, 1}, // 30 s: the smaller TTL ran out
		{"long.test", mdns.TypeA, 0, 1},
		{"long.test", mdns.TypeA, 59 * time.Minute, 0},
		{"LONG.test.", mdns.TypeA, 0, 0}, // same name
		{"long.test", mdns.TypeAAAA, 0, 1},
	}
	for i, s := range steps {
		clock.Advance(s.advance)
		before := srv.Queries()
		if err := ask(s.name, s.qtype); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := srv.Queries() - before; got != s.sent {
			t.Errorf("step %d (%s %s after %v): %d queries sent, want %d", i, s.name, mdns.TypeToString[s.qtype], s.advance, got, s.sent)
		}
	}

	// The dnstest server sends no SOA with its negative answers, so
	// NXDOMAIN is not kept; a resolver's answer with one is (see
	// TestCacheNegative).
	before := srv.Queries()
	for range 2 {
		if err := ask("nothing.test", mdns.TypeA); !resolver.IsNotFound(err) {
			t.Fatalf("nothing.test: %v, want NXDOMAIN", err)
		}
	}
	if got := srv.Queries() - before; got != 2 {
		t.Errorf("NXDOMAIN without SOA: %d queries, want 2 (not cached)", got)
	}

	srv.SetRcode("fail.test", mdns.RcodeServerFailure)
	before = srv.Queries()
	for range 2 {
		if err := ask("fail.test", mdns.TypeA); !resolver.IsTemporary(err) {
			t.Fatalf("fail.test: %v, want a temporary error", err)
		}
	}
	if got := srv.Queries() - before; got != 2 {
		t.Errorf("SERVFAIL: %d queries, want 2 (failures are not cached)", got)
	}
	if hits, misses := r.Cache.Stats(); hits != 3 || misses < 6 {
		t.Errorf("Stats = %d hits, %d misses; want 3 hits and at least 6 misses", hits, misses)
	}
}

// TestCacheBounded: a flood of distinct names keeps the cache at Max.
func TestCacheBounded(t *testing.T) {
	t.Parallel()
	tab := resolver.NewTable()
	for i := range 300 {
		if err := tab.Add(mdns.Fqdn(string(rune('a'+i%26))+itoa(i)+".test"), "A", "192.0.2.1"); err != nil {
			t.Fatal(err)
		}
	}
	r := &resolver.Resolver{Table: tab, Cache: &resolver.Cache{Max: 50}}
	for i := range 300 {
		if _, err := r.Query(t.Context(), string(rune('a'+i%26))+itoa(i)+".test", mdns.TypeA); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.Cache.Len(); n > 50 {
		t.Errorf("cache holds %d answers, want at most 50", n)
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

// TestTable: the fake DNS of rule tests answers like a resolver.
func TestTable(t *testing.T) {
	t.Parallel()
	tab := resolver.NewTable()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(tab.Add("example.com", "TXT", "v=spf1 ip4:192.0.2.0/24 -all", "other \"quoted\" text"))
	must(tab.Add("example.com", "MX", "10 mx.example.com", "20 mx2.example.com."))
	must(tab.Add("mx.example.com", "A", "192.0.2.1"))
	must(tab.Add("www.example.com", "CNAME", "mx.example.com"))
	must(tab.Add("long.example.com", "TXT", string(make([]byte, 600))))
	must(tab.ServFail("broken.example.com"))
	if err := tab.Add("example.com", "MX", "not a record"); err == nil {
		t.Error("Add of a malformed MX succeeded")
	}
	if err := tab.Add("example.com", "BOGUS", "x"); err == nil {
		t.Error("Add of an unknown type succeeded")
	}
	r := &resolver.Resolver{Table: tab}
	ctx := t.Context()

	txt, err := r.LookupTXT(ctx, "example.com")
	if err != nil || len(txt) != 2 || txt[0] != "v=spf1 ip4:192.0.2.0/24 -all" || txt[1] != `other "quoted" text` {
		t.Errorf("LookupTXT = %q, %v", txt, err)
	}
	if txt, err := r.LookupTXT(ctx, "long.example.com"); err != nil || len(txt) != 1 || len(txt[0]) != 600 {
		t.Errorf("LookupTXT(long) = %d records, %v; want one of 600 bytes", len(txt), err)
	}
	mx, err := r.LookupMX(ctx, "example.com")
	if err != nil || len(mx) != 2 || mx[0].Host != "mx.example.com" || mx[1].Host != "mx2.example.com" {
		t.Errorf("LookupMX = %v, %v", mx, err)
	}
	if ips, err := r.LookupIP(ctx, "www.example.com"); err != nil || len(ips) != 1 || ips[0].String() != "192.0.2.1" {
		t.Errorf("LookupIP(www, a CNAME) = %v, %v", ips, err)
	}
	if _, err := r.LookupTXT(ctx, "nothing.example.com"); !resolver.IsNotFound(err) {
		t.Errorf("LookupTXT(nothing) error = %v, want NXDOMAIN", err)
	}
	if txt, err := r.LookupTXT(ctx, "mx.example.com"); err != nil || len(txt) != 0 {
		t.Errorf("LookupTXT(mx) = %q, %v; want NODATA", txt, err)
	}
	if txt, err := r.LookupTXT(ctx, "com"); err != nil || len(txt) != 0 {
		t.Errorf("LookupTXT(com) = %q, %v; want NODATA (a name below it exists)", txt, err)
	}
	if _, err := r.LookupTXT(ctx, "broken.example.com"); !resolver.IsTemporary(err) {
		t.Errorf("LookupTXT(broken) error = %v, want a temporary failure", err)
	}
}

// TestCacheNegative: NXDOMAIN and NODATA with an SOA are kept for
// min(SOA TTL, MINIMUM), as RFC 2308 says.
func TestCacheNegative(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	queries := 0
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, req *mdns.Msg) {
		mu.Lock()
		queries++
		mu.Unlock()
		m := new(mdns.Msg)
		m.SetReply(req)
		if req.Question[0].Name == "gone.test." {
			m.Rcode = mdns.RcodeNameError
		}
		soa, _ := mdns.NewRR("test. 600 IN SOA ns.test. host.test. 1 7200 3600 1209600 60")
		m.Ns = []mdns.RR{soa}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })

	clock := &fakeClock{t: time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)}
	r := resolver.New([]string{pc.LocalAddr().String()}, time.Second)
	r.Cache = &resolver.Cache{Now: clock.Now}
	count := func() int { mu.Lock(); defer mu.Unlock(); return queries }
	for _, step := range []struct {
		advance time.Duration
		want    int
	}{{0, 2}, {59 * time.Second, 2}, {time.Second, 4}} {
		clock.Advance(step.advance)
		if _, err := r.Query(t.Context(), "gone.test", mdns.TypeA); !resolver.IsNotFound(err) {
			t.Fatalf("gone.test: %v, want NXDOMAIN", err)
		}
		if in, err := r.Query(t.Context(), "empty.test", mdns.TypeA); err != nil || len(in.Answer) != 0 {
			t.Fatalf("empty.test: %v, %v; want NODATA", in, err)
		}
		if got := count(); got != step.want {
			t.Errorf("after %v: %d queries, want %d", step.advance, got, step.want)
		}
	}
}
