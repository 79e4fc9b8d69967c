package startest

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
	"go.starlark.net/syntax"

	"github.com/larkpost/larkpost/rules"
)

// The testing and assert modules exist only in *_test.star files. testing
// builds a client and a message and runs them dry through the same Intake
// the server uses; assert checks results and records failures with the
// test file's line, carrying on like Go's t.Error.

// failure is one failed assertion or error in a rule test.
type failure struct {
	pos syntax.Position
	msg string
}

// testState is per test function; it rides in a thread local.
type testState struct {
	policy   *rules.Policy
	dir      string // the test file's directory, for eml paths
	failures []failure
}

const testKey = "larkpost.test"

func stateOf(th *starlark.Thread) *testState {
	st, _ := th.Local(testKey).(*testState)
	return st
}

// fail records a failure at the test line that called the builtin.
func fail(th *starlark.Thread, format string, args ...any) {
	st := stateOf(th)
	if st == nil {
		return
	}
	var pos syntax.Position
	for i := 1; i < th.CallStackDepth(); i++ {
		if p := th.CallFrame(i).Pos; p.IsValid() && p.Filename() != "<builtin>" {
			pos = p
			break
		}
	}
	st.failures = append(st.failures, failure{pos: pos, msg: fmt.Sprintf(format, args...)})
}

func testingModule() *starlarkstruct.Module {
	return &starlarkstruct.Module{Name: "testing", Members: starlark.StringDict{
		"run":  starlark.NewBuiltin("testing.run", testingRun),
		"file": starlark.NewBuiltin("testing.file", testingFile),
	}}
}

// testingRun is testing.run(...): build the connection and message, dry
// run them, and return a result value.
func testingRun(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	st := stateOf(th)
	if st == nil {
		return nil, fmt.Errorf("testing.run: only available in rule tests")
	}
	var (
		from, helo, rdns, user, eml, body string
		clientIP                          = "192.0.2.1"
		listener                          = "smtp"
		to                                starlark.Value
		headers                           *starlark.Dict
		tls, utf8                         bool
		dnsTable                          starlark.Value = starlark.NewDict(0)
	)
	helo = "client.example"
	if err := starlark.UnpackArgs(b.Name(), args, kwargs,
		"sender?", &from, "to?", &to, "client_ip?", &clientIP, "rdns?", &rdns, "helo?", &helo,
		"tls?", &tls, "user?", &user, "listener?", &listener, "headers?", &headers,
		"body?", &body, "eml?", &eml, "smtputf8?", &utf8, "dns?", &dnsTable); err != nil {
		return nil, err
	}
	// A rule test never asks the network: without dns=, every name
	// does not exist.
	table, err := rules.DNSTable(dnsTable)
	if err != nil {
		return nil, fmt.Errorf("testing.run: dns: %w", err)
	}
	p := st.policy.WithResolver(rules.FakeResolver(table))
	ip, err := netip.ParseAddr(clientIP)
	if err != nil {
		return nil, fmt.Errorf("testing.run: bad client_ip %q", clientIP)
	}
	var rcpts []string
	switch to := to.(type) {
	case nil:
	case starlark.String:
		rcpts = []string{string(to)}
	case starlark.Iterable:
		for v := range starlark.Elements(to) {
			s, ok := starlark.AsString(v)
			if !ok {
				return nil, fmt.Errorf("testing.run: to: want strings, got %s", v.Type())
			}
			rcpts = append(rcpts, s)
		}
	default:
		return nil, fmt.Errorf("testing.run: to: want a string or a list of strings, got %s", to.Type())
	}
	env := &rules.Envelope{
		Conn: rules.Conn{IP: ip, RDNS: rdns, Helo: helo, TLS: tls, TLSInfo: testTLS(tls), User: user, Listener: listener},
		From: from, To: rcpts, UTF8: utf8,
	}
	if eml != "" {
		path := eml
		if !filepath.IsAbs(path) {
			path = filepath.Join(st.dir, path)
		}
		if env.Message, err = os.ReadFile(path); err != nil {
			return nil, fmt.Errorf("testing.run: eml: %w", err)
		}
	} else {
		env.Message = buildMessage(from, rcpts, headers, body)
	}
	ctx, cancel := rules.ContextOf(th)
	defer cancel()
	return &resultValue{r: p.DryRun(ctx, env), to: rcpts, p: p, msg: rules.ParseMessage(env.Message)}, nil
}

