package maps

import (
	"math"
	"strings"
)

// isSpace is C isspace in the C locale, which is what Postfix uses to
// split table lines; Unicode spaces are ordinary characters to it.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

func trimSpace(s string) string {
	i, j := 0, len(s)
	for i < j && isSpace(s[i]) {
		i++
	}
	for j > i && isSpace(s[j-1]) {
		j--
	}
	return s[i:j]
}

// cutSpace splits s at its first whitespace into a word and the rest with
// surrounding whitespace trimmed, as postmap splits "key value".
func cutSpace(s string) (word, rest string) {
	for i := 0; i < len(s); i++ {
		if isSpace(s[i]) {
			return s[:i], trimSpace(s[i:])
		}
	}
	return s, ""
}

// readLogical calls fn for each logical line of a Postfix table file, with
// the number of the physical line it starts on. The rules are those of
// Postfix's readllines(): blank lines and lines whose first non-blank
// character is '#' are ignored wherever they are; a line that starts with
// whitespace continues the logical line before it, even across ignored
// lines, and is appended to it as is (without the newline, with its
// leading whitespace).
//
// With entries set, readLogical also warns about continuation lines that
// look like entries of their own: the leading blank that silently merges
// a line into the previous entry is a classic postmap mistake, and a
// continued value normally ends its line with a comma.
func readLogical(data string, d *diags, entries bool, fn func(text string, line int)) {
	var (
		cur      string // the logical line so far
		buf      []byte // cur when it spans several physical lines
		curLine  int
		have     bool
		joined   bool
		prevPhys string // the last physical line appended, for the heuristic
		orphan   bool   // skipping continuation lines that continue nothing
	)
	flush := func() {
		if !have {
			return
		}
		if joined {
			cur = string(buf)
		}
		fn(cur, curLine)
		have, joined, buf = false, false, buf[:0]
	}
	lineno := 0
	for pos := 0; pos < len(data); {
		end := strings.IndexByte(data[pos:], '\n')
		var line string
		if end < 0 {
			line, pos = data[pos:], len(data)
		} else {
			line, pos = data[pos:pos+end], pos+end+1
		}
		lineno++
		line = strings.TrimSuffix(line, "\r")
		t := trimSpace(line)
		if t == "" || t[0] == '#' {
			continue
		}
		if !isSpace(line[0]) {
			flush()
			cur, curLine, have, orphan, prevPhys = line, lineno, true, false, line
			continue
		}
		if !have {
			if !orphan {
				d.errorf(lineno, "line starts with whitespace, but there is no line before it to continue: %q", clip(t))
				orphan = true
			}
			continue
		}
		if orphan {
			continue
		}
		if entries && !strings.HasSuffix(trimSpace(prevPhys), ",") {
			if _, rest := cutSpace(t); rest != "" {
				d.warnf(lineno, "line starts with whitespace, so it continues the entry on line %d (postmap reads it the same way); remove the indentation if %q is a separate entry", curLine, clip(t))
			}
		}
		if !joined {
			buf = append(buf[:0], cur...)
			joined = true
		}
		buf = append(buf, line...)
		prevPhys = line
	}
	flush()
}

// clip shortens text quoted in diagnostics.
func clip(s string) string {
	const max = 60
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

func line32(n int) int32 {
	if n > math.MaxInt32 {
		return math.MaxInt32
	}
	return int32(n)
}

// parseHash parses postmap(1) source text: "key value" per logical line,
// the key folded to lower case.
func parseHash(name, data string, d *diags) *hashTable {
	// Sizing the map for every line up front avoids rehashing a million
	// entries several times while a big table loads.
	t := &hashTable{name: name, file: d.file, idx: newKeyIndex(strings.Count(data, "\n") + 1)}
	readLogical(data, d, true, func(text string, line int) {
		key, value := cutSpace(text)
		if value == "" {
			d.errorf(line, "expected format: key whitespace value, got %q", clip(text))
			return
		}
		if strings.HasSuffix(key, ":") {
			d.warnf(line, "record is in \"key: value\" format; is this an alias file?")
		}
		if prev, dup := t.idx.put(lowerKey(key), value, line32(line)); dup {
			// postmap keeps the first entry; see doc.go for why the
			// last one wins here.
			d.warnf(line, "duplicate entry %q (also on line %d); the later entry wins", key, prev)
		}
	})
	t.idx.compact()
	return t
}
