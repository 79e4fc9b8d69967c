package smtp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-smtp"

	"github.com/larkpost/larkpost/engine/deliver"
	"github.com/larkpost/larkpost/stdlib/addr"
)

// send runs one mail transaction on s and fills in res. It reports whether
// s can carry another transaction, and whether s, taken from the cache,
// turned out to be closed before the server accepted anything (stale):
// then the transaction may be tried again on a new connection.
func (c *Client) send(ctx context.Context, s *session, req *Request, res []Result) (reusable, stale bool) {
	for i := range res {
		res[i] = Result{Relay: s.t.relay, TLS: s.tls}
	}
	t := &txn{c: c, ctx: ctx, s: s, req: req, res: res, namaddr: s.t.namaddr}
	t.all = make([]int, len(res))
	for i := range t.all {
		t.all[i] = i
	}
	needUTF8, ok := t.fits()
	if !ok {
		// Nothing was sent, so the session is as good as before.
		return true, false
	}
	t.dsn, _ = s.client.Extension("DSN")
	if !t.envelope(needUTF8) {
		return true, false
	}
	t.pipeline()
	if reusable, ok := t.mail(); !ok {
		return reusable && t.drain(true), t.stale
	}
	accepted, ok := t.rcpts()
	if !ok {
		return false, false
	}
	if len(accepted) == 0 {
		// The RSET that ends the transaction comes with the next reuse,
		// or QUIT makes it unnecessary.
		return t.drain(false), false
	}
	return t.data(accepted), false
}

// txn is one mail transaction under way. Its steps share it so that each
// failure can settle exactly the recipients it concerns.
type txn struct {
	c       *Client
	ctx     context.Context
	s       *session
	req     *Request
	res     []Result
	namaddr string
	all     []int  // every recipient's index, for failures that hit them all
	dsn     bool   // the server offered DSN, so the notification duty passes on
	sender  string // the sender as sent
	opts    *smtp.MailOptions
	wire    []string // the addresses as sent, which go-smtp's LMTP replies are keyed by
	stale   bool     // see Client.send
}

// setAll gives the recipients idx one status; unlike sent, it records no
// reply code and never marks them relayed.
func (t *txn) setAll(idx []int, status, reason string) {
	for _, i := range idx {
		t.res[i].Status = deliver.Status{Enhanced: status, Text: reason}
	}
}

// sent records the server's final reply for recipient i.
func (t *txn) sent(i int, r reply) {
	t.res[i].Status = deliver.Status{Code: r.code, Enhanced: r.status(), Text: r.String()}
	// RFC 3461 4.1: a success DSN is still owed when the next hop
	// cannot take the request on; "relayed" tells the sender so. An
	// LMTP server delivers finally, so its 250 means "delivered", as
	// in Postfix's lmtp.
	t.res[i].Relayed = !t.s.lmtp && !t.dsn && r.class() == 2 && wantsSuccess(t.req.Rcpts[i].Notify)
}

// fits refuses, before MAIL FROM, a message the server has already told us
// it cannot take, so that no transaction is wasted on it. It reports whether
// the envelope needs SMTPUTF8 and whether the transaction may go ahead.
func (t *txn) fits() (needUTF8, ok bool) {
	req, client := t.req, t.s.client
	needUTF8 = req.SMTPUTF8 || !isASCII(req.Sender)
	for _, r := range req.Rcpts {
		needUTF8 = needUTF8 || !isASCII(r.Addr)
	}
	if ok, _ := client.Extension("SMTPUTF8"); needUTF8 && !ok {
		// Postfix bounces rather than mangle the envelope; trying another
		// MX would rarely help, as they tend to run the same software.
		t.setAll(t.all, "5.6.7", fmt.Sprintf("SMTPUTF8 is required, but was not offered by host %s", t.namaddr))
		return needUTF8, false
	}
	if ok, _ := client.Extension("8BITMIME"); !ok && (req.EightBit || has8bit(req.Body)) {
		// Sent as is, like Postfix with MIME conversion off: nearly every
		// server copes, and a conversion would break DKIM signatures.
		t.c.log().Debug("8-bit message to a server without 8BITMIME", "queue_id", req.QueueID, "relay", t.s.t.relay)
	}
	if limit, ok := client.MaxMessageSize(); ok && limit > 0 && req.Body.Size() > int64(limit) {
		// The server would refuse after the whole body went over the wire.
		t.setAll(t.all, "5.3.4", fmt.Sprintf("message size %d exceeds size limit %d of server %s", req.Body.Size(), limit, t.namaddr))
		return needUTF8, false
	}
	return needUTF8, true
}

