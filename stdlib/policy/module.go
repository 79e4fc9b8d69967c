package policy

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/larkpost/larkpost/stdlib/dns"
)

// DefaultAction is Postfix's smtpd_policy_service_default_action: what
// check returns when the service cannot be asked, unless the script says
// otherwise. A temporary error, so a broken policy server delays mail
// rather than letting it all through or bouncing it.
const DefaultAction = "451 4.3.5 Server configuration problem"

// Module returns the `policy` module. stage gives the protocol_state of
// the hook running on a thread ("RCPT", ...); nil means HookStage.
//
// Each module keeps its own connections: those of a module replaced by a
// reload close once they have been idle for maxIdleTime.
func Module(stage func(th *starlark.Thread) string) *starlarkstruct.Module {
	if stage == nil {
		stage = HookStage
	}
	m := &module{stage: stage, pools: map[string]*pool{}}
	return &starlarkstruct.Module{Name: "policy", Members: starlark.StringDict{
		"check": starlark.NewBuiltin("policy.check", m.check),
		"query": starlark.NewBuiltin("policy.query", m.query),
	}}
}

// HookStage maps a hook, by its thread's name, to Postfix's
// protocol_state. on_data judges the received message, which Postfix
// does at END-OF-MESSAGE (smtpd_end_of_data_restrictions). Other threads
// get "", sent as an empty protocol_state.
func HookStage(th *starlark.Thread) string {
	switch th.Name {
	case "on_connect":
		return "CONNECT"
	case "on_helo":
		return "EHLO"
	case "on_mail":
		return "MAIL"
	case "on_rcpt":
		return "RCPT"
	case "on_data":
		return "END-OF-MESSAGE"
	}
	return ""
}

type module struct {
	stage func(*starlark.Thread) string

	mu    sync.Mutex
	pools map[string]*pool // by service
}

// call is one parsed check or query.
type call struct {
	service  string
	pool     *pool
	tx, rcpt starlark.Value
	timeout  time.Duration
}

func (m *module) check(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var c call
	var timeout starlark.Value = starlark.String("10s")
	var def starlark.Value = starlark.String(DefaultAction)
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "service", &c.service, "tx", &c.tx,
		"rcpt?", &c.rcpt, "timeout?", &timeout, "default?", &def); err != nil {
		return nil, err
	}
	// None as default lets a script go on to its other checks when the
	// service is down: access(None) is no decision.
	if _, ok := def.(starlark.String); !ok && def != starlark.None {
		return nil, fmt.Errorf("%s: default: want a string or None, got %s", b.Name(), def.Type())
	}
	if err := m.parse(&c, timeout); err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	action, err := m.do(th, &c)
	if err != nil {
		return def, nil
	}
	return starlark.String(action), nil
}

func (m *module) query(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var c call
	var timeout starlark.Value = starlark.String("10s")
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "service", &c.service, "tx", &c.tx,
		"rcpt?", &c.rcpt, "timeout?", &timeout); err != nil {
		return nil, err
	}
	if err := m.parse(&c, timeout); err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	action, err := m.do(th, &c)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	return starlarkstruct.FromStringDict(starlark.String("policy_result"), starlark.StringDict{
		"action": starlark.String(action),
		"error":  starlark.String(msg),
	}), nil
}

// parse checks the arguments: mistakes in them are script errors, not
// failures of the service.
func (m *module) parse(c *call, timeout starlark.Value) error {
	if c.rcpt == nil {
		c.rcpt = starlark.None
	}
	// A tx has a conn, a conn an ip; anything else would send a request
	// of empty values.
	if attr(c.tx, "conn") == starlark.None && attr(c.tx, "ip") == starlark.None {
		return fmt.Errorf("tx: want a tx or conn, got %s", c.tx.Type())
	}
	d, err := parseTimeout(timeout)
	if err != nil {
		return err
	}
	c.timeout = d
	network, addr, err := parseService(c.service)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if c.pool = m.pools[c.service]; c.pool == nil {
		c.pool = &pool{network: network, addr: addr}
		m.pools[c.service] = c.pool
	}
	return nil
}

// parseService reads Postfix's "inet:host:port" and "unix:/path". Postfix
// takes a unix path relative to its queue directory; larkpost has no
// such place, so the path must be absolute.
func parseService(s string) (network, addr string, err error) {
	kind, rest, _ := strings.Cut(s, ":")
	switch kind {
	case "inet":
		host, port, err := net.SplitHostPort(rest)
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			return "", "", fmt.Errorf("service %q: want inet:host:port with a numeric port", s)
		}
		return "tcp", rest, nil
	case "unix":
		if !filepath.IsAbs(rest) {
			return "", "", fmt.Errorf("service %q: want unix:/absolute/path", s)
		}
		return "unix", rest, nil
	}
	return "", "", fmt.Errorf("service %q: want inet:host:port or unix:/path", s)
}

// parseTimeout reads "10s", "500ms" or a number of seconds.
func parseTimeout(v starlark.Value) (time.Duration, error) {
	var d time.Duration
	var err error
	switch v := v.(type) {
	case starlark.Int:
		n, ok := v.Int64()
		if !ok {
			return 0, fmt.Errorf("timeout %s out of range", v)
		}
		d = time.Duration(n) * time.Second
	case starlark.String:
		if n, nerr := strconv.Atoi(string(v)); nerr == nil {
			d = time.Duration(n) * time.Second
		} else if d, err = time.ParseDuration(string(v)); err != nil {
			return 0, fmt.Errorf("timeout: bad duration %q (want e.g. \"10s\", \"500ms\")", string(v))
		}
	default:
		return 0, fmt.Errorf("timeout: want a duration string or seconds, got %s", v.Type())
	}
	if d <= 0 {
		return 0, fmt.Errorf("timeout: want more than 0, got %s", v)
	}
	return d, nil
}

// do asks the service; the error says why it could not.
func (m *module) do(th *starlark.Thread, c *call) (string, error) {
	req := request(m.stage(th), c.tx, c.rcpt)
	ctx, cancel := dns.CallContext(th)
	defer cancel()
	ctx, cancel2 := context.WithTimeout(ctx, c.timeout)
	defer cancel2()
	action, err := c.pool.ask(ctx, req)
	if err != nil {
		return "", fmt.Errorf("policy service %s: %w", c.service, err)
	}
	return action, nil
}
