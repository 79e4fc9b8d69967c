package engine

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/larkpost/larkpost/engine/enginetest"
	"github.com/larkpost/larkpost/engine/resolver/dnstest"
)

// scrape reads /metrics over HTTP as Prometheus does.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %s\n%s", resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// value is the counter, gauge or histogram count of the series of name
// with exactly these labels (others may exist); 0 if there is none.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := fams[name]
	if f == nil {
		return 0
	}
	var sum float64
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

// TestMetricsScrape sends mail through a real server and scrapes its
// /metrics over HTTP: each counter moved by what the test did. Not
// parallel: the DNS observer is process-wide.
func TestMetricsScrape(t *testing.T) {
	dns := dnstest.NewServer(t, "listed.test. 60 IN A 127.0.0.2")
	h := start(t, fmt.Sprintf(`config(networks = ["10.9.0.0/16"], destinations = ["mx.test"], local_recipients = ["alice", "bob", "hold", "dns", "spam", "loop"],
    resolvers = [%q], metrics_listen = "127.0.0.1:0", smtpd_client_connection_count_limit = 1, smtpd_timeout = "1s")
def on_rcpt(tx, rcpt):
    if rcpt.user == "spam":
        return reject("5.7.1 no spam here")
    if rcpt.user == "hold":
        return hold("review")
    if rcpt.user == "dns":
        dns.lookup_a("listed.test")
        dns.lookup_a("missing.test")
    if rcpt.user == "loop":
        for i in range(10000000):
            pass
`, dns.Addr))
	addr := h.e.HTTPAddr("127.0.0.1:0")
	if addr == nil {
		t.Fatal("metrics_listen is not bound")
	}
	h.e.metrics.SetCensusInterval(0)
	before := scrape(t, addr.String())
	if value(before, "larkpost_smtpd_connections_total") != 0 || value(before, "process_resident_memory_bytes") == 0 {
		t.Fatalf("a fresh server: connections %v, process RSS %v", value(before, "larkpost_smtpd_connections_total"), value(before, "process_resident_memory_bytes"))
	}

	var fams map[string]*dto.MetricFamily
	waitSessions := func(n float64) {
		deadline := time.Now().Add(5 * time.Second)
		for {
			fams = scrape(t, addr.String())
			if value(fams, "larkpost_smtpd_sessions_total") == n || time.Now().After(deadline) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Three sessions with mail, three with a refused recipient (a hook's
	// reject, relay access denied, a hook overrun), a held message and
	// DNS lookups.
	for i, m := range []struct {
		to     string
		refuse bool
	}{
		{"alice@mx.test,bob@mx.test", false},
		{"alice@mx.test", false},
		{"spam@mx.test", true},
		{"x@elsewhere.example", true},
		{"hold@mx.test", false},
		{"dns@mx.test", false},
		{"loop@mx.test", true},
	} {
		_, err := enginetest.Send(h.addr, "ann@example.org", strings.Split(m.to, ","), "Subject: m\r\n\r\nhi\r\n")
		if (err != nil) != m.refuse {
			t.Fatalf("to %s: %v", m.to, err)
		}
		// One session at a time: the client connection limit is 1.
		waitSessions(float64(i + 1))
	}
	h.waitMailbox("alice", 2)
	h.waitMailbox("bob", 1)
	h.waitMailbox("dns", 1)
	// A client that says nothing times out; while it is connected, a
	// second one from the same address is over the limit of 1.
	idle, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	br := bufio.NewReader(idle)
	if l, _ := br.ReadString('\n'); !strings.HasPrefix(l, "220") {
		t.Fatalf("banner %q", l)
	}
	second, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := bufio.NewReader(second).ReadString('\n'); !strings.HasPrefix(l, "421") {
		t.Fatalf("over the limit: %q", l)
	}
	second.Close()
	if l, _ := br.ReadString('\n'); !strings.HasPrefix(l, "421 4.4.2") {
		t.Fatalf("idle client: %q", l)
	}
	waitSessions(9)

	for _, c := range []struct {
		want   float64
		name   string
		labels []string
	}{
		{9, "larkpost_smtpd_connections_total", []string{"listener", "smtp"}},
		{4, "larkpost_smtpd_sessions_total", []string{"listener", "smtp", "outcome", "quit"}},
		{3, "larkpost_smtpd_sessions_total", []string{"listener", "smtp", "outcome", "lost"}}, // the client hung up after a refused RCPT
		{1, "larkpost_smtpd_rejects_total", []string{"stage", "RCPT", "code", "550", "decider", "on_rcpt"}},
		{1, "larkpost_smtpd_rejects_total", []string{"stage", "RCPT", "code", "554", "decider", "default"}}, // relay access denied
		{1, "larkpost_smtpd_rejects_total", []string{"stage", "RCPT", "code", "451", "decider", "on_rcpt"}}, // the overrun
		{1, "larkpost_smtpd_sessions_total", []string{"listener", "smtp", "outcome", "timeout"}},
		{1, "larkpost_smtpd_sessions_total", []string{"listener", "smtp", "outcome", "refused"}},
		{1, "larkpost_smtpd_rejects_total", []string{"stage", "CONNECT", "code", "421", "decider", "limit"}},
		{4, "larkpost_smtpd_rejects_total", nil},
		{4, "larkpost_messages_accepted_total", []string{"origin", "smtp", "listener", "smtp"}},
		{4, "larkpost_deliveries_total", []string{"transport", "local", "status", "sent"}},
		{4, "larkpost_delivery_queue_delay_seconds", []string{"transport", "local"}},
		{4, "larkpost_delivery_transmission_seconds", []string{"transport", "local"}},
		{7, "larkpost_hook_calls_total", []string{"hook", "on_rcpt", "outcome", "ok"}},
		{1, "larkpost_hook_calls_total", []string{"hook", "on_rcpt", "outcome", "overrun"}},
		{8, "larkpost_hook_duration_seconds", []string{"hook", "on_rcpt"}},
		{1, "larkpost_dns_queries_total", []string{"type", "A", "result", "noerror"}},
		{1, "larkpost_dns_queries_total", []string{"type", "A", "result", "nxdomain"}},
		{2, "larkpost_dns_query_duration_seconds", []string{"type", "A"}},
		{1, "larkpost_queue_messages", []string{"state", "hold", "age", "5m"}},
		{0, "larkpost_queue_messages", []string{"state", "active"}},
	} {
		if got := value(fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// Each message is one commit at least; group commit may join them.
	if n := value(fams, "larkpost_queue_commit_seconds"); n < 1 {
		t.Errorf("queue commits = %v", n)
	}
	if fams["larkpost_queue_db_bytes"] == nil {
		t.Error("no queue database size")
	}
	// No address or IP is ever a label value.
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.Contains(l.GetValue(), "@") || strings.Contains(l.GetValue(), "127.0.0.1") {
					t.Errorf("%s has label %s=%q", name, l.GetName(), l.GetValue())
				}
			}
		}
	}
	stats := h.e.metrics.HookStats()
	if len(stats) != 1 || stats[0].Hook != "on_rcpt" || stats[0].Calls != 8 || stats[0].Overruns != 1 || stats[0].P99 <= 0 {
		t.Errorf("HookStats = %+v", stats)
	}
}
