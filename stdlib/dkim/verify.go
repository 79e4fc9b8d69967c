package dkim

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"unicode"

	"github.com/emersion/go-message/textproto"
	msgauth "github.com/emersion/go-msgauth/authres"
	msgdkim "github.com/emersion/go-msgauth/dkim"
	mdns "github.com/miekg/dns"

	"github.com/larkpost/larkpost/stdlib/authres"
	"github.com/larkpost/larkpost/stdlib/dns"
)

// MaxSignatures is how many signatures of one message are verified: each
// costs a key lookup and a hash of the body, and a sender gains nothing
// from more (RFC 6376 section 8.4 lets verifiers limit them).
const MaxSignatures = 8

// Results of a verification, as RFC 8601 names them.
const (
	Pass      = "pass"
	Fail      = "fail"
	Neutral   = "neutral"
	TempError = "temperror"
	PermError = "permerror"
)

// Result is the verification of one DKIM-Signature field.
type Result struct {
	Result     string // Pass, Fail, Neutral, TempError or PermError
	Reason     string // why, "" for Pass
	Domain     string // d=
	Selector   string // s=
	Algorithm  string // a=
	Identifier string // i=, or "@" + d= when absent
	Headers    []string
}

// Verify verifies the signatures of a message: r holds the whole message
// as received (size bytes) and h is its parsed header. Keys are fetched
// through s, within its budget and deadline. Each result is recorded in
// the Authentication-Results of the hook's context. An unsigned message
// gives no results and is not read.
func Verify(s *dns.Session, r io.ReaderAt, size int64, h textproto.Header) []Result {
	sigs := signatures(h, MaxSignatures+1)
	if len(sigs) == 0 {
		// Without a signature go-msgauth would still read the whole
		// body; nothing is there to check.
		return nil
	}
	ctx, cancel := s.Context()
	defer cancel()

	// The reader stops at the hook's deadline: a big message must not
	// keep a hook past it. The CRLF appended ends the header of a
	// message that has no body and no empty line after its header,
	// which go-msgauth would otherwise refuse; both canonicalizations
	// ignore empty lines at the end of the body, so the hashes are the
	// same.
	stream := io.MultiReader(ctxReader{ctx, io.NewSectionReader(r, 0, size)}, strings.NewReader("\r\n"))
	verifs, err := msgdkim.VerifyWithOptions(stream, &msgdkim.VerifyOptions{
		LookupTXT:        keyLookup(s, sigs[:min(len(sigs), MaxSignatures)]),
		MaxVerifications: MaxSignatures,
	})
	tooMany := errors.Is(err, msgdkim.ErrTooManySignatures)
	if err != nil && !tooMany {
		// An error of ours (the message could not be read, the
		// deadline passed), not of the signatures: retrying may work.
		verifs = nil
		for range sigs[:min(len(sigs), MaxSignatures)] {
			verifs = append(verifs, &msgdkim.Verification{Err: err})
		}
	}

	var out []Result
	for i, v := range verifs {
		var sig tags
		if i < len(sigs) {
			sig = sigs[i]
		}
		out = append(out, result(v, sig, err != nil && !tooMany))
	}
	if tooMany {
		out = append(out, Result{Result: PermError, Reason: "too many signatures"})
	}
	for i, res := range out {
		var b string
		if i < len(sigs) {
			b = sigs[i]["b"]
		}
		authres.Add(ctx, authResult(res, b))
	}
	return out
}

// authResult is res as an Authentication-Results entry. header.b (the
// first 8 characters of the signature, RFC 6008) tells apart two
// signatures of one domain (an RSA and an Ed25519 one, say), which
// go-msgauth's DKIMResult cannot carry.
func authResult(res Result, b string) msgauth.Result {
	p := map[string]string{}
	for k, v := range map[string]string{"reason": res.Reason, "header.d": res.Domain, "header.i": res.Identifier,
		"header.s": res.Selector, "header.a": res.Algorithm} {
		if v != "" {
			p[k] = v
		}
	}
	if b = stripSpace(b); len(b) >= 8 {
		p["header.b"] = b[:8]
	}
	return &msgauth.GenericResult{Method: "dkim", Value: msgauth.ResultValue(res.Result), Params: p}
}

