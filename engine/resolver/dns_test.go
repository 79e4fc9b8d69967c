package resolver_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/larkpost/larkpost/engine/resolver"
	"github.com/larkpost/larkpost/engine/resolver/dnstest"
)

// zone serves most tests; each case picks its own names from it.
var zone = []string{
	"example.com. 300 IN MX 20 mx2.example.com.",
	"example.com. 300 IN MX 10 MX1.Example.COM.",
	"example.com. 300 IN MX 30 mx3.example.com.",
	"alias.example.com. 300 IN CNAME example.net.",
	"example.net. 300 IN MX 5 mx.example.net.",
	"nodata.example. 300 IN A 127.0.0.1",
	"null.example. 300 IN MX 0 .",
	`multi.example. 300 IN TXT "v=spf1 " "include:a.example" " -all"`,
	`multi.example. 300 IN TXT "second"`,
	"both.example. 300 IN AAAA 2001:db8::1",
	"both.example. 300 IN A 127.0.0.1",
	"both.example. 300 IN A 127.0.0.2",
	"v6only.example. 300 IN AAAA 2001:db8::2",
}

func newResolver(timeout time.Duration, servers ...*dnstest.Server) *resolver.Resolver {
	var addrs []string
	for _, s := range servers {
		addrs = append(addrs, s.Addr)
	}
	return resolver.New(addrs, timeout)
}

// checkErr compares err with what a case expects: nil, or an *Error whose
// message and classification match.
func checkErr(t *testing.T, err error, wantErr string, temporary, notFound bool) {
	t.Helper()
	if wantErr == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("got no error, want %q", wantErr)
	}
	if !strings.Contains(err.Error(), wantErr) {
		t.Errorf("error = %q, want it to contain %q", err, wantErr)
	}
	if got := resolver.IsTemporary(err); got != temporary {
		t.Errorf("IsTemporary(%v) = %v, want %v", err, got, temporary)
	}
	if got := resolver.IsNotFound(err); got != notFound {
		t.Errorf("IsNotFound(%v) = %v, want %v", err, got, notFound)
	}
}

func TestLookupMX(t *testing.T) {
	t.Parallel()
	srv := dnstest.NewServer(t, zone...)
	r := newResolver(time.Second, srv)

	tests := []struct {
		name      string
		domain    string
		want      []resolver.MX
		wantErr   string
		notFound  bool
		isNullMX  bool
		temporary bool
	}{
		{
			name:   "sorted by preference",
			domain: "example.com",
			want:   []resolver.MX{{"mx1.example.com", 10}, {"mx2.example.com", 20}, {"mx3.example.com", 30}},
		},
		{
			name:   "upper case and trailing dot",
			domain: "EXAMPLE.Com.",
			want:   []resolver.MX{{"mx1.example.com", 10}, {"mx2.example.com", 20}, {"mx3.example.com", 30}},
		},
		{
			name:   "via cname",
			domain: "alias.example.com",
			want:   []resolver.MX{{"mx.example.net", 5}},
		},
		{
			name:   "nodata",
			domain: "nodata.example",
		},
		{
			name:     "null mx",
			domain:   "null.example",
			wantErr:  "lookup null.example MX: domain does not accept mail (null mx)",
			isNullMX: true,
		},
		{
			name:     "nxdomain",
			domain:   "missing.example",
			wantErr:  "lookup missing.example MX: no such domain",
			notFound: true,
		},
		{
			name:    "invalid name",
			domain:  "",
			wantErr: "invalid domain name",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.LookupMX(t.Context(), tt.domain)
			checkErr(t, err, tt.wantErr, tt.temporary, tt.notFound)
			if errors.Is(err, resolver.ErrNullMX) != tt.isNullMX {
				t.Errorf("errors.Is(%v, ErrNullMX) = %v, want %v", err, !tt.isNullMX, tt.isNullMX)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("LookupMX(%q) = %v, want %v", tt.domain, got, tt.want)
			}
		})
	}
}

