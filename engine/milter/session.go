package milter

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	gomilter "github.com/emersion/go-milter"
)

// Info describes the SMTP connection, for the milter's connect event and
// the connect-stage macros. Empty fields are not sent.
type Info struct {
	Hostname   string     // j: our host name, as in Received: "by"
	DaemonName string     // {daemon_name}: the listener's name, e.g. "smtpd" or "submission"
	DaemonAddr netip.Addr // {daemon_addr} and {if_addr}: the local address the client connected to
	IfName     string     // {if_name}: our host name on that interface
	Version    string     // v: the MTA's name and version
	ClientName string     // {client_name}: the verified reverse name; "" or "unknown" if none
	ClientAddr netip.Addr // {client_addr}; invalid for a non-IP client (a local socket)
	ClientPort uint16     // {client_port}
}

// Session is one SMTP connection's conversation with one milter, over one
// milter connection reused for every message of the SMTP connection (as
// Postfix does). It is not safe for concurrent use.
//
// Every stage method returns the Verdict to apply and, when the milter
// failed, an error to log. The Verdict is then the milter's DefaultAction,
// which every later stage returns again without error or I/O (under
// "accept" that is Accept: the milter is skipped for the rest of the
// connection).
type Session struct {
	m       *Milter
	conn    net.Conn // nil once closed
	cs      *gomilter.ClientSession
	version int                  // protocol version whose features were offered
	proto   gomilter.OptProtocol // what the milter asked for
	macros  map[string]string
	pkt     []byte // scratch for outgoing packets
	buf     []byte // scratch for replies

	// done means the milter decided for the whole connection (or failed
	// or was closed); every stage then returns final.
	done  bool
	final Verdict
	// inTxn means MAIL was sent since the milter last finished a message
	// (end of message, or abort), so it may hold message state that an
	// abort must clear.
	inTxn bool
	// msgDone means the milter accepted, discarded or refused the current
	// message: later stages of it return msgVerdict without I/O.
	msgDone    bool
	msgVerdict Verdict
}

// perMessage lists the macros that describe one message; they are
// forgotten when the message ends or is aborted.
var perMessage = []string{"i", "{mail_addr}", "{mail_host}", "{mail_mailer}",
	"{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}"}

// Open connects to the milter, negotiates, and reports the SMTP
// connection (SMFIC_CONNECT with the connect macros). The Session is never
// nil, even on error: it then answers every stage with the default
// action. Close it when the SMTP connection ends.
func (m *Milter) Open(ctx context.Context, info Info) (*Session, Verdict, error) {
	s := &Session{m: m, macros: make(map[string]string, 16)}
	info.fill(s.macros)

	conn, cs, version, err := m.negotiate(ctx)
	if err != nil {
		v, err := s.fail(ctx, "connect", err)
		return s, v, err
	}
	s.conn, s.cs, s.version, s.proto = conn, cs, version, cs.ProtocolOpts

	defer arm(ctx, s.conn, m.cfg.CommandTimeout)()
	if err := s.sendMacros(gomilter.CodeConn, m.macros.Connect); err != nil {
		v, err := s.fail(ctx, "connect", err)
		return s, v, err
	}
	name := info.ClientName
	if name == "" || name == "unknown" {
		// Sendmail's form for a client without a verified name; Postfix
		// converts its "unknown" the same way.
		name = "unknown"
		if info.ClientAddr.IsValid() {
			name = "[" + info.ClientAddr.Unmap().String() + "]"
		}
	}
	family, addr := gomilter.FamilyUnknown, ""
	if a := info.ClientAddr.Unmap(); a.Is4() {
		family, addr = gomilter.FamilyInet, a.String()
	} else if a.Is6() {
		family, addr = gomilter.FamilyInet6, a.String()
	}
	act, err := s.cs.Conn(name, family, info.ClientPort, addr)
	v, err := s.connectionReply(ctx, "connect", act, err)
	return s, v, err
}

func (info Info) fill(macros map[string]string) {
	set := func(k, v string) {
		if v != "" {
			macros[k] = v
		}
	}
	set("j", info.Hostname)
	set("{daemon_name}", info.DaemonName)
	set("{if_name}", info.IfName)
	set("v", info.Version)
	if info.DaemonAddr.IsValid() {
		set("{daemon_addr}", info.DaemonAddr.Unmap().String())
		set("{if_addr}", info.DaemonAddr.Unmap().String())
	}
	name := info.ClientName
	if name == "" {
		name = "unknown"
	}
	if a := info.ClientAddr.Unmap(); a.IsValid() {
		set("{client_addr}", a.String())
		set("{client_port}", strconv.Itoa(int(info.ClientPort)))
		set("{client_name}", name)
		// Postfix's form of Sendmail's "_": name [address].
		set("_", name+" ["+a.String()+"]")
	}
}

