package queue

// Queue ids: the SMTP server hands one out at the first accepted
// recipient, as Postfix does.

import (
	"sync/atomic"
	"time"
)

// idAlphabet is Crockford's base32 without I, L, O and U: ids can be read
// aloud and typed without ambiguity, and sort in time order as strings.
const idAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

var lastID atomic.Uint64

// NewID returns a queue id: 13 characters, unique within the process and
// ordered by creation time across restarts (microseconds since the epoch in
// the high bits, a counter in the low 10 bits).
func NewID() string {
	for {
		last := lastID.Load()
		next := uint64(time.Now().UnixMicro()) << 10
		if next <= last {
			next = last + 1
		}
		if lastID.CompareAndSwap(last, next) {
			return encodeID(next)
		}
	}
}

func encodeID(v uint64) string {
	var b [13]byte
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = idAlphabet[v&31]
		v >>= 5
	}
	return string(b[:])
}