func TestLookupMXShufflesEqualPreferences(t *testing.T) {
	t.Parallel()
	srv := dnstest.NewServer(t,
		"example.org. 300 IN MX 20 last.example.org.",
		"example.org. 300 IN MX 10 a.example.org.",
		"example.org. 300 IN MX 5 first.example.org.",
		"example.org. 300 IN MX 10 b.example.org.",
	)
	r := newResolver(time.Second, srv)

	seen := map[string]int{}
	for range 100 {
		mxs, err := r.LookupMX(t.Context(), "example.org")
		if err != nil {
			t.Fatal(err)
		}
		var hosts []string
		for _, mx := range mxs {
			hosts = append(hosts, mx.Host)
		}
		order := strings.Join(hosts, " ")
		switch order {
		case "first.example.org a.example.org b.example.org last.example.org",
			"first.example.org b.example.org a.example.org last.example.org":
			seen[order]++
		default:
			t.Fatalf("LookupMX order = %q, want by preference", order)
		}
	}
	// With a fair shuffle one order missing in 100 runs has odds 2^-99.
	if len(seen) != 2 {
		t.Errorf("equal preferences were not shuffled: %v", seen)
	}
}

func TestServerFailover(t *testing.T) {
	t.Parallel()
	const name = "example.com"
	// A port nobody listens on: the kernel answers with ICMP port
	// unreachable, which the client sees as a connection refusal.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := pc.LocalAddr().String()
	pc.Close()

	tests := []struct {
		name      string
		first     int // rcode set on the first server; 0 means answer normally
		closed    bool
		wantErr   string
		temporary bool
		notFound  bool
		// whether the second server must have been asked
		second bool
	}{
		{name: "servfail then good", first: mdns.RcodeServerFailure, second: true},
		{name: "refused then good", first: mdns.RcodeRefused, second: true},
		{name: "timeout then good", first: -1, second: true},
		{name: "unreachable then good", closed: true, second: true},
		{name: "nxdomain is final", first: mdns.RcodeNameError, wantErr: "no such domain", notFound: true},
		{name: "first answers", second: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s1 := dnstest.NewServer(t, zone...)
			s2 := dnstest.NewServer(t, zone...)
			s1.SetRcode(name, tt.first)
			servers := []string{s1.Addr, s2.Addr}
			if tt.closed {
				servers[0] = closedAddr
			}
			r := resolver.New(servers, 300*time.Millisecond)

			got, err := r.LookupMX(t.Context(), name)
			checkErr(t, err, tt.wantErr, tt.temporary, tt.notFound)
			if err == nil && len(got) != 3 {
				t.Errorf("LookupMX = %v, want 3 hosts", got)
			}
			if asked := s2.Queries() > 0; asked != tt.second {
				t.Errorf("second server asked = %v, want %v", asked, tt.second)
			}
		})
	}
}

func TestAllServersFail(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		rcode   int
		wantErr string
		rcodeS  string
	}{
		{name: "servfail", rcode: mdns.RcodeServerFailure, wantErr: "lookup example.com MX: server failure (SERVFAIL)", rcodeS: "SERVFAIL"},
		{name: "refused", rcode: mdns.RcodeRefused, wantErr: "lookup example.com MX: query refused (REFUSED)", rcodeS: "REFUSED"},
		{name: "notimp", rcode: mdns.RcodeNotImplemented, wantErr: "lookup example.com MX: error reply (NOTIMP)", rcodeS: "NOTIMP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s1 := dnstest.NewServer(t, zone...)
			s2 := dnstest.NewServer(t, zone...)
			s1.SetRcode("example.com", tt.rcode)
			s2.SetRcode("example.com", tt.rcode)
			r := newResolver(time.Second, s1, s2)

			_, err := r.LookupMX(t.Context(), "example.com")
			checkErr(t, err, tt.wantErr, true, false)
			if err != nil && err.Error() != tt.wantErr {
				t.Errorf("error = %q, want %q", err, tt.wantErr)
			}
			var de *resolver.Error
			if !errors.As(err, &de) || de.Rcode != tt.rcodeS || de.Name != "example.com" || de.Type != "MX" {
				t.Errorf("error = %#v, want *Error for example.com MX with rcode %s", err, tt.rcodeS)
			}
			if s1.Queries() != 1 || s2.Queries() != 1 {
				t.Errorf("queries = %d, %d, want 1 each", s1.Queries(), s2.Queries())
			}
		})
	}
}

