package enginetest

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"
)

// Received is one message a Sink accepted.
type Received struct {
	Helo  string
	From  string
	Rcpts []string
	Data  string
}

// Sink is an SMTP (or LMTP) server on 127.0.0.1 that records what it is
// sent. RcptReply decides each RCPT (nil accepts all); for LMTP the same
// function decides each recipient's final reply.
type Sink struct {
	Addr      string
	Port      int
	RcptReply func(rcpt string) *smtp.SMTPError

	mu       sync.Mutex
	messages []Received
	sessions int
}

// NewSink starts a sink; lmtp makes it an LMTP server.
func NewSink(t testing.TB, lmtp bool) *Sink {
	s := &Sink{}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		s.mu.Lock()
		s.sessions++
		s.mu.Unlock()
		return &sinkSession{s: s, helo: c.Hostname(), lmtp: lmtp}, nil
	}))
	srv.Domain = "sink.test"
	srv.LMTP = lmtp
	srv.AllowInsecureAuth = true
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = true
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = l.Addr().String()
	s.Port = l.Addr().(*net.TCPAddr).Port
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return s
}

// Sessions is how many connections the sink has taken.
func (s *Sink) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions
}

// Messages returns what the sink accepted so far.
func (s *Sink) Messages() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.messages...)
}

type sinkSession struct {
	s     *Sink
	lmtp  bool
	helo  string
	from  string
	rcpts []string
}

func (ss *sinkSession) Mail(from string, _ *smtp.MailOptions) error { ss.from = from; return nil }

func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if f := ss.s.RcptReply; f != nil && !ss.lmtp {
		if e := f(to); e != nil {
			return e
		}
	}
	ss.rcpts = append(ss.rcpts, to)
	return nil
}

func (ss *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.s.mu.Lock()
	ss.s.messages = append(ss.s.messages, Received{Helo: ss.helo, From: ss.from, Rcpts: ss.rcpts, Data: string(b)})
	ss.s.mu.Unlock()
	return nil
}

// LMTPData answers per recipient with RcptReply.
func (ss *sinkSession) LMTPData(r io.Reader, status smtp.StatusCollector) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	var ok []string
	for _, rc := range ss.rcpts {
		var e *smtp.SMTPError
		if ss.s.RcptReply != nil {
			e = ss.s.RcptReply(rc)
		}
		if e != nil {
			status.SetStatus(rc, e)
			continue
		}
		status.SetStatus(rc, nil)
		ok = append(ok, rc)
	}
	if len(ok) > 0 {
		ss.s.mu.Lock()
		ss.s.messages = append(ss.s.messages, Received{Helo: ss.helo, From: ss.from, Rcpts: ok, Data: string(b)})
		ss.s.mu.Unlock()
	}
	return nil
}

func (ss *sinkSession) Reset()        { ss.from, ss.rcpts = "", nil }
func (ss *sinkSession) Logout() error { return nil }

// Contains reports whether any received message's data contains s.
func (s *Sink) Contains(sub string) bool {
	for _, m := range s.Messages() {
		if strings.Contains(m.Data, sub) {
			return true
		}
	}
	return false
}
