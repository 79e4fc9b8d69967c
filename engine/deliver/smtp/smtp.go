// Package smtp is the mail router's smtp and lmtp delivery agent, after
// Postfix's smtp(8) and lmtp(8): it looks up MX records, tries the servers
// in preference order, uses STARTTLS when offered, authenticates to
// smarthosts, sends one transaction per request and keeps idle connections
// for the next message to the same destination.
//
// Every outcome is reported per recipient as an enhanced status code whose
// class says sent (2), deferred (4) or bounced (5); Deliver never returns
// an error.
//
// The protocol runs on github.com/emersion/go-smtp's client, except for the
// start of each session (greeting, EHLO, STARTTLS), which this package does
// itself: go-smtp can neither STARTTLS opportunistically nor fall back to
// HELO after an arbitrary 5xx, and it introduces itself as "localhost" before
// TLS. The finished session is handed to go-smtp through handoffConn.
package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/larkpost/larkpost/engine/deliver"
	"github.com/larkpost/larkpost/engine/resolver"
	"github.com/larkpost/larkpost/engine/tlspolicy"
)

// Body is the message to send, read by offset: each attempt (another MX,
// a retry) streams it from the start, and nothing holds it whole.
type Body interface {
	io.ReaderAt
	Size() int64
}

// Request is one delivery: one message, one destination, several recipients
// (one transaction).
type Request struct {
	QueueID  string
	Sender   string // envelope sender, "" = <>
	Rcpts    []Rcpt
	Body     Body // the queued message, CRLF line endings
	SMTPUTF8 bool // the message needs SMTPUTF8 (non-ASCII envelope)
	// EightBit says the body has 8-bit bytes. The agent also checks the
	// body itself, so false only means "not known".
	EightBit bool
	EnvID    string // DSN ENVID
	RetFull  bool   // DSN RET=FULL
}

// Rcpt is one recipient of a Request.
type Rcpt struct {
	Addr   string
	Notify []string // DSN NOTIFY values
	ORcpt  string   // DSN ORCPT address ("" = none)
}

// Result is one recipient's outcome. Its Text is the remote server's
// reply quoted ("host mx.example.net[192.0.2.1] said: 550 5.1.1 <x>: no
// such user (in reply to RCPT TO command)"), the plain reply for a
// recipient that was sent ("250 2.0.0 Ok: queued as 4XyZ"), or our own
// reason ("connect to mx.example.net[192.0.2.1]:25: connection refused").
// Relay names the host ("mx.example.net[192.0.2.1]:25"), or is "none" when
// no server was reached. Relayed is true when NOTIFY=SUCCESS was asked,
// the recipient was sent and the next hop did not announce DSN (RFC 3461:
// we owe the sender a "relayed" DSN); never over LMTP, which is final
// delivery. TLS says "verified", "unverified" or "none".
type Result = deliver.Result

// Destination says where to deliver.
type Destination = deliver.Destination

// Auth holds SASL credentials.
type Auth = deliver.Auth

// Host is one server Deliver would try, in order.
type Host struct {
	Name  string
	Pref  int
	Addrs []netip.Addr
}

// Client delivers. It keeps idle connections per destination for reuse
// (Postfix's connection cache): at most MaxIdle per destination (0 turns the
// cache off), closed after IdleTimeout (default 5s) or on Close. A Client is
// safe for concurrent use; its fields must not change once it is in use.
type Client struct {
	Hostname  string             // our EHLO name; empty means os.Hostname
	Resolver  *resolver.Resolver // MX / A lookups; nil means /etc/resolv.conf
	TLSConfig *tls.Config        // base config (RootCAs for tests); ServerName is set per host
	// Policy decides, per MX host at levels may and dane, what DANE and
	// MTA-STS ask beyond opportunistic TLS; nil: nothing beyond it.
	Policy *tlspolicy.Decider

	// DialTimeout, CommandTimeout and DataTimeout default to 30s, 5m and
	// 10m. DataTimeout covers sending the body and waiting for the reply to
	// the final dot.
	DialTimeout, CommandTimeout, DataTimeout time.Duration

	// Dial opens connections; nil means a net.Dialer. Tests may override it.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	MaxIdle     int
	IdleTimeout time.Duration
	Log         *slog.Logger // may be nil

	mu     sync.Mutex
	idle   map[string][]*session // by destination key, oldest first
	closed bool

	resolverOnce sync.Once
	resolver     *resolver.Resolver
	resolverErr  error
}

const (
	defaultDialTimeout    = 30 * time.Second
	defaultCommandTimeout = 5 * time.Minute
	defaultDataTimeout    = 10 * time.Minute
	defaultIdleTimeout    = 5 * time.Second

	// quitTimeout bounds the courtesy QUIT when a connection is given up:
	// nothing depends on its answer.
	quitTimeout = 2 * time.Second

	// maxAddrs is Postfix's smtp_mx_address_limit: a domain with a long
	// list of broken MX hosts must not hold a delivery slot forever.
	maxAddrs = 5
)