func TestTimeouts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		timeout  time.Duration
		ctx      func(context.Context) (context.Context, context.CancelFunc)
		servers  int
		min, max time.Duration
		wantErr  error
	}{
		{
			name:    "per attempt timeout",
			timeout: 150 * time.Millisecond,
			ctx:     func(ctx context.Context) (context.Context, context.CancelFunc) { return ctx, func() {} },
			servers: 2,
			min:     300 * time.Millisecond,
			max:     1500 * time.Millisecond,
		},
		{
			name:    "context deadline shorter than timeout",
			timeout: 10 * time.Second,
			ctx: func(ctx context.Context) (context.Context, context.CancelFunc) {
				return context.WithTimeout(ctx, 200*time.Millisecond)
			},
			servers: 2,
			min:     150 * time.Millisecond,
			max:     1500 * time.Millisecond,
			wantErr: context.DeadlineExceeded,
		},
		{
			name:    "context cancelled",
			timeout: 10 * time.Second,
			ctx: func(ctx context.Context) (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(ctx)
				time.AfterFunc(200*time.Millisecond, cancel)
				return ctx, cancel
			},
			servers: 2,
			min:     150 * time.Millisecond,
			max:     1500 * time.Millisecond,
			wantErr: context.Canceled,
		},
		{
			name:    "context already expired",
			timeout: 10 * time.Second,
			ctx: func(ctx context.Context) (context.Context, context.CancelFunc) {
				return context.WithDeadline(ctx, time.Now().Add(-time.Second))
			},
			servers: 1,
			max:     100 * time.Millisecond,
			wantErr: context.DeadlineExceeded,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var servers []*dnstest.Server
			for range tt.servers {
				s := dnstest.NewServer(t, zone...)
				s.SetRcode("example.com", -1)
				servers = append(servers, s)
			}
			r := newResolver(tt.timeout, servers...)
			ctx, cancel := tt.ctx(t.Context())
			defer cancel()

			start := time.Now()
			_, err := r.LookupMX(ctx, "example.com")
			elapsed := time.Since(start)

			if !resolver.IsTemporary(err) {
				t.Errorf("IsTemporary(%v) = false, want true", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error = %v, want it to wrap %v", err, tt.wantErr)
			}
			if elapsed < tt.min || elapsed > tt.max {
				t.Errorf("lookup took %v, want between %v and %v", elapsed, tt.min, tt.max)
			}
		})
	}
}

func TestTruncatedReplyRetriesOverTCP(t *testing.T) {
	t.Parallel()
	var rrs, want []string
	for i := range 60 {
		txt := fmt.Sprintf("record %02d %s", i, strings.Repeat("x", 40))
		rrs = append(rrs, fmt.Sprintf("big.example. 300 IN TXT %q", txt))
		want = append(want, txt)
	}
	srv := dnstest.NewServer(t, rrs...)
	r := newResolver(time.Second, srv)

	got, err := r.LookupTXT(t.Context(), "big.example")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("LookupTXT returned %d records, want all %d", len(got), len(want))
	}
	if n := srv.Queries(); n != 2 {
		t.Errorf("server got %d queries, want 2 (udp, then tcp)", n)
	}
}

func TestLookupTXT(t *testing.T) {
	t.Parallel()
	srv := dnstest.NewServer(t, zone...)
	r := newResolver(time.Second, srv)

	tests := []struct {
		name     string
		want     []string
		wantErr  string
		notFound bool
	}{
		{name: "multi.example", want: []string{"v=spf1 include:a.example -all", "second"}},
		{name: "nodata.example"},
		{name: "missing.example", wantErr: "lookup missing.example TXT: no such domain", notFound: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.LookupTXT(t.Context(), tt.name)
			checkErr(t, err, tt.wantErr, false, tt.notFound)
			if !slices.Equal(got, tt.want) {
				t.Errorf("LookupTXT(%q) = %q, want %q", tt.name, got, tt.want)
			}
		})
	}
}

func TestLookupIP(t *testing.T) {
	t.Parallel()
	srv := dnstest.NewServer(t, zone...)
	r := newResolver(time.Second, srv)

	addrs := func(s ...string) []netip.Addr {
		var out []netip.Addr
		for _, a := range s {
			out = append(out, netip.MustParseAddr(a))
		}
		return out
	}
	tests := []struct {
		name     string
		want     []netip.Addr
		wantErr  string
		notFound bool
	}{
		{name: "both.example", want: addrs("127.0.0.1", "127.0.0.2", "2001:db8::1")},
		{name: "v6only.example", want: addrs("2001:db8::2")},
		{name: "nodata.example", want: addrs("127.0.0.1")},
		{name: "example.com"},
		{name: "missing.example", wantErr: "no such domain", notFound: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.LookupIP(t.Context(), tt.name)
			checkErr(t, err, tt.wantErr, false, tt.notFound)
			if !slices.Equal(got, tt.want) {
				t.Errorf("LookupIP(%q) = %v, want %v", tt.name, got, tt.want)
			}
		})
	}
}

