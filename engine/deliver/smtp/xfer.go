package smtp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-smtp"

	"github.com/larkpost/larkpost/engine/deliver"
	"github.com/larkpost/larkpost/stdlib/addr"
)

// send runs one mail transaction on s and fills in res. It reports whether
// s can carry another transaction.
func (c *Client) send(ctx context.Context, s *session, req *Request, res []Result) bool {
	namaddr := s.t.namaddr
	for i := range res {
		res[i] = Result{Relay: s.t.relay, TLS: s.tls}
	}
	setAll := func(idx []int, status, reason string) {
		for _, i := range idx {
			res[i].Status = deliver.Status{Enhanced: status, Text: reason}
		}
	}
	all := make([]int, len(res))
	for i := range all {
		all[i] = i
	}

	needUTF8 := req.SMTPUTF8 || !isASCII(req.Sender)
	for _, r := range req.Rcpts {
		needUTF8 = needUTF8 || !isASCII(r.Addr)
	}
	if ok, _ := s.client.Extension("SMTPUTF8"); needUTF8 && !ok {
		// Postfix bounces rather than mangle the envelope; trying another
		// MX would rarely help, as they tend to run the same software.
		setAll(all, "5.6.7", fmt.Sprintf("SMTPUTF8 is required, but was not offered by host %s", namaddr))
		return true
	}
	if ok, _ := s.client.Extension("8BITMIME"); !ok && (req.EightBit || has8bit(req.Body)) {
		// Sent as is, like Postfix with MIME conversion off: nearly every
		// server copes, and a conversion would break DKIM signatures.
		c.log().Debug("8-bit message to a server without 8BITMIME", "queue_id", req.QueueID, "relay", s.t.relay)
	}
	if limit, ok := s.client.MaxMessageSize(); ok && limit > 0 && req.Body.Size() > int64(limit) {
		// The server would refuse after the whole body went over the wire.
		setAll(all, "5.3.4", fmt.Sprintf("message size %d exceeds size limit %d of server %s", req.Body.Size(), limit, namaddr))
		return true
	}
	dsn, _ := s.client.Extension("DSN")

	sender := requote(req.Sender)
	if strings.ContainsAny(sender, "\r\n") {
		setAll(all, "5.1.7", "bad sender address syntax")
		return true
	}
	opts := &smtp.MailOptions{Size: req.Body.Size(), UTF8: needUTF8}
	if dsn {
		if req.RetFull {
			opts.Return = smtp.DSNReturnFull
		}
		// go-smtp refuses an ENVID it cannot xtext-encode; the DSN is
		// still useful without it.
		if isPrintableASCII(req.EnvID) {
			opts.EnvelopeID = req.EnvID
		}
	}
	if err := s.client.Mail(sender, opts); err != nil {
		r, ok := smtpReply(err)
		if !ok {
			setAll(all, "4.4.2", lost(ctx, namaddr, "sending MAIL FROM", err))
			return false
		}
		setAll(all, r.status(), said(namaddr, r, "MAIL FROM"))
		return r.code != 421
	}

	var accepted []int
	wire := make([]string, len(res)) // the addresses as sent, which go-smtp's LMTP replies are keyed by
	for i, rc := range req.Rcpts {
		wire[i] = requote(rc.Addr)
		if strings.ContainsAny(wire[i], "\r\n") {
			setAll([]int{i}, "5.1.3", "bad recipient address syntax")
			continue
		}
		err := s.client.Rcpt(wire[i], rcptOptions(rc, dsn))
		if err == nil {
			accepted = append(accepted, i)
			continue
		}
		r, ok := smtpReply(err)
		if !ok {
			setAll(append(accepted, all[i:]...), "4.4.2", lost(ctx, namaddr, "sending RCPT TO", err))
			return false
		}
		if r.code == 421 {
			// The server is closing: nobody gets the message this time.
			setAll(append(accepted, all[i:]...), r.status(), said(namaddr, r, "RCPT TO"))
			return false
		}
		setAll([]int{i}, r.status(), said(namaddr, r, "RCPT TO"))
	}
	if len(accepted) == 0 {
		// The RSET that ends the transaction comes with the next reuse,
		// or QUIT makes it unnecessary.
		return true
	}

	w, err := s.client.Data()
	if err != nil {
		r, ok := smtpReply(err)
		if !ok {
			setAll(accepted, "4.4.2", lost(ctx, namaddr, "sending DATA", err))
			return false
		}
		setAll(accepted, r.status(), said(namaddr, r, "DATA"))
		return r.code != 421
	}
	// go-smtp leaves the body without a deadline.
	s.conn.SetDeadline(time.Now().Add(c.dataTimeout()))
	if _, err := io.Copy(w, io.NewSectionReader(req.Body, 0, req.Body.Size())); err != nil {
		setAll(accepted, "4.4.2", lost(ctx, namaddr, "sending message body", err))
		return false
	}
	sent := func(i int, r reply) {
		res[i].Status = deliver.Status{Code: r.code, Enhanced: r.status(), Text: r.String()}
		// RFC 3461 4.1: a success DSN is still owed when the next hop
		// cannot take the request on; "relayed" tells the sender so. An
		// LMTP server delivers finally, so its 250 means "delivered", as
		// in Postfix's lmtp.
		res[i].Relayed = !s.lmtp && !dsn && r.class() == 2 && wantsSuccess(req.Rcpts[i].Notify)
	}
	if s.lmtp {
		return lmtpReplies(ctx, s, w, accepted, wire, sent, setAll)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		r, ok := smtpReply(err)
		if !ok {
			setAll(accepted, "4.4.2", lost(ctx, namaddr, "sending end of data -- message may be sent more than once", err))
			return false
		}
		setAll(accepted, r.status(), said(namaddr, r, "end of DATA"))
		return r.code != 421
	}
	r := parseReply(250, resp.StatusText)
	for _, i := range accepted {
		sent(i, r)
	}
	return true
}

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
