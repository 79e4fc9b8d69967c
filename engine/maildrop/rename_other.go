//go:build !linux

package maildrop

func renameNoReplace(from, to string) error { return checkedRename(from, to) }