// buildMessage writes headers in the order given, adding From, To and
// Subject when the test does not set them.
func buildMessage(from string, to []string, headers *starlark.Dict, body string) []byte {
	var b strings.Builder
	has := map[string]bool{}
	if headers != nil {
		for k, v := range starlark.Entries(headers) {
			ks, _ := starlark.AsString(k)
			vs, ok := starlark.AsString(v)
			if !ok {
				vs = v.String()
			}
			has[strings.ToLower(ks)] = true
			b.WriteString(ks + ": " + vs + "\r\n")
		}
	}
	if !has["from"] {
		b.WriteString("From: <" + from + ">\r\n")
	}
	if !has["to"] && len(to) > 0 {
		b.WriteString("To: <" + strings.Join(to, ">, <") + ">\r\n")
	}
	if !has["subject"] {
		b.WriteString("Subject: rule test\r\n")
	}
	b.WriteString("\r\n")
	b.WriteString(strings.ReplaceAll(strings.ReplaceAll(body, "\r\n", "\n"), "\n", "\r\n"))
	return []byte(b.String())
}

// resultValue is a dry-run rules.Result as scripts see it.
type resultValue struct {
	r   *rules.Result
	to  []string // recipients as the test wrote them, in order
	p   *rules.Policy
	msg *rules.Message
}

var _ starlark.HasAttrs = (*resultValue)(nil)

func (v *resultValue) String() string        { return "<result " + v.summary() + ">" }
func (v *resultValue) Type() string          { return "result" }
func (v *resultValue) Freeze()               {}
func (v *resultValue) Truth() starlark.Bool  { return starlark.Bool(v.r.Queued) }
func (v *resultValue) Hash() (uint32, error) { return 0, fmt.Errorf("unhashable: result") }
func (v *resultValue) AttrNames() []string {
	return []string{"auth_results", "connect", "data", "delivered_to", "discarded", "held", "helo", "hold_reason", "id", "mail", "queued", "rcpt", "recipients", "sender", "steps", "stopped_at", "transports"}
}

func (v *resultValue) summary() string {
	if v.r.Queued {
		return "queued for " + strings.Join(addrStrings(v.r), ", ")
	}
	if v.r.Discard {
		return "discarded"
	}
	if s := v.stopStep(); s != nil {
		return "stopped at " + string(s.Stage) + ": " + s.Decision.String()
	}
	return "stopped at " + string(v.r.StoppedAt)
}

func addrStrings(r *rules.Result) []string {
	out := make([]string, len(r.Recipients))
	for i, a := range r.Recipients {
		out[i] = a.String()
	}
	return out
}

func (v *resultValue) step(stage rules.Stage) *rules.Step {
	for i := range v.r.Steps {
		if v.r.Steps[i].Stage == stage {
			return &v.r.Steps[i]
		}
	}
	return nil
}

// stopStep is the step that ended the dialog: the last one of the
// stopping stage.
func (v *resultValue) stopStep() *rules.Step {
	var s *rules.Step
	for i := range v.r.Steps {
		if v.r.Steps[i].Stage == v.r.StoppedAt {
			s = &v.r.Steps[i]
		}
	}
	return s
}

// rcptSteps maps each recipient, as the test wrote it, to its step.
func (v *resultValue) rcptSteps() map[string]*rules.Step {
	m := map[string]*rules.Step{}
	i := 0
	for k := range v.r.Steps {
		if v.r.Steps[k].Stage == rules.StageRcpt && i < len(v.to) {
			m[v.to[i]] = &v.r.Steps[k]
			i++
		}
	}
	return m
}

