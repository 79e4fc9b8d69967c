package policy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// The limits of connections and replies. Variables so tests can shorten
// them.
var (
	maxIdle     = 4                  // idle connections kept per service
	maxIdleTime = 300 * time.Second  // smtpd_policy_service_max_idle
	maxTTL      = 1000 * time.Second // smtpd_policy_service_max_ttl
)

const (
	maxReply  = 4096 // bytes of one reply, all lines
	maxAction = 2048 // bytes of the action: Postfix's line_length_limit
)

// malformedError is a reply that breaks the protocol. It is not retried:
// the server would most likely answer the same.
type malformedError struct{ why string }

func (e *malformedError) Error() string { return "malformed reply: " + e.why }

// pool is the idle connections to one service.
type pool struct {
	network, addr string

	mu   sync.Mutex
	idle []*conn // most recently used last
}

type conn struct {
	net.Conn
	r    *bufio.Reader
	born time.Time
	// idle closes the connection when it has been idle for
	// maxIdleTime; it runs only while the connection is in the pool.
	idle *time.Timer
	// spoiled: a cancellation may still cut its deadline.
	spoiled bool
}

// ask sends req and returns the action of the reply.
func (p *pool) ask(ctx context.Context, req []byte) (string, error) {
	c := p.get()
	reused := c != nil
	for {
		if c == nil {
			var err error
			if c, err = p.dial(ctx); err != nil {
				return "", err
			}
		}
		action, err := c.roundTrip(ctx, req)
		if err == nil {
			p.put(c)
			return action, nil
		}
		c.Close()
		// A server may close an idle connection at any time (postgrey
		// and policyd-spf under socat do when they exit or restart):
		// the first I/O on it fails. Then, and only then, try a new one.
		if !reused || !retryable(err) || ctx.Err() != nil {
			return "", err
		}
		reused, c = false, nil
	}
}

func retryable(err error) bool {
	var m *malformedError
	return !errors.As(err, &m) && !errors.Is(err, os.ErrDeadlineExceeded)
}

func (p *pool) dial(ctx context.Context) (*conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, p.network, p.addr)
	if err != nil {
		return nil, err
	}
	return &conn{Conn: nc, r: bufio.NewReaderSize(nc, maxReply), born: time.Now()}, nil
}

// get takes an idle connection, nil when there is none.
func (p *pool) get() *conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.idle) > 0 {
		c := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if !c.idle.Stop() {
			continue // its timer fired: expire closes it
		}
		if time.Since(c.born) < maxTTL {
			return c
		}
		c.Close()
	}
	return nil
}

// put keeps c for the next request, or closes it.
func (p *pool) put(c *conn) {
	// Bytes after the reply would be read as the next one.
	if c.spoiled || c.r.Buffered() > 0 || time.Since(c.born) >= maxTTL {
		c.Close()
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) >= maxIdle {
		c.Close()
		return
	}
	if c.idle == nil {
		c.idle = time.AfterFunc(maxIdleTime, func() { p.expire(c) })
	} else {
		c.idle.Reset(maxIdleTime)
	}
	p.idle = append(p.idle, c)
}

func (p *pool) expire(c *conn) {
	p.mu.Lock()
	p.idle = slices.DeleteFunc(p.idle, func(x *conn) bool { return x == c })
	p.mu.Unlock()
	c.Close()
}

// roundTrip sends one request and reads its reply, by ctx's deadline.
func (c *conn) roundTrip(ctx context.Context, req []byte) (string, error) {
	deadline, _ := ctx.Deadline()
	if err := c.SetDeadline(deadline); err != nil {
		return "", err
	}
	// A session that ends (the client went away) ends the wait too.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	if _, err := c.Write(req); err != nil {
		stop()
		return "", err
	}
	action, err := readReply(c.r)
	c.spoiled = !stop()
	return action, err
}

// readReply reads attribute lines up to the empty line and returns the
// action; other attributes are ignored, as Postfix ignores them.
func readReply(r *bufio.Reader) (string, error) {
	var action string
	found, n := false, 0
	for {
		line, err := r.ReadSlice('\n')
		n += len(line)
		if errors.Is(err, bufio.ErrBufferFull) || n > maxReply {
			return "", &malformedError{fmt.Sprintf("longer than %d bytes", maxReply)}
		}
		if err != nil {
			return "", err
		}
		line = bytes.TrimSuffix(line[:len(line)-1], []byte("\r"))
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte("="))
		if !ok {
			return "", &malformedError{fmt.Sprintf("%q is no attribute", line)}
		}
		if string(name) == "action" && !found {
			if err := checkAction(value); err != nil {
				return "", err
			}
			action, found = string(value), true
		}
	}
	if !found {
		return "", &malformedError{"no action"}
	}
	return action, nil
}

// checkAction refuses what must not reach an SMTP reply or a header.
func checkAction(a []byte) error {
	switch {
	case len(bytes.TrimSpace(a)) == 0:
		return &malformedError{"empty action"}
	case len(a) > maxAction:
		return &malformedError{fmt.Sprintf("action longer than %d bytes", maxAction)}
	case !utf8.Valid(a):
		return &malformedError{"action is not UTF-8"}
	case bytes.ContainsFunc(a, unicode.IsControl):
		return &malformedError{fmt.Sprintf("control character in action %q", a)}
	}
	return nil
}
