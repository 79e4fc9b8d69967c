package engine

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkSMTPDeliver is the end-to-end load run: real SMTP sessions on
// 127.0.0.1, one 2 KB message per connection (as smtp-source does), each
// acknowledged only after its queue commit is fsynced (delivery follows
// from the queue). It reports throughput and per-message latency
// percentiles of the acknowledgements.
func BenchmarkSMTPDeliver(b *testing.B) {
	body := "From: bench@example.org\r\nTo: benchuser@mx.test\r\nSubject: bench\r\n\r\n" +
		strings.Repeat(strings.Repeat("x", 78)+"\r\n", 26)
	for _, conc := range []int{1, 10, 50} {
		b.Run(fmt.Sprintf("sessions=%d", conc), func(b *testing.B) {
			h := start(b, "")
			var next atomic.Int64
			var mu sync.Mutex
			lat := make([]time.Duration, 0, b.N)
			var wg sync.WaitGroup
			b.ResetTimer()
			t0 := time.Now()
			for g := 0; g < conc; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						s := time.Now()
						if _, err := send(b, h.addr, "bench@example.org", []string{"benchuser@mx.test"}, body); err != nil {
							b.Error(err)
							return
						}
						d := time.Since(s)
						mu.Lock()
						lat = append(lat, d)
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(t0)
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			if len(lat) > 0 {
				b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "msgs/s")
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}
