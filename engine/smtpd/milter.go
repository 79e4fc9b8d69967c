package smtpd

import (
	"context"
	"net"
	"net/netip"

	"github.com/larkpost/larkpost/engine/cleanup"
	"github.com/larkpost/larkpost/engine/milter"
	"github.com/larkpost/larkpost/rules"
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
	d := cleanup.MilterDecision(name, v)
	if d.Kind == rules.Continue {
		return d, false
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

// milterMessage runs DATA and end of message through the milters. Each
// milter is given the message as the ones before it left it; their
// header and body changes become the queued message, their sender and
// recipient changes the envelope (cleanup.ApplyMilter).
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
	msg := milter.NewMessage(rcv.hdr, rcv.raw(), rcv.bodyStart(), rcv.size-rcv.bodyStart())
	msg.LimitHeader(rcv.set.HeaderTotalLimit)
	defer msg.Close()
	for i, m := range ms.sessions {
		v, mods, err := m.EndOfMessage(ctx, msg.Header(), msg.Body())
		name := ms.names[i]
		if d, stop := sess.s.milterVerdict(sess.cc, name, rules.StageData, "", v, err); stop {
			for _, mod := range mods {
				if mod.Body != nil {
					mod.Body.Close()
				}
			}
			return d
		}
		cleanup.ApplyMilter(sub, msg, name, mods, sess.s.Log)
	}
	if msg.BodyReplaced() {
		if err := rcv.replace(msg); err != nil {
			sess.s.Log.Warn("warning: " + sub.ID + ": storing the message a milter replaced the body of: " + err.Error())
			return rules.Decision{Kind: rules.Defer, Code: 451, Status: "4.3.0", Text: "Error processing message - try again later", Source: "milter", Hook: "milter"}
		}
		sub.Content = rcv.content()
	}
	sub.TakeMilterHeader(msg)
	return rules.Decision{}
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
