package rules

import (
	"fmt"
	"strconv"
	"strings"

	"go.starlark.net/starlark"
	"go.starlark.net/syntax"

	"github.com/larkpost/larkpost/rules/postfix"
)

// Kind is what a hook decided.
type Kind uint8

// The decisions a hook can return. Continue is "no opinion": the next
// check (or the default policy) decides.
const (
	Continue Kind = iota
	Accept
	Reject
	Defer
	Discard
	Hold
	// The effects: each changes the message or logs, and leaves the
	// verdict to the rest of the stage, like Postfix's DUNNO.
	Warn     // log Text
	Prepend  // add the header line Text to the message
	Redirect // send the message to address Text instead of its recipients
	Bcc      // send a copy to address Text
	// Sign decides DKIM signing for the message: Text is the signing
	// domain ("" for the From domain), or NoSign.
	Sign
)

// NoSign is the Text of sign(False): the message is not DKIM-signed.
const NoSign = "-"

var kindNames = [...]string{"continue", "accept", "reject", "defer", "discard", "hold", "warn", "prepend", "redirect", "bcc", "sign"}

// IsEffect reports whether k is a side effect that leaves the verdict to
// the default policy.
func (k Kind) IsEffect() bool { return k >= Warn }

func (k Kind) String() string { return kindNames[k] }

// Decision is the outcome of one stage: a hook's verdict or the default
// policy's. Source says who decided, as "file:line" or "default policy", so
// logs, trace and the queue's decision log can answer "why".
type Decision struct {
	Kind   Kind
	Code   int    // SMTP reply code for Reject and Defer
	Status string // enhanced status code, "5.7.1"
	Text   string // reply text shown to the client
	Source string
	Hook   string
	Err    error // set when the hook failed; the reply is then 451 4.3.5
	// Effect is the hook's side effect (warn, prepend, redirect, bcc)
	// when the verdict itself came from the default policy.
	Effect *Decision
}

// DefaultSource marks decisions made by the built-in policy.
const DefaultSource = postfix.DefaultSource

// Failed reports whether the decision stands for a hook error rather than a verdict.
func (d Decision) Failed() bool { return d.Err != nil }

func (d Decision) String() string {
	switch d.Kind {
	case Reject, Defer:
		return fmt.Sprintf("%s %d %s %s", d.Kind, d.Code, d.Status, d.Text)
	case Hold, Warn, Prepend, Redirect, Bcc, Sign:
		return d.Kind.String() + " " + d.Text
	}
	return d.Kind.String()
}

// hookFailure is the decision for a script error or overrun: temporary, so
// the client retries and nothing is lost while the admin fixes the script.
func hookFailure(hook, source string, err error) Decision {
	return Decision{Kind: Defer, Code: 451, Status: "4.3.5", Text: "Server configuration problem",
		Hook: hook, Source: source, Err: err}
}

// decisionValue is a Decision as a Starlark value, what reject() & co return.
type decisionValue struct{ d Decision }

var _ starlark.HasAttrs = (*decisionValue)(nil)

func (v *decisionValue) String() string        { return "<decision " + v.d.String() + ">" }
func (v *decisionValue) Type() string          { return "decision" }
func (v *decisionValue) Freeze()               {}
func (v *decisionValue) Truth() starlark.Bool  { return true }
func (v *decisionValue) Hash() (uint32, error) { return starlark.String(v.String()).Hash() }
func (v *decisionValue) AttrNames() []string {
	return []string{"code", "kind", "source", "status", "text"}
}
func (v *decisionValue) Attr(name string) (starlark.Value, error) {
	switch name {
	case "kind":
		return starlark.String(v.d.Kind.String()), nil
	case "code":
		return starlark.MakeInt(v.d.Code), nil
	case "status":
		return starlark.String(v.d.Status), nil
	case "text":
		return starlark.String(v.d.Text), nil
	case "source":
		return starlark.String(v.d.Source), nil
	}
	return nil, nil
}

// callerSource is "file:line" of the script line that called the builtin.
func callerSource(th *starlark.Thread) string {
	if th.CallStackDepth() < 2 {
		return ""
	}
	return posString(th.CallFrame(1).Pos)
}

func posString(p syntax.Position) string {
	if !p.IsValid() {
		return ""
	}
	return p.Filename() + ":" + strconv.Itoa(int(p.Line))
}

// checkReply validates code and enhanced status against each other, so a
// script cannot send "250" in a reject or a 4.x.x status with a 5xx code.
func checkReply(fn string, code int, class int, status string) error {
	if code/100 != class || code < 100*class || code > 100*class+99 {
		return fmt.Errorf("%s: code %d is not a %dxx reply code", fn, code, class)
	}
	parts := strings.Split(status, ".")
	if len(parts) != 3 || parts[0] != strconv.Itoa(class) {
		return fmt.Errorf("%s: status %q is not a %d.x.x enhanced status code", fn, status, class)
	}
	for _, p := range parts[1:] {
		if n, err := strconv.Atoi(p); err != nil || n < 0 || n > 999 {
			return fmt.Errorf("%s: bad enhanced status code %q", fn, status)
		}
	}
	return nil
}

func checkText(fn, text string) error {
	for _, r := range text {
		if r < ' ' && r != '\n' || r == 0x7f {
			return fmt.Errorf("%s: reply text contains a control character", fn)
		}
	}
	return nil
}

