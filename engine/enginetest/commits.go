package enginetest

import "sync/atomic"

// BusyCommits is a queue that commits all the time, each commit finished
// by the time anyone asks for the next (maildir.Commits): a delivery that
// shares the queue's commits asks for one before its file's fsync and
// one before its directory's.
type BusyCommits struct {
	Device uint64 // the file system it syncs
	asks   atomic.Int32
}

func (c *BusyCommits) Dev() uint64 { return c.Device }
func (c *BusyCommits) Busy() bool  { return true }

// Next returns a closed channel and counts the call.
func (c *BusyCommits) Next() <-chan struct{} {
	c.asks.Add(1)
	ch := make(chan struct{})
	close(ch)
	return ch
}

// Asked is how many commits were asked for.
func (c *BusyCommits) Asked() int { return int(c.asks.Load()) }
