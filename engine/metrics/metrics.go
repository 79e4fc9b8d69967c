// Package metrics counts what the server does, for Prometheus.
//
// Label values come from small fixed sets (listener names, stages, reply
// codes, hook and transport names): never an address, a host name or an
// IP, which would let clients grow the series without bound.
package metrics

import (
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

const ns = "larkpost"

// Latency buckets: hook calls, fsyncs and DNS answers take from tens of
// microseconds to seconds.
var fastBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Queue delay buckets: from a second to the five-day queue lifetime.
var delayBuckets = []float64{.01, .1, 1, 5, 30, 60, 300, 900, 3600, 4 * 3600, 86400, 5 * 86400}

// Metrics holds the server's collectors in a registry of its own, so
// that several servers in one process (tests) do not share counters.
type Metrics struct {
	reg *prometheus.Registry

	connections  *prometheus.CounterVec
	sessions     *prometheus.CounterVec
	rejects      *prometheus.CounterVec
	accepted     *prometheus.CounterVec
	deliveries   *prometheus.CounterVec
	queueDelay   *prometheus.HistogramVec
	transmission *prometheus.HistogramVec
	hookCalls    *prometheus.CounterVec
	hookDuration *prometheus.HistogramVec
	dnsQueries   *prometheus.CounterVec
	dnsDuration  *prometheus.HistogramVec
	tls          *prometheus.CounterVec
	commit       prometheus.Histogram
	commitBatch  prometheus.Histogram

	queue      *queueCollector // nil without a QueueSource
	collectors []prometheus.Collector
	docs       []Doc
	hooks      sync.Map // hook name → true: the hooks seen, for HookStats
}

// New makes the collectors; queue, when not nil, is asked for the queue
// gauges at each scrape (at most every 10 s).
func New(queue QueueSource) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: name, Help: help}, labels)
		m.reg.MustRegister(c)
		m.collectors = append(m.collectors, c)
		m.docs = append(m.docs, Doc{ns + "_" + name, "counter", help, labels})
		return c
	}
	histogram := func(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: name, Help: help, Buckets: buckets}, labels)
		m.reg.MustRegister(h)
		m.collectors = append(m.collectors, h)
		m.docs = append(m.docs, Doc{ns + "_" + name, "histogram", help, labels})
		return h
	}
	m.connections = counter("smtpd_connections_total", "SMTP connections accepted by the kernel, before any limit, by listener.", "listener")
	m.sessions = counter("smtpd_sessions_total", "SMTP sessions ended, by listener and how: quit, timeout, refused (a limit or on_connect), lost (closed without QUIT).", "listener", "outcome")
	m.rejects = counter("smtpd_rejects_total", "Refused SMTP commands by listener, stage (CONNECT, HELO, MAIL, RCPT, END-OF-MESSAGE, AUTH, ...), reply code and what decided: a hook's name, default (the built-in policy), milter, limit or smtpd (protocol checks).", "listener", "stage", "code", "decider")
	m.accepted = counter("messages_accepted_total", "Messages written to the queue, by origin (smtp, sendmail, internal: notices, bounces, forwards) and listener (\"\" for sendmail and internal).", "origin", "listener")
	m.deliveries = counter("deliveries_total", "Delivery results per recipient, by transport and status (sent, deferred, bounced, expired).", "transport", "status")
	m.queueDelay = histogram("delivery_queue_delay_seconds", "Time from arrival to the start of a delivery attempt, by transport.", delayBuckets, "transport")
	m.transmission = histogram("delivery_transmission_seconds", "Time a delivery attempt took in its agent, by transport.", fastBuckets, "transport")
	m.hookCalls = counter("hook_calls_total", "Hook and filter script calls by hook (filter: users' filter scripts) and outcome: ok, failed, overrun (a step, time or memory budget stopped it).", "hook", "outcome")
	m.hookDuration = histogram("hook_duration_seconds", "Duration of hook and filter calls, by hook.", fastBuckets, "hook")
	m.dnsQueries = counter("dns_queries_total", "DNS queries sent (cached answers are not), by type and result: noerror, nxdomain, servfail, refused, timeout, error.", "type", "result")
	m.dnsDuration = histogram("dns_query_duration_seconds", "Time to a DNS server's answer, by query type.", fastBuckets, "type")
	m.tls = counter("smtpd_tls_handshakes_total", "Inbound TLS handshakes by listener and negotiated version (\"failed\" when the handshake failed).", "listener", "version")
	m.commit = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "queue_commit_seconds",
		Help: "Duration of durable queue commits, fsyncs included.", Buckets: fastBuckets})
	m.commitBatch = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "queue_commit_requests",
		Help: "Requests carried by one queue commit (group commit shares an fsync between them).", Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128}})
	m.collectors = append(m.collectors, m.commit, m.commitBatch)
	m.docs = append(m.docs, Doc{ns + "_queue_commit_seconds", "histogram", "Duration of durable queue commits, fsyncs included.", nil},
		Doc{ns + "_queue_commit_requests", "histogram", "Requests carried by one queue commit (group commit shares an fsync between them).", nil})
	m.reg.MustRegister(m.commit, m.commitBatch,
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector())
	if queue != nil {
		m.queue = newQueueCollector(queue)
		m.reg.MustRegister(m.queue)
		m.collectors = append(m.collectors, m.queue)
		m.docs = append(m.docs, m.queue.docs()...)
	}
	return m
}