func orDuration(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func (c *Client) dialTimeout() time.Duration {
	return orDuration(c.DialTimeout, defaultDialTimeout)
}

func (c *Client) commandTimeout() time.Duration {
	return orDuration(c.CommandTimeout, defaultCommandTimeout)
}

func (c *Client) dataTimeout() time.Duration {
	return orDuration(c.DataTimeout, defaultDataTimeout)
}

func (c *Client) idleTimeout() time.Duration {
	return orDuration(c.IdleTimeout, defaultIdleTimeout)
}

var osHostname = sync.OnceValue(func() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return h
})

// hostname is the EHLO name. A configured name that would break the command
// line is ignored rather than sent.
func (c *Client) hostname() string {
	if c.Hostname != "" && !strings.ContainsAny(c.Hostname, " \t\r\n") {
		return c.Hostname
	}
	return osHostname()
}

var discard = slog.New(slog.DiscardHandler)

func (c *Client) log() *slog.Logger {
	if c.Log != nil {
		return c.Log
	}
	return discard
}

func (c *Client) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if c.Dial != nil {
		return c.Dial(ctx, network, addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

func port(dest Destination) int {
	switch {
	case dest.Port > 0:
		return dest.Port
	case dest.LMTP:
		return 24
	}
	return 25
}

// Agent is the smtp and lmtp delivery agent: it delivers a request to
// its route's destination as one transaction.
func (c *Client) Agent() deliver.Agent {
	return deliver.AgentFunc(func(ctx context.Context, req *deliver.Request) []deliver.Result {
		if req.Route == nil || req.Route.Remote == nil {
			return failAll(len(req.Rcpts), "no destination for the "+kindOf(req)+" agent")
		}
		r := &Request{QueueID: req.QueueID, Sender: req.Sender, Body: req.Body, SMTPUTF8: req.SMTPUTF8, EnvID: req.EnvID, RetFull: req.RetFull}
		for _, rc := range req.Rcpts {
			r.Rcpts = append(r.Rcpts, Rcpt{Addr: rc.Addr, Notify: rc.Notify, ORcpt: rc.Orig})
		}
		return c.Deliver(ctx, *req.Route.Remote, r)
	})
}

func kindOf(req *deliver.Request) string {
	if req.Route != nil {
		return req.Route.Kind.String()
	}
	return "remote"
}

func failAll(n int, why string) []deliver.Result {
	out := make([]deliver.Result, n)
	for i := range out {
		out[i] = deliver.Result{Status: deliver.Temp("4.3.5", why), Relay: "none"}
	}
	return out
}

// Deliver sends req to dest and returns one Result per req.Rcpts, in order.
// It never returns a nil slice.
func (c *Client) Deliver(ctx context.Context, dest Destination, req *Request) []Result {
	res := make([]Result, len(req.Rcpts))
	if len(res) == 0 {
		return res
	}
	key := destKey(dest)
	s := c.reuse(ctx, key)
	for {
		if s == nil {
			var f *failure
			if s, f = c.connect(ctx, dest, req.QueueID); f != nil {
				f.fill(res)
				markSite(ctx, res)
				return res
			}
			s.key = key
		}
		reusable, stale := c.send(ctx, s, req, res)
		// Unwatch in any case: the context must not close a cached session.
		if !s.unwatch() {
			reusable = false
		}
		if stale {
			// The server closed the cached connection as we took it
			// (its idle timeout): it accepted nothing, so the message
			// goes on the next cached connection or a new one rather
			// than waiting for its next retry. Only cached sessions
			// are stale, so this ends.
			c.log().Debug("cached connection was closed", "queue_id", req.QueueID, "relay", s.t.relay)
			s.client.Close()
			s = c.reuse(ctx, key)
			continue
		}
		c.finish(s, reusable)
		return res
	}
}

// markSite flags a failure to get a session as the destination's
// (Postfix's smtp_site_fail), so the scheduler can stop sending it mail
// for a while. A delivery we called off ourselves (the scheduler
// stopping) says nothing about the destination.
func markSite(ctx context.Context, res []Result) {
	if errors.Is(ctx.Err(), context.Canceled) {
		return
	}
	for i := range res {
		res[i].Site = true
	}
}

// finish caches s after a transaction or gives it up. Only sessions with a
// most-preferred MX are cached, so that a backup MX that stood in once does
// not keep the destination's mail after the primary is back.
func (c *Client) finish(s *session, reusable bool) {
	if reusable && s.primary {
		c.putIdle(s)
		return
	}
	s.quit()
}

// Close closes idle connections. The Client stays usable, but from now on it
// closes connections after each delivery instead of caching them.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	var all []*session
	for _, list := range c.idle {
		all = append(all, list...)
	}
	c.idle = nil
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range all {
		s.idleTimer.Stop()
		wg.Go(s.quit)
	}
	wg.Wait()
	return nil
}
