package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/dkimsign"
	"github.com/larkpost/larkpost/engine/resolver/dnstest"
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
		b.Run(fmt.Sprintf("sessions=%d", conc), func(b *testing.B) { loadRun(b, conc, body) })
	}
}

// BenchmarkSMTPDeliverLarge is the same at 10 sessions with 100 KB and
// 1 MB bodies of 76-character lines (MB/s in the output): every byte
// crosses go-smtp's DATA reader and the receiver's checks, which must
// not go one byte at a time.
func BenchmarkSMTPDeliverLarge(b *testing.B) {
	for _, size := range []int{100 << 10, 1 << 20} {
		body := "From: bench@example.org\r\nTo: benchuser@mx.test\r\nSubject: bench\r\n\r\n" +
			strings.Repeat(strings.Repeat("y", 76)+"\r\n", size/78)
		b.Run(fmt.Sprintf("size=%dKB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			loadRun(b, 10, body)
		})
	}
}

// loadRun sends b.N messages over conc concurrent sessions, one message
// per connection, and reports msgs/s and the p50/p99 of the sessions.
func loadRun(b *testing.B, conc int, body string) {
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
}

// BenchmarkSMTPAuthChain is end to end with and without the sender checks
// in on_data (SPF through an include, DKIM on a 20 KB message signed with
// RSA-2048, DMARC), DNS from an in-process server behind the cache, 10
// sessions, one message each.
func BenchmarkSMTPAuthChain(b *testing.B) {
	key, txt, err := dkimsign.Keygen("rsa", 2048)
	if err != nil {
		b.Fatal(err)
	}
	kf := filepath.Join(b.TempDir(), "k.key")
	os.WriteFile(kf, key, 0o600)
	signer, err := dkimsign.New([]dkimsign.KeyConfig{{Domain: "partner.example", Selector: "s1", File: kf}}, dkimsign.Options{})
	if err != nil {
		b.Fatal(err)
	}
	header := "From: Ann <ann@partner.example>\r\nTo: benchuser@mx.test\r\nSubject: report\r\nMessage-ID: <r@partner.example>\r\n"
	text := strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n", 270)
	sig, err := signer.Sign("partner.example", []byte(header), strings.NewReader(text))
	if err != nil {
		b.Fatal(err)
	}
	body := sig + header + "\r\n" + text
	zone := []string{
		`partner.example. 300 IN TXT "v=spf1 ip4:198.51.100.0/24 include:_spf.partner.example -all"`,
		`_spf.partner.example. 300 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"`,
		`_dmarc.partner.example. 300 IN TXT "v=DMARC1; p=reject"`,
		`s1._domainkey.partner.example. 300 IN TXT "` + txt[:200] + `" "` + txt[200:] + `"`,
	}
	dns := dnstest.NewServer(b, zone...)
	hooks := map[string]string{
		"none": "",
		"authchain": `
def on_data(tx, msg):
    s = spf.check(tx.conn.ip, tx.conn.helo, tx.sender)
    d = dmarc.check(msg, spf = s, dkim = dkim.verify(msg))
    if d.result != "pass":
        return reject("dmarc " + d.result + ": " + d.reason)
`,
	}
	for _, name := range []string{"none", "authchain"} {
		b.Run("hook="+name, func(b *testing.B) {
			h := start(b, fmt.Sprintf(`config(resolvers = [%q], networks = ["192.0.2.0/24"], destinations = ["mx.test"])`, dns.Addr)+hooks[name])
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			t0 := time.Now()
			for range 10 {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						if _, err := send(b, h.addr, "ann@partner.example", []string{"benchuser@mx.test"}, body); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "msgs/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}
