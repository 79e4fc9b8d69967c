//go:build !linux

package queue

import "os"

func startWriteback(*os.File) {}
