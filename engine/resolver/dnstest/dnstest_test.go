package dnstest_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/larkpost/larkpost/engine/resolver/dnstest"
)

func exchange(t *testing.T, addr, network, name string, qtype uint16, edns bool) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if edns {
		m.SetEdns0(1232, false)
	}
	c := &dns.Client{Net: network, Timeout: time.Second}
	in, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("exchange %s %s over %s: %v", name, dns.TypeToString[qtype], network, err)
	}
	return in
}

// answers renders the answer section compactly, e.g. "CNAME a.example. | A 127.0.0.1".
func answers(m *dns.Msg) string {
	var out []string
	for _, rr := range m.Answer {
		fields := strings.Fields(rr.String())
		out = append(out, strings.Join(fields[3:], " "))
	}
	return strings.Join(out, " | ")
}

func TestServerAnswers(t *testing.T) {
	t.Parallel()
	srv := dnstest.NewServer(t,
		"Example.COM. 300 IN MX 10 mx.example.com.",
		"mx.example.com. 300 IN A 127.0.0.1",
		"www.example.com. 300 IN CNAME mx.example.com.",
		"dangling.example.com. 300 IN CNAME gone.example.com.",
		"_dmarc.sub.example.org. 300 IN TXT \"v=DMARC1\"",
	)

	tests := []struct {
		name      string
		qtype     uint16
		wantRcode int
		want      string
	}{
		{name: "example.com.", qtype: dns.TypeMX, wantRcode: dns.RcodeSuccess, want: "MX 10 mx.example.com."},
		{name: "EXAMPLE.com.", qtype: dns.TypeMX, wantRcode: dns.RcodeSuccess, want: "MX 10 mx.example.com."},
		{name: "example.com.", qtype: dns.TypeA, wantRcode: dns.RcodeSuccess},
		{name: "missing.example.com.", qtype: dns.TypeA, wantRcode: dns.RcodeNameError},
		{name: "www.example.com.", qtype: dns.TypeA, wantRcode: dns.RcodeSuccess, want: "CNAME mx.example.com. | A 127.0.0.1"},
		{name: "www.example.com.", qtype: dns.TypeCNAME, wantRcode: dns.RcodeSuccess, want: "CNAME mx.example.com."},
		{name: "www.example.com.", qtype: dns.TypeMX, wantRcode: dns.RcodeSuccess, want: "CNAME mx.example.com."},
		{name: "dangling.example.com.", qtype: dns.TypeA, wantRcode: dns.RcodeNameError, want: "CNAME gone.example.com."},
		// An empty non-terminal exists, as in a real zone.
		{name: "sub.example.org.", qtype: dns.TypeTXT, wantRcode: dns.RcodeSuccess},
	}
	for _, tt := range tests {
		t.Run(tt.name+dns.TypeToString[tt.qtype], func(t *testing.T) {
			in := exchange(t, srv.Addr, "udp", tt.name, tt.qtype, false)
			if in.Rcode != tt.wantRcode || answers(in) != tt.want {
				t.Errorf("got %s %q, want %s %q", dns.RcodeToString[in.Rcode], answers(in), dns.RcodeToString[tt.wantRcode], tt.want)
			}
			if !in.Authoritative {
				t.Error("reply is not authoritative")
			}
		})
	}
}

func TestServerTruncatesUDPOnly(t *testing.T) {
	t.Parallel()
	var rrs []string
	for i := range 60 {
		rrs = append(rrs, fmt.Sprintf("big.example. 300 IN TXT \"record %02d %s\"", i, strings.Repeat("x", 40)))
	}
	srv := dnstest.NewServer(t, rrs...)

	tests := []struct {
		network   string
		edns      bool
		truncated bool
		maxLen    int
	}{
		{network: "udp", truncated: true, maxLen: dns.MinMsgSize},
		{network: "udp", edns: true, truncated: true, maxLen: 1232},
		{network: "tcp", edns: true, maxLen: dns.MaxMsgSize},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s edns=%v", tt.network, tt.edns), func(t *testing.T) {
			in := exchange(t, srv.Addr, tt.network, "big.example.", dns.TypeTXT, tt.edns)
			if in.Truncated != tt.truncated {
				t.Errorf("TC = %v, want %v", in.Truncated, tt.truncated)
			}
			if !tt.truncated && len(in.Answer) != 60 {
				t.Errorf("got %d records, want 60", len(in.Answer))
			}
			// The server compressed the reply to make it fit; Len
			// measures it uncompressed unless told otherwise.
			in.Compress = true
			if n := in.Len(); n > tt.maxLen {
				t.Errorf("reply is %d bytes, want at most %d", n, tt.maxLen)
			}
		})
	}
}

func TestServerSetRcodeAndAdd(t *testing.T) {
	t.Parallel()
	srv := dnstest.NewServer(t, "a.example. 300 IN A 127.0.0.1")

	srv.SetRcode("A.example", dns.RcodeServerFailure)
	if in := exchange(t, srv.Addr, "udp", "a.example.", dns.TypeMX, false); in.Rcode != dns.RcodeServerFailure {
		t.Errorf("after SetRcode: rcode %s, want SERVFAIL", dns.RcodeToString[in.Rcode])
	}
	srv.SetRcode("a.example.", dns.RcodeSuccess)
	if in := exchange(t, srv.Addr, "udp", "a.example.", dns.TypeA, false); in.Rcode != dns.RcodeSuccess || len(in.Answer) != 1 {
		t.Errorf("after reset: %s with %d answers, want NOERROR with 1", dns.RcodeToString[in.Rcode], len(in.Answer))
	}

	srv.Add("b.example. 300 IN A 127.0.0.2")
	if in := exchange(t, srv.Addr, "tcp", "b.example.", dns.TypeA, false); answers(in) != "A 127.0.0.2" {
		t.Errorf("after Add: %q, want A 127.0.0.2", answers(in))
	}

	srv.SetRcode("a.example", -1)
	m := new(dns.Msg)
	m.SetQuestion("a.example.", dns.TypeA)
	c := &dns.Client{Timeout: 100 * time.Millisecond}
	if _, _, err := c.Exchange(m, srv.Addr); err == nil {
		t.Error("dropped query got a reply")
	}

	if n := srv.Queries(); n != 4 {
		t.Errorf("Queries() = %d, want 4", n)
	}
}