// decisionBuiltins are the predeclared constructors: accept, reject, defer,
// discard, hold.
func decisionBuiltins() starlark.StringDict {
	return starlark.StringDict{
		"accept": starlark.NewBuiltin("accept", func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			if err := starlark.UnpackArgs(b.Name(), args, kwargs); err != nil {
				return nil, err
			}
			return &decisionValue{Decision{Kind: Accept, Source: callerSource(th)}}, nil
		}),
		"reject": starlark.NewBuiltin("reject", func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			text, code, status := "Access denied", 550, ""
			if err := starlark.UnpackArgs(b.Name(), args, kwargs, "text?", &text, "code?", &code, "status?", &status); err != nil {
				return nil, err
			}
			if status == "" {
				// reject("5.7.26 DMARC policy"), as Postfix texts are written
				status, text = leadingStatus('5', "5.7.1", text)
			}
			if err := checkReply("reject", code, 5, status); err != nil {
				return nil, err
			}
			if err := checkText("reject", text); err != nil {
				return nil, err
			}
			return &decisionValue{Decision{Kind: Reject, Code: code, Status: status, Text: text, Source: callerSource(th)}}, nil
		}),
		"defer": starlark.NewBuiltin("defer", func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			text, code, status := "Try again later", 451, ""
			if err := starlark.UnpackArgs(b.Name(), args, kwargs, "text?", &text, "code?", &code, "status?", &status); err != nil {
				return nil, err
			}
			if status == "" {
				status, text = leadingStatus('4', "4.7.1", text)
			}
			if err := checkReply("defer", code, 4, status); err != nil {
				return nil, err
			}
			if err := checkText("defer", text); err != nil {
				return nil, err
			}
			return &decisionValue{Decision{Kind: Defer, Code: code, Status: status, Text: text, Source: callerSource(th)}}, nil
		}),
		"discard": starlark.NewBuiltin("discard", func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			reason := ""
			if err := starlark.UnpackArgs(b.Name(), args, kwargs, "reason?", &reason); err != nil {
				return nil, err
			}
			return &decisionValue{Decision{Kind: Discard, Text: reason, Source: callerSource(th)}}, nil
		}),
		"warn":     effectBuiltin("warn", Warn, "text"),
		"prepend":  effectBuiltin("prepend", Prepend, "header"),
		"redirect": effectBuiltin("redirect", Redirect, "address"),
		"bcc":      effectBuiltin("bcc", Bcc, "address"),
		"access":   starlark.NewBuiltin("access", accessBuiltin),
		"sign":     starlark.NewBuiltin("sign", signBuiltin),
		"hold": starlark.NewBuiltin("hold", func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			reason := ""
			if err := starlark.UnpackArgs(b.Name(), args, kwargs, "reason?", &reason); err != nil {
				return nil, err
			}
			if err := checkText("hold", reason); err != nil {
				return nil, err
			}
			return &decisionValue{Decision{Kind: Hold, Text: reason, Source: callerSource(th)}}, nil
		}),
	}
}

// effectBuiltin makes warn(text), prepend(header), redirect(address) and
// bcc(address).
func effectBuiltin(name string, k Kind, param string) *starlark.Builtin {
	return starlark.NewBuiltin(name, func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var v string
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, param, &v); err != nil {
			return nil, err
		}
		d, err := effect(name, k, v)
		if err != nil {
			return nil, err
		}
		d.Source = callerSource(th)
		return &decisionValue{d}, nil
	})
}

func effect(name string, k Kind, v string) (Decision, error) {
	v = strings.TrimSpace(v)
	if err := checkText(name, v); err != nil || strings.Contains(v, "\n") {
		return Decision{}, fmt.Errorf("%s: value must be one line without control characters", name)
	}
	switch k {
	case Prepend:
		if n, _, ok := strings.Cut(v, ":"); !ok || n == "" || strings.ContainsAny(n, " \t") {
			return Decision{}, fmt.Errorf("prepend: want \"Name: value\", got %q", v)
		}
	case Redirect, Bcc:
		if !strings.Contains(v, "@") {
			return Decision{}, fmt.Errorf("%s: want an address, got %q", name, v)
		}
	}
	return Decision{Kind: k, Text: v}, nil
}

// signBuiltin is sign(domain=""): DKIM-sign this message with the key of
// domain ("": its From domain), whoever sent it; sign(False) leaves it
// unsigned. The last sign() of a transaction wins.
func signBuiltin(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var v starlark.Value = starlark.String("")
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "domain?", &v); err != nil {
		return nil, err
	}
	text := ""
	switch v := v.(type) {
	case starlark.Bool:
		if !v {
			text = NoSign
		}
	case starlark.String:
		text = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(string(v)), "."))
		if text != "" && !validDomain(text) {
			return nil, fmt.Errorf("sign: bad domain %q", string(v))
		}
	default:
		return nil, fmt.Errorf("sign: want a domain or False, got %s", v.Type())
	}
	return &decisionValue{Decision{Kind: Sign, Text: text, Source: callerSource(th)}}, nil
}

// validDomain is a host name as DKIM's d= takes it: letters, digits,
// hyphens, dots.
func validDomain(s string) bool {
	if len(s) > 253 || strings.HasPrefix(s, ".") || strings.Contains(s, "..") {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}