// TestLookupIPPartialFailure needs a failure for one type only, which
// dnstest cannot express, so it runs its own handler.
func TestLookupIPPartialFailure(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		fail      uint16 // the type answered with SERVFAIL
		other     string // the record for the other type; "" for NODATA
		want      []netip.Addr
		temporary bool
	}{
		{name: "aaaa fails, a answers", fail: mdns.TypeAAAA, other: "h.example. 300 IN A 127.0.0.1", want: []netip.Addr{netip.MustParseAddr("127.0.0.1")}},
		{name: "a fails, aaaa answers", fail: mdns.TypeA, other: "h.example. 300 IN AAAA 2001:db8::1", want: []netip.Addr{netip.MustParseAddr("2001:db8::1")}},
		{name: "a fails, aaaa nodata", fail: mdns.TypeA, temporary: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			addr := serveFunc(t, func(w mdns.ResponseWriter, req *mdns.Msg) {
				m := new(mdns.Msg)
				m.SetReply(req)
				switch {
				case req.Question[0].Qtype == tt.fail:
					m.Rcode = mdns.RcodeServerFailure
				case tt.other != "":
					rr, err := mdns.NewRR(tt.other)
					if err != nil {
						panic(err)
					}
					m.Answer = append(m.Answer, rr)
				}
				w.WriteMsg(m)
			})
			r := resolver.New([]string{addr}, time.Second)
			got, err := r.LookupIP(t.Context(), "h.example")
			if tt.temporary != resolver.IsTemporary(err) || (!tt.temporary && err != nil) {
				t.Errorf("LookupIP error = %v, want temporary %v", err, tt.temporary)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("LookupIP = %v, want %v", got, tt.want)
			}
		})
	}
}

func serveFunc(t *testing.T, h mdns.HandlerFunc) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &mdns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { close(started) }}
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// reverseZone gives each case of the PTR tests its own address.
var reverseZone = []string{
	// Forward-confirmed.
	"2.0.0.127.in-addr.arpa. 300 IN PTR Good.Example.COM.",
	"good.example.com. 300 IN A 127.0.0.2",
	// The name resolves elsewhere.
	"3.0.0.127.in-addr.arpa. 300 IN PTR bad.example.com.",
	"bad.example.com. 300 IN A 127.0.0.99",
	// Two names, only the second confirms.
	"5.0.0.127.in-addr.arpa. 300 IN PTR bad.example.com.",
	"5.0.0.127.in-addr.arpa. 300 IN PTR second.example.com.",
	"second.example.com. 300 IN A 127.0.0.5",
	// A numeric name that even "resolves" to the address.
	"6.0.0.127.in-addr.arpa. 300 IN PTR 127.0.0.6.",
	"127.0.0.6. 300 IN A 127.0.0.6",
	// The PTR lookup fails.
	"7.0.0.127.in-addr.arpa. 300 IN PTR servfail.example.com.",
	// The forward lookup fails.
	"8.0.0.127.in-addr.arpa. 300 IN PTR fwdfail.example.com.",
	"fwdfail.example.com. 300 IN A 127.0.0.8",
	// The name has an address of the other family only.
	"9.0.0.127.in-addr.arpa. 300 IN PTR v6name.example.com.",
	"v6name.example.com. 300 IN AAAA 2001:db8::9",
	// IPv6.
	"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 300 IN PTR v6.example.com.",
	"v6.example.com. 300 IN AAAA 2001:db8::1",
}

func newReverseServer(t *testing.T) *dnstest.Server {
	srv := dnstest.NewServer(t, reverseZone...)
	srv.SetRcode("7.0.0.127.in-addr.arpa", mdns.RcodeServerFailure)
	srv.SetRcode("fwdfail.example.com", mdns.RcodeServerFailure)
	return srv
}

