//go:build !linux

package maildir

import "os"

func startWriteback(*os.File) {}
