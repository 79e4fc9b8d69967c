package rules

// Size estimates for the memory guards (see guard.go).

import (
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"go.starlark.net/starlark"
	"go.starlark.net/syntax"
)

// binarySize estimates what x op y allocates, stopping past limit.
func binarySize(op syntax.Token, x, y starlark.Value, limit int64) int64 {
	switch op {
	case syntax.PLUS:
		switch x := x.(type) {
		case starlark.String:
			if y, ok := y.(starlark.String); ok {
				return int64(len(x)) + int64(len(y))
			}
		case starlark.Bytes:
			if y, ok := y.(starlark.Bytes); ok {
				return int64(len(x)) + int64(len(y))
			}
		case *starlark.List:
			if y, ok := y.(*starlark.List); ok {
				return int64(x.Len()+y.Len()) * valueSize
			}
		case starlark.Tuple:
			if y, ok := y.(starlark.Tuple); ok {
				return int64(len(x)+len(y)) * valueSize
			}
		}
	case syntax.STAR:
		xi, xok := x.(starlark.Int)
		yi, yok := y.(starlark.Int)
		switch {
		case xok && yok:
		case yok:
			return repeatSize(x, yi)
		case xok:
			return repeatSize(y, xi)
		}
	case syntax.PERCENT:
		if x, ok := x.(starlark.String); ok {
			return interpolateSize(string(x), y, limit)
		}
	case syntax.PIPE:
		switch x := x.(type) {
		case *starlark.Dict:
			if y, ok := y.(*starlark.Dict); ok {
				return int64(x.Len()+y.Len()) * entrySize
			}
		case *starlark.Set:
			if y, ok := y.(*starlark.Set); ok {
				return int64(x.Len()+y.Len()) * entrySize
			}
		}
	}
	if n, ok := intResultBits(op, x, y); ok {
		return intSize(n)
	}
	return 0
}

// maxIntBits bounds the ints guarded operators make: not for memory
// (that is the budget's job) but for time, as multiplying and printing
// big ints is superlinear and no step is counted meanwhile: squaring a
// 16 MB int takes seconds. 1<<20 bits is 315,653 decimal digits.
const maxIntBits = 1 << 20

// checkIntBits refuses an int result of more than maxIntBits.
func checkIntBits(op syntax.Token, x, y starlark.Value) error {
	if n, ok := intResultBits(op, x, y); ok && n > maxIntBits {
		return fmt.Errorf("int too large: %d bits, more than %d", n, maxIntBits)
	}
	return nil
}

// intResultBits bounds the bit length of x op y when both are ints.
func intResultBits(op syntax.Token, x, y starlark.Value) (int64, bool) {
	xi, ok := x.(starlark.Int)
	if !ok {
		return 0, false
	}
	if op == syntax.LTLT {
		n, err := starlark.AsInt32(y)
		if err != nil || n < 0 || n >= 512 { // an error
			return 0, false
		}
		return intBits(xi) + int64(n), true
	}
	yi, ok := y.(starlark.Int)
	if !ok {
		return 0, false
	}
	switch op {
	case syntax.PLUS:
		return max(intBits(xi), intBits(yi)) + 1, true
	case syntax.STAR:
		return intBits(xi) + intBits(yi), true
	case syntax.PIPE:
		return max(intBits(xi), intBits(yi)), true
	}
	return 0, false
}

// augmentedSize estimates what x op= y allocates: like x op y, except
// that list += iterable and dict |= dict change x in place.
func augmentedSize(op syntax.Token, x, y starlark.Value, limit int64) int64 {
	switch x.(type) {
	case *starlark.List:
		if op == syntax.PLUS {
			return growSize(x, mulSat(seqLen(y, limit/valueSize+1), valueSize), valueSize)
		}
	case *starlark.Dict:
		if y, ok := y.(*starlark.Dict); ok && op == syntax.PIPE {
			return growSize(x, int64(y.Len())*entrySize, entrySize)
		}
	}
	return binarySize(op, x, y, limit)
}