func (v *resultValue) Attr(name string) (starlark.Value, error) {
	switch name {
	case "connect", "helo", "mail", "data":
		if s := v.step(rules.Stage(name)); s != nil {
			return rules.DecisionValue(s.Decision), nil
		}
		return starlark.None, nil
	case "rcpt":
		d := starlark.NewDict(len(v.to))
		for k, s := range v.rcptSteps() {
			d.SetKey(starlark.String(k), rules.DecisionValue(s.Decision))
		}
		return d, nil
	case "steps":
		out := make([]starlark.Value, len(v.r.Steps))
		for i, s := range v.r.Steps {
			out[i] = starlarkstruct.FromStringDict(starlark.String("step"), starlark.StringDict{
				"stage": starlark.String(s.Stage), "arg": starlark.String(s.Arg), "decision": rules.DecisionValue(s.Decision),
			})
		}
		return starlark.NewList(out), nil
	case "queued":
		return starlark.Bool(v.r.Queued), nil
	case "discarded":
		return starlark.Bool(v.r.Discard), nil
	case "held":
		return starlark.Bool(v.r.Hold && v.r.Queued), nil
	case "hold_reason":
		return starlark.String(v.r.HoldReason), nil
	case "stopped_at":
		return optString(string(v.r.StoppedAt)), nil
	case "id":
		return optString(v.r.ID), nil
	case "sender":
		if v.r.Cleaned == nil {
			return starlark.None, nil
		}
		return starlark.String(v.r.Cleaned.Sender), nil
	case "delivered_to":
		// The final targets after rewriting and expansion: addresses,
		// "/files" and "|commands".
		var out []starlark.Value
		if v.r.Cleaned != nil {
			for _, t := range v.r.Cleaned.Rcpts {
				s := t.Value
				if t.Kind == rules.TargetPipe {
					s = "|" + s
				}
				out = append(out, starlark.String(s))
			}
		}
		return starlark.NewList(out), nil
	case "transports":
		// Final target -> "transport:nexthop", as the scheduler will route it.
		d := starlark.NewDict(0)
		if v.r.Cleaned != nil {
			for _, t := range v.r.Cleaned.Rcpts {
				key, tr := t.Value, t.Kind.String()
				switch {
				case t.Kind == rules.TargetPipe:
					key = "|" + key
				case t.Error != "":
					tr = "error:5.4.6 " + t.Error
				case t.Kind == rules.TargetAddress:
					rt, err := v.p.Route(context.Background(), t.Value, v.msg)
					if err != nil {
						tr = "defer: " + err.Error()
					} else {
						tr = rt.String()
					}
				}
				d.SetKey(starlark.String(key), starlark.String(tr))
			}
		}
		return d, nil
	case "auth_results":
		// The Authentication-Results field the server would add, as one
		// unfolded line, "" when the hooks checked nothing.
		return starlark.String(strings.TrimSpace(strings.ReplaceAll(v.r.AuthResults, "\r\n\t", " "))), nil
	case "recipients":
		out := make([]starlark.Value, len(v.r.Recipients))
		for i, a := range v.r.Recipients {
			out[i] = starlark.String(a.String())
		}
		return starlark.NewList(out), nil
	}
	return nil, nil
}

func assertModule() *starlarkstruct.Module {
	b := func(name string, fn func(*starlark.Thread, *starlark.Builtin, starlark.Tuple, []starlark.Tuple) (starlark.Value, error)) *starlark.Builtin {
		return starlark.NewBuiltin("assert."+name, fn)
	}
	return &starlarkstruct.Module{Name: "assert", Members: starlark.StringDict{
		"eq":        b("eq", assertEq),
		"ne":        b("ne", assertNe),
		"true":      b("true", assertTruth(true)),
		"false":     b("false", assertTruth(false)),
		"contains":  b("contains", assertContains),
		"fails":     b("fails", assertFails),
		"accepted":  b("accepted", assertDecision(rules.Accept)),
		"rejected":  b("rejected", assertDecision(rules.Reject)),
		"deferred":  b("deferred", assertDecision(rules.Defer)),
		"discarded": b("discarded", assertDiscarded),
		"held":      b("held", assertHeld),
	}}
}

func withMsg(msg, text string) string {
	if msg == "" {
		return text
	}
	return msg + ": " + text
}

func assertEq(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var got, want starlark.Value
	var msg string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "got", &got, "want", &want, "msg?", &msg); err != nil {
		return nil, err
	}
	if eq, err := starlark.Equal(got, want); err != nil || !eq {
		fail(th, "%s", withMsg(msg, fmt.Sprintf("expected %s, got %s", want.String(), got.String())))
	}
	return starlark.None, nil
}

