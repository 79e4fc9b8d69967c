package smtpd

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"

	"github.com/larkpost/larkpost/engine/cleanup"
	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
)

// Data receives the message, checks it, runs on_data and hands it to the
// sink. The reply is 250 only after the sink has it on disk. The message
// streams to memory or its body file as it arrives (see receiver).
func (sess *session) Data(r io.Reader) error {
	cc := sess.cc
	cc.beginTransfer()
	defer cc.endTransfer()
	verb := cc.dataVerb()
	if err := sess.ended(); err != nil {
		cc.setVerb(verb)
		return err
	}
	sess.sync()
	in := sess.in
	tx := in.Tx
	if tx == nil {
		// go-smtp's transaction outlived a STARTTLS that ours did not.
		io.Copy(io.Discard, r)
		cc.setVerb(verb)
		return reply(503, "5.5.1", "Error: need MAIL command")
	}
	set := in.Policy.Settings
	arrival := time.Now()

	normalize := set.ForbidBareNewline != "reject" || cc.info.InNetworks
	rcv := newReceiver(sess.s, sess.s.Bodies, tx.ID, set, normalize)
	queued := false
	defer func() { rcv.release(queued) }()
	if err := sess.dataError(rcv.readFrom(r), rcv); err != nil {
		cc.setVerb(verb)
		return err
	}

	msg := &rules.Message{Header: parseHeader(rcv.hdr), Size: rcv.size, Raw: rcv.raw()}
	if in.Policy.Has(rules.HookData) {
		msg.Body = rcv.bodyPrefix()
	}
	cc.setVerb(verb)
	if err := sess.refusal(in.Data(cc.ctx, msg), "END-OF-MESSAGE", ""); err != nil {
		return err
	}
	ok := &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as " + tx.ID}
	log := in.Log()
	if in.Discard {
		sess.s.Log.Info(tx.ID + ": discard: END-OF-MESSAGE from " + cc.client() + ": " + decisionSource(log, rules.Discard))
		return ok
	}

	sub := &cleanup.Submission{
		ID: tx.ID, Origin: cleanup.SMTP, Sender: tx.Sender.String(), Client: cc.info, Proto: sess.proto(),
		Arrival: arrival, UTF8: tx.UTF8, EnvID: sess.envID, RetFull: sess.retFull,
		Hold: in.Hold, HoldReason: in.HoldReason, Decisions: log, Effects: in.Effects(),
		Content: rcv.content(), AuthResults: in.AuthResults(),
	}
	sub.Rcpts = make([]cleanup.Rcpt, len(tx.Rcpts))
	for i, r := range tx.Rcpts {
		sub.Rcpts[i] = cleanup.Rcpt{Addr: r.String()}
		if i < len(sess.notify) {
			sub.Rcpts[i].Notify = sess.notify[i]
		}
		if i < len(sess.orcpt) {
			sub.Rcpts[i].Orig = sess.orcpt[i]
		}
	}
	if d := sess.milterMessage(cc.ctx, rcv, sub); d.Kind != rules.Continue {
		if err := sess.refusal(d, "END-OF-MESSAGE", ""); err != nil {
			return err
		}
		if d.Kind == rules.Discard {
			sess.s.Log.Info(tx.ID + ": discard: END-OF-MESSAGE from " + cc.client() + ": " + d.Source)
			return ok
		}
	}
	if cc.milters != nil {
		// The milters' verdicts joined the decision log, and a
		// quarantine holds the message.
		sub.Decisions = in.Log()
		if in.Hold && !sub.Hold {
			sub.Hold, sub.HoldReason = true, in.HoldReason
		}
	}
	if len(sub.Rcpts) == 0 {
		sess.s.Log.Info(tx.ID + ": discard: END-OF-MESSAGE from " + cc.client() + ": a milter removed every recipient")
		return ok
	}
	if _, err := sess.s.Sink.Inject(cc.ctx, sub); err != nil {
		switch {
		case errors.Is(err, cleanup.ErrPolicy):
			sess.s.Log.Error(tx.ID + ": hook failed in cleanup: " + err.Error())
			sess.s.notify("software", tx.ID+": hook failed in cleanup: "+err.Error())
			return reply(451, "4.3.5", "Server configuration problem")
		case errors.Is(err, queue.ErrNoSpace):
			sess.s.Log.Warn(tx.ID + ": warning: queue file write error: " + err.Error())
			sess.s.notify("resource", tx.ID+": queue file write error: "+err.Error())
			return reply(452, "4.3.1", "Insufficient system storage")
		}
		sess.s.Log.Warn(tx.ID + ": warning: queue file write error: " + err.Error())
		sess.s.notify("resource", tx.ID+": queue file write error: "+err.Error())
		return reply(451, "4.3.0", "Error: queue file write error")
	}
	queued = true
	return ok
}

