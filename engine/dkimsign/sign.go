package dkimsign

import (
	"crypto"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/dkim"
)

// DefaultHeaders are the header fields signed when present, in h= order.
// See the package documentation for why these.
var DefaultHeaders = []string{
	"From", "Reply-To", "Subject", "Date", "To", "Cc",
	"Message-ID", "In-Reply-To", "References", "Sender",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding",
	"Resent-Date", "Resent-From", "Resent-Sender", "Resent-To", "Resent-Cc", "Resent-Message-ID",
	"List-Id", "List-Help", "List-Unsubscribe", "List-Unsubscribe-Post",
	"List-Subscribe", "List-Post", "List-Owner", "List-Archive",
	"Autocrypt",
}

// DefaultOversign are the header fields signed one time more than they
// occur.
var DefaultOversign = []string{"From"}

// ErrNoKey is returned (wrapped) by Sign when no key covers the domain.
var ErrNoKey = errors.New("no dkim key for domain")

// maxLine is the line length RFC 5322 asks header lines to stay within,
// CRLF not counted.
const maxLine = 78

// Options are the optional settings of New.
type Options struct {
	// Headers are the header fields to sign when the message has them.
	// Empty means DefaultHeaders. It must include From.
	Headers []string
	// Oversign are header fields listed in h= once more than the message
	// has them, so that adding one after signing breaks the signature.
	// nil means DefaultOversign; an empty non-nil slice turns it off.
	// Names not in Headers are signed too.
	Oversign []string
	// Expire, if positive, adds x= that far after t=. Default: no x=.
	Expire time.Duration
	// Log receives key reloads and reload failures. Default:
	// slog.Default().
	Log *slog.Logger
	// Now is the clock deciding when to look at key files again.
	// Default: time.Now. (t= always comes from the wall clock:
	// go-msgauth has no clock option.)
	Now func() time.Time
}

// Signer signs outgoing messages with the configured keys. It is safe
// for concurrent use.
type Signer struct {
	byDomain map[string][]*Key // lower-case domain -> its keys, config order
	headers  []string          // lower-case, deduplicated
	oversign map[string]bool
	expire   time.Duration
	log      *slog.Logger
	now      func() time.Time
	warnings []string
}

