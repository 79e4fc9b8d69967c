package enginetest

import (
	"os"
	"syscall"
)

// FailingBody is a queued message (a deliver.Body) whose file cannot be
// read past Fail: an I/O error on the queue's disk halfway through.
type FailingBody struct {
	B    []byte
	Fail int64
}

func (f FailingBody) Size() int64 { return int64(len(f.B)) }

func (f FailingBody) ReadAt(p []byte, off int64) (int, error) {
	if off >= f.Fail {
		return 0, &os.PathError{Op: "read", Path: "bodies/Q1", Err: syscall.EIO}
	}
	return copy(p, f.B[off:min(int64(len(f.B)), f.Fail)]), nil
}