// envelope prepares MAIL FROM's address and parameters and the
// recipients' addresses. A sender that cannot be sent settles everyone.
func (t *txn) envelope(needUTF8 bool) bool {
	req := t.req
	t.sender = requote(req.Sender)
	if strings.ContainsAny(t.sender, "\r\n") {
		t.setAll(t.all, "5.1.7", "bad sender address syntax")
		return false
	}
	t.opts = &smtp.MailOptions{Size: req.Body.Size(), UTF8: needUTF8}
	if t.dsn {
		if req.RetFull {
			t.opts.Return = smtp.DSNReturnFull
		}
		// go-smtp refuses an ENVID it cannot xtext-encode; the DSN is
		// still useful without it.
		if isPrintableASCII(req.EnvID) {
			t.opts.EnvelopeID = req.EnvID
		}
	}
	t.wire = make([]string, len(t.res))
	for i, rc := range req.Rcpts {
		t.wire[i] = requote(rc.Addr)
	}
	return true
}

// sendable says whether recipient i's address can go on the wire.
func (t *txn) sendable(i int) bool { return !strings.ContainsAny(t.wire[i], "\r\n") }

// pipeline sends MAIL FROM, the recipients and DATA ahead in one write
// when the server announced PIPELINING (see pipeline.go). Anything that
// keeps the commands from being recorded leaves the transaction to go
// step by step, where the same calls meet the same error.
func (t *txn) pipeline() {
	s := t.s
	if ok, _ := s.client.Extension("PIPELINING"); !ok {
		return
	}
	if s.rec == nil {
		rec, err := newRecorder(s.lmtp, s.ehlo, t.c.hostname())
		if err != nil {
			return
		}
		s.rec = rec
	}
	rec := s.rec // empty: every recording below ends with a take
	if err := rec.client.Mail(t.sender, t.opts); err != nil {
		rec.take()
		return
	}
	for i, rc := range t.req.Rcpts {
		if !t.sendable(i) {
			continue
		}
		if err := rec.client.Rcpt(t.wire[i], rcptOptions(rc, t.dsn)); err != nil {
			rec.take()
			return
		}
	}
	w, err := rec.client.Data()
	if err != nil {
		rec.take()
		return
	}
	ahead := rec.take()
	w.Close() // the recorder's own DATA, so that its next command starts clean
	rec.take()
	s.conn.SetWriteDeadline(time.Now().Add(t.c.commandTimeout()))
	if _, err := s.conn.Write(ahead); err != nil {
		// Part of it may be out: nothing more can go over this
		// connection in step, and go-smtp's first command says so.
		s.raw.Close()
		return
	}
	s.h.ahead = ahead
}

// drain reads the replies to commands sent ahead that the transaction no
// longer needs (RFC 2920 3.1: after a refused MAIL FROM, the recipients and
// DATA; after refused recipients, DATA) by making the calls as planned:
// handoffConn drops the lines and go-smtp reads the replies. It reports
// whether the session is still in step for another transaction.
func (t *txn) drain(rcpts bool) bool {
	s := t.s
	if len(s.h.ahead) == 0 {
		return true
	}
	fine := func(err error) bool {
		r, ok := smtpReply(err)
		return err == nil || ok && r.code != 421
	}
	if rcpts {
		for i, rc := range t.req.Rcpts {
			if t.sendable(i) && !fine(s.client.Rcpt(t.wire[i], rcptOptions(rc, t.dsn))) {
				return false
			}
		}
	}
	w, err := s.client.Data()
	if err == nil {
		// A server that takes DATA without a recipient gets the lone
		// dot RFC 2920 asks for, and the transaction is over.
		t.c.log().Debug("DATA accepted without recipients", "queue_id", t.req.QueueID, "relay", s.t.relay)
		err = w.Close()
		s.open = false
	}
	return fine(err) && len(s.h.ahead) == 0
}