func TestLookupPTR(t *testing.T) {
	t.Parallel()
	r := newResolver(time.Second, newReverseServer(t))

	tests := []struct {
		ip        string
		want      []string
		wantErr   string
		temporary bool
		notFound  bool
	}{
		{ip: "127.0.0.2", want: []string{"good.example.com"}},
		{ip: "::ffff:127.0.0.2", want: []string{"good.example.com"}},
		{ip: "127.0.0.5", want: []string{"bad.example.com", "second.example.com"}},
		{ip: "2001:db8::1", want: []string{"v6.example.com"}},
		{ip: "127.0.0.4", wantErr: "lookup 4.0.0.127.in-addr.arpa PTR: no such domain", notFound: true},
		{ip: "127.0.0.7", wantErr: "server failure (SERVFAIL)", temporary: true},
		{ip: "", wantErr: "invalid ip address"},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			var ip netip.Addr
			if tt.ip != "" {
				ip = netip.MustParseAddr(tt.ip)
			}
			got, err := r.LookupPTR(t.Context(), ip)
			checkErr(t, err, tt.wantErr, tt.temporary, tt.notFound)
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("LookupPTR(%v) = %q, want %q", ip, got, tt.want)
			}
		})
	}
}

func TestVerifiedName(t *testing.T) {
	t.Parallel()
	r := newResolver(time.Second, newReverseServer(t))

	tests := []struct {
		name      string
		ip        string
		want      string
		temporary bool
	}{
		{name: "confirmed", ip: "127.0.0.2", want: "good.example.com"},
		{name: "ipv4 mapped", ip: "::ffff:127.0.0.2", want: "good.example.com"},
		{name: "ipv6", ip: "2001:db8::1", want: "v6.example.com"},
		{name: "forward mismatch", ip: "127.0.0.3", want: "unknown"},
		{name: "second name confirms", ip: "127.0.0.5", want: "second.example.com"},
		{name: "no ptr", ip: "127.0.0.4", want: "unknown"},
		{name: "numeric ptr", ip: "127.0.0.6", want: "unknown"},
		{name: "ptr servfail", ip: "127.0.0.7", want: "unknown", temporary: true},
		{name: "forward servfail", ip: "127.0.0.8", want: "unknown", temporary: true},
		{name: "other family only", ip: "127.0.0.9", want: "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, temporary := r.VerifiedName(t.Context(), netip.MustParseAddr(tt.ip))
			if got != tt.want || temporary != tt.temporary {
				t.Errorf("VerifiedName(%s) = %q, %v, want %q, %v", tt.ip, got, temporary, tt.want, tt.temporary)
			}
		})
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"127.0.0.1", "127.0.0.1:53"},
		{"127.0.0.1:5353", "127.0.0.1:5353"},
		{"::1", "[::1]:53"},
		{"[::1]", "[::1]:53"},
		{"[::1]:5353", "[::1]:5353"},
		{"fe80::1%eth0", "[fe80::1%eth0]:53"},
	}
	for _, tt := range tests {
		r := resolver.New([]string{tt.in}, time.Second)
		if len(r.Servers) != 1 || r.Servers[0] != tt.want {
			t.Errorf("New(%q).Servers = %q, want [%q]", tt.in, r.Servers, tt.want)
		}
	}
}

func TestFromResolvConf(t *testing.T) {
	tests := []struct {
		name        string
		conf        string
		wantServers []string
		wantTimeout time.Duration
	}{
		{
			name:        "servers and timeout",
			conf:        "# comment\nsearch example.com\nnameserver 192.0.2.1\nnameserver 2001:db8::53\noptions timeout:2 attempts:3\n",
			wantServers: []string{"192.0.2.1:53", "[2001:db8::53]:53"},
			wantTimeout: 2 * time.Second,
		},
		{
			name:        "no nameserver means local",
			conf:        "search example.com\n",
			wantServers: []string{"127.0.0.1:53", "[::1]:53"},
			wantTimeout: 5 * time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "resolv.conf")
			if err := os.WriteFile(path, []byte(tt.conf), 0o644); err != nil {
				t.Fatal(err)
			}
			r, err := resolver.FromResolvConf(path)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(r.Servers, tt.wantServers) || r.Timeout != tt.wantTimeout {
				t.Errorf("FromResolvConf = %q, %v, want %q, %v", r.Servers, r.Timeout, tt.wantServers, tt.wantTimeout)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		_, err := resolver.FromResolvConf(filepath.Join(t.TempDir(), "missing"))
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("FromResolvConf error = %v, want it to wrap os.ErrNotExist", err)
		}
	})
}

func TestNoServers(t *testing.T) {
	var r resolver.Resolver
	_, err := r.LookupMX(t.Context(), "example.com")
	if !resolver.IsTemporary(err) {
		t.Errorf("LookupMX without servers: error = %v, want temporary", err)
	}
}