// New loads every key file. All the errors found are returned together,
// each naming its file. Keys that load but are weak (RSA under 2048 bits)
// are logged and listed by Warnings.
func New(keys []KeyConfig, opts Options) (*Signer, error) {
	s := &Signer{
		byDomain: map[string][]*Key{},
		oversign: map[string]bool{},
		expire:   opts.Expire,
		log:      opts.Log,
		now:      opts.Now,
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	headers, oversign := opts.Headers, opts.Oversign
	if len(headers) == 0 {
		headers = DefaultHeaders
	}
	if oversign == nil {
		oversign = DefaultOversign
	}
	for _, list := range [][]string{headers, oversign} {
		for _, h := range list {
			if !validFieldName(h) {
				return nil, fmt.Errorf("dkim: bad header field name %q", h)
			}
			if h = strings.ToLower(h); !slices.Contains(s.headers, h) {
				s.headers = append(s.headers, h)
			}
		}
	}
	if !slices.Contains(s.headers, "from") {
		return nil, errors.New("dkim: the signed headers must include From (RFC 6376 5.4)")
	}
	for _, h := range oversign {
		s.oversign[strings.ToLower(h)] = true
	}

	var errs []error
	for _, c := range keys {
		k, warn, err := loadKey(c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if slices.ContainsFunc(s.byDomain[k.Domain], func(o *Key) bool { return o.Selector == k.Selector }) {
			errs = append(errs, fmt.Errorf("dkim key %s: %s configured twice", k.File, TXTName(k.Selector, k.Domain)))
			continue
		}
		if warn != "" {
			s.warnings = append(s.warnings, warn)
			s.log.Warn("dkim key: "+warn, "domain", k.Domain, "selector", k.Selector)
		}
		k.checked = s.now()
		s.byDomain[k.Domain] = append(s.byDomain[k.Domain], k)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

// Warnings lists what New found usable but worth fixing, one line each.
func (s *Signer) Warnings() []string {
	return slices.Clone(s.warnings)
}

// Reload reads every key file now, changed or not (for SIGHUP). Keys
// whose file fails keep the key in force; the errors are returned.
func (s *Signer) Reload() error {
	var errs []error
	now := s.now()
	for _, keys := range s.byDomain {
		for _, k := range keys {
			k.mu.Lock()
			k.checked = now
			if err := k.reloadLocked(); err != nil {
				errs = append(errs, fmt.Errorf("dkim key: %w", err))
			}
			k.mu.Unlock()
		}
	}
	return errors.Join(errs...)
}

// KeyFor returns the key that signs mail of domain: the domain's own key,
// else that of the nearest parent domain having one. A key for example.com
// thus signs mail from a.example.com with d=example.com, which relaxed
// DMARC alignment accepts. With several keys for a domain, the first
// configured is returned (Sign uses them all).
func (s *Signer) KeyFor(domain string) (*Key, bool) {
	keys := s.keysFor(domain)
	if len(keys) == 0 {
		return nil, false
	}
	return keys[0], true
}

func (s *Signer) keysFor(domain string) []*Key {
	d, err := normalizeName(domain)
	if err != nil {
		return nil
	}
	for {
		if keys := s.byDomain[d]; len(keys) > 0 {
			return keys
		}
		_, parent, ok := strings.Cut(d, ".")
		if !ok {
			return nil
		}
		d = parent
	}
}

// Sign signs a message for domain (normally the domain of its From
// address) with every key KeyFor's domain has, and returns the
// DKIM-Signature fields to prepend, folded, each ending in CRLF. header
// is the raw header block without the blank line that ends it; body is
// read once, to EOF, as a stream. Lines ending in a bare LF are taken as
// ending in CRLF, the form the message has on the wire. A header block
// with an empty line, a bare CR, a NUL, a line without a colon, or no
// From field is refused. A domain no key covers gives an error wrapping
// ErrNoKey.
func (s *Signer) Sign(domain string, header []byte, body io.Reader) (string, error) {
	keys := s.keysFor(domain)
	if len(keys) == 0 {
		return "", fmt.Errorf("dkim sign: %w %q", ErrNoKey, domain)
	}
	h, counts, err := prepareHeader(header)
	if err != nil {
		return "", fmt.Errorf("dkim sign: %w", err)
	}
	if counts["from"] == 0 {
		return "", errors.New("dkim sign: the header has no From field")
	}
	opts := dkim.SignOptions{
		Hash:                   crypto.SHA256,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             s.headerKeys(counts),
	}
	if s.expire > 0 {
		// go-msgauth takes t= from time.Now, so x= does too.
		opts.Expiration = time.Now().Add(s.expire)
	}

	now := s.now()
	signers := make([]*dkim.Signer, 0, len(keys))
	writers := make([]io.Writer, 0, len(keys))
	defer func() {
		// Ends the signing goroutines after an error; a no-op after
		// the successful Close below.
		for _, ds := range signers {
			ds.Close()
		}
	}()
	for _, k := range keys {
		o := opts
		o.Domain, o.Selector, o.Signer = k.Domain, k.Selector, k.get(now, s.log)
		ds, err := dkim.NewSigner(&o)
		if err != nil {
			return "", fmt.Errorf("dkim sign with %s: %w", TXTName(k.Selector, k.Domain), err)
		}
		signers = append(signers, ds)
		writers = append(writers, ds)
	}
	w := io.MultiWriter(writers...)
	if _, err := w.Write(h); err != nil {
		return "", fmt.Errorf("dkim sign: header: %w", err)
	}
	if _, err := io.WriteString(w, "\r\n"); err != nil {
		return "", fmt.Errorf("dkim sign: header: %w", err)
	}
	if body != nil {
		if _, err := io.Copy(w, body); err != nil {
			return "", fmt.Errorf("dkim sign: body: %w", err)
		}
	}
	var out strings.Builder
	for i, ds := range signers {
		if err := ds.Close(); err != nil {
			return "", fmt.Errorf("dkim sign with %s: %w", TXTName(keys[i].Selector, keys[i].Domain), err)
		}
		out.WriteString(fold(ds.Signature()))
	}
	return out.String(), nil
}

// headerKeys builds h=: each configured name as many times as the message
// has it, plus once more if oversigned. A verifier takes the fields from
// the bottom up and hashes a missing one as nothing, so the extra name
// seals the count: an added field takes its place and the hash changes.
// Names absent from the message are left out unless oversigned, which
// then seals their absence.
func (s *Signer) headerKeys(counts map[string]int) []string {
	var keys []string
	for _, name := range s.headers {
		n := counts[name]
		if s.oversign[name] {
			n++
		}
		for range n {
			keys = append(keys, name)
		}
	}
	return keys
}

// prepareHeader checks the header block and returns it with CRLF line
// ends, plus how many fields of each lower-case name it has.
func prepareHeader(header []byte) ([]byte, map[string]int, error) {
	text := string(header)
	text = strings.TrimSuffix(text, "\n")
	if text == "" {
		return nil, nil, errors.New("empty header")
	}
	out := make([]byte, 0, len(header)+len(header)/32)
	counts := map[string]int{}
	for i, line := range strings.SplitAfter(text, "\n") {
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		switch {
		case line == "":
			return nil, nil, fmt.Errorf("header line %d is empty (a header block has no blank line)", i+1)
		case strings.ContainsAny(line, "\r\x00"):
			return nil, nil, fmt.Errorf("header line %d has a bare CR or a NUL", i+1)
		case line[0] == ' ' || line[0] == '\t':
			if i == 0 {
				return nil, nil, errors.New("header starts with a continuation line")
			}
		default:
			name, _, ok := strings.Cut(line, ":")
			if !ok {
				return nil, nil, fmt.Errorf("header line %d has no colon", i+1)
			}
			// Trimmed as go-msgauth does when it picks fields.
			counts[strings.ToLower(strings.TrimSpace(name))]++
		}
		out = append(out, line...)
		out = append(out, '\r', '\n')
	}
	return out, counts, nil
}

// validFieldName accepts RFC 5322 field names: printable ASCII but colon.
func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 || s[i] == ':' {
			return false
		}
	}
	return true
}

// fold lays out a DKIM-Signature field from go-msgauth in lines of at most
// maxLine characters. The signature covers this field with the b= value
// removed, under relaxed canonicalization, which turns every run of
// whitespace, folded or not, into one space. So the tags may be moved
// between lines wherever go-msgauth put a space, and b= may be broken
// anywhere, but nothing may be split where there was no space: a tag
// longer than a line (h= with many names) gets a line of its own.
func fold(field string) string {
	name, value, ok := strings.Cut(field, ":")
	if !ok {
		return field
	}
	toks := strings.Fields(value)
	bi := slices.IndexFunc(toks, func(t string) bool { return strings.HasPrefix(t, "b=") })
	if bi < 0 {
		return field
	}
	b := strings.Join(toks[bi:], "") // go-msgauth folds b= itself
	toks = toks[:bi]

	var out strings.Builder
	out.WriteString(name + ":")
	line := len(name) + 1
	for _, t := range toks {
		if line > 1 && line+1+len(t) > maxLine {
			out.WriteString("\r\n")
			line = 0
		}
		out.WriteString(" " + t)
		line += 1 + len(t)
	}
	// Keep "b=" and a few characters together on the first line.
	if line+1+8 > maxLine {
		out.WriteString("\r\n")
		line = 0
	}
	out.WriteByte(' ')
	line++
	for {
		n := min(maxLine-line, len(b))
		out.WriteString(b[:n])
		b = b[n:]
		if b == "" {
			break
		}
		out.WriteString("\r\n ")
		line = 1
	}
	out.WriteString("\r\n")
	return out.String()
}

// Keys returns every key, by domain then in config order, for listing
// the records to publish.
func (s *Signer) Keys() []*Key {
	domains := make([]string, 0, len(s.byDomain))
	for d := range s.byDomain {
		domains = append(domains, d)
	}
	slices.Sort(domains)
	var out []*Key
	for _, d := range domains {
		out = append(out, s.byDomain[d]...)
	}
	return out
}
