//go:build !unix

package maildir

import "os"

func devOf(*os.File) uint64 { return 0 }
