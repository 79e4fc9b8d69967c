package tlspolicy_test

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/resolver"
	"github.com/larkpost/larkpost/engine/tlspolicy"
)

// txtMap is a TXTLookup whose answers a test changes between steps; the
// dnstest zone can only grow, and these tests replace records.
type txtMap struct {
	mu  sync.Mutex
	txt map[string][]string
	err map[string]error
}

func (m *txtMap) set(name string, err error, txts ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.txt == nil {
		m.txt, m.err = map[string][]string{}, map[string]error{}
	}
	m.txt[name], m.err[name] = txts, err
}

func (m *txtMap) LookupTXT(_ context.Context, name string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.err[name]; err != nil {
		return nil, err
	}
	txts, ok := m.txt[name]
	if !ok {
		return nil, &resolver.Error{Name: name, Type: "TXT", Rcode: "NXDOMAIN", NotFound: true}
	}
	return txts, nil
}

const (
	testingPolicy = "version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 3600\n"
	enforcePolicy = "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 3600\n"
)

var errServfail = &resolver.Error{Name: "_mta-sts.example.com", Type: "TXT", Rcode: "SERVFAIL", Temporary: true}

// TestMTASTSLookup runs each scenario as steps against one cache, clock
// and server: what changed before the step, and what Lookup must say.
func TestMTASTSLookup(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "test ca")
	type step struct {
		advance  time.Duration
		txt      []string // nil keeps the previous record
		txtErr   error
		noRecord bool
		serve    *stsResponse // nil keeps the previous response

		source  tlspolicy.Source
		mode    tlspolicy.Mode // "" for no policy
		id      string
		fetches int    // total so far
		err     string // "" for none
	}
	ok := func(policy string) *stsResponse { return &stsResponse{contentType: "text/plain", body: policy} }
	broken := &stsResponse{status: 500, contentType: "text/plain", body: "oops"}
	tests := []struct {
		name  string
		steps []step
	}{
		{"id change refetches", []step{
			{txt: []string{"v=STSv1; id=1;"}, serve: ok(testingPolicy), source: tlspolicy.SourceFetched, mode: tlspolicy.ModeTesting, id: "1", fetches: 1},
			{advance: time.Minute, source: tlspolicy.SourceCache, mode: tlspolicy.ModeTesting, id: "1", fetches: 1},
			{txt: []string{"v=STSv1; id=2;"}, serve: ok(enforcePolicy), source: tlspolicy.SourceFetched, mode: tlspolicy.ModeEnforce, id: "2", fetches: 2},
		}},
		{"expired policy refetches", []step{
			{txt: []string{"v=STSv1; id=1;"}, serve: ok(testingPolicy), source: tlspolicy.SourceFetched, mode: tlspolicy.ModeTesting, fetches: 1},
			{advance: 3599 * time.Second, source: tlspolicy.SourceCache, mode: tlspolicy.ModeTesting, fetches: 1},
			{advance: time.Second, serve: ok(enforcePolicy), source: tlspolicy.SourceFetched, mode: tlspolicy.ModeEnforce, fetches: 2},
		}},
		{"fetch failure keeps cached policy", []step{
			{txt: []string{"v=STSv1; id=1;"}, serve: ok(enforcePolicy), source: tlspolicy.SourceFetched, mode: tlspolicy.ModeEnforce, id: "1", fetches: 1},
			{txt: []string{"v=STSv1; id=2;"}, serve: broken, source: tlspolicy.SourceStale, mode: tlspolicy.ModeEnforce, id: "1", fetches: 2, err: "status 500"},
			// Within the backoff the broken server is not asked again.
			{advance: time.Minute, source: tlspolicy.SourceStale, mode: tlspolicy.ModeEnforce, id: "1", fetches: 2, err: "not retried"},
			{advance: 5 * time.Minute, serve: ok(testingPolicy), source: tlspolicy.SourceFetched, mode: tlspolicy.ModeTesting, id: "2", fetches: 3},
		}},
		{"fetch failure after expiry means no policy", []step{
			{txt: []string{"v=STSv1; id=1;"}, serve: ok(enforcePolicy), source: tlspolicy.SourceFetched, mode: tlspolicy.ModeEnforce, fetches: 1},
			{advance: time.Hour, serve: broken, source: tlspolicy.SourceNone, fetches: 2, err: "status 500"},
		}},
		{"dns failure keeps cached policy", []step{
			{txt: []string{"v=STSv1; id=1;"}, serve: ok(enforcePolicy), source: tlspolicy.SourceFetched, mode: tlspolicy.ModeEnforce, fetches: 1},
			{txtErr: errServfail, source: tlspolicy.SourceStale, mode: tlspolicy.ModeEnforce, fetches: 1, err: "SERVFAIL"},
		}},
		{"removed record keeps cached policy until expiry", []step{
			{txt: []string{"v=STSv1; id=1;"}, serve: ok(enforcePolicy), source: tlspolicy.SourceFetched, mode: tlspolicy.ModeEnforce, fetches: 1},
			{noRecord: true, source: tlspolicy.SourceCache, mode: tlspolicy.ModeEnforce, fetches: 1},
			{advance: time.Hour, source: tlspolicy.SourceNone, fetches: 1},
		}},
		{"no record, no policy", []step{
			{noRecord: true, source: tlspolicy.SourceNone},
		}},
		{"two records mean no policy", []step{
			{txt: []string{"v=STSv1; id=1;", "v=STSv1; id=2;"}, serve: ok(enforcePolicy), source: tlspolicy.SourceNone},
		}},
		{"other txt records are ignored", []step{
			{txt: []string{"v=spf1 -all", "v=STSv1; id=7;"}, serve: ok(enforcePolicy), source: tlspolicy.SourceFetched, mode: tlspolicy.ModeEnforce, id: "7", fetches: 1},
		}},
		{"mode none replaces a cached enforce policy", []step{
			{txt: []string{"v=STSv1; id=1;"}, serve: ok(enforcePolicy), source: tlspolicy.SourceFetched, mode: tlspolicy.ModeEnforce, fetches: 1},
			{txt: []string{"v=STSv1; id=2;"}, serve: ok("version: STSv1\nmode: none\nmax_age: 86400\n"), source: tlspolicy.SourceFetched, mode: tlspolicy.ModeNone, fetches: 2},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newSTSServer(t, ca.leaf(t, time.Time{}, "mta-sts.example.com"))
			clk := newClock()
			dns := &txtMap{}
			m := &tlspolicy.MTASTS{DNS: dns, HTTP: srv.client(ca.pool), Cache: &tlspolicy.MemoryCache{}, Now: clk.Now}
			for i, st := range tt.steps {
				clk.Advance(st.advance)
				switch {
				case st.noRecord:
					dns.mu.Lock()
					delete(dns.txt, "_mta-sts.example.com")
					delete(dns.err, "_mta-sts.example.com")
					dns.mu.Unlock()
				case st.txtErr != nil:
					dns.set("_mta-sts.example.com", st.txtErr)
				case st.txt != nil:
					dns.set("_mta-sts.example.com", nil, st.txt...)
				}
				if st.serve != nil {
					srv.set("example.com", *st.serve)
				}
				res := m.Lookup(t.Context(), "Example.COM.")
				var mode tlspolicy.Mode
				if res.Policy != nil {
					mode = res.Policy.Mode
				}
				if res.Source != st.source || mode != st.mode || (st.id != "" && res.ID != st.id) {
					t.Errorf("step %d: source %q mode %q id %q, want %q %q %q (err %v)", i, res.Source, mode, res.ID, st.source, st.mode, st.id, res.Err)
				}
				if got := srv.fetches("example.com"); got != st.fetches {
					t.Errorf("step %d: %d fetches, want %d", i, got, st.fetches)
				}
				if (st.err == "") != (res.Err == nil) || res.Err != nil && !strings.Contains(res.Err.Error(), st.err) {
					t.Errorf("step %d: err %v, want %q", i, res.Err, st.err)
				}
			}
		})
	}
}

