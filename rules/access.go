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
		return Decision{Kind: Reject, Code: 554, Status: "5.7.1", Text: orText("Access denied")}, nil
	case "DEFER", "DEFER_IF_PERMIT", "DEFER_IF_REJECT":
		return Decision{Kind: Defer, Code: 450, Status: "4.7.1", Text: orText("Access denied")}, nil
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
