package rules

import (
	"fmt"
	"strconv"
	"strings"

	"go.starlark.net/starlark"
)

// accessBuiltin is access(action): it turns the right-hand side of a
// Postfix access(5) table into a decision, so existing tables work as they
// are: `return access(ACCESS.access(sender))`. None (no table entry) and
// DUNNO give None.
func accessBuiltin(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var v starlark.Value
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "action", &v); err != nil {
		return nil, err
	}
	if v == starlark.None {
		return starlark.None, nil
	}
	s, ok := starlark.AsString(v)
	if !ok {
		return nil, fmt.Errorf("access: want a string or None, got %s", v.Type())
	}
	d, err := AccessAction(s)
	if err != nil {
		return nil, err
	}
	if d.Kind == Continue {
		return starlark.None, nil
	}
	d.Source = callerSource(th)
	return &decisionValue{d}, nil
}

// AccessAction maps one access(5) action to a decision: OK (and a
// numerical value), REJECT [text], DEFER [text], DEFER_IF_PERMIT,
// DEFER_IF_REJECT, NNN [d.d.d] text, DISCARD, HOLD, DUNNO, WARN, INFO,
// PREPEND, REDIRECT, BCC. The codes are Postfix's defaults:
// access_map_reject_code 554 and access_map_defer_code 450.
func AccessAction(action string) (Decision, error) {
	action = strings.TrimSpace(action)
	word, rest, _ := strings.Cut(action, " ")
	rest = strings.TrimSpace(rest)
	orText := func(def string) string {
		if rest == "" {
			return def
		}
		return rest
	}
	switch strings.ToUpper(word) {
	case "OK", "PERMIT":
		return Decision{Kind: Accept}, nil
	case "DUNNO", "":
		return Decision{Kind: Continue}, nil
	case "REJECT":
		status, text := leadingStatus('5', "5.7.1", orText("Access denied"))
		return Decision{Kind: Reject, Code: 554, Status: status, Text: text}, nil
	case "DEFER", "DEFER_IF_PERMIT", "DEFER_IF_REJECT":
		status, text := leadingStatus('4', "4.7.1", orText("Access denied"))
		return Decision{Kind: Defer, Code: 450, Status: status, Text: text}, nil
	case "DISCARD":
		return Decision{Kind: Discard, Text: rest}, nil
	case "HOLD":
		return Decision{Kind: Hold, Text: rest}, nil
	case "WARN", "INFO":
		return effect("warn", Warn, orText("access table match"))
	case "PREPEND":
		return effect("prepend", Prepend, rest)
	case "REDIRECT":
		return effect("redirect", Redirect, rest)
	case "BCC":
		return effect("bcc", Bcc, rest)
	}
	if n, err := strconv.Atoi(word); err == nil {
		if len(word) != 3 {
			// Postfix: an all-numerical result is OK (for RBL-style maps).
			return Decision{Kind: Accept}, nil
		}
		class := n / 100
		status, text := strconv.Itoa(class)+".7.1", orText("Access denied")
		if st, t, ok := strings.Cut(text, " "); ok && len(st) >= 5 && st[0] == word[0] && st[1] == '.' {
			status, text = st, strings.TrimSpace(t)
		}
		switch class {
		case 4:
			if err := checkReply("access", n, 4, status); err != nil {
				return Decision{}, err
			}
			return Decision{Kind: Defer, Code: n, Status: status, Text: text}, nil
		case 5:
			if err := checkReply("access", n, 5, status); err != nil {
				return Decision{}, err
			}
			return Decision{Kind: Reject, Code: n, Status: status, Text: text}, nil
		case 2:
			return Decision{Kind: Accept}, nil
		}
	}
	return Decision{}, fmt.Errorf("access: unknown action %q", action)
}

// leadingStatus takes an enhanced status code off the start of a REJECT
// or DEFER text ("DEFER_IF_PERMIT 4.2.0 Greylisted", as postgrey says
// it), as Postfix does; its class is made the action's (a 4.x.x after
// REJECT becomes 5.x.x). Without one the status is def.
func leadingStatus(class byte, def, text string) (string, string) {
	st, rest, _ := strings.Cut(text, " ")
	if !isEnhancedStatus(st) {
		return def, text
	}
	return string(class) + st[1:], strings.TrimSpace(rest)
}

// isEnhancedStatus reports whether s is class.subject.detail (RFC 3463:
// class 2, 4 or 5, then one to three and one to three digits).
func isEnhancedStatus(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || !strings.Contains("245", parts[0]) {
		return false
	}
	for _, p := range parts[1:] {
		if len(p) < 1 || len(p) > 3 {
			return false
		}
		for i := 0; i < len(p); i++ {
			if p[i] < '0' || p[i] > '9' {
				return false
			}
		}
	}
	return true
}