// TestFetchRejects checks the rules of RFC 8461 section 3.3 on the
// fetch; with nothing cached, each failure means no policy.
func TestFetchRejects(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "test ca")
	other := newCA(t, "other ca")
	names := []string{"mta-sts.ok.example", "mta-sts.charset.example", "mta-sts.redirect.example", "mta-sts.html.example",
		"mta-sts.big.example", "mta-sts.missing.example", "mta-sts.garbage.example", "mta-sts.untrusted.example"}
	srv := newSTSServer(t, ca.leaf(t, time.Time{}, names...))
	srv.setPolicy("ok.example", enforcePolicy)
	srv.set("charset.example", stsResponse{contentType: "text/plain; charset=utf-8", body: enforcePolicy})
	srv.set("redirect.example", stsResponse{status: 302, location: "https://mta-sts.ok.example/.well-known/mta-sts.txt", contentType: "text/plain"})
	srv.set("html.example", stsResponse{contentType: "text/html", body: enforcePolicy})
	srv.set("big.example", stsResponse{contentType: "text/plain", body: enforcePolicy + "x-pad: " + strings.Repeat("a", tlspolicy.MaxPolicySize) + "\n"})
	srv.set("garbage.example", stsResponse{contentType: "text/plain", body: "hello"})
	srv.setPolicy("untrusted.example", enforcePolicy)

	tests := []struct {
		domain  string
		roots   *testCA
		wantErr string
	}{
		{domain: "ok.example"},
		{domain: "charset.example"},
		{domain: "redirect.example", wantErr: "redirect refused"},
		{domain: "html.example", wantErr: "not text/plain"},
		{domain: "big.example", wantErr: "larger than 65536"},
		{domain: "missing.example", wantErr: "status 404"},
		{domain: "garbage.example", wantErr: "not a key"},
		{domain: "untrusted.example", roots: other, wantErr: "certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.domain, func(t *testing.T) {
			t.Parallel()
			roots := ca
			if tt.roots != nil {
				roots = tt.roots
			}
			dns := &txtMap{}
			dns.set("_mta-sts."+tt.domain, nil, "v=STSv1; id=1")
			m := &tlspolicy.MTASTS{DNS: dns, HTTP: srv.client(roots.pool), Cache: &tlspolicy.MemoryCache{}}
			res := m.Lookup(t.Context(), tt.domain)
			if tt.wantErr == "" {
				if res.Err != nil || res.Policy == nil || res.Policy.Mode != tlspolicy.ModeEnforce {
					t.Fatalf("Lookup = %+v, want the enforce policy", res)
				}
				return
			}
			if res.Policy != nil || res.Source != tlspolicy.SourceNone {
				t.Errorf("Lookup = %+v, want no policy", res)
			}
			if res.Err == nil || !strings.Contains(res.Err.Error(), tt.wantErr) {
				t.Errorf("Lookup error = %v, want %q", res.Err, tt.wantErr)
			}
		})
	}
}

