package smtpd

import "github.com/larkpost/larkpost/rules"

// Observer is told what sessions do, for the metrics and the web page's
// feed. It is called on the session's goroutine: it must be quick and
// must never block.
type Observer interface {
	// Connected: a client connected to listener (before any limit).
	Connected(listener string)
	// Disconnected: the session ended; outcome is quit, timeout,
	// refused (a limit or on_connect) or lost (closed without QUIT).
	Disconnected(listener, outcome string)
	// Rejected: a command was refused.
	Rejected(Reject)
	// TLS: a handshake ended; version is "" when it failed.
	TLS(listener, version string, err error)
}

// Reject is one refusal, as its log line says it.
type Reject struct {
	Listener string
	Stage    string // CONNECT, HELO, MAIL, RCPT, DATA, END-OF-MESSAGE, AUTH, ...
	Code     int
	Status   string // the enhanced status code
	Text     string
	// Decider is what refused, from a small set: the hook's name
	// (on_rcpt, ...), "default" for the built-in policy, "milter",
	// "limit" for connection limits and "smtpd" for the protocol's own
	// checks (syntax, size, TLS or AUTH required).
	Decider              string
	ID, From, To, Client string
}

// Decider names what made decision d, for Reject.Decider.
func Decider(d rules.Decision) string {
	switch {
	case d.Hook == "milter":
		return "milter"
	case d.Source == rules.DefaultSource:
		return "default"
	case d.Hook != "":
		return d.Hook
	}
	return "smtpd"
}

type nopObserver struct{}

func (nopObserver) Connected(string)            {}
func (nopObserver) Disconnected(string, string) {}
func (nopObserver) Rejected(Reject)             {}
func (nopObserver) TLS(string, string, error)   {}

func (s *Server) observer() Observer {
	if s.Observe == nil {
		return nopObserver{}
	}
	return s.Observe
}
