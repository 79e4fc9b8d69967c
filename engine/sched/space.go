package sched

import (
	"os"
	"path/filepath"
	"syscall"

	"github.com/larkpost/larkpost/engine/deliver"
	"github.com/larkpost/larkpost/queue"
)

// roomFor keeps local deliveries from taking the space the queue keeps
// for itself: a mailbox on the queue's file system is not written while
// that is short of room; the recipient is deferred (4.3.1), and remote
// deliveries, which free space, go on.
func (s *Scheduler) roomFor(path string, size int64) (deliver.Status, bool) {
	if s.config().QueueDir == "" || !s.onQueueDevice(path) {
		return deliver.Status{}, true
	}
	// Room for the copy with its line ends and trace headers, twice over.
	if s.q.HasRoom(2*size+4096, 0) {
		return deliver.Status{}, true
	}
	return deliver.Temp("4.3.1", "insufficient system storage: the queue file system is nearly full"), false
}

// onQueueDevice reports whether path (or its nearest existing parent) is
// on the queue's file system.
func (s *Scheduler) onQueueDevice(path string) bool {
	s.queueDevOnce.Do(func() { s.queueDev, s.queueDevOK = device(s.config().QueueDir) })
	d, ok := device(path)
	return ok && s.queueDevOK && d == s.queueDev
}

func device(path string) (uint64, bool) {
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		if fi, err := os.Stat(p); err == nil {
			st, ok := fi.Sys().(*syscall.Stat_t)
			return uint64(st.Dev), ok
		}
		if p == filepath.Dir(p) {
			return 0, false
		}
	}
}

// canRecord reports whether the queue has room to record delivery
// results (updates go down to half the queue's reserve). Below that the
// scheduler pauses: a delivery whose result cannot be written would be
// made again and again.
func (s *Scheduler) canRecord() bool {
	ok := s.q.Free() >= queue.Reserve/2
	if was := s.paused.Swap(!ok); was == ok {
		if ok {
			s.log.Info("queue file system has room again: delivery resumes")
		} else {
			s.log.Warn("warning: queue file system is full: delivery paused")
		}
	}
	return ok
}