// Handler serves the metrics in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// SetCensusInterval changes how often a scrape may walk the queue (tests
// scrape twice within the default 10 s).
func (m *Metrics) SetCensusInterval(d time.Duration) {
	m.queue.mu.Lock()
	m.queue.every = d
	m.queue.mu.Unlock()
}

// Doc describes one metric for the reference.
type Doc struct {
	Name, Type, Help string
	Labels           []string
}

// Docs describe larkpost's own metrics, in the order they are made.
func (m *Metrics) Docs() []Doc { return m.docs }

// Reference is docs/reference/metrics.md.
func Reference(docs []Doc) []byte {
	var b strings.Builder
	b.WriteString("# Metrics reference\n\nGenerated by `go generate ./...` from engine/metrics; do not edit.\n\n")
	b.WriteString("[← Documentation index](../index.md) · [Monitoring](../guide/monitoring.md)\n\n")
	b.WriteString("Served at `/metrics` on [`metrics_listen`](settings.md#metrics_listen) in Prometheus' text format, " +
		"with the standard `process_*` (RSS, CPU, open files) and `go_*` (heap, GC, goroutines) metrics beside these. " +
		"Label values come from small fixed sets: never an address, a host name or an IP.\n\n")
	b.WriteString("| metric | type | labels | meaning |\n|---|---|---|---|\n")
	for _, d := range docs {
		labels := "—"
		if len(d.Labels) > 0 {
			labels = "`" + strings.Join(d.Labels, "`, `") + "`"
		}
		b.WriteString("| `" + d.Name + "` | " + d.Type + " | " + labels + " | " + strings.ReplaceAll(d.Help, "|", "\\|") + " |\n")
	}
	return []byte(b.String())
}

// Names are the names of larkpost's own metrics (not process_ or go_),
// whether or not they have series yet.
func (m *Metrics) Names() []string {
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range m.collectors {
			c.Describe(ch)
		}
		close(ch)
	}()
	var out []string
	for d := range ch {
		s := d.String() // Desc{fqName: "larkpost_...", ...}
		if i := strings.Index(s, `fqName: "`); i >= 0 {
			s = s[i+len(`fqName: "`):]
			out = append(out, s[:strings.IndexByte(s, '"')])
		}
	}
	sort.Strings(out)
	return out
}

// Registry is where the collectors are, for tests.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Connected counts a connection to listener.
func (m *Metrics) Connected(listener string) { m.connections.WithLabelValues(listener).Inc() }

// Disconnected counts a session's end.
func (m *Metrics) Disconnected(listener, outcome string) {
	m.sessions.WithLabelValues(listener, outcome).Inc()
}

