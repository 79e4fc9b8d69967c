package arc

import (
	"crypto/sha256"
	"fmt"
	"hash"
	"slices"
	"strconv"
	"strings"
)

// MaxInstances is the most ARC sets a message may carry (RFC 8617
// section 4.2.1); a message with more fails.
const MaxInstances = 50

// Names of the three fields of an ARC set.
const (
	fieldAAR  = "ARC-Authentication-Results"
	fieldAMS  = "ARC-Message-Signature"
	fieldSeal = "ARC-Seal"
)

// arcSet is one ARC set as found in the header: its fields (raw, as in
// header), and the tags of its seal and message signature.
type arcSet struct {
	instance int
	aar      string // the raw fields, "" when missing
	ams      string
	seal     string
	results  string            // the AAR's text after "i=N;"
	amsTags  map[string]string // nil when ams is ""
	sealTags map[string]string
}

// chain is what collect finds in a header.
type chain struct {
	sets    map[int]*arcSet
	highest int    // the highest instance seen
	problem string // the first malformed, duplicated or out-of-range field
}

// collect gathers the ARC sets of h. It stops at the first field past
// 3 × MaxInstances, so a header of thousands of them costs little.
func collect(h header) *chain {
	c := &chain{sets: map[int]*arcSet{}}
	n := 0
	for _, f := range h {
		name, value := parseHeaderField(f)
		kind := fieldKind(name)
		if kind == "" {
			continue
		}
		if n++; n > 3*MaxInstances {
			c.problem = fmt.Sprintf("more than %d ARC sets", MaxInstances)
			return c
		}
		i, tags, err := parseARCField(kind, value)
		if i > c.highest {
			c.highest = i
		}
		if err != nil {
			c.fail("%s: %v", kind, err)
			continue
		}
		if i > MaxInstances {
			c.fail("%s i=%d: more than %d ARC sets", kind, i, MaxInstances)
			continue
		}
		set := c.sets[i]
		if set == nil {
			set = &arcSet{instance: i}
			c.sets[i] = set
		}
		var slot *string
		switch kind {
		case fieldAAR:
			slot = &set.aar
		case fieldAMS:
			slot = &set.ams
		default:
			slot = &set.seal
		}
		if *slot != "" {
			c.fail("two %s fields of instance %d", kind, i)
			continue
		}
		*slot = f
		switch kind {
		case fieldAAR:
			set.results = tags["results"]
		case fieldAMS:
			set.amsTags = tags
		default:
			set.sealTags = tags
		}
	}
	return c
}

func (c *chain) fail(format string, args ...any) {
	if c.problem == "" {
		c.problem = fmt.Sprintf(format, args...)
	}
}

func fieldKind(name string) string {
	for _, k := range []string{fieldAAR, fieldAMS, fieldSeal} {
		if strings.EqualFold(name, k) {
			return k
		}
	}
	return ""
}

// parseARCField returns the instance of a field and its tags: for an
// AAR, "results" is the text after "i=N;" (RFC 8617 section 4.1.1).
func parseARCField(kind, value string) (int, map[string]string, error) {
	if kind == fieldAAR {
		i, rest, ok := strings.Cut(value, ";")
		k, v, ok2 := strings.Cut(i, "=")
		if !ok || !ok2 || strings.TrimSpace(k) != "i" {
			return 0, nil, fmt.Errorf("does not start with i=")
		}
		n, err := parseInstance(v)
		// Unfolded, white space runs as one space: for scripts to
		// search in.
		return n, map[string]string{"results": strings.Join(strings.Fields(rest), " ")}, err
	}
	tags, err := parseHeaderParams(value)
	if err != nil {
		return 0, nil, err
	}
	v, ok := tags["i"]
	if !ok {
		return 0, nil, fmt.Errorf("no i= tag")
	}
	n, err := parseInstance(v)
	return n, tags, err
}

func parseInstance(s string) (int, error) {
	s = stripWhitespace(s)
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || s[0] == '+' {
		return 0, fmt.Errorf("invalid instance i=%.10q", s)
	}
	return n, nil
}

// check validates the structure of the chain (RFC 8617 section 5.2,
// steps 1 to 3): sets 1 to N, each with its three fields, the seal of
// set 1 with cv=none and the others with cv=pass. It returns why the
// chain fails, "" when it does not.
func (c *chain) check() string {
	if top := c.sets[c.highest]; top != nil && top.sealTags != nil && cv(top) == "fail" {
		return fmt.Sprintf("the sealer of instance %d found the chain broken (cv=fail)", c.highest)
	}
	if why := c.complete(); why != "" {
		return why
	}
	for i := 1; i <= c.highest; i++ {
		want := "pass"
		if i == 1 {
			want = "none"
		}
		if got := cv(c.sets[i]); got != want {
			return fmt.Sprintf("%s i=%d has cv=%.20q, want cv=%s", fieldSeal, i, got, want)
		}
	}
	return ""
}