// SetMacro gives a macro a value for the stages that follow, for what
// becomes known during the session: "i" (the queue ID) before MAIL,
// "{auth_type}", "{auth_authen}", "{auth_author}" after AUTH, "{tls_version}",
// "{cipher}", "{cipher_bits}", "{cert_subject}", "{cert_issuer}" after
// STARTTLS, "{rcpt_host}" and such before RCPT. An empty value is sent as
// empty. "i" and the {mail_*} and {rcpt_*} macros are forgotten when the
// message ends or is aborted; Mail and Rcpt set {mail_addr} and
// {rcpt_addr} themselves.
func (s *Session) SetMacro(name, value string) { s.macros[name] = value }

// Helo reports HELO or EHLO (with TLS macros, if set, after STARTTLS).
// A HELO in the middle of a transaction aborts it first: RFC 5321 says
// HELO resets the transaction.
func (s *Session) Helo(ctx context.Context, name string) (Verdict, error) {
	if s.done {
		return s.final, nil
	}
	defer arm(ctx, s.conn, s.m.cfg.CommandTimeout)()
	if err := s.abortTxn(); err != nil {
		return s.fail(ctx, "helo", err)
	}
	if err := s.sendMacros(gomilter.CodeHelo, s.m.macros.Helo); err != nil {
		return s.fail(ctx, "helo", err)
	}
	act, err := s.cs.Helo(name)
	return s.connectionReply(ctx, "helo", act, err)
}

// Mail reports MAIL FROM: from is the address without angle brackets
// ("" for the null sender), args the ESMTP parameters ("SIZE=1000", ...).
// It starts a new message, first aborting one the milter may still hold
// (after a refused MAIL, for one, SMTP clients often send MAIL again
// without RSET).
func (s *Session) Mail(ctx context.Context, from string, args []string) (Verdict, error) {
	if s.done {
		return s.final, nil
	}
	defer arm(ctx, s.conn, s.m.cfg.CommandTimeout)()
	if err := s.abortTxn(); err != nil {
		return s.fail(ctx, "mail", err)
	}
	s.macros["{mail_addr}"] = from
	if err := s.sendMacros(gomilter.CodeMail, s.m.macros.Mail); err != nil {
		return s.fail(ctx, "mail", err)
	}
	s.inTxn = true
	act, err := s.cs.Mail(from, args)
	if err != nil {
		return s.fail(ctx, "mail", err)
	}
	v, err := verdictOf(act)
	if err != nil {
		return s.fail(ctx, "mail", err)
	}
	if v.Action != Continue {
		// Accept or discard: the milter wants nothing more of this
		// message. Reject or tempfail: the message does not start.
		s.msgDone, s.msgVerdict = true, v
	}
	return v, nil
}

// Rcpt reports one RCPT TO (address without angle brackets). Reject and
// Tempfail refuse this recipient only; Accept and Discard apply to the
// whole message.
func (s *Session) Rcpt(ctx context.Context, to string, args []string) (Verdict, error) {
	if s.done {
		return s.final, nil
	}
	if s.msgDone {
		return s.msgVerdict, nil
	}
	defer arm(ctx, s.conn, s.m.cfg.CommandTimeout)()
	s.macros["{rcpt_addr}"] = to
	if err := s.sendMacros(gomilter.CodeRcpt, s.m.macros.Rcpt); err != nil {
		return s.fail(ctx, "rcpt", err)
	}
	act, err := s.cs.Rcpt(to, args)
	if err != nil {
		return s.fail(ctx, "rcpt", err)
	}
	v, err := verdictOf(act)
	if err != nil {
		return s.fail(ctx, "rcpt", err)
	}
	if v.Action == Accept || v.Action == Discard {
		s.msgDone, s.msgVerdict = true, v
	}
	return v, nil
}

// Data reports the DATA command, before the server answers 354. Milters
// that speak a protocol version older than 4 do not get it (Continue).
func (s *Session) Data(ctx context.Context) (Verdict, error) {
	if s.done {
		return s.final, nil
	}
	if s.msgDone {
		return s.msgVerdict, nil
	}
	if s.version < 4 {
		return continueVerdict, nil
	}
	defer arm(ctx, s.conn, s.m.cfg.CommandTimeout)()
	if err := s.sendMacros(gomilter.CodeData, s.m.macros.Data); err != nil {
		return s.fail(ctx, "data", err)
	}
	if s.proto&gomilter.OptNoData != 0 {
		return continueVerdict, nil
	}
	if err := writePacket(s.conn, byte(gomilter.CodeData), nil); err != nil {
		return s.fail(ctx, "data", err)
	}
	if s.proto&gomilter.OptNoDataReply != 0 {
		return continueVerdict, nil
	}
	code, data, err := s.readReply(ctx, s.m.cfg.CommandTimeout, s.buf)
	if err != nil {
		return s.fail(ctx, "data", err)
	}
	v, err := s.messageReply(code, data)
	if err != nil {
		return s.fail(ctx, "data", err)
	}
	return v, nil
}

