package arc

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/emersion/go-message/textproto"
	msgauth "github.com/emersion/go-msgauth/authres"
	mdns "github.com/miekg/dns"

	"github.com/larkpost/larkpost/stdlib/authres"
	"github.com/larkpost/larkpost/stdlib/dns"
)

// Results, the words of RFC 8617 for a chain ("none", "pass", "fail")
// and, for one message signature, "temperror" too.
const (
	None      = "none"
	Pass      = "pass"
	Fail      = "fail"
	TempError = "temperror"
)

// Set is one ARC set (one forwarder) of a verified chain.
type Set struct {
	Instance    int
	Domain      string // d= of the ARC-Seal, lower-case
	Selector    string // s= of the ARC-Seal
	SealResult  string // cv= of the ARC-Seal: what this forwarder found
	AMSDomain   string // d= of the ARC-Message-Signature, lower-case
	AMSSelector string // s= of the ARC-Message-Signature
	// AMSResult is "pass" or "fail" for a message signature that was
	// checked, "temperror" when its key could not be fetched, "none"
	// when it was not checked.
	AMSResult string
	// AuthResults is the text of the ARC-Authentication-Results after
	// "i=N;": what this forwarder found when the message reached it.
	AuthResults string
}

// Result is the verification of a message's ARC chain (RFC 8617 section
// 5.2).
type Result struct {
	Result string // None, Pass or Fail
	Reason string // why, "" for Pass
	// Temporary is set on a Fail that may not recur: a key could not
	// be fetched now, the message could not be read in time.
	Temporary bool
	Instances int // the highest instance (i=) found
	// OldestPass is the lowest instance whose message signature still
	// verifies, 0 when all do (RFC 8617 section 5.2); set for Pass.
	OldestPass int
	Sets       []Set // by instance
	// LastResults is the AuthResults of the highest instance, for Pass
	// only: what the last forwarder found, vouched for by the chain.
	LastResults string
}

// Verify verifies the ARC chain of a message: r holds the whole message
// as received (size bytes) and h is its parsed header. Keys are fetched
// through s, within its budget and deadline, and the result is recorded
// in the Authentication-Results of the hook's context. A message
// without ARC fields is not read.
func Verify(s *dns.Session, r io.ReaderAt, size int64, h textproto.Header) Result {
	ctx, cancel := s.Context()
	defer cancel()
	lookup := func(name string) dns.Result { return s.Lookup(name, mdns.TypeTXT) }
	res := verify(ctx, lookup, r, size, h)
	record(ctx, res)
	return res
}

func record(ctx context.Context, res Result) {
	params := map[string]string{}
	if res.Result == Fail {
		params["reason"] = res.Reason
	}
	// go-msgauth's parser refuses header.oldest-pass=0: only others
	// are written.
	if res.Result == Pass && res.OldestPass > 0 {
		params["header.oldest-pass"] = strconv.Itoa(res.OldestPass)
	}
	authres.Add(ctx, &msgauth.GenericResult{Method: "arc", Value: msgauth.ResultValue(res.Result), Params: params})
}

func verify(ctx context.Context, lookup func(string) dns.Result, r io.ReaderAt, size int64, h textproto.Header) Result {
	if !h.Has(fieldSeal) && !h.Has(fieldAMS) && !h.Has(fieldAAR) {
		return Result{Result: None, Reason: "no ARC sets"}
	}
	br := bufio.NewReader(ctxReader{ctx, io.NewSectionReader(r, 0, size)})
	hdr, err := readHeader(br)
	if err != nil {
		res := Result{Result: Fail, Reason: err.Error()}
		res.Temporary = !errors.Is(err, errHeaderTooBig)
		return res
	}
	c := collect(hdr)
	if len(c.sets) == 0 && c.problem == "" {
		return Result{Result: None, Reason: "no ARC sets"}
	}
	res := Result{Instances: c.highest}
	sets := c.ordered()
	for _, set := range sets {
		res.Sets = append(res.Sets, describe(set))
	}
	failed := func(err error, format string, args ...any) Result {
		res.Result, res.Reason = Fail, fmt.Sprintf(format, args...)
		if err != nil {
			res.Reason += ": " + err.Error()
			res.Temporary = errors.Is(err, errTemporary)
		}
		return res
	}
	if why := c.check(); why != "" {
		return failed(nil, "%s", why)
	}

	// From here the sets are 1 to N, in order.
	v := &verifier{header: hdr, body: br, keys: keys{lookup: lookup}}
	for _, set := range sets {
		if _, bc, err := parseCanonicalization(set.amsTags["c"]); err == nil && !slices.Contains(v.canons, bc) {
			v.canons = append(v.canons, bc)
		}
	}
	n := len(sets)
	err = v.checkAMS(sets[n-1])
	res.Sets[n-1].AMSResult = amsResult(err)
	if err != nil {
		return failed(err, "%s i=%d", fieldAMS, n)
	}
	digests := sealDigests(sets)
	for i := n - 1; i >= 0; i-- {
		if err := v.checkSeal(sets[i], digests[i]); err != nil {
			return failed(err, "%s i=%d", fieldSeal, i+1)
		}
	}
	res.Result, res.LastResults = Pass, sets[n-1].results

	// The oldest pass: the message signatures below the last, down to
	// the first that no longer verifies (the message was changed after
	// that forwarder signed it).
	for i := n - 2; i >= 0; i-- {
		err := v.checkAMS(sets[i])
		res.Sets[i].AMSResult = amsResult(err)
		if err != nil {
			res.OldestPass = i + 2
			break
		}
	}
	return res
}

