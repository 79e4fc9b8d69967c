package rules

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.starlark.net/starlark"

	"github.com/larkpost/larkpost/stdlib/addr"
)

// Cleanup is Postfix's cleanup(8) step between the SMTP session and the
// queue: canonical rewriting (rewrite hook or canonical tables, origin,
// masquerading) and recipient expansion (expand hook, or virtual aliases,
// aliases and .forward). The server and the dry run call the same code.
// The tables' part, what applies when no hook decides, is package
// postfix's; this file runs the hooks and falls back on it.

// RewriteContext says what an address is, for the rewrite hook: `ctx`.
type RewriteContext struct {
	Envelope bool   // envelope (true) or a header field
	Sender   bool   // sender (MAIL FROM, From, Sender, Reply-To, Return-Path) or recipient
	Header   string // the header field name, "" for the envelope
}

type rewriteCtxValue struct{ c RewriteContext }

var _ starlark.HasAttrs = rewriteCtxValue{}

func (v rewriteCtxValue) String() string        { return fmt.Sprintf("<rewrite ctx %+v>", v.c) }
func (v rewriteCtxValue) Type() string          { return "rewrite_ctx" }
func (v rewriteCtxValue) Freeze()               {}
func (v rewriteCtxValue) Truth() starlark.Bool  { return true }
func (v rewriteCtxValue) Hash() (uint32, error) { return starlark.String(v.String()).Hash() }
func (v rewriteCtxValue) AttrNames() []string {
	return []string{"envelope", "header", "recipient", "sender"}
}
func (v rewriteCtxValue) Attr(name string) (starlark.Value, error) {
	switch name {
	case "envelope":
		return starlark.Bool(v.c.Envelope), nil
	case "sender":
		return starlark.Bool(v.c.Sender), nil
	case "recipient":
		return starlark.Bool(!v.c.Sender), nil
	case "header":
		return optString(v.c.Header), nil
	}
	return nil, nil
}

// Rewrite returns the canonical form of an address: origin appended to a
// bare local part, then the rewrite hook, or without one (or when it
// returns None) sender/recipient_canonical_maps, then canonical_maps, then
// masquerade_domains for senders. A hook failure, or a canonical table
// that fails, leaves the address as it was and is returned: for the
// envelope the message is then refused temporarily (CleanupEnvelope),
// for a header field the failure is logged; rewriting never loses mail.
func (p *Policy) Rewrite(ctx context.Context, a string, rc RewriteContext) (string, error) {
	out, _, err := p.rewrite(ctx, a, rc)
	return out, err
}

// rewrite is Rewrite, also saying what rewrote: the hook's returning
// line, or the tables.
func (p *Policy) rewrite(ctx context.Context, a string, rc RewriteContext) (string, string, error) {
	if a == "" {
		return "", "", nil // the null sender stays null
	}
	if !strings.Contains(a, "@") {
		a += "@" + p.Settings.Origin
	}
	parsed, err := addr.Parse(a)
	if err != nil {
		return a, "", nil
	}
	if p.hooks[HookRewrite] != nil {
		v, source, err := p.callValue(ctx, HookRewrite, addr.NewValue(parsed, p.Settings.RecipientDelimiter), rewriteCtxValue{rc})
		if err != nil {
			return a, "", p.scriptError(HookRewrite, err)
		}
		if s, ok := starlark.AsString(v); ok && s != "" {
			if _, err := addr.Parse(s); err != nil {
				return a, "", fmt.Errorf("rewrite returned a bad address %q", s)
			}
			return s, source, nil
		}
		if v != starlark.None {
			if av, ok := v.(*addr.Value); ok {
				return av.Address().String(), source, nil
			}
			return a, "", fmt.Errorf("rewrite returned %s, want an address string or None", v.Type())
		}
	}
	out, how, err := p.tables.Rewrite(p.postfixConfig(), parsed.String(), rc.Sender)
	if err != nil {
		return a, "", err
	}
	return out, how, nil
}

// TargetKind says what a recipient expands to.
type TargetKind int

// The expansion results: an address (final or for another server), a
// file to append to, or a command to pipe to (from aliases and .forward).
const (
	TargetAddress TargetKind = iota
	TargetFile
	TargetPipe
)