// mail opens the transaction. When it does not get a 250 it has settled
// every recipient, and it reports whether the session can carry another
// transaction; ok says whether recipients may follow.
func (t *txn) mail() (reusable, ok bool) {
	t.s.open = true // until a reply says the transaction is over
	if err := t.s.client.Mail(t.sender, t.opts); err != nil {
		r, ok := smtpReply(err)
		if !ok {
			t.setAll(t.all, "4.4.2", lost(t.ctx, t.namaddr, "sending MAIL FROM", err))
			var ne net.Error
			t.stale = t.s.reused && t.ctx.Err() == nil && !(errors.As(err, &ne) && ne.Timeout())
			return false, false
		}
		t.setAll(t.all, r.status(), said(t.namaddr, r, "MAIL FROM"))
		t.s.open = false // a refused MAIL opens no transaction
		return r.code != 421, false
	}
	return true, true
}

// rcpts offers every recipient and returns those the server accepted; the
// others have their result. ok is false when the session broke or the
// server is closing it: then the recipients already accepted are settled
// too, and no DATA may follow.
func (t *txn) rcpts() (accepted []int, ok bool) {
	for i, rc := range t.req.Rcpts {
		if !t.sendable(i) {
			t.setAll([]int{i}, "5.1.3", "bad recipient address syntax")
			continue
		}
		err := t.s.client.Rcpt(t.wire[i], rcptOptions(rc, t.dsn))
		if err == nil {
			accepted = append(accepted, i)
			continue
		}
		r, ok := smtpReply(err)
		if !ok {
			t.setAll(append(accepted, t.all[i:]...), "4.4.2", lost(t.ctx, t.namaddr, "sending RCPT TO", err))
			return nil, false
		}
		if r.code == 421 {
			// The server is closing: nobody gets the message this time.
			t.setAll(append(accepted, t.all[i:]...), r.status(), said(t.namaddr, r, "RCPT TO"))
			return nil, false
		}
		t.setAll([]int{i}, r.status(), said(t.namaddr, r, "RCPT TO"))
	}
	return accepted, true
}

// data sends the body to the accepted recipients and records the final
// replies. It reports whether the session can carry another transaction.
func (t *txn) data(accepted []int) bool {
	w, err := t.s.client.Data()
	if err != nil {
		r, ok := smtpReply(err)
		if !ok {
			t.setAll(accepted, "4.4.2", lost(t.ctx, t.namaddr, "sending DATA", err))
			return false
		}
		t.setAll(accepted, r.status(), said(t.namaddr, r, "DATA"))
		return r.code != 421
	}
	// go-smtp leaves the body without a deadline.
	t.s.conn.SetDeadline(time.Now().Add(t.c.dataTimeout()))
	body := t.req.Body
	buf := copyBufs.Get().(*[]byte)
	t.s.inData = true
	src := &bodyReader{r: io.NewSectionReader(body, 0, body.Size())}
	_, err = io.CopyBuffer(w, src, *buf)
	copyBufs.Put(buf)
	if src.err != nil {
		// Our disk, not the server: the session ends without the
		// final dot (see session.inData) and the message waits.
		t.setAll(accepted, "4.3.0", "error reading the queued message while sending it to "+t.namaddr+": "+src.err.Error())
		return false
	}
	if err != nil {
		t.setAll(accepted, "4.4.2", lost(t.ctx, t.namaddr, "sending message body", err))
		return false
	}
	t.s.inData = false // the dot goes out with the close below
	if t.s.lmtp {
		ok := lmtpReplies(t.ctx, t.s, w, accepted, t.wire, t.sent, t.setAll)
		t.s.open = !ok
		return ok
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		r, ok := smtpReply(err)
		if !ok {
			t.setAll(accepted, "4.4.2", lost(t.ctx, t.namaddr, "sending end of data -- message may be sent more than once", err))
			return false
		}
		t.setAll(accepted, r.status(), said(t.namaddr, r, "end of DATA"))
		t.s.open = false // any reply to the data ends the transaction
		return r.code != 421
	}
	r := parseReply(250, resp.StatusText)
	for _, i := range accepted {
		t.sent(i, r)
	}
	t.s.open = false
	return true
}