func assertNe(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var got, other starlark.Value
	var msg string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "got", &got, "other", &other, "msg?", &msg); err != nil {
		return nil, err
	}
	if eq, err := starlark.Equal(got, other); err == nil && eq {
		fail(th, "%s", withMsg(msg, fmt.Sprintf("expected something other than %s", got.String())))
	}
	return starlark.None, nil
}

func assertTruth(want bool) func(*starlark.Thread, *starlark.Builtin, starlark.Tuple, []starlark.Tuple) (starlark.Value, error) {
	return func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var cond starlark.Value
		var msg string
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "cond", &cond, "msg?", &msg); err != nil {
			return nil, err
		}
		if bool(cond.Truth()) != want {
			fail(th, "%s", withMsg(msg, fmt.Sprintf("expected %v, got %s", want, cond.String())))
		}
		return starlark.None, nil
	}
}

func assertContains(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var container, item starlark.Value
	var msg string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "container", &container, "item", &item, "msg?", &msg); err != nil {
		return nil, err
	}
	ok, err := starlark.Binary(syntax.IN, item, container)
	if err != nil {
		return nil, err
	}
	if !ok.Truth() {
		fail(th, "%s", withMsg(msg, fmt.Sprintf("expected %s to contain %s", container.String(), item.String())))
	}
	return starlark.None, nil
}

func assertFails(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var fn starlark.Callable
	var pattern string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "fn", &fn, "pattern", &pattern); err != nil {
		return nil, err
	}
	rx, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("assert.fails: bad pattern: %w", err)
	}
	if _, err := starlark.Call(th, fn, nil, nil); err == nil {
		fail(th, "expected an error matching %q, got none", pattern)
	} else if !rx.MatchString(err.Error()) {
		fail(th, "expected an error matching %q, got %q", pattern, err.Error())
	}
	return starlark.None, nil
}

// assertDecision builds assert.accepted / rejected / deferred(result,
// code=, status=, text=, stage=, rcpt=). Which decision is checked: the
// recipient's when rcpt is given, the stage's when stage is given, else
// for accepted whether the message was queued, and for refusals the step
// that ended the dialog.
func assertDecision(want rules.Kind) func(*starlark.Thread, *starlark.Builtin, starlark.Tuple, []starlark.Tuple) (starlark.Value, error) {
	return func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var res *resultValue
		var code int
		var status, text, stage, rcpt, msg string
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "result", &res, "code?", &code, "status?", &status,
			"text?", &text, "stage?", &stage, "rcpt?", &rcpt, "msg?", &msg); err != nil {
			return nil, err
		}
		var step *rules.Step
		where := ""
		switch {
		case rcpt != "":
			step = res.rcptSteps()[rcpt]
			where = "at rcpt for " + rcpt
			if step == nil {
				fail(th, "%s", withMsg(msg, fmt.Sprintf("expected %s %s, but %s was never judged (%s)", want, where, rcpt, res.summary())))
				return starlark.None, nil
			}
		case stage != "":
			step = res.step(rules.Stage(stage))
			where = "at " + stage
			if step == nil {
				fail(th, "%s", withMsg(msg, fmt.Sprintf("expected %s %s, but the dialog never got there (%s)", want, where, res.summary())))
				return starlark.None, nil
			}
		case want == rules.Accept:
			if !res.r.Queued {
				fail(th, "%s", withMsg(msg, "expected the message to be accepted, got "+res.summary()))
			}
			return starlark.None, nil
		default:
			step = res.stopStep()
			if step == nil {
				fail(th, "%s", withMsg(msg, fmt.Sprintf("expected %s, got %s", want, res.summary())))
				return starlark.None, nil
			}
			where = "at " + string(step.Stage)
		}
		d := step.Decision
		if d.Kind == rules.Continue {
			d.Kind = rules.Accept
		}
		expect := want.String()
		if code != 0 {
			expect += fmt.Sprintf(" %d", code)
		}
		if status != "" {
			expect += " " + status
		}
		ok := d.Kind == want && (code == 0 || d.Code == code) && (status == "" || d.Status == status) &&
			(text == "" || strings.Contains(d.Text, text))
		if want == rules.Accept && (d.Kind == rules.Discard || d.Kind == rules.Hold) {
			ok = code == 0 && status == "" && text == ""
		}
		if !ok {
			got := d.String()
			if d.Source != "" {
				got += " (from " + d.Source + ")"
			}
			if text != "" {
				expect += fmt.Sprintf(" with text containing %q", text)
			}
			fail(th, "%s", withMsg(msg, fmt.Sprintf("expected %s %s, got %s", expect, where, got)))
		}
		return starlark.None, nil
	}
}