func describe(set *arcSet) Set {
	return Set{
		Instance:    set.instance,
		Domain:      strings.ToLower(stripWhitespace(set.sealTags["d"])),
		Selector:    stripWhitespace(set.sealTags["s"]),
		SealResult:  cv(set),
		AMSDomain:   strings.ToLower(stripWhitespace(set.amsTags["d"])),
		AMSSelector: stripWhitespace(set.amsTags["s"]),
		AMSResult:   None,
		AuthResults: set.results,
	}
}

func amsResult(err error) string {
	switch {
	case err == nil:
		return Pass
	case errors.Is(err, errTemporary):
		return TempError
	}
	return Fail
}

// verifier checks the signatures of one message.
type verifier struct {
	header header
	body   io.Reader // the body, read once
	keys   keys

	canons     []canonicalization // the body canonicalizations the AMSs use
	bodyHashes map[canonicalization][]byte
	bodyErr    error
}

func requireTags(tags map[string]string, names ...string) error {
	for _, n := range names {
		if _, ok := tags[n]; !ok {
			return fmt.Errorf("no %s= tag", n)
		}
	}
	return nil
}

// checkAMS verifies the message signature of set, as a DKIM signature
// (RFC 8617 section 4.1.2).
func (v *verifier) checkAMS(set *arcSet) error {
	t := set.amsTags
	if err := requireTags(t, "a", "b", "bh", "d", "h", "s"); err != nil {
		return err
	}
	if _, ok := t["l"]; ok {
		// As go-msgauth: l= leaves the rest of the body unsigned.
		return errors.New("body length tag l= not supported")
	}
	headerCan, bodyCan, err := parseCanonicalization(t["c"])
	if err != nil {
		return err
	}
	names := parseTagList(t["h"])
	if slices.ContainsFunc(names, func(n string) bool { return strings.EqualFold(n, fieldSeal) }) {
		return errors.New("h= signs ARC-Seal, which RFC 8617 forbids")
	}
	bodyHash, err := decodeBase64(t["bh"])
	if err != nil {
		return fmt.Errorf("malformed bh=: %w", err)
	}
	sig, err := decodeBase64(t["b"])
	if err != nil {
		return fmt.Errorf("malformed b=: %w", err)
	}
	key, err := v.keys.get(strings.ToLower(stripWhitespace(t["d"])), stripWhitespace(t["s"]))
	if err != nil {
		return err
	}
	if err := key.checkAlgorithm(t["a"]); err != nil {
		return err
	}
	got, err := v.bodyHash(bodyCan)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(got, bodyHash) != 1 {
		return errors.New("body hash does not match: the body was changed")
	}
	digest := amsDigest(v.header, names, canonicalizers[headerCan], set.ams)
	if err := key.verify(digest, sig); err != nil {
		return fmt.Errorf("signature does not verify: %w", err)
	}
	return nil
}

// checkSeal verifies the seal of set over digest (see sealDigests).
func (v *verifier) checkSeal(set *arcSet, digest []byte) error {
	t := set.sealTags
	if err := requireTags(t, "a", "b", "cv", "d", "s"); err != nil {
		return err
	}
	if _, ok := t["h"]; ok {
		return errors.New("h= tag, which RFC 8617 forbids in a seal")
	}
	sig, err := decodeBase64(t["b"])
	if err != nil {
		return fmt.Errorf("malformed b=: %w", err)
	}
	key, err := v.keys.get(strings.ToLower(stripWhitespace(t["d"])), stripWhitespace(t["s"]))
	if err != nil {
		return err
	}
	if err := key.checkAlgorithm(t["a"]); err != nil {
		return err
	}
	if err := key.verify(digest, sig); err != nil {
		return fmt.Errorf("signature does not verify: %w", err)
	}
	return nil
}

// bodyHash returns the SHA-256 of the body in canonical form c. The
// first call reads the body, once, for every canonicalization the
// message signatures use.
func (v *verifier) bodyHash(c canonicalization) ([]byte, error) {
	if v.bodyHashes == nil && v.bodyErr == nil {
		v.bodyHashes, v.bodyErr = hashBody(v.body, v.canons)
	}
	if v.bodyErr != nil {
		return nil, v.bodyErr
	}
	h, ok := v.bodyHashes[c]
	if !ok {
		return nil, fmt.Errorf("body not hashed in %s form", c) // v.canons lists every c= that parses
	}
	return h, nil
}

func hashBody(r io.Reader, canons []canonicalization) (map[canonicalization][]byte, error) {
	hashes := map[canonicalization][]byte{}
	var ws []io.Writer
	var wcs []io.WriteCloser
	var sums []func() []byte
	for _, c := range canons {
		h := sha256.New()
		wc := canonicalizers[c].CanonicalizeBody(h)
		ws, wcs, sums = append(ws, wc), append(wcs, wc), append(sums, func() []byte { return h.Sum(nil) })
	}
	_, err := io.Copy(io.MultiWriter(ws...), r)
	for _, wc := range wcs {
		if err == nil {
			err = wc.Close()
		}
	}
	switch {
	case errors.Is(err, errPending):
		return nil, fmt.Errorf("reading the body: %w", err)
	case err != nil:
		// Ours, not the message's: a read error, the hook's deadline.
		return nil, fmt.Errorf("%w: reading the body: %v", errTemporary, err)
	}
	for i, c := range canons {
		hashes[c] = sums[i]()
	}
	return hashes, nil
}

// ctxReader fails once ctx is done, so that a big message does not keep
// a hook past its deadline.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
