package smtpd

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/larkpost/larkpost/engine/cleanup"
	"github.com/larkpost/larkpost/engine/milter"
	"github.com/larkpost/larkpost/rules"
	"github.com/larkpost/larkpost/stdlib/addr"
)

// milters is one connection's conversations with the smtpd_milters, in
// order. Each stage asks them after the matching hook accepted; the first
// refusal wins, as in Postfix, and is recorded in the decision log with
// the milter's name.
type milters struct {
	sessions []*milter.Session
	names    []string
	helo     string // the HELO name the milters were last told
}

// openMilters connects to the milters for cc; a milter that refuses the
// connection answers the client as on_connect would.
func (s *Server) openMilters(cc *clientConn) rules.Decision {
	if len(s.Milters) == 0 {
		return rules.Decision{}
	}
	info := milter.Info{Hostname: cc.host, DaemonName: cc.info.Listener, IfName: cc.host, Version: "larkpost",
		ClientName: cc.info.RDNS, ClientAddr: cc.info.IP, ClientPort: uint16(cc.info.Port)}
	if a, ok := cc.LocalAddr().(*net.TCPAddr); ok {
		info.DaemonAddr, _ = netip.AddrFromSlice(a.IP)
	}
	ms := &milters{}
	cc.milters = ms
	for _, m := range s.Milters {
		sess, v, err := m.Open(cc.ctx, info)
		ms.sessions = append(ms.sessions, sess)
		ms.names = append(ms.names, m.Name())
		if d, stop := s.milterVerdict(cc, m.Name(), rules.StageConnect, cc.info.IP.String(), v, err); stop {
			return d
		}
	}
	return rules.Decision{}
}

// milterVerdict records a milter's verdict in the intake's log; stop says
// the stage is refused (or the message discarded) and d is the decision.
func (s *Server) milterVerdict(cc *clientConn, name string, stage rules.Stage, arg string, v milter.Verdict, err error) (rules.Decision, bool) {
	if err != nil {
		s.Log.Warn("warning: milter " + name + ": " + err.Error() + "; default action " + v.Action)
	}
	d := rules.Decision{Source: "milter " + name, Hook: "milter"}
	switch v.Action {
	case milter.Reject:
		d.Kind, d.Code, d.Status, d.Text = rules.Reject, v.Code, v.Status, v.Text
	case milter.Tempfail:
		d.Kind, d.Code, d.Status, d.Text = rules.Defer, v.Code, v.Status, v.Text
	case milter.Discard:
		d.Kind, d.Text = rules.Discard, "discarded by milter "+name
	case milter.Quarantine:
		d.Kind, d.Text = rules.Hold, "milter "+name+": "+v.Text
	default:
		return d, false
	}
	if d.Code == 0 {
		d.Code, d.Status, d.Text = 550, "5.7.1", "Command rejected"
		if d.Kind == rules.Defer {
			d.Code, d.Status, d.Text = 451, "4.7.1", "Service unavailable - try again later"
		}
	}
	if stage == rules.StageConnect && d.Refused() {
		d.Code = 421
		if d.Kind == rules.Reject {
			d.Code = 554
		}
	}
	d = cc.intake.Record(stage, arg, d)
	return d, d.Refused() || d.Kind == rules.Discard
}

// stage asks every milter at one SMTP stage.
func (sess *session) milterStage(stage rules.Stage, arg string, ask func(*milter.Session) (milter.Verdict, error)) rules.Decision {
	ms := sess.cc.milters
	if ms == nil {
		return rules.Decision{}
	}
	for i, m := range ms.sessions {
		v, err := ask(m)
		if d, stop := sess.s.milterVerdict(sess.cc, ms.names[i], stage, arg, v, err); stop {
			return d
		}
	}
	return rules.Decision{}
}

// milterHelo tells the milters a new HELO name.
func (sess *session) milterHelo(ctx context.Context) rules.Decision {
	ms, name := sess.cc.milters, sess.cc.info.Helo
	if ms == nil || name == ms.helo {
		return rules.Decision{}
	}
	ms.helo = name
	return sess.milterStage(rules.StageHelo, name, func(m *milter.Session) (milter.Verdict, error) { return m.Helo(ctx, name) })
}

