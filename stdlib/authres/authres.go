// Package authres collects what a session's hooks checked (SPF, DKIM,
// DMARC, ARC, reverse DNS, AUTH) so that the server can write one
// Authentication-Results header (RFC 8601) for the message, and removes
// forged ones. The checking modules add to the Recorder they find in the
// hook's context; the SMTP session owns it.
package authres

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/emersion/go-message/textproto"
	msgauth "github.com/emersion/go-msgauth/authres"
	"go.starlark.net/starlark"
)

// Recorder holds the results of one SMTP session: those of the
// connection (kept for every transaction) and those of the current
// transaction. It is safe for concurrent use.
type Recorder struct {
	mu      sync.Mutex
	results []msgauth.Result
	conn    int // results[:conn] belong to the connection
}

type ctxKey struct{}

// With returns ctx carrying r.
func With(ctx context.Context, r *Recorder) context.Context {
	if r == nil {
		return ctx
	}
	return context.WithValue(ctx, ctxKey{}, r)
}

// From returns the Recorder ctx carries, or nil.
func From(ctx context.Context) *Recorder {
	r, _ := ctx.Value(ctxKey{}).(*Recorder)
	return r
}

// Add records res, replacing an earlier result of the same method for
// the same subject (a script that checks SPF in on_mail and again in
// on_rcpt gets one line, the last).
func (r *Recorder) Add(res msgauth.Result) {
	if r == nil || res == nil {
		return
	}
	k := subject(res)
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, old := range r.results {
		if subject(old) == k {
			r.results[i] = res
			return
		}
	}
	r.results = append(r.results, res)
}

// Add records res in the Recorder ctx carries, if any.
func Add(ctx context.Context, res msgauth.Result) { From(ctx).Add(res) }

// BeginTx marks what was recorded so far as the connection's: ResetTx
// keeps it.
func (r *Recorder) BeginTx() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.conn = len(r.results)
}

// ResetTx forgets the results of the transaction.
func (r *Recorder) ResetTx() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.results[r.conn:])
	r.results = r.results[:r.conn]
}

// Results returns a copy of what was recorded.
func (r *Recorder) Results() []msgauth.Result {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]msgauth.Result(nil), r.results...)
}

// subject identifies what a result is about: its method and the
// identity it checked.
func subject(res msgauth.Result) string {
	switch res := res.(type) {
	case *msgauth.SPFResult:
		if res.From != "" {
			return "spf mailfrom " + strings.ToLower(res.From)
		}
		return "spf helo " + strings.ToLower(res.Helo)
	case *msgauth.DKIMResult:
		return "dkim " + strings.ToLower(res.Domain) + " " + res.Identifier
	case *msgauth.DMARCResult:
		return "dmarc " + strings.ToLower(res.From)
	case *msgauth.IPRevResult:
		return "iprev " + res.IP
	case *msgauth.AuthResult:
		return "auth"
	case *msgauth.GenericResult:
		// The params say what was checked (header.d, header.b, ...);
		// the reason does not.
		keys := make([]string, 0, len(res.Params))
		for k := range res.Params {
			if k != "reason" {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		id := res.Method
		for _, k := range keys {
			id += " " + k + "=" + res.Params[k]
		}
		return id
	}
	return ""
}

// Field returns the whole header field, "Authentication-Results: ...\r\n",
// folded between results, or "" when nothing was recorded (RFC 8601
// allows "none", which says nothing useful).
func Field(authservID string, results []msgauth.Result) string {
	if len(results) == 0 {
		return ""
	}
	// A line per result keeps the header readable and its lines short.
	var b strings.Builder
	b.WriteString("Authentication-Results: " + authservID)
	for _, res := range results {
		one := msgauth.Format("x", []msgauth.Result{res})
		b.WriteString(";\r\n\t" + strings.TrimSpace(strings.TrimPrefix(one, "x; ")))
	}
	b.WriteString("\r\n")
	return b.String()
}

// IsOurs reports whether an Authentication-Results field value (after
// the colon) claims to come from authservID. Such a field in mail from
// outside was not written by us and must be removed (RFC 8601 section
// 5), or a sender could claim its own pass.
func IsOurs(value, authservID string) bool {
	id, _, err := msgauth.Parse(value)
	if err != nil {
		// An unparsable field may still fool a reader that is more
		// lenient: look at its first word.
		id, _, _ = strings.Cut(strings.TrimSpace(value), ";")
		id = strings.TrimSpace(id)
	}
	id, _, _ = strings.Cut(id, " ") // authserv-id [version]
	return strings.EqualFold(strings.TrimSpace(id), authservID)
}

// Message is the message value of on_data as the checking modules (dkim,
// dmarc, arc) read it: the whole message as received, readable where it
// is stored, its size and its parsed header. The reader is nil when the
// message is not at hand.
type Message interface {
	RawMessage() (io.ReaderAt, int64, textproto.Header)
}

// MessageArg is the message argument v of builtin b, with its content.
func MessageArg(b *starlark.Builtin, v starlark.Value) (io.ReaderAt, int64, textproto.Header, error) {
	msg, ok := v.(Message)
	if !ok {
		return nil, 0, textproto.Header{}, fmt.Errorf("%s: got %s, want the message (msg of on_data)", b.Name(), v.Type())
	}
	r, size, h := msg.RawMessage()
	if r == nil {
		return nil, 0, h, fmt.Errorf("%s: the message's content is not at hand here", b.Name())
	}
	return r, size, h, nil
}
