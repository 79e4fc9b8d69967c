package state

import (
	"crypto/rand"
	"os"
	"strconv"
	"testing"
	"time"
)

// benchBackends are the backends the benchmarks compare: Badger pays a
// synced commit per write, miniredis a loopback round trip per call, and
// with LARKPOST_REDIS set (redis://127.0.0.1:6379/0), a real Redis.
var benchBackends = func() []backend {
	bs := []backend{badgerBackend, memoryBackend, miniredisBackend}
	if url := os.Getenv("LARKPOST_REDIS"); url != "" {
		bs = append(bs, backend{name: "redis", open: func(t testing.TB, nodes int) ([]Store, clock) {
			return redisNodes(t, url, RedisOptions{Prefix: "larkpost-bench:" + rand.Text() + ":"}, nodes), realClock{}
		}})
	}
	return bs
}()

func BenchmarkTake(b *testing.B) {
	for _, be := range benchBackends {
		b.Run(be.name, func(b *testing.B) {
			stores, clk := be.open(b, 1)
			s, ctx, now := stores[0], b.Context(), clk.Now()
			r := Rate{N: 1 << 30, Per: time.Second}
			for i := 0; b.Loop(); i++ {
				if _, err := s.Take(ctx, "ip:192.0.2."+strconv.Itoa(i%256), r, 100, 1, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkGreylist(b *testing.B) {
	for _, be := range benchBackends {
		b.Run(be.name, func(b *testing.B) {
			stores, clk := be.open(b, 1)
			s, ctx, now := stores[0], b.Context(), clk.Now()
			p := DefaultGreyParams
			for i := 0; b.Loop(); i++ {
				// new triplets, half of them retried: the common mix
				tr := "192.0.2.0/24\x00sender" + strconv.Itoa(i/2) + "@example.org\x00rcpt@example.com"
				if _, err := s.Greylist(ctx, tr, "192.0.2.0/24", p, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