// dataError turns what ended a transfer early into the reply and its log
// line. The client has not been answered yet: go-smtp reads the rest of a
// DATA transfer (and of a BDAT chunk) before it sends the reply, so a
// refused message never leaves its tail to be read as commands.
func (sess *session) dataError(err error, rcv *receiver) error {
	if err == nil {
		return nil
	}
	var bare errBareNewline
	var ne net.Error
	refuse := func(code int, status, text, why string) error {
		line := sess.logReject("END-OF-MESSAGE", code, status, text, "", "smtpd")
		if why != "" {
			sess.s.Log.Info(sess.in.Tx.ID + ": " + why + " from " + sess.cc.client())
		}
		if code/100 == 5 && status == "5.5.2" {
			sess.s.notify("protocol", line)
		}
		return reply(code, status, text)
	}
	switch {
	case err == smtp.ErrDataTooLarge:
		return refuse(552, "5.3.4", "Error: message file too big", "")
	case errors.As(err, &bare):
		return refuse(550, "5.5.2", "Error: "+bare.Error(), "")
	case err == errHeaderField:
		return refuse(552, "5.3.4", "Error: message header field too long", "header field longer than header_size_limit ("+itoa64(sess.in.Policy.Settings.HeaderSizeLimit)+" bytes)")
	case err == errHeaderTotal:
		return refuse(552, "5.3.4", "Error: message header too long", "header longer than header_total_limit ("+itoa64(sess.in.Policy.Settings.HeaderTotalLimit)+" bytes)")
	case err == errInflight:
		sess.s.notify("resource", "smtpd_inflight_bytes exhausted")
		return refuse(452, "4.3.1", "Insufficient system resources", "smtpd_inflight_bytes exhausted")
	case errors.Is(err, queue.ErrNoSpace):
		sess.s.notify("resource", sess.in.Tx.ID+": "+err.Error())
		return refuse(452, "4.3.1", "Insufficient system storage", err.Error())
	case err == smtp.ErrTooLongLine:
		// go-smtp cannot read past such a line: it closes the
		// connection after this reply.
		return refuse(500, "5.5.2", "Error: line too long", "line longer than smtpd_line_length_limit ("+itoa(sess.in.Policy.Settings.LineLengthLimit)+" bytes)")
	case err == errDotCR:
		sess.cc.kill() // go-smtp's view of the stream is wrong from here on
		return refuse(550, "5.5.2", errDotCR.Message, "")
	case err == smtp.ErrDataReset:
		return err
	case errors.As(err, &ne) && ne.Timeout():
		sess.s.Log.Info("timeout after " + sess.cc.dataVerb() + " (" + itoa64(rcv.size) + " bytes) from " + sess.cc.client())
	case errors.As(err, new(*fs.PathError)) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EIO):
		sess.s.Log.Warn(sess.in.Tx.ID + ": warning: queue file write error: " + err.Error())
		sess.s.notify("resource", sess.in.Tx.ID+": queue file write error: "+err.Error())
		return reply(451, "4.3.0", "Error: queue file write error")
	default:
		sess.s.Log.Info("lost connection after " + sess.cc.dataVerb() + " (" + itoa64(rcv.size) + " bytes) from " + sess.cc.client())
	}
	// Whatever is left of the message must never be read as commands.
	sess.cc.kill()
	return reply(421, "4.4.2", sess.in.Policy.Settings.Hostname+" Error: timeout exceeded")
}

func itoa64(n int64) string { return strconv.FormatInt(n, 10) }

// parseHeader reads the header block for the hooks; a field go-message
// will not take ends it (the receiver already bounded its size).
func parseHeader(hdr []byte) textproto.Header {
	br := headerReaders.Get().(*bufio.Reader)
	defer headerReaders.Put(br)
	// ReadHeader copies each field out of the reader's buffer.
	br.Reset(io.MultiReader(bytes.NewReader(hdr), strings.NewReader("\r\n")))
	h, _ := textproto.ReadHeader(br)
	br.Reset(nil)
	return h
}

// headerReaders are parseHeader's: a fresh 4 KB reader a message was a
// tenth of the bytes the server allocated.
var headerReaders = sync.Pool{New: func() any { return bufio.NewReader(nil) }}

func decisionSource(ds []rules.Step, k rules.Kind) string {
	for _, d := range ds {
		if d.Kind == k {
			return d.Hook + " at " + d.Source
		}
	}
	return ""
}

// NormalizeNewlines turns bare LF and bare CR into CRLF, so every later
// stage (Maildir, relay, DKIM) sees the same lines. Pickup uses it too.
func NormalizeNewlines(b []byte) []byte {
	out := make([]byte, 0, len(b)+len(b)/32)
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '\r':
			out = append(out, '\r', '\n')
			if i+1 < len(b) && b[i+1] == '\n' {
				i++
			}
		case '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, b[i])
		}
	}
	return out
}