// TestLookupSharesFetch checks that concurrent lookups for one domain
// cost one fetch.
func TestLookupSharesFetch(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "test ca")
	srv := newSTSServer(t, ca.leaf(t, time.Time{}, "mta-sts.example.com"))
	srv.setPolicy("example.com", enforcePolicy)
	dns := &txtMap{}
	dns.set("_mta-sts.example.com", nil, "v=STSv1; id=1")
	m := &tlspolicy.MTASTS{DNS: dns, HTTP: srv.client(ca.pool), Cache: &tlspolicy.MemoryCache{}}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if res := m.Lookup(t.Context(), "example.com"); res.Policy == nil {
				t.Errorf("Lookup = %+v", res)
			}
		})
	}
	wg.Wait()
	if n := srv.fetches("example.com"); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
}

func TestMemoryCacheBounded(t *testing.T) {
	t.Parallel()
	clk := newClock()
	c := &tlspolicy.MemoryCache{MaxEntries: 2, Now: clk.Now}
	ctx := t.Context()
	short := tlspolicy.CacheEntry{Policy: tlspolicy.Policy{Mode: tlspolicy.ModeNone, MaxAge: time.Second}, Fetched: clk.Now()}
	long := tlspolicy.CacheEntry{Policy: tlspolicy.Policy{Mode: tlspolicy.ModeNone, MaxAge: time.Hour}, Fetched: clk.Now()}
	for _, put := range []struct {
		d string
		e tlspolicy.CacheEntry
	}{{"a.example", short}, {"b.example", long}} {
		if err := c.Put(ctx, put.d, put.e); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(time.Minute)
	if err := c.Put(ctx, "C.example.", long); err != nil {
		t.Fatal(err)
	}
	for d, want := range map[string]bool{"a.example": false, "b.example": true, "c.example": true} {
		if _, ok, _ := c.Get(ctx, d); ok != want {
			t.Errorf("Get(%s) found = %v, want %v", d, ok, want)
		}
	}
}

// TestFetchThroughResolvers: the policy host is found through the
// configured resolvers (ResolverDial), not the system's; a policy host
// without address records fails the fetch, and the domain keeps its level.
func TestFetchThroughResolvers(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "test ca")
	sts := newSTSServer(t, ca.leaf(t, time.Time{}, "mta-sts.viadns.example", "mta-sts.noaddr.example"))
	sts.setPolicy("viadns.example", "version: STSv1\nmode: enforce\nmx: mx.viadns.example\nmax_age: 86400\n")
	sts.setPolicy("noaddr.example", "version: STSv1\nmode: enforce\nmx: mx.noaddr.example\nmax_age: 86400\n")
	zone := newDNS(t,
		`_mta-sts.viadns.example. 300 IN TXT "v=STSv1; id=1;"`,
		`_mta-sts.noaddr.example. 300 IN TXT "v=STSv1; id=1;"`,
		"mta-sts.viadns.example. 300 IN A 127.0.0.1",
	)
	res := resolver.New([]string{zone.Addr}, time.Second)
	_, port, _ := net.SplitHostPort(sts.srv.Listener.Addr().String())
	viaDNS := tlspolicy.ResolverDial(res.LookupIP, time.Second)
	// The server cannot listen on 443; everything else is the real path.
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, _ := net.SplitHostPort(addr)
		return viaDNS(ctx, network, net.JoinHostPort(host, port))
	}
	m := &tlspolicy.MTASTS{DNS: res, HTTP: tlspolicy.NewHTTPClient(&tls.Config{RootCAs: ca.pool}, dial, 5*time.Second)}

	r := m.Lookup(t.Context(), "viadns.example")
	if r.Err != nil || r.Policy == nil || r.Policy.Mode != tlspolicy.ModeEnforce {
		t.Fatalf("Lookup(viadns.example) = %+v, want the enforce policy", r)
	}
	r = m.Lookup(t.Context(), "noaddr.example")
	if r.Policy != nil || r.Err == nil || !strings.Contains(r.Err.Error(), "mta-sts.noaddr.example") {
		t.Fatalf("Lookup(noaddr.example) = %+v, want no policy and an error naming the host", r)
	}
	t.Log(r.Err)
	if n := sts.fetches("noaddr.example"); n != 0 {
		t.Errorf("noaddr.example fetched %d times without an address", n)
	}
}