func (k TargetKind) String() string { return [...]string{"address", "file", "pipe"}[k] }

// Target is one expanded recipient.
type Target struct {
	Kind  TargetKind
	Value string // the address, path or command
	Orig  string // the recipient it was expanded from (for X-Original-To and DSNs)
	Via   string // what expanded it: "aliases", a table name, a script line, ".forward"
}

// ErrExpansion wraps expansion failures: loops past the recursion limit or
// more than the expansion limit of addresses. The message is deferred.
var ErrExpansion = errors.New("expansion failed")

// errLimit marks expansion failures that no retry can fix: the recipient
// bounces.
var errLimit = fmt.Errorf("%w: limit", ErrExpansion)

// Expand turns one recipient into its final targets: the expand hook, or
// by default virtual_alias_maps (any domain), then aliases and .forward
// (local domains). Recursion is loop-safe: an address that expands to
// itself is delivered as itself, an address seen before on the same path
// is not expanded again. Results are deduplicated.
func (p *Policy) Expand(ctx context.Context, rcpt string) ([]Target, error) {
	e := &expander{p: p, ctx: ctx, seen: map[string]bool{}}
	if err := e.expand(rcpt, rcpt, "", 0, map[string]bool{}); err != nil {
		return nil, err
	}
	return e.out, nil
}

type expander struct {
	p    *Policy
	ctx  context.Context
	out  []Target
	seen map[string]bool // dedupe of final targets
}

func (e *expander) add(t Target) error {
	key := t.Kind.String() + ":" + strings.ToLower(t.Value)
	if e.seen[key] {
		return nil
	}
	e.seen[key] = true
	e.out = append(e.out, t)
	if len(e.out) > e.p.Settings.ExpansionLimit {
		return fmt.Errorf("%w: more than virtual_alias_expansion_limit (%d) addresses", errLimit, e.p.Settings.ExpansionLimit)
	}
	return nil
}

func (e *expander) expand(a, orig, via string, depth int, path map[string]bool) error {
	if depth > e.p.Settings.RecursionLimit {
		return fmt.Errorf("%w: virtual_alias_recursion_limit (%d) exceeded at %s", errLimit, e.p.Settings.RecursionLimit, a)
	}
	key := strings.ToLower(a)
	if path[key] {
		// Seen higher up this branch: an alias that includes itself
		// means "also deliver here", so this is a final target.
		return e.add(Target{Kind: TargetAddress, Value: a, Orig: orig, Via: via})
	}
	targets, how, err := e.lookup(a)
	if err != nil {
		return err
	}
	if targets == nil {
		return e.add(Target{Kind: TargetAddress, Value: a, Orig: orig, Via: via})
	}
	path[key] = true
	defer delete(path, key)
	for _, t := range targets {
		switch {
		case strings.HasPrefix(t, "|"):
			if err := e.add(Target{Kind: TargetPipe, Value: strings.TrimSpace(t[1:]), Orig: orig, Via: how}); err != nil {
				return err
			}
		case strings.HasPrefix(t, "/"):
			if err := e.add(Target{Kind: TargetFile, Value: t, Orig: orig, Via: how}); err != nil {
				return err
			}
		default:
			if !strings.Contains(t, "@") {
				t += "@" + e.p.Settings.Origin
			}
			if strings.EqualFold(t, a) {
				if err := e.add(Target{Kind: TargetAddress, Value: a, Orig: orig, Via: how}); err != nil {
					return err
				}
				continue
			}
			if err := e.expand(t, orig, how, depth+1, path); err != nil {
				return err
			}
		}
	}
	return nil
}

