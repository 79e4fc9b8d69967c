package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// QueueSource is what the queue gauges are read from.
type QueueSource interface {
	// Census counts the queued messages by state and age.
	Census(now time.Time) (map[QueueKey]int, error)
	// Sizes are the database's sizes on disk.
	Sizes() (lsm, vlog int64)
}

// QueueKey is one queue gauge's labels.
type QueueKey struct {
	State string // active, deferred, hold
	Age   string // one of AgeBuckets
}

// AgeBuckets are the age labels of larkpost_queue_messages: a message
// is in the first bucket its age is under.
var AgeBuckets = []struct {
	Label string
	Under time.Duration
}{
	{"5m", 5 * time.Minute}, {"1h", time.Hour}, {"1d", 24 * time.Hour}, {"5d", 5 * 24 * time.Hour}, {"older", 1 << 62},
}

// AgeLabel is the age bucket of a message that arrived at arrival.
func AgeLabel(now, arrival time.Time) string {
	age := now.Sub(arrival)
	for _, b := range AgeBuckets {
		if age < b.Under {
			return b.Label
		}
	}
	return "older"
}

// censusEvery bounds how often a scrape walks the queue: the walk reads
// every record, which a scraper every few seconds must not multiply.
const censusEvery = 10 * time.Second

type queueCollector struct {
	src      QueueSource
	every    time.Duration
	messages *prometheus.Desc
	bytes    *prometheus.Desc

	mu     sync.Mutex
	at     time.Time
	counts map[QueueKey]int
}

func newQueueCollector(src QueueSource) *queueCollector {
	return &queueCollector{src: src, every: censusEvery,
		messages: prometheus.NewDesc(ns+"_queue_messages", "Queued messages by state (active, deferred, hold) and age bucket (under 5m, 1h, 1d, 5d, or older); counted at most every 10 s.", []string{"state", "age"}, nil),
		bytes:    prometheus.NewDesc(ns+"_queue_db_bytes", "Size of the queue database on disk: lsm (records, schedule, state) and vlog (Badger's value log); message bodies are files beside it.", []string{"part"}, nil),
	}
}

func (c *queueCollector) docs() []Doc {
	return []Doc{
		{ns + "_queue_messages", "gauge", "Queued messages by state (active, deferred, hold) and age bucket (under 5m, 1h, 1d, 5d, or older); counted at most every 10 s.", []string{"state", "age"}},
		{ns + "_queue_db_bytes", "gauge", "Size of the queue database on disk: lsm (records, schedule, state) and vlog (Badger's value log); message bodies are files beside it.", []string{"part"}},
	}
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.messages
	ch <- c.bytes
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	if now := time.Now(); now.Sub(c.at) >= c.every || c.counts == nil {
		if counts, err := c.src.Census(now); err == nil {
			c.counts, c.at = counts, now
		}
	}
	counts := c.counts
	c.mu.Unlock()
	for _, state := range []string{"active", "deferred", "hold"} {
		for _, b := range AgeBuckets {
			ch <- prometheus.MustNewConstMetric(c.messages, prometheus.GaugeValue, float64(counts[QueueKey{state, b.Label}]), state, b.Label)
		}
	}
	lsm, vlog := c.src.Sizes()
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(lsm), "lsm")
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(vlog), "vlog")
}