// complete returns why the chain is not sets 1 to N, each with its
// three well-formed fields, "" when it is.
func (c *chain) complete() string {
	if c.problem != "" {
		return c.problem
	}
	for i := 1; i <= c.highest; i++ {
		set := c.sets[i]
		switch {
		case set == nil:
			return fmt.Sprintf("no ARC set of instance %d", i)
		case set.aar == "":
			return fmt.Sprintf("ARC set %d has no %s", i, fieldAAR)
		case set.ams == "":
			return fmt.Sprintf("ARC set %d has no %s", i, fieldAMS)
		case set.seal == "":
			return fmt.Sprintf("ARC set %d has no %s", i, fieldSeal)
		}
	}
	return ""
}

func cv(set *arcSet) string { return strings.ToLower(stripWhitespace(set.sealTags["cv"])) }

// ordered returns the sets by instance.
func (c *chain) ordered() []*arcSet {
	out := make([]*arcSet, 0, len(c.sets))
	for _, s := range c.sets {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b *arcSet) int { return a.instance - b.instance })
	return out
}

// sealDigests returns the digest the seal of each set signed (RFC 8617
// section 5.1.1): for the seal of instance i, the AAR, AMS and AS of
// each instance from 1 to i, in that order, in relaxed canonical form,
// its own seal last with b= emptied and without its final CRLF. sets
// holds the instances 1 to N in order. The running hash of the sets
// below is cloned for each, so the work grows with the sets, not their
// square.
func sealDigests(sets []*arcSet) [][]byte {
	c := canonicalizers[relaxed]
	running := sha256.New()
	out := make([][]byte, len(sets))
	for i, set := range sets {
		d := cloneHash(running, sets[:i])
		d.Write([]byte(c.CanonicalizeHeader(set.aar)))
		d.Write([]byte(c.CanonicalizeHeader(set.ams)))
		d.Write([]byte(strings.TrimSuffix(c.CanonicalizeHeader(removeSignature(set.seal)), crlf)))
		out[i] = d.Sum(nil)
		for _, f := range []string{set.aar, set.ams, set.seal} {
			running.Write([]byte(c.CanonicalizeHeader(f)))
		}
	}
	return out
}

// cloneHash returns a copy of h, the hash of the sets below; it hashes
// them again where the hash cannot be cloned (GOFIPS140=v1.0.0).
func cloneHash(h hash.Hash, below []*arcSet) hash.Hash {
	if c, ok := h.(hash.Cloner); ok {
		if d, err := c.Clone(); err == nil {
			return d
		}
	}
	c := canonicalizers[relaxed]
	d := sha256.New()
	for _, set := range below {
		for _, f := range []string{set.aar, set.ams, set.seal} {
			d.Write([]byte(c.CanonicalizeHeader(f)))
		}
	}
	return d
}

// amsDigest returns the digest an AMS signed: the fields h= names
// (picked from the bottom of the header, RFC 6376 section 5.4.2), then
// the AMS itself with b= emptied and without its final CRLF, in the
// canonical form c, followed by nothing: the body is in bh=.
func amsDigest(h header, names []string, c canonicalizer, ams string) []byte {
	d := sha256.New()
	picker := newHeaderPicker(h)
	for _, name := range names {
		if f := picker.Pick(name); f != "" {
			d.Write([]byte(c.CanonicalizeHeader(f)))
		}
	}
	d.Write([]byte(strings.TrimSuffix(c.CanonicalizeHeader(removeSignature(ams)), crlf)))
	return d.Sum(nil)
}

// parseCanonicalization reads c= ("header/body", each "simple" by
// default).
func parseCanonicalization(s string) (headerCan, bodyCan canonicalization, err error) {
	headerCan, bodyCan = simple, simple
	hc, bc, hasBody := strings.Cut(strings.ToLower(stripWhitespace(s)), "/")
	if hc != "" {
		headerCan = canonicalization(hc)
	}
	if hasBody {
		bodyCan = canonicalization(bc)
	}
	for _, c := range []canonicalization{headerCan, bodyCan} {
		if _, ok := canonicalizers[c]; !ok {
			return "", "", fmt.Errorf("unknown canonicalization c=%.40q", s)
		}
	}
	return headerCan, bodyCan, nil
}