// lookup finds what a expands to: nil when it is final.
func (e *expander) lookup(a string) ([]string, string, error) {
	p := e.p
	parsed, err := addr.Parse(a)
	if err != nil {
		return nil, "", nil
	}
	if p.hooks[HookExpand] != nil {
		v, source, err := p.callValue(e.ctx, HookExpand, addr.NewValue(parsed, p.Settings.RecipientDelimiter))
		if err != nil {
			return nil, "", fmt.Errorf("%w: %v", ErrExpansion, p.scriptError(HookExpand, err))
		}
		if v != starlark.None {
			list, ok := v.(starlark.Iterable)
			if !ok {
				return nil, "", fmt.Errorf("expand returned %s, want a list of addresses, /files or |commands, or None", v.Type())
			}
			var out []string
			for x := range starlark.Elements(list) {
				s, ok := starlark.AsString(x)
				if !ok {
					if av, isAddr := x.(*addr.Value); isAddr {
						s, ok = av.Address().String(), true
					}
				}
				if !ok {
					return nil, "", fmt.Errorf("expand returned a %s in its list, want strings", x.Type())
				}
				out = append(out, s)
			}
			return out, "expand hook at " + source, nil
		}
	}
	out, via, err := p.tables.Expand(p.postfixConfig(), parsed)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrExpansion, err)
	}
	return out, via, nil
}

// Cleaned is what cleanup made of an accepted message's envelope.
type Cleaned struct {
	Sender string
	Rcpts  []CleanRcpt
	Steps  []Step // the rewrite and expand decisions, for the message's log
}

// CleanRcpt is one final recipient and the SMTP recipient it came from.
type CleanRcpt struct {
	Target
	From  int    // index of the SMTP recipient it was expanded from
	Error string // set when expansion failed: the recipient bounces with 5.4.6
}

// RewritesHeaders reports whether cleanup must look at header addresses:
// only with a rewrite hook or canonical tables, so plain setups pay nothing.
func (p *Policy) RewritesHeaders() bool {
	return p.hooks[HookRewrite] != nil || p.tables.RewritesHeaders(p.postfixConfig())
}

// CleanupEnvelope rewrites the sender and each recipient and expands the
// recipients. A failing hook returns an error (the message is refused with
// a temporary error); a recipient that expands without bound is kept with
// Error set, to bounce.
func (p *Policy) CleanupEnvelope(ctx context.Context, sender string, rcpts []string) (*Cleaned, error) {
	c := &Cleaned{}
	s, how, err := p.rewrite(ctx, sender, RewriteContext{Envelope: true, Sender: true})
	if err != nil {
		return nil, err
	}
	if s != sender {
		c.Steps = append(c.Steps, Step{Stage: "rewrite", Arg: sender, Decision: Decision{Kind: Accept, Text: s, Hook: "rewrite", Source: how}})
	}
	c.Sender = s
	for i, r := range rcpts {
		rw, how, err := p.rewrite(ctx, r, RewriteContext{Envelope: true})
		if err != nil {
			return nil, err
		}
		if rw != r {
			c.Steps = append(c.Steps, Step{Stage: "rewrite", Arg: r, Decision: Decision{Kind: Accept, Text: rw, Hook: "rewrite", Source: how}})
		}
		ts, err := p.Expand(ctx, rw)
		if err != nil {
			if !errors.Is(err, errLimit) {
				return nil, err // a broken hook: temporary, the client retries
			}
			c.Rcpts = append(c.Rcpts, CleanRcpt{Target: Target{Kind: TargetAddress, Value: rw, Orig: r}, From: i, Error: "unreasonable alias expansion: " + err.Error()})
			continue
		}
		var parts []string
		for _, t := range ts {
			t.Orig = r
			c.Rcpts = append(c.Rcpts, CleanRcpt{Target: t, From: i})
			if t.Kind == TargetAddress && strings.EqualFold(t.Value, rw) && len(ts) == 1 {
				continue
			}
			v := t.Value
			if t.Kind == TargetPipe {
				v = "|" + v
			}
			parts = append(parts, v)
		}
		if len(parts) > 0 {
			c.Steps = append(c.Steps, Step{Stage: "expand", Arg: rw, Decision: Decision{Kind: Accept, Text: strings.Join(parts, ", "), Hook: "expand", Source: ts[0].Via}})
		}
	}
	// Duplicate elimination across recipients, as Postfix's cleanup does.
	seen := map[string]bool{}
	out := c.Rcpts[:0]
	for _, r := range c.Rcpts {
		key := r.Kind.String() + ":" + strings.ToLower(r.Value)
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, r)
	}
	c.Rcpts = out
	return c, nil
}
