//go:build !unix

package queue

func devOf(string) uint64 { return 0 }