// Abort tells the milter the current message is abandoned (RSET, or a
// transaction that ended without end of message) and forgets the
// message's macros. It sends nothing outside a transaction. On error the
// milter is treated as failed.
func (s *Session) Abort(ctx context.Context) error {
	defer s.endMessage()
	if s.done || !s.inTxn {
		return nil
	}
	defer arm(ctx, s.conn, s.m.cfg.CommandTimeout)()
	if err := s.abortTxn(); err != nil {
		_, err = s.fail(ctx, "abort", err)
		return err
	}
	return nil
}

// Close ends the conversation (SMFIC_QUIT) and closes the connection. The
// Session must not be used afterwards.
func (s *Session) Close() error {
	if s.conn == nil {
		s.done = true
		return nil
	}
	var err error
	if !s.done {
		// QUIT needs no answer; the deadline only guards against a
		// milter that stopped reading.
		s.conn.SetDeadline(time.Now().Add(s.m.cfg.CommandTimeout))
		if werr := writePacket(s.conn, byte(gomilter.CodeQuit), nil); werr != nil {
			err = fmt.Errorf("milter %s: quit: %w", s.m.cfg.Name, werr)
		}
	}
	s.conn.Close()
	s.conn, s.done, s.final = nil, true, s.m.defaultVerdict
	return err
}

// abortTxn sends SMFIC_ABORT if the milter may hold message state (MAIL
// was sent since its last end of message), so the next message starts
// clean. It leaves the macros alone: the caller may already have set "i"
// for the next message. The connection must be armed.
func (s *Session) abortTxn() error {
	s.msgDone, s.msgVerdict = false, Verdict{}
	if !s.inTxn {
		return nil
	}
	s.inTxn = false
	return s.cs.Abort()
}

// endMessage forgets the current message once the caller is done with
// it: its skip state and its macros.
func (s *Session) endMessage() {
	s.msgDone, s.msgVerdict = false, Verdict{}
	for _, k := range perMessage {
		delete(s.macros, k)
	}
}

// sendMacros sends the values of the named macros that are set, ahead of
// the command they belong to. Like Postfix, it sends them even when the
// milter asked not to get the command: libmilter keeps them for later
// stages.
func (s *Session) sendMacros(code gomilter.Code, names []string) error {
	p := append(s.pkt[:0], byte(code))
	for _, n := range names {
		if v, ok := s.macros[n]; ok {
			p = append(append(append(append(p, n...), 0), v...), 0)
		}
	}
	s.pkt = p
	if len(p) == 1 {
		return nil
	}
	return writePacket(s.conn, byte(gomilter.CodeMacro), p)
}

// connectionReply handles the answer to connect or HELO, where a decision
// other than Continue holds for the rest of the connection. Postfix (and
// libmilter, which hangs up) treat it so too.
func (s *Session) connectionReply(ctx context.Context, stage string, act *gomilter.Action, err error) (Verdict, error) {
	if err != nil {
		return s.fail(ctx, stage, err)
	}
	v, err := verdictOf(act)
	if err != nil {
		return s.fail(ctx, stage, err)
	}
	switch v.Action {
	case Continue:
	case Discard:
		// Meaningless for a connection; Postfix ignores it too.
		v = continueVerdict
	default:
		s.Close()
		s.final = v
	}
	return v, nil
}

// messageReply handles a reply during a message (DATA, header, body).
func (s *Session) messageReply(code byte, data []byte) (Verdict, error) {
	var v Verdict
	var err error
	if code == byte(gomilter.ActReplyCode) {
		v, err = replyVerdict(cstring(data))
	} else {
		v, err = simpleVerdict(code)
	}
	if err == nil && v.Action != Continue {
		s.msgDone, s.msgVerdict = true, v
	}
	return v, err
}

// fail abandons the milter connection after an error (its state is
// unknown: a reply may still be in flight) and answers this and every
// later stage with the default action, as Postfix does.
func (s *Session) fail(ctx context.Context, stage string, err error) (Verdict, error) {
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
	s.done, s.final = true, s.m.defaultVerdict
	if cerr := ctx.Err(); cerr != nil {
		err = fmt.Errorf("%w: %w", cerr, err)
	}
	return s.final, fmt.Errorf("milter %s: %s: %w", s.m.cfg.Name, stage, err)
}