// growSize is what adding elements of added bytes in place to container
// x allocates: the elements, or, when they are more than a quarter of x
// (so that Go or the hash table reallocates x's array), all of the grown
// x.
func growSize(x starlark.Value, added, per int64) int64 {
	size := mulSat(int64(starlark.Len(x)), per)
	if added > size/4 {
		return addSat(size, added)
	}
	return added
}

// repeatSize is the size of seq * n.
func repeatSize(seq starlark.Value, n starlark.Int) int64 {
	count, ok := n.Int64()
	if !ok {
		if n.Sign() < 0 {
			return 0
		}
		count = math.MaxInt64
	}
	if count <= 0 {
		return 0
	}
	switch seq := seq.(type) {
	case starlark.String:
		return mulSat(int64(len(seq)), count)
	case starlark.Bytes:
		return mulSat(int64(len(seq)), count)
	case *starlark.List:
		return mulSat(mulSat(int64(seq.Len()), count), valueSize)
	case starlark.Tuple:
		return mulSat(mulSat(int64(len(seq)), count), valueSize)
	}
	return 0
}

// intBits is the bit length of |x|.
func intBits(x starlark.Int) int64 {
	if v, ok := x.Int64(); ok {
		if v < 0 {
			v = -v
		}
		return int64(bits.Len64(uint64(v)))
	}
	return int64(x.BigInt().BitLen())
}

// intSize is what an int of n bits takes: nothing below 64 bits.
func intSize(n int64) int64 {
	if n <= 64 {
		return 0
	}
	return n/8 + 8
}

// intDigits bounds the length of x in decimal (or octal, hex).
func intDigits(x starlark.Int) int64 {
	if _, ok := x.Int64(); ok {
		return 24
	}
	return int64(x.BigInt().BitLen())/3 + 2
}

// interpolateSize estimates the length of format % x, as
// starlark.interpolate writes it, stopping past limit.
func interpolateSize(format string, x starlark.Value, limit int64) int64 {
	n := int64(len(format))
	tuple, isTuple := x.(starlark.Tuple)
	mapping, isMapping := x.(starlark.Mapping)
	index := 0
	for n <= limit {
		i := strings.IndexByte(format, '%')
		if i < 0 || i+1 >= len(format) {
			break
		}
		format = format[i+1:]
		if format[0] == '%' {
			format = format[1:]
			continue
		}
		var arg starlark.Value
		if format[0] == '(' {
			j := strings.IndexByte(format, ')')
			if j < 0 {
				break
			}
			if isMapping {
				if v, found, _ := mapping.Get(starlark.String(format[1:j])); found {
					arg = v
				}
			}
			format = format[j+1:]
		} else {
			switch {
			case isTuple && index < len(tuple):
				arg = tuple[index]
			case !isTuple && index == 0:
				arg = x
			}
		}
		index++
		if format == "" {
			break
		}
		c := format[0]
		format = format[1:]
		if arg == nil {
			continue
		}
		switch c {
		case 's':
			n = addSat(n, textSize(arg, false, limit-n))
		case 'r':
			n = addSat(n, textSize(arg, true, limit-n))
		case 'd', 'i', 'o', 'x', 'X':
			if i, ok := arg.(starlark.Int); ok {
				n = addSat(n, intDigits(i))
			} else {
				n += 24
			}
		default:
			n += 32
		}
	}
	return n
}