// bodyReader keeps the error of reading the queued message apart from
// those of sending it.
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// copyBufs holds the buffers bodies are copied through: io.Copy's own
// 32 KiB per message was a fifth of the bytes a relaying server allocated.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// lmtpReplies reads LMTP's one reply per accepted recipient.
func lmtpReplies(ctx context.Context, s *session, w *smtp.DataCommand, accepted []int, wire []string,
	sent func(int, reply), setAll func([]int, string, string)) bool {
	resps, err := w.CloseWithLMTPResponse()
	var rejected smtp.LMTPDataError
	errors.As(err, &rejected)
	_, onlyReplies := err.(smtp.LMTPDataError)
	for _, i := range accepted {
		if dr, ok := resps[wire[i]]; ok {
			sent(i, parseReply(250, dr.StatusText))
			continue
		}
		if se, ok := rejected[wire[i]]; ok {
			r, _ := smtpReply(se)
			if r.class() == 2 {
				sent(i, r)
			} else {
				setAll([]int{i}, r.status(), said(s.t.namaddr, r, "end of DATA"))
			}
			continue
		}
		setAll([]int{i}, "4.4.2", lost(ctx, s.t.namaddr, "receiving the replies to end of DATA", err))
	}
	return err == nil || onlyReplies
}

// rcptOptions builds the DSN parameters of one RCPT TO. go-smtp drops them
// when the server lacks DSN, but rejects malformed ones outright, so they are
// cleaned up here rather than costing the recipient its delivery.
func rcptOptions(rc Rcpt, dsn bool) *smtp.RcptOptions {
	if !dsn {
		return nil
	}
	opts := &smtp.RcptOptions{Notify: notifySet(rc.Notify)}
	orcpt := strings.TrimSpace(rc.ORcpt)
	if typ, a, ok := strings.Cut(orcpt, ";"); ok && (strings.EqualFold(typ, "rfc822") || strings.EqualFold(typ, "utf-8")) {
		orcpt = a
	}
	switch {
	case orcpt == "":
	case isPrintableASCII(orcpt):
		opts.OriginalRecipientType, opts.OriginalRecipient = smtp.DSNAddressTypeRFC822, orcpt
	case utf8.ValidString(orcpt) && !strings.ContainsAny(orcpt, "\r\n"):
		opts.OriginalRecipientType, opts.OriginalRecipient = smtp.DSNAddressTypeUTF8, orcpt
	}
	return opts
}

// notifySet returns the NOTIFY values in go-smtp's form, or nil when they do
// not make a valid set (RFC 3461 4.1: NEVER stands alone).
func notifySet(values []string) []smtp.DSNNotify {
	var out []smtp.DSNNotify
	for _, v := range values {
		n := smtp.DSNNotify(strings.ToUpper(strings.TrimSpace(v)))
		switch n {
		case smtp.DSNNotifyNever, smtp.DSNNotifySuccess, smtp.DSNNotifyFailure, smtp.DSNNotifyDelayed:
		default:
			return nil
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	if slices.Contains(out, smtp.DSNNotifyNever) && len(out) > 1 {
		return nil
	}
	return out
}

func wantsSuccess(notify []string) bool {
	for _, v := range notify {
		if strings.EqualFold(strings.TrimSpace(v), "SUCCESS") {
			return true
		}
	}
	return false
}

// requote restores the quoting of a local part such as `"a b"@x`, which
// go-smtp's server hands over unquoted; sent like that, the RCPT TO would be
// malformed. An address that does not parse goes out unchanged, for the
// next hop to judge.
func requote(s string) string {
	if s == "" {
		return ""
	}
	a, err := addr.Parse(s)
	if err != nil {
		return s
	}
	return a.String()
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

func has8bit(b Body) bool {
	buf := make([]byte, 32<<10)
	for off := int64(0); off < b.Size(); {
		n, err := b.ReadAt(buf, off)
		for _, c := range buf[:n] {
			if c >= 0x80 {
				return true
			}
		}
		if err != nil {
			return false
		}
		off += int64(n)
	}
	return false
}
