package addr

import (
	"fmt"
	"unicode"
	"unicode/utf8"

	"go.starlark.net/starlark"
	"go.starlark.net/syntax"
)

// Value is the read-only Starlark view of an Address, what scripts see as
// sender, rcpt and the result of addr.parse.
//
// Everything Attr returns is computed by NewValue, because scripts read
// these attributes once per recipient and a Value is immutable anyway.
type Value struct {
	addr   Address
	str    string
	user   string
	ext    string
	hasExt bool
}

var (
	_ starlark.Value      = (*Value)(nil)
	_ starlark.HasAttrs   = (*Value)(nil)
	_ starlark.Comparable = (*Value)(nil)
)

// NewValue returns the Starlark view of a, with user and extension split at
// the first of the recipient delimiters in delims.
func NewValue(a Address, delims string) *Value {
	user, ext, found := Split(a.Local, delims)
	return &Value{addr: a, str: a.String(), user: user, ext: ext, hasExt: found}
}

// Address returns the address v shows to scripts.
func (v *Value) Address() Address { return v.addr }

// String returns the address as Address.String does, "" for the null sender.
func (v *Value) String() string { return v.str }

// Type returns "address".
func (v *Value) Type() string { return "address" }

// Freeze does nothing because a Value is immutable.
func (v *Value) Freeze() {}

// Truth reports false for the null sender so that scripts can write
// `if sender:`.
func (v *Value) Truth() starlark.Bool { return starlark.Bool(!v.addr.IsNull()) }

// Hash hashes the case-folded address, consistent with Equal, so that
// addresses differing only in case collide as dict keys.
func (v *Value) Hash() (uint32, error) {
	h := foldHash(fnvOffset, v.addr.Local)
	h = (h ^ '@') * fnvPrime
	return foldHash(h, v.addr.Domain), nil
}

const (
	fnvOffset = 2166136261
	fnvPrime  = 16777619
)

// foldHash feeds the case-folded runes of s to FNV-1a without allocating.
// It maps every rune to the smallest member of its simple-folding orbit,
// which is exactly the equivalence strings.EqualFold tests; plain
// lower-casing would not be, e.g. for 'ſ' and 's'.
func foldHash(h uint32, s string) uint32 {
	for i := 0; i < len(s); {
		r := rune(s[i])
		if r < utf8.RuneSelf {
			if 'A' <= r && r <= 'Z' {
				r += 'a' - 'A'
			}
			i++
		} else {
			var size int
			r, size = utf8.DecodeRuneInString(s[i:])
			i += size
			for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
				if f < r {
					r = f
				}
			}
			// The orbit of 'k' includes the Kelvin sign; folding it to
			// 'K' here would disagree with the ASCII branch above.
			if 'A' <= r && r <= 'Z' {
				r += 'a' - 'A'
			}
		}
		h = (h ^ uint32(r)) * fnvPrime
	}
	return h
}

// attrNames is sorted, as starlark.HasAttrs requires for dir().
var attrNames = []string{"address", "domain", "extension", "is_null", "local", "user"}

// Attr returns the attribute called name, or nil, nil if there is none.
func (v *Value) Attr(name string) (starlark.Value, error) {
	switch name {
	case "local":
		return starlark.String(v.addr.Local), nil
	case "domain":
		return starlark.String(v.addr.Domain), nil
	case "user":
		return starlark.String(v.user), nil
	case "extension":
		if !v.hasExt {
			return starlark.None, nil
		}
		return starlark.String(v.ext), nil
	case "is_null":
		return starlark.Bool(v.addr.IsNull()), nil
	case "address":
		return starlark.String(v.str), nil
	}
	return nil, nil
}

// AttrNames returns the sorted attribute names.
func (v *Value) AttrNames() []string { return attrNames }

// CompareSameType implements == and != with Address.Equal. Addresses have
// no useful order, so the other comparisons are errors.
func (v *Value) CompareSameType(op syntax.Token, y starlark.Value, depth int) (bool, error) {
	w, ok := y.(*Value)
	if !ok {
		// Another Go type that also calls itself "address".
		return false, fmt.Errorf("cannot compare address with %T", y)
	}
	switch op {
	case syntax.EQL:
		return v.addr.Equal(w.addr), nil
	case syntax.NEQ:
		return !v.addr.Equal(w.addr), nil
	}
	return false, fmt.Errorf("addresses support only == and !=, not %s", op)
}