// formatMethodSize estimates the length of fmt.format(*args, **kwargs).
func formatMethodSize(recv starlark.Value, args starlark.Tuple, kwargs []starlark.Tuple, limit int64) int64 {
	format := string(recv.(starlark.String))
	n := int64(len(format))
	auto := 0
	for n <= limit {
		i := strings.IndexByte(format, '{')
		if i < 0 {
			break
		}
		if i+1 < len(format) && format[i+1] == '{' {
			format = format[i+2:]
			continue
		}
		format = format[i+1:]
		j := strings.IndexByte(format, '}')
		if j < 0 {
			break
		}
		field := format[:j]
		format = format[j+1:]
		name, conv := field, "s"
		if k := strings.IndexByte(field, '!'); k >= 0 {
			name, conv = field[:k], field[k+1:]
		} else if k := strings.IndexByte(field, ':'); k >= 0 {
			name = field[:k]
		}
		var arg starlark.Value
		if name == "" {
			if auto < len(args) {
				arg = args[auto]
			}
			auto++
		} else if k, err := strconv.Atoi(name); err == nil {
			if k >= 0 && k < len(args) {
				arg = args[k]
			}
		} else {
			for _, kv := range kwargs {
				if kv[0] == starlark.String(name) {
					arg = kv[1]
				}
			}
		}
		if arg != nil {
			n = addSat(n, textSize(arg, strings.HasPrefix(conv, "r"), limit-n))
		}
	}
	return n
}

// joinSize estimates sep.join(iterable), stopping past limit.
func joinSize(recv starlark.Value, args starlark.Tuple, _ []starlark.Tuple, limit int64) int64 {
	if len(args) != 1 {
		return 0
	}
	it := starlark.Iterate(args[0])
	if it == nil {
		return 0
	}
	defer it.Done()
	sep := int64(len(recv.(starlark.String)))
	var n int64
	var x starlark.Value
	for i := 0; n <= limit && it.Next(&x); i++ {
		s, ok := x.(starlark.String)
		if !ok {
			return n // join fails on it
		}
		if i > 0 {
			n = addSat(n, sep)
		}
		n = addSat(n, int64(len(s)))
	}
	return n
}

// replaceSize is the length of s.replace(old, new, count).
func replaceSize(recv starlark.Value, args starlark.Tuple, _ []starlark.Tuple, _ int64) int64 {
	s := string(recv.(starlark.String))
	if len(args) < 2 {
		return 0
	}
	old, ok1 := args[0].(starlark.String)
	repl, ok2 := args[1].(starlark.String)
	if !ok1 || !ok2 {
		return 0
	}
	var count int64
	if old == "" {
		count = int64(utf8.RuneCountInString(s)) + 1
	} else {
		count = int64(strings.Count(s, string(old)))
	}
	if len(args) > 2 {
		if c, err := starlark.AsInt32(args[2]); err == nil && c >= 0 {
			count = min(count, int64(c))
		}
	}
	grow := int64(len(repl)) - int64(len(old))
	return addSat(int64(len(s)), max(0, mulSat(count, grow)))
}

// splitSize is the size of s.split(sep, maxsplit) and rsplit: Go's
// strings, and a new string per part in the list.
func splitSize(recv starlark.Value, args starlark.Tuple, _ []starlark.Tuple, _ int64) int64 {
	s := string(recv.(starlark.String))
	var parts int64
	if len(args) == 0 || args[0] == starlark.None {
		inField := false
		for _, r := range s {
			space := unicode.IsSpace(r)
			if !space && !inField {
				parts++
			}
			inField = !space
		}
	} else if sep, ok := args[0].(starlark.String); ok && sep != "" {
		parts = int64(strings.Count(s, string(sep))) + 1
	}
	return mulSat(parts, valueSize+stringSize)
}

// splitlinesSize is the size of s.splitlines().
func splitlinesSize(recv starlark.Value, _ starlark.Tuple, _ []starlark.Tuple, _ int64) int64 {
	s := string(recv.(starlark.String))
	return int64(strings.Count(s, "\n")+1) * (valueSize + stringSize)
}

// textSize estimates the length of str(v) (repr(v) when quote is set) as
// starlark writes it, stopping as soon as it passes limit.
func textSize(v starlark.Value, quote bool, limit int64) int64 {
	s := sizer{limit: limit}
	s.value(v, quote)
	return s.n
}

type sizer struct {
	limit    int64
	n        int64
	depth    int
	maxDepth int
	path     []starlark.Value // the mutable containers being written
	onPath   map[starlark.Value]bool
}

