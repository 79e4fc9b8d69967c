package smtpd

import (
	"sync"
	"sync/atomic"
)

// During a DATA or BDAT transfer the socket is read 64 KB at a time, not
// in the 4 KB that go-smtp's buffer asks for: a 1 MB body took 256 reads,
// each a syscall and a deadline set, and the reads were a tenth of the
// server's CPU for it. The bytes read ahead are handed out to later Reads
// in order, so go-smtp sees the same stream; what follows the end of the
// data (pipelined commands) comes out of them just as it would have come
// out of the socket.
//
// Only a transfer past its first aheadAfter bytes reads ahead: most
// messages are a few KB, read in one or two reads anyway, and taking a
// 64 KB buffer for each of them only churned the heap (peak PSS at 50
// sessions 61-64 MiB against 56-58). The buffers are shared: at most
// aheadMax are out at once (4 MiB in all), so a crowd of sessions idle
// in DATA cannot turn them into memory; a transfer that finds none free
// reads as before. A buffer goes back when it is empty, when Read finds
// no transfer running (what is left, the commands pipelined after the
// data, is copied out first), when a read fails, and at Close.
const (
	aheadSize  = 64 << 10
	aheadMax   = 64
	aheadAfter = 32 << 10
)

var (
	aheadPool = sync.Pool{New: func() any { b := make([]byte, aheadSize); return &b }}
	aheadOut  atomic.Int32 // buffers taken and not yet put back
)

// readAhead is a connection's bytes read and not yet handed out.
// Only Read uses it, and Close when no Read is under way (mu).
type readAhead struct {
	mu   sync.Mutex
	buf  *[]byte // the shared buffer held, or nil
	left []byte  // what is left to hand out: in buf, or a copy of its own
}

// take gets a shared buffer, or nil when aheadMax are out.
func (a *readAhead) take() []byte {
	if aheadOut.Add(1) > aheadMax {
		aheadOut.Add(-1)
		return nil
	}
	a.buf = aheadPool.Get().(*[]byte)
	return *a.buf
}

// give hands out what is left, as much as fits in b.
func (a *readAhead) give(b []byte) int {
	n := copy(b, a.left)
	a.left = a.left[n:]
	if len(a.left) == 0 {
		a.left = nil
		a.release()
	}
	return n
}

// keep holds p, what a read into the shared buffer brought beyond what
// was handed out at once.
func (a *readAhead) keep(p []byte) {
	a.left = p
	if len(p) == 0 {
		a.left = nil
		a.release()
	}
}

// settle gives the shared buffer back between transfers: what is left
// (a few pipelined commands) is copied out first.
func (a *readAhead) settle() {
	if a.buf != nil && len(a.left) > 0 {
		a.left = append([]byte(nil), a.left...)
	}
	a.release()
}

// drop forgets what is left and gives the buffer back.
func (a *readAhead) drop() {
	a.left = nil
	a.release()
}

func (a *readAhead) release() {
	if a.buf != nil {
		aheadPool.Put(a.buf)
		a.buf = nil
		aheadOut.Add(-1)
	}
}