// milterMessage runs DATA and end of message through the milters and
// applies what they changed to sub: headers they add or insert go in
// front of the message (as prepends), sender and recipient changes to the
// envelope. Changing or deleting the client's header fields and
// replacing the body are not applied yet: they are logged.
func (sess *session) milterMessage(ctx context.Context, rcv *receiver, sub *cleanup.Submission) rules.Decision {
	ms := sess.cc.milters
	if ms == nil {
		return rules.Decision{}
	}
	for _, m := range ms.sessions {
		if id := sub.ID; id != "" {
			m.SetMacro("i", id)
		}
	}
	if d := sess.milterStage(rules.StageData, "", func(m *milter.Session) (milter.Verdict, error) { return m.Data(ctx) }); d.Kind != rules.Continue {
		return d
	}
	start := int64(len(rcv.hdr))
	body := func() io.Reader {
		sep := make([]byte, 2)
		n, _ := rcv.raw().ReadAt(sep, start)
		off := start
		switch {
		case n == 2 && sep[0] == '\r' && sep[1] == '\n':
			off += 2
		case n >= 1 && sep[0] == '\n':
			off++
		}
		return io.NewSectionReader(rcv.raw(), off, max(rcv.size-off, 0))
	}
	for i, m := range ms.sessions {
		v, mods, err := m.EndOfMessage(ctx, rcv.hdr, body())
		name := ms.names[i]
		if d, stop := sess.s.milterVerdict(sess.cc, name, rules.StageData, "", v, err); stop {
			for _, mod := range mods {
				if mod.Body != nil {
					mod.Body.Close()
				}
			}
			return d
		}
		for _, mod := range mods {
			sess.applyMod(sub, name, mod)
		}
	}
	return rules.Decision{}
}

func (sess *session) applyMod(sub *cleanup.Submission, name string, mod milter.Modification) {
	src := "milter " + name
	if mod.Kind == milter.ModChangeFrom || mod.Kind == milter.ModAddRcpt || mod.Kind == milter.ModDeleteRcpt {
		// A milter's address is as hostile as a client's.
		a := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(mod.Addr), "<"), ">")
		if _, err := addr.Parse(a); err != nil && !(a == "" && mod.Kind == milter.ModChangeFrom) {
			sess.s.Log.Warn("warning: " + sub.ID + ": milter " + name + ": " + mod.Kind.String() + ": bad address <" + a + ">, ignored")
			return
		}
		mod.Addr = a
	}
	switch mod.Kind {
	case milter.ModAddHeader, milter.ModInsertHeader:
		sub.Effects = append(sub.Effects, rules.Decision{Kind: rules.Prepend, Text: mod.Name + ":" + mod.Value, Source: src, Hook: "milter"})
	case milter.ModChangeFrom:
		sess.s.Log.Info(sub.ID + ": milter " + name + ": sender <" + sub.Sender + "> -> <" + mod.Addr + ">")
		sub.Sender = mod.Addr
	case milter.ModAddRcpt:
		sess.s.Log.Info(sub.ID + ": milter " + name + ": add recipient <" + mod.Addr + ">")
		sub.Rcpts = append(sub.Rcpts, cleanup.Rcpt{Addr: mod.Addr})
	case milter.ModDeleteRcpt:
		kept := sub.Rcpts[:0]
		for _, r := range sub.Rcpts {
			if r.Addr != mod.Addr {
				kept = append(kept, r)
			}
		}
		sess.s.Log.Info(sub.ID + ": milter " + name + ": delete recipient <" + mod.Addr + "> (" + strconv.Itoa(len(sub.Rcpts)-len(kept)) + ")")
		sub.Rcpts = kept
	case milter.ModQuarantine:
		sub.Hold, sub.HoldReason = true, "milter "+name+": "+mod.Reason
	default:
		if mod.Body != nil {
			mod.Body.Close()
		}
		sess.s.Log.Warn("warning: " + sub.ID + ": milter " + name + ": " + mod.Kind.String() + " is not applied (not supported yet)")
	}
}

// closeMilters ends the milter conversations of a connection.
func (cc *clientConn) closeMilters() {
	if cc.milters == nil {
		return
	}
	for _, m := range cc.milters.sessions {
		m.Close()
	}
}
