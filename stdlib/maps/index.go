package maps

import (
	"hash/maphash"
	"math/bits"
)

// keyIndex is the hash index of a key/value table. A Go map of a million
// string pairs costs over 80 bytes an entry once its buckets have grown;
// parallel slices and an open-addressing table of uint32 cost 44, and the
// strings themselves are slices of the file's text.
//
// A slot holds 1 + the index of its key in its low bits and, in the bits
// the index does not need, a tag made of hash bits. Comparing tags first
// spares most of the string comparisons on probe collisions, each of which
// would be a cache miss into the file's text.
type keyIndex struct {
	seed    maphash.Seed
	keys    []string
	values  []string
	lines   []int32  // where each key was (last) defined, for Explain
	slots   []uint32 // 0 is an empty slot
	idxBits uint     // the low bits of a slot that hold the index
}

func newKeyIndex(hint int) *keyIndex {
	x := &keyIndex{seed: maphash.MakeSeed()}
	x.keys = make([]string, 0, hint)
	x.values = make([]string, 0, hint)
	x.lines = make([]int32, 0, hint)
	x.resize(slotsFor(hint))
	return x
}

// slotsFor keeps the table at most half full, so that linear probing
// stays short.
func slotsFor(n int) int {
	return 1 << bits.Len(uint(2*n+1))
}

func (x *keyIndex) resize(n int) {
	x.slots = make([]uint32, n)
	// Indexes stay below n/2, so 1 + index fits in Len(n) bits.
	x.idxBits = uint(bits.Len(uint(n)))
	for i, k := range x.keys {
		h := maphash.String(x.seed, k)
		x.slots[x.probe(h, k)] = x.tag(h) | uint32(i+1)
	}
}

// tag returns the hash bits kept in a slot, already shifted in place.
func (x *keyIndex) tag(h uint64) uint32 {
	if x.idxBits >= 32 {
		return 0
	}
	return uint32(h>>(32+x.idxBits)) << x.idxBits
}

// probe returns the slot of key k with hash h, or the empty slot where it
// belongs.
func (x *keyIndex) probe(h uint64, k string) uint64 {
	mask := uint64(len(x.slots) - 1)
	idxMask := uint32(1)<<x.idxBits - 1
	if x.idxBits >= 32 {
		idxMask = ^uint32(0)
	}
	tag := x.tag(h)
	for i := h & mask; ; i = (i + 1) & mask {
		s := x.slots[i]
		if s == 0 || s&^idxMask == tag && x.keys[s&idxMask-1] == k {
			return i
		}
	}
}

func (x *keyIndex) index(s uint32) int {
	if x.idxBits >= 32 {
		return int(s - 1)
	}
	return int(s&(uint32(1)<<x.idxBits-1)) - 1
}

// find returns the index of key k, or -1.
func (x *keyIndex) find(k string) int {
	s := x.slots[x.probe(maphash.String(x.seed, k), k)]
	if s == 0 {
		return -1
	}
	return x.index(s)
}

// put sets k to v. If k was there, it returns the line it was defined on
// and true.
func (x *keyIndex) put(k, v string, line int32) (int32, bool) {
	h := maphash.String(x.seed, k)
	p := x.probe(h, k)
	if s := x.slots[p]; s != 0 {
		i := x.index(s)
		prev := x.lines[i]
		x.values[i], x.lines[i] = v, line
		return prev, true
	}
	x.keys = append(x.keys, k)
	x.values = append(x.values, v)
	x.lines = append(x.lines, line)
	if 2*len(x.keys) >= len(x.slots) {
		x.resize(2 * len(x.slots))
		return 0, false
	}
	x.slots[p] = x.tag(h) | uint32(len(x.keys))
	return 0, false
}

// compact drops the spare capacity a table read from a file reserved for
// one entry per line, comment and continuation lines included.
func (x *keyIndex) compact() {
	if cap(x.keys)-len(x.keys) < len(x.keys)/4 {
		return
	}
	x.keys = append([]string(nil), x.keys...)
	x.values = append([]string(nil), x.values...)
	x.lines = append([]int32(nil), x.lines...)
	if n := slotsFor(len(x.keys)); n < len(x.slots) {
		x.resize(n)
	}
}

func (x *keyIndex) len() int { return len(x.keys) }