// add counts k bytes; false means the limit is passed and the walk stops.
func (s *sizer) add(k int64) bool {
	s.n = addSat(s.n, k)
	return s.n <= s.limit
}

func (s *sizer) value(v starlark.Value, quote bool) bool {
	switch v := v.(type) {
	case starlark.String:
		if !quote {
			return s.add(int64(len(v)))
		}
		return s.add(quotedLen(string(v)))
	case starlark.Bytes:
		return s.add(quotedLen(string(v)) + 1)
	case starlark.Int:
		return s.add(intDigits(v))
	case starlark.Float:
		return s.add(32)
	case starlark.NoneType, starlark.Bool:
		return s.add(5)
	case *starlark.List:
		if cycle, ok := s.enter(v); cycle || !ok {
			return ok
		}
		defer s.leave(v)
		for i := 0; i < v.Len(); i++ {
			if !s.add(2) || !s.value(v.Index(i), true) {
				return false
			}
		}
		return true
	case starlark.Tuple:
		if _, ok := s.enter(nil); !ok {
			return false
		}
		defer s.leave(nil)
		for _, x := range v {
			if !s.add(2) || !s.value(x, true) {
				return false
			}
		}
		return true
	case *starlark.Dict:
		if cycle, ok := s.enter(v); cycle || !ok {
			return ok
		}
		defer s.leave(v)
		it := v.Iterate()
		defer it.Done()
		var k starlark.Value
		for it.Next(&k) {
			x, _, _ := v.Get(k)
			if !s.add(4) || !s.value(k, true) || x != nil && !s.value(x, true) {
				return false
			}
		}
		return true
	case *starlark.Set:
		if cycle, ok := s.enter(v); cycle || !ok {
			return ok
		}
		defer s.leave(v)
		it := v.Iterate()
		defer it.Done()
		var x starlark.Value
		for it.Next(&x) {
			if !s.add(2) || !s.value(x, true) {
				return false
			}
		}
		return true
	}
	return s.add(int64(len(v.String())))
}

// enter starts writing container v (nil for a tuple, which cannot be on
// its own path): cycle reports that v is already being written (it is
// written "[...]"), ok false that the limit is passed.
func (s *sizer) enter(v starlark.Value) (cycle, ok bool) {
	if !s.add(2) {
		return false, false
	}
	if v != nil && s.isOnPath(v) {
		return true, s.add(5)
	}
	s.depth++
	if s.depth > s.maxDepth {
		s.maxDepth = s.depth
		if !s.add(depthCost) {
			s.depth--
			return false, false
		}
	}
	if v != nil {
		s.path = append(s.path, v)
		if s.onPath != nil {
			s.onPath[v] = true
		} else if len(s.path) > 16 {
			s.onPath = map[starlark.Value]bool{}
			for _, p := range s.path {
				s.onPath[p] = true
			}
		}
	}
	return false, true
}

func (s *sizer) leave(v starlark.Value) {
	s.depth--
	if v != nil {
		s.path = s.path[:len(s.path)-1]
		if s.onPath != nil {
			delete(s.onPath, v)
		}
	}
}

func (s *sizer) isOnPath(v starlark.Value) bool {
	if s.onPath != nil {
		return s.onPath[v]
	}
	for _, p := range s.path {
		if p == v {
			return true
		}
	}
	return false
}

// quotedLen bounds the length of s quoted as a Starlark string literal.
func quotedLen(s string) int64 {
	n := int64(len(s)) + 2
	high := int64(0)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c == '"' || c == '\\' || c == 0x7f:
			n += 3 // \n, \", \x01
		case c >= 0x80:
			high++
		}
	}
	if high > 0 && !utf8.ValidString(s) {
		n += 3 * high // \xff
	}
	return n
}

func addSat(a, b int64) int64 {
	if b > 0 && a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

func mulSat(a, b int64) int64 {
	if a <= 0 || b <= 0 {
		return 0
	}
	if a > math.MaxInt64/b {
		return math.MaxInt64
	}
	return a * b
}