// result turns a go-msgauth verification into a Result, completing what
// the library leaves out (it stops filling a Verification at the first
// error) from the signature's tags.
func result(v *msgdkim.Verification, sig tags, ours bool) Result {
	res := Result{
		Domain:     v.Domain,
		Selector:   sig["s"],
		Algorithm:  strings.ToLower(sig["a"]),
		Identifier: v.Identifier,
		Headers:    lowerAll(v.HeaderKeys),
	}
	if res.Domain == "" {
		res.Domain = sig["d"]
	}
	res.Domain = strings.ToLower(res.Domain) // for scripts to compare
	if res.Identifier == "" {
		res.Identifier = sig["i"]
	}
	if res.Headers == nil && sig["h"] != "" {
		res.Headers = lowerAll(strings.Split(sig["h"], ":"))
	}
	err := v.Err
	res.Reason = strings.ReplaceAll(errString(err), "dkim: ", "")
	switch {
	case err == nil:
		res.Result = Pass
	case ours, msgdkim.IsTempFail(err):
		res.Result = TempError
	case msgdkim.IsPermFail(err):
		res.Result = PermError
	case sig.has("l"):
		// go-msgauth refuses l= before it checks anything else: the
		// signature was not verified, so it did not fail either.
		res.Result = Neutral
	default:
		res.Result = Fail
	}
	return res
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func lowerAll(l []string) []string {
	if l == nil {
		return nil
	}
	out := make([]string, 0, len(l))
	for _, s := range l {
		if s != "" {
			out = append(out, strings.ToLower(s))
		}
	}
	return out
}

// keyLookup returns go-msgauth's LookupTXT. The keys of the signatures
// are fetched at once beforehand, concurrently and within the budget
// (go-msgauth verifies several signatures in parallel goroutines, and a
// Session's budget is not safe for concurrent use); a name the tags did
// not predict is looked up then, one at a time.
func keyLookup(s *dns.Session, sigs []tags) func(string) ([]string, error) {
	var names []string
	seen := map[string]bool{}
	for _, sig := range sigs {
		name, ok := sig.keyName()
		if ok && !seen[name] {
			seen[name] = true
			names = append(names, name)
		}
	}
	keys := map[string]dns.Result{}
	for i, r := range s.LookupAll(names, mdns.TypeTXT) {
		keys[names[i]] = r
	}
	var mu sync.Mutex
	return func(name string) ([]string, error) {
		mu.Lock()
		defer mu.Unlock()
		r, ok := keys[name]
		if !ok {
			r = s.Lookup(name, mdns.TypeTXT)
			keys[name] = r
		}
		return r.Values, netError(name, r)
	}
}

// netError converts a failed lookup to the error go-msgauth classifies:
// it asks a net.Error whether it is Temporary (then temperror) and takes
// anything else, NXDOMAIN included, as a permanent failure.
func netError(name string, r dns.Result) error {
	switch r.Status {
	case dns.OK, dns.NoData:
		return nil // NODATA: no records, which go-msgauth calls "no key"
	}
	detail := r.Err
	if strings.HasPrefix(detail, "lookup ") {
		// "lookup NAME TYPE: why": net.DNSError names the name itself.
		if _, why, ok := strings.Cut(detail, ": "); ok {
			detail = why
		}
	}
	return &net.DNSError{
		Err:         detail,
		Name:        name,
		IsNotFound:  r.Status == dns.NXDomain,
		IsTemporary: r.Status == dns.TempError,
	}
}

// ctxReader fails once ctx is done.
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

// tags are the tags of a DKIM-Signature field, values with white space
// removed as go-msgauth reads them.
type tags map[string]string

func (t tags) has(k string) bool { _, ok := t[k]; return ok }

// signatures returns the tags of h's first max DKIM-Signature fields, in
// the order of the header, as go-msgauth verifies them.
func signatures(h textproto.Header, max int) []tags {
	var out []tags
	for f := h.FieldsByKey("DKIM-Signature"); f.Next() && len(out) < max; {
		out = append(out, parseTags(f.Value()))
	}
	return out
}

// parseTags reads "k=v; k=v" leniently: it is for reporting, and a
// malformed field is go-msgauth's to refuse.
func parseTags(s string) tags {
	t := tags{}
	for _, kv := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" || t.has(k) {
			continue
		}
		t[k] = stripSpace(v)
	}
	return t
}

// keyName is the name go-msgauth will ask for the key of the signature,
// if it will ask: it stops earlier at a wrong version or a missing tag,
// and asks nothing for an unknown query method.
func (t tags) keyName() (string, bool) {
	if t["v"] != "1" || t["d"] == "" || t["s"] == "" {
		return "", false
	}
	if q, ok := t["q"]; ok && !slices.Contains(strings.Split(q, ":"), string(msgdkim.QueryMethodDNSTXT)) {
		return "", false
	}
	return t["s"] + "._domainkey." + t["d"], true
}

func stripSpace(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return r
	}, s)
}