func assertDiscarded(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var res *resultValue
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "result", &res); err != nil {
		return nil, err
	}
	if !res.r.Discard || res.r.StoppedAt != "" {
		fail(th, "expected the message to be discarded, got %s", res.summary())
	}
	return starlark.None, nil
}

func assertHeld(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var res *resultValue
	var reason string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "result", &res, "reason?", &reason); err != nil {
		return nil, err
	}
	if !res.r.Hold || !res.r.Queued {
		fail(th, "expected the message to be held, got %s", res.summary())
	} else if reason != "" && !strings.Contains(res.r.HoldReason, reason) {
		fail(th, "expected hold reason containing %q, got %q", reason, res.r.HoldReason)
	}
	return starlark.None, nil
}

// policyModule exposes the config script's own globals to its tests, so
// helper functions and tables can be tested directly: policy.is_role("abuse").
func policyModule(p *rules.Policy) *starlarkstruct.Module {
	return &starlarkstruct.Module{Name: "policy", Members: p.Globals()}
}

// optString is s, or None when s is empty.
func optString(s string) starlark.Value {
	if s == "" {
		return starlark.None
	}
	return starlark.String(s)
}

// testingFile is testing.file(user, sender="", headers={}, body="", eml=None,
// rcpt=None): run the file step (admin hook, then the user's filter) for a
// message and return what it decided, for the user's own tests.
func testingFile(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	st := stateOf(th)
	if st == nil {
		return nil, fmt.Errorf("testing.file: only available in rule tests")
	}
	var user, sender, body, eml, rcpt string
	var headers *starlark.Dict
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "user", &user, "sender?", &sender, "headers?", &headers,
		"body?", &body, "eml?", &eml, "rcpt?", &rcpt); err != nil {
		return nil, err
	}
	if rcpt == "" {
		rcpt = user + "@" + st.policy.Settings.Hostname
	}
	var raw []byte
	if eml != "" {
		path := eml
		if !filepath.IsAbs(path) {
			path = filepath.Join(st.dir, path)
		}
		var err error
		if raw, err = os.ReadFile(path); err != nil {
			return nil, fmt.Errorf("testing.file: eml: %w", err)
		}
	} else {
		raw = buildMessage(sender, []string{rcpt}, headers, body)
	}
	ctx, cancel := rules.ContextOf(th)
	defer cancel()
	f := st.policy.FileMessage(ctx, rules.FileRequest{User: user, Rcpt: rcpt, Msg: rules.ParseMessage(raw)})
	folder := f.Folder
	if folder == "" {
		folder = "INBOX"
	}
	d := starlark.StringDict{
		"folder": starlark.String(folder), "forward": optString(f.Forward), "discarded": starlark.Bool(f.Discard),
		"source": starlark.String(f.Source), "error": starlark.None, "vacation": starlark.None,
	}
	if f.Err != nil {
		d["error"] = starlark.String(f.Err.Error())
	}
	if f.Vacation != nil {
		d["vacation"] = starlark.String(f.Vacation.Subject)
	}
	return starlarkstruct.FromStringDict(starlark.String("filing"), d), nil
}

// ModuleMembers lists the functions of the test files' module name
// ("testing" or "assert"), for the reference's completeness test.
func ModuleMembers(name string) []string {
	var m *starlarkstruct.Module
	switch name {
	case "testing":
		m = testingModule()
	case "assert":
		m = assertModule()
	default:
		return nil
	}
	out := make([]string, 0, len(m.Members))
	for k := range m.Members {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// testTLS is the TLS session a test's tls=True stands for.
func testTLS(on bool) *rules.TLSInfo {
	if !on {
		return nil
	}
	return &rules.TLSInfo{Version: "TLSv1.3", Cipher: "TLS_AES_128_GCM_SHA256", Bits: 128}
}
