//go:build redis

package state

import (
	"crypto/rand"
	"os"
	"testing"
	"time"
)

// TestRealRedis runs the suite against a real redis-server at
// $LARKPOST_REDIS (go test -tags redis, LARKPOST_REDIS=redis://127.0.0.1:6390/0).
// Its clock cannot be moved, so the suite runs on a unit of 100ms and
// sleeps; each run uses a prefix of its own instead of flushing the
// database.
func TestRealRedis(t *testing.T) {
	url := os.Getenv("LARKPOST_REDIS")
	if url == "" {
		t.Fatal("LARKPOST_REDIS is not set: want a redis:// URL of a server the test may write to")
	}
	runSuite(t, backend{
		name: "redis",
		// Real sleeps on a loaded CI machine overshot a 50 ms tolerance
		// by 5 ms once: units of 200 ms leave 100 ms of slack.
		unit:      200 * time.Millisecond,
		tol:       100 * time.Millisecond,
		onceClock: true,
		open: func(t testing.TB, nodes int) ([]Store, clock) {
			prefix := "larkpost-test:" + rand.Text() + ":"
			return redisNodes(t, url, RedisOptions{Prefix: prefix}, nodes), realClock{}
		},
	})
}