// Rejected counts a refused command.
func (m *Metrics) Rejected(listener, stage string, code int, decider string) {
	m.rejects.WithLabelValues(listener, stage, strconv.Itoa(code), decider).Inc()
}

// Accepted counts a message queued.
func (m *Metrics) Accepted(origin, listener string) {
	m.accepted.WithLabelValues(origin, listener).Inc()
}

// Delivered counts one recipient's delivery result.
func (m *Metrics) Delivered(transport, status string, queueDelay, transmission time.Duration) {
	m.deliveries.WithLabelValues(transport, status).Inc()
	m.queueDelay.WithLabelValues(transport).Observe(queueDelay.Seconds())
	if status != "expired" {
		m.transmission.WithLabelValues(transport).Observe(transmission.Seconds())
	}
}

// Hook counts one hook or filter call.
func (m *Metrics) Hook(hook string, d time.Duration, outcome string) {
	m.hookCalls.WithLabelValues(hook, outcome).Inc()
	m.hookDuration.WithLabelValues(hook).Observe(d.Seconds())
	// A lock-free read on every call; the store happens once per hook.
	if _, seen := m.hooks.Load(hook); !seen {
		m.hooks.Store(hook, true)
	}
}

// DNS counts one query sent to a server.
func (m *Metrics) DNS(qtype string, d time.Duration, result string) {
	m.dnsQueries.WithLabelValues(qtype, result).Inc()
	m.dnsDuration.WithLabelValues(qtype).Observe(d.Seconds())
}

// TLS counts an inbound handshake; version "" is a failed one.
func (m *Metrics) TLS(listener, version string) {
	if version == "" {
		version = "failed"
	}
	m.tls.WithLabelValues(listener, version).Inc()
}

// Commit counts one durable queue commit.
func (m *Metrics) Commit(d time.Duration, requests int) {
	m.commit.Observe(d.Seconds())
	m.commitBatch.Observe(float64(requests))
}

// HookStat is one hook's call statistics, for the web page's table.
type HookStat struct {
	Hook     string        `json:"hook"`
	Calls    uint64        `json:"calls"`
	Failures uint64        `json:"failures"`
	Overruns uint64        `json:"overruns"` // stopped by hook_timeout or the step/memory budget
	Mean     time.Duration `json:"mean"`
	P99      time.Duration `json:"p99"` // the upper bound of the bucket holding the 99th percentile
}

// HookStats returns the statistics of every hook called so far, by name.
func (m *Metrics) HookStats() []HookStat {
	if m == nil {
		return nil
	}
	var names []string
	m.hooks.Range(func(h, _ any) bool {
		names = append(names, h.(string))
		return true
	})
	sort.Strings(names)
	out := make([]HookStat, 0, len(names))
	for _, h := range names {
		st := HookStat{Hook: h}
		var d dto.Metric
		if err := m.hookDuration.WithLabelValues(h).(prometheus.Histogram).Write(&d); err != nil {
			continue
		}
		hist := d.GetHistogram()
		st.Calls = hist.GetSampleCount()
		if st.Calls > 0 {
			st.Mean = time.Duration(hist.GetSampleSum() / float64(st.Calls) * float64(time.Second))
			st.P99 = quantile(hist, 0.99)
		}
		st.Failures = counterValue(m.hookCalls.WithLabelValues(h, "failed"))
		st.Overruns = counterValue(m.hookCalls.WithLabelValues(h, "overrun"))
		out = append(out, st)
	}
	return out
}

func counterValue(c prometheus.Counter) uint64 {
	var d dto.Metric
	if c.Write(&d) != nil {
		return 0
	}
	return uint64(d.GetCounter().GetValue())
}

// quantile is the upper bound of the bucket where the q-quantile falls
// (+Inf's: the largest bound, as nothing better is known).
func quantile(h *dto.Histogram, q float64) time.Duration {
	want := uint64(math.Ceil(q * float64(h.GetSampleCount())))
	var last float64
	for _, b := range h.GetBucket() {
		last = b.GetUpperBound()
		if b.GetCumulativeCount() >= want {
			return time.Duration(last * float64(time.Second))
		}
	}
	return time.Duration(last * float64(time.Second))
}
