//go:build !unix

package queue

import (
	"errors"
	"os"
)

func devOf(string) uint64 { return 0 }

func setNonblock(*os.File) error { return errors.ErrUnsupported }

func writeNonblock(*os.File, byte) {}
