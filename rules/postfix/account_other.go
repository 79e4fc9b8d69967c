//go:build !linux

package postfix

// Do runs fn; taking another user's rights per thread needs Linux.
func (a Account) Do(fn func() error) error { return fn() }
