package engine

import (
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// The queue's compactions borrow large buffers (Badger's table
// builders) in bursts after heavy writes. Go frees them at the next GC
// but its scavenger hands the pages back to the system slowly: after
// 200,000 messages the process kept over 500 MB of free heap for
// minutes. trimMemory returns them once they are a sizeable share, so
// the server's footprint follows its live memory, not its busiest
// minute.

const (
	trimEvery     = 5 * time.Second
	trimThreshold = 32 << 20 // free, unreturned heap worth a forced GC
)

func (e *Engine) trimMemory() {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}
	t := time.NewTicker(trimEvery)
	defer t.Stop()
	for {
		select {
		case <-e.done:
			return
		case <-t.C:
			metrics.Read(sample)
			if sample[0].Value.Kind() == metrics.KindUint64 && sample[0].Value.Uint64() > trimThreshold {
				debug.FreeOSMemory()
			}
		}
	}
}
