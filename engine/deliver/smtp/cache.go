package smtp

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"time"
)

// rsetTimeout bounds the liveness check of a cached connection, like
// Postfix's smtp_rset_timeout: a server that vanished without closing the
// connection must not cost a whole command timeout.
const rsetTimeout = 20 * time.Second

// destKey identifies what a cached session may be reused for. Everything
// that changes how the session was set up is part of it, so that a session
// opened without TLS never serves a destination that requires it and one
// logged in as one user never sends for another.
func destKey(d Destination) string {
	var where string
	switch {
	case d.Unix != "":
		where = "unix:" + d.Unix
	case d.NoMX:
		where = "[" + hostName(d.Host) + "]:" + strconv.Itoa(port(d))
	default:
		where = hostName(d.Host) + ":" + strconv.Itoa(port(d))
	}
	proto := "smtp"
	if d.LMTP {
		proto = "lmtp"
	}
	tls := "may"
	switch {
	case d.RequireTLS:
		tls = "encrypt"
	case d.NoTLS:
		tls = "none"
	}
	auth := ""
	if d.Auth != nil {
		auth = d.Auth.User + "\x00" + d.Auth.Password + "\x00" + strconv.FormatBool(d.AllowPlainAuth)
	}
	return strings.Join([]string{proto, where, tls, auth}, "\x00")
}

// reuse returns a cached session for key that proved alive, or nil. After
// a transaction that ended with the reply to its data (or never began)
// the check costs no round trip: a peek at the socket tells a connection
// the server closed or spoke on (a 421) from one that waits for us, and
// only the latter, or a connection that cannot be peeked at, gets a NOOP.
// After a transaction that may still be open, RSET, which go-smtp follows
// with a second EHLO (it forgets the EHLO reply on RSET). With PIPELINING,
// a relayed message on a cached connection takes two round trips.
func (c *Client) reuse(ctx context.Context, key string) *session {
	// A dead context would only spoil the cached sessions one by one.
	if ctx.Err() != nil {
		return nil
	}
	for {
		s := c.getIdle(key)
		if s == nil {
			return nil
		}
		s.watch(ctx)
		s.client.CommandTimeout = min(rsetTimeout, c.commandTimeout())
		var err error
		if s.open {
			err = s.reset()
			s.open = false // over, or the session is closed below
		} else {
			switch peekIdle(s.raw) {
			case idleClosed:
				err = errIdleClosed
			case idleUnknown:
				err = s.client.Noop()
			}
		}
		s.client.CommandTimeout = c.commandTimeout()
		if err == nil {
			s.reused = true
			return s
		}
		c.log().Debug("cached connection failed", "relay", s.t.relay, "error", err)
		s.unwatch()
		s.client.Close()
	}
}

var errIdleClosed = errors.New("closed by the server while idle")

// reset ends an open transaction with RSET and says EHLO again, keeping
// the new EHLO reply for the pipeline's recorder: the extensions go-smtp
// learns from it are the ones the recorder must format for.
func (s *session) reset() error {
	if err := s.client.Reset(); err != nil {
		return err
	}
	var b bytes.Buffer
	s.h.capture = &b
	err := s.client.Hello(s.c.hostname())
	s.h.capture = nil
	if err == nil {
		s.ehlo = append([]byte("220 "+s.t.name+"\r\n"), b.Bytes()...)
		s.rec = nil
	}
	return err
}

// getIdle takes the most recently cached session for key out of the cache.
func (c *Client) getIdle(key string) *session {
	c.mu.Lock()
	defer c.mu.Unlock()
	list := c.idle[key]
	if len(list) == 0 {
		return nil
	}
	s := list[len(list)-1]
	c.idle[key] = list[:len(list)-1]
	if len(list) == 1 {
		delete(c.idle, key)
	}
	s.idleTimer.Stop()
	return s
}

// putIdle caches s, or closes it when the cache is off, closed or full.
func (c *Client) putIdle(s *session) {
	c.mu.Lock()
	if c.MaxIdle <= 0 || c.closed {
		c.mu.Unlock()
		s.quit()
		return
	}
	if c.idle == nil {
		c.idle = make(map[string][]*session)
	}
	list := append(c.idle[s.key], s)
	var evict *session
	if len(list) > c.MaxIdle {
		evict, list = list[0], list[1:]
	}
	c.idle[s.key] = list
	// The timer closes s only if s is still cached when it fires; taking
	// s out of the cache under c.mu is what settles the race with getIdle.
	s.idleTimer = time.AfterFunc(c.idleTimeout(), func() {
		if c.takeIdle(s) {
			s.quit()
		}
	})
	c.mu.Unlock()
	if evict != nil {
		evict.idleTimer.Stop()
		evict.quit()
	}
}

// takeIdle removes s from the cache and reports whether it was there.
func (c *Client) takeIdle(s *session) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	list := c.idle[s.key]
	for i, x := range list {
		if x == s {
			list = append(list[:i:i], list[i+1:]...)
			if len(list) == 0 {
				delete(c.idle, s.key)
			} else {
				c.idle[s.key] = list
			}
			return true
		}
	}
	return false
}
