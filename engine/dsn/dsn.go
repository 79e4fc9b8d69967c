// Package dsn writes RFC 3464 delivery status notifications the way
// Postfix's bounce(8) does: a multipart/report with a human-readable
// explanation, a machine-readable message/delivery-status part and the
// original message or its header.
//
// Postfix's layout and wording are kept on purpose: bounce parsers in the
// wild (mailing list managers, ESP feedback loops, MUAs) are tuned to it.
package dsn

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Kind is what the report says happened.
type Kind int

const (
	Failed    Kind = iota // permanent failure: the classic bounce ("Undelivered Mail Returned to Sender")
	Delayed               // delay warning ("Delayed Mail (still being retried)")
	Delivered             // NOTIFY=SUCCESS: "Successful Mail Delivery Report"
	Relayed               // NOTIFY=SUCCESS to a next hop without DSN support: "Relayed" (action=relayed)
)

// Recipient is one recipient's outcome.
type Recipient struct {
	Original       string    // ORCPT address ("" if none: then no Original-Recipient field); "rfc822;addr" is accepted too
	Final          string    // the address we tried
	Action         string    // "failed", "delayed", "delivered", "relayed", "expanded"; "" takes the one that goes with the report's Kind
	Status         string    // enhanced status code, e.g. "5.1.1"; "" or malformed takes 5.0.0, 4.0.0 or 2.0.0 after Action
	RemoteMTA      string    // e.g. "mx.example.net" ("" if none); written as "Remote-MTA: dns; ..."
	Diagnostic     string    // e.g. "550 5.1.1 <bob@example.net>... User unknown"; "" if none
	DiagnosticType string    // "smtp" (default) or "x-unix"
	LastAttempt    time.Time // zero: omitted
	WillRetryUntil time.Time // only for Delayed
}

// Report is everything needed to write one DSN.
type Report struct {
	Kind         Kind
	ReportingMTA string    // our hostname: "Reporting-MTA: dns; <host>", also used in the postmaster address and Message-ID
	QueueID      string    // the original message's queue id, written as "X-Larkpost-Queue-ID"
	Sender       string    // original envelope sender, written as "X-Larkpost-Sender: rfc822; <addr>" ("" for the null sender: omitted)
	ArrivalDate  time.Time // "Arrival-Date" (zero: omitted)
	EnvelopeID   string    // ENVID, already decoded from xtext ("" → no Original-Envelope-Id field)
	To           string    // whom the DSN is addressed to (the original sender, or postmaster for double bounces)
	Recipients   []Recipient
	ReturnFull   bool      // RET=FULL: attach the whole message as message/rfc822; otherwise only the header as text/rfc822-headers
	Original     []byte    // the original message, CRLF or LF line endings, or its first bytes when OriginalSize is larger
	OriginalSize int64     // the original's full size when Original holds only its start (0: len(Original))
	Now          time.Time // Date of the DSN; also makes output deterministic for golden tests
	Postmaster   string    // contact shown in the human part; "" → "postmaster@<ReportingMTA>"
	MaxBodyBytes int       // cap on the attached original; 0 → 50000, negative → no cap
	Boundary     string    // MIME boundary; "" → QueueID + "." + unix time + "/" + ReportingMTA as Postfix does
}

// defaultMaxBody is Postfix's bounce_size_limit.
const defaultMaxBody = 50000

// maxLine is RFC 5322's hard limit on a line, without its CRLF.
const maxLine = 998

// wrapWidth and wrapIndent are Postfix's line_wrap settings for the
// recipient lines and the Remote-MTA and Diagnostic-Code fields.
const (
	wrapWidth  = 79
	wrapIndent = 4
)

// Subject returns the subject line Compose uses for kind (exported for logs/tests).
func Subject(k Kind) string {
	switch k {
	case Failed:
		return "Undelivered Mail Returned to Sender"
	case Delayed:
		return "Delayed Mail (still being retried)"
	case Delivered, Relayed:
		return "Successful Mail Delivery Report"
	}
	return "Mail Delivery Status Report"
}

// Compose returns the complete DSN message (headers and body) with CRLF line endings, ready to be queued
// with the null envelope sender "<>" (the caller does that). It returns an error if Recipients is empty
// or required fields are missing.
//
// When any envelope address is not ASCII, the report follows RFC 6533 as
// Postfix does for SMTPUTF8 mail: the "utf-8" address type, and the
// message/global-delivery-status, message/global and message/global-headers
// types. Such a DSN must itself be sent with SMTPUTF8, and one with any
// 8-bit byte with 8BITMIME; its top-level Content-Transfer-Encoding says
// which ("7bit" or "8bit").
func Compose(r *Report) ([]byte, error) {
	c, err := prepare(r)
	if err != nil {
		return nil, err
	}
	text := c.notification()
	status := c.deliveryStatus()
	orig := c.original()

	boundary, err := c.boundary(text, status, orig)
	if err != nil {
		return nil, err
	}

	var b buf
	b.header("Date", fmtDate(r.Now), maxLine)
	b.header("From", "MAILER-DAEMON@"+c.host+" (Mail Delivery System)", maxLine)
	b.header("Subject", Subject(r.Kind), maxLine)
	b.header("To", c.to, maxLine)
	if c.origMsgID != "" {
		// Postfix does this too: MUAs then thread the bounce under the
		// message it is about.
		b.header("References", c.origMsgID, maxLine)
		b.header("In-Reply-To", c.origMsgID, maxLine)
	}
	// RFC 3834: vacation responders and other auto-responders must not
	// answer this, which is what stops bounce loops between two robots.
	b.header("Auto-Submitted", "auto-replied", maxLine)
	b.header("MIME-Version", "1.0", maxLine)
	b.line("Content-Type: multipart/report; report-type=delivery-status;")
	b.line("\tboundary=\"" + boundary + "\"")
	cte := "7bit"
	if !isASCII(text) || !isASCII(status) || !isASCII(orig) {
		cte = "8bit"
	}
	b.header("Content-Transfer-Encoding", cte, maxLine)
	b.header("Message-Id", "<"+c.queueID+"."+strconv.FormatInt(r.Now.Unix(), 10)+"."+c.kindTag()+"@"+c.host+">", maxLine)
	b.line("")
	b.line("This is a MIME-encapsulated message.")

	b.line("")
	b.line("--" + boundary)
	b.line("Content-Description: Notification")
	if isASCII(text) {
		b.line("Content-Type: text/plain; charset=us-ascii")
	} else {
		b.line("Content-Type: text/plain; charset=utf-8")
		b.line("Content-Transfer-Encoding: 8bit")
	}
	b.line("")
	b.Write(text)

	b.line("")
	b.line("--" + boundary)
	b.line("Content-Description: Delivery report")
	if c.global {
		b.line("Content-Type: message/global-delivery-status")
	} else {
		b.line("Content-Type: message/delivery-status")
	}
	if !isASCII(status) {
		b.line("Content-Transfer-Encoding: 8bit")
	}
	b.line("")
	b.Write(status)

	b.line("")
	b.line("--" + boundary)
	b.line("Content-Description: " + c.originalDescription())
	b.line("Content-Type: " + c.originalType())
	if !isASCII(orig) {
		b.line("Content-Transfer-Encoding: 8bit")
	}
	b.line("")
	b.Write(orig)

	b.line("")
	b.line("--" + boundary + "--")
	return b.Bytes(), nil
}

// composer holds a Report after validation, with every value cleaned and
// defaults filled in, so the writers below need not check anything.
type composer struct {
	r          *Report
	host       string
	queueID    string
	to         string
	sender     string
	envid      string
	postmaster string
	rcpts      []Recipient
	global     bool // RFC 6533 types: some envelope address is not ASCII
	headerOnly bool // attach the original's header, not the whole message
	truncated  bool // headerOnly only because the original is over the limit
	limit      int
	origMsgID  string
}

func prepare(r *Report) (*composer, error) {
	if r == nil {
		return nil, errors.New("dsn: nil report")
	}
	if r.Kind < Failed || r.Kind > Relayed {
		return nil, fmt.Errorf("dsn: unknown kind %d", int(r.Kind))
	}
	if len(r.Recipients) == 0 {
		return nil, errors.New("dsn: no recipients")
	}
	if r.ReportingMTA == "" {
		return nil, errors.New("dsn: no reporting MTA")
	}
	if !validToken(r.ReportingMTA) {
		return nil, fmt.Errorf("dsn: invalid reporting MTA %q", r.ReportingMTA)
	}
	if r.QueueID == "" {
		return nil, errors.New("dsn: no queue id")
	}
	if !validToken(r.QueueID) {
		return nil, fmt.Errorf("dsn: invalid queue id %q", r.QueueID)
	}
	if r.Now.IsZero() {
		return nil, errors.New("dsn: no date")
	}
	c := &composer{
		r:       r,
		host:    r.ReportingMTA,
		queueID: r.QueueID,
		to:      address(r.To),
		sender:  address(r.Sender),
		envid:   clean(r.EnvelopeID),
	}
	if c.to == "" {
		return nil, errors.New("dsn: no To address")
	}
	c.postmaster = address(r.Postmaster)
	if c.postmaster == "" {
		c.postmaster = "postmaster@" + c.host
	}
	if r.Boundary != "" && !validBoundary(r.Boundary) {
		return nil, fmt.Errorf("dsn: invalid boundary %q", r.Boundary)
	}

	c.global = !isASCII([]byte(c.to)) || !isASCII([]byte(c.sender))
	for i, in := range r.Recipients {
		rc, err := c.recipient(in)
		if err != nil {
			return nil, fmt.Errorf("dsn: recipient %d: %w", i+1, err)
		}
		if !isASCII([]byte(rc.Final)) || !isASCII([]byte(rc.Original)) {
			c.global = true
		}
		c.rcpts = append(c.rcpts, rc)
	}

	c.limit = r.MaxBodyBytes
	if c.limit == 0 {
		c.limit = defaultMaxBody
	}
	// RFC 3461 4.3: RET asks for the content in a "failed" DSN. Postfix
	// sends only the header with delay warnings and success reports
	// whatever RET says, and so do we.
	c.headerOnly = !r.ReturnFull || r.Kind != Failed
	size := int64(len(r.Original))
	if r.OriginalSize > size {
		size = r.OriginalSize
	}
	if !c.headerOnly && (c.limit > 0 && size > int64(c.limit) || size > int64(len(r.Original))) {
		// Cutting the message short could break its MIME structure, so
		// Postfix falls back to the header alone.
		c.headerOnly, c.truncated = true, true
	}
	c.origMsgID = originalMessageID(r.Original)
	return c, nil
}

// recipient returns in cleaned, with Action and Status defaulted and
// checked.
func (c *composer) recipient(in Recipient) (Recipient, error) {
	out := Recipient{
		Original:       address(in.Original),
		Final:          address(in.Final),
		Action:         strings.ToLower(clean(in.Action)),
		Status:         clean(in.Status),
		RemoteMTA:      clean(in.RemoteMTA),
		Diagnostic:     clean(in.Diagnostic),
		DiagnosticType: clean(in.DiagnosticType),
		LastAttempt:    in.LastAttempt,
		WillRetryUntil: in.WillRetryUntil,
	}
	if out.Final == "" {
		return out, errors.New("no final address")
	}
	if out.Action == "" {
		out.Action = [...]string{Failed: "failed", Delayed: "delayed", Delivered: "delivered", Relayed: "relayed"}[c.r.Kind]
	}
	switch out.Action {
	case "failed", "delayed", "delivered", "relayed", "expanded":
	default:
		return out, fmt.Errorf("invalid action %q", in.Action)
	}
	// A malformed status (a bare "550" from a sloppy reply parser, say)
	// must not cost the sender the report: fall back to the action's.
	if !validStatus(out.Status) {
		switch out.Action {
		case "failed":
			out.Status = "5.0.0"
		case "delayed":
			out.Status = "4.0.0"
		default:
			out.Status = "2.0.0"
		}
	}
	if out.DiagnosticType == "" {
		out.DiagnosticType = "smtp"
	}
	if !validAtom(out.DiagnosticType) {
		return out, fmt.Errorf("invalid diagnostic type %q", in.DiagnosticType)
	}
	return out, nil
}

func (c *composer) kindTag() string {
	// The tag keeps two reports about one message written in the same
	// second (a bounce for one recipient and a success report for
	// another) from sharing a Message-Id, which MUAs would deduplicate.
	// A copy to the postmaster differs from the sender's report (other
	// To:, headers only), so it needs an id of its own too.
	tag := [...]string{Failed: "failed", Delayed: "delayed", Delivered: "delivered", Relayed: "relayed"}[c.r.Kind]
	if !strings.EqualFold(c.r.To, c.r.Sender) {
		tag += ".copy"
	}
	return tag
}

// notification returns the human-readable part's body.
func (c *composer) notification() []byte {
	var b buf
	b.line("This is the mail system at host " + c.host + ".")
	b.line("")
	switch c.r.Kind {
	case Failed:
		b.line("I'm sorry to have to inform you that your message could not")
		b.line("be delivered to one or more recipients. It's attached below.")
		c.assistance(&b)
	case Delayed:
		b.line("####################################################################")
		b.line("# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #")
		b.line("####################################################################")
		b.line("")
		b.line(c.delayedFor())
		b.line(c.retryUntil())
		c.assistance(&b)
	case Delivered, Relayed:
		b.line("Your message was successfully delivered to the destination(s)")
		b.line("listed below. If the message was delivered to mailbox you will")
		b.line("receive no further notifications. Otherwise you may still receive")
		b.line("notifications of mail delivery errors from other systems.")
	}
	b.line("")
	b.line("                   The mail system")
	for _, rc := range c.rcpts {
		why := rc.Diagnostic
		if why == "" {
			why = actionText[rc.Action]
		}
		b.line("")
		b.lines(wrap("<"+rc.Final+">: "+why, wrapWidth, wrapIndent))
	}
	if c.truncated {
		b.line("")
		b.lines(wrap(fmt.Sprintf("The message is larger than the %d-byte limit for returned mail, so only its headers are attached below.", c.limit), 72, 0))
	}
	return b.Bytes()
}

// actionText stands in for a missing diagnostic in the human part.
var actionText = map[string]string{
	"failed":    "delivery failed",
	"delayed":   "delivery temporarily failed",
	"delivered": "delivered",
	"relayed":   "relayed to a system that does not send delivery status notifications",
	"expanded":  "delivered to a list or alias and expanded to its members",
}

func (c *composer) assistance(b *buf) {
	b.line("")
	b.line("For further assistance, please send mail to <" + c.postmaster + ">")
	b.line("")
	b.line("If you do so, please include this problem report. You can")
	b.line("delete your own text from the attached returned message.")
}

// delayedFor says how long the message has waited; Postfix states its
// delay_warning_time instead, which larkpost does not pass down.
func (c *composer) delayedFor() string {
	if c.r.ArrivalDate.IsZero() || !c.r.Now.After(c.r.ArrivalDate) {
		return "Your message could not be delivered yet."
	}
	d := c.r.Now.Sub(c.r.ArrivalDate)
	if d >= time.Hour {
		return fmt.Sprintf("Your message could not be delivered for more than %d hour(s).", int(d/time.Hour))
	}
	return fmt.Sprintf("Your message could not be delivered for more than %d minute(s).", int(d/time.Minute))
}

func (c *composer) retryUntil() string {
	var until time.Time
	for _, rc := range c.rcpts {
		if rc.Action == "delayed" && rc.WillRetryUntil.After(until) {
			until = rc.WillRetryUntil
		}
	}
	if until.IsZero() {
		return "It will be retried for a while longer."
	}
	return "It will be retried until " + fmtDate(until) + "."
}

// deliveryStatus returns the message/delivery-status part's body.
func (c *composer) deliveryStatus() []byte {
	var b buf
	// Field order is Postfix's, which puts Original-Envelope-Id right
	// after Reporting-MTA.
	b.header("Reporting-MTA", "dns; "+c.host, maxLine)
	if c.envid != "" {
		b.header("Original-Envelope-Id", c.field(c.envid), maxLine)
	}
	b.header("X-Larkpost-Queue-ID", c.queueID, maxLine)
	if c.sender != "" {
		b.header("X-Larkpost-Sender", addrType(c.sender), maxLine)
	}
	if !c.r.ArrivalDate.IsZero() {
		b.header("Arrival-Date", fmtDate(c.r.ArrivalDate), maxLine)
	}
	for _, rc := range c.rcpts {
		b.line("")
		b.header("Final-Recipient", addrType(rc.Final), maxLine)
		if rc.Original != "" {
			b.header("Original-Recipient", addrType(rc.Original), maxLine)
		}
		b.header("Action", rc.Action, maxLine)
		b.header("Status", rc.Status, maxLine)
		if rc.RemoteMTA != "" {
			b.header("Remote-MTA", "dns; "+c.field(rc.RemoteMTA), wrapWidth)
		}
		if rc.Diagnostic != "" {
			b.header("Diagnostic-Code", rc.DiagnosticType+"; "+c.field(rc.Diagnostic), wrapWidth)
		}
		if !rc.LastAttempt.IsZero() {
			b.header("Last-Attempt-Date", fmtDate(rc.LastAttempt), maxLine)
		}
		// RFC 3464 2.3.9: only a "delayed" action has a retry time.
		if rc.Action == "delayed" && !rc.WillRetryUntil.IsZero() {
			b.header("Will-Retry-Until", fmtDate(rc.WillRetryUntil), maxLine)
		}
	}
	return b.Bytes()
}

// field makes free text fit the delivery-status part: message/delivery-status
// is 7bit by definition, so only its global form may carry UTF-8.
func (c *composer) field(s string) string {
	if c.global {
		return s
	}
	return asciiOnly(s)
}

// addrType writes an address with its RFC 3464 address type: "utf-8"
// (RFC 6533) only when it needs it, as Postfix does. An address that
// already carries a type, as an ORCPT parameter does, keeps it.
func addrType(addr string) string {
	if typ, a, ok := typedAddress(addr); ok {
		return typ + "; " + a
	}
	if isASCII([]byte(addr)) {
		return "rfc822; " + addr
	}
	return "utf-8; " + addr
}

// typedAddress splits "rfc822;bob@example.net" into its type and address.
// An unquoted local part cannot hold ";", so an atom followed by ";" is
// always a type.
func typedAddress(s string) (typ, addr string, ok bool) {
	i := strings.IndexByte(s, ';')
	if i <= 0 || !validAtom(s[:i]) {
		return "", "", false
	}
	return s[:i], strings.TrimSpace(s[i+1:]), true
}

func (c *composer) originalDescription() string {
	d := "Undelivered Message"
	if c.r.Kind == Delivered || c.r.Kind == Relayed {
		d = "Delivered Message"
	}
	if c.headerOnly {
		d += " Headers"
	}
	return d
}

func (c *composer) originalType() string {
	switch {
	case c.global && c.headerOnly:
		return "message/global-headers"
	case c.global:
		return "message/global"
	case c.headerOnly:
		return "text/rfc822-headers"
	}
	return "message/rfc822"
}

// original returns the third part's body: the message or its header, with
// CRLF line endings and no line over 998 octets.
func (c *composer) original() []byte {
	var b buf
	inHeader := true
	eachLine(c.r.Original, func(line []byte) bool {
		if inHeader && (len(line) == 0 || !headerLine(line, b.Len() == 0)) {
			inHeader = false
			if c.headerOnly {
				return false
			}
		}
		for len(line) > maxLine {
			cut := runeCut(line, maxLine)
			b.line(string(line[:cut]))
			line = line[cut:]
			if inHeader {
				// A header line may only be broken where it can be
				// folded, so the rest must start with white space.
				line = append([]byte{' '}, line...)
			}
		}
		b.line(string(line))
		return true
	})
	if len(c.r.Original) == 0 {
		// Postfix's placeholder when the queue file is gone.
		what := "Undelivered"
		if c.r.Kind == Delivered || c.r.Kind == Relayed {
			what = "Delivered"
		}
		b.line("\t--- " + what + " message unavailable ---")
	}
	return b.Bytes()
}

// boundary returns the caller's boundary or derives Postfix's, making sure
// no part contains a line that would end the part early.
func (c *composer) boundary(parts ...[]byte) (string, error) {
	if c.r.Boundary != "" {
		if conflicts(c.r.Boundary, parts) {
			return "", errors.New("dsn: boundary occurs in the message")
		}
		return c.r.Boundary, nil
	}
	base := c.queueID + "." + strconv.FormatInt(c.r.Now.Unix(), 10) + "/" + c.host
	b := base[:min(len(base), 70)]
	for i := 1; conflicts(b, parts); i++ {
		suffix := "." + strconv.Itoa(i)
		b = base[:min(len(base), 70-len(suffix))] + suffix
	}
	return b, nil
}

func conflicts(boundary string, parts [][]byte) bool {
	delim := []byte("--" + boundary)
	for _, p := range parts {
		if bytes.HasPrefix(p, delim) || bytes.Contains(p, append([]byte("\n"), delim...)) {
			return true
		}
	}
	return false
}

// originalMessageID returns the original's Message-Id when it is a single
// well-formed msg-id, for threading; anything else is not worth copying
// into our header.
func originalMessageID(msg []byte) string {
	var id string
	var cur []byte
	first := true
	check := func() {
		name, value, ok := bytes.Cut(cur, []byte(":"))
		if ok && id == "" && strings.EqualFold(string(bytes.TrimSpace(name)), "message-id") {
			v := strings.TrimSpace(string(value))
			if len(v) > 2 && v[0] == '<' && v[len(v)-1] == '>' && !strings.ContainsAny(v[1:len(v)-1], "<> \t") && isPrintableASCII(v) {
				id = v
			}
		}
	}
	eachLine(msg, func(line []byte) bool {
		if len(line) == 0 || !headerLine(line, first) {
			return false
		}
		if line[0] == ' ' || line[0] == '\t' {
			cur = append(cur, line...)
		} else {
			check()
			cur = append(cur[:0], line...)
		}
		first = false
		return true
	})
	check()
	return id
}

// eachLine calls fn with each line of b without its line ending; CRLF,
// LF and a lone CR all end a line, the last so that no bare CR reaches
// the wire. It stops when fn returns false.
func eachLine(b []byte, fn func([]byte) bool) {
	for len(b) > 0 {
		i := bytes.IndexAny(b, "\r\n")
		if i < 0 {
			fn(b)
			return
		}
		line := b[:i]
		if b[i] == '\r' && i+1 < len(b) && b[i+1] == '\n' {
			i++
		}
		b = b[i+1:]
		if !fn(line) {
			return
		}
	}
}

// headerLine reports whether line can belong to a message header: a field
// or, after the first line, a continuation.
func headerLine(line []byte, first bool) bool {
	if line[0] == ' ' || line[0] == '\t' {
		return !first
	}
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return false
	}
	for _, ch := range line[:i] {
		if ch <= ' ' || ch > '~' {
			return false
		}
	}
	return true
}

// buf builds CRLF-terminated lines.
type buf struct{ bytes.Buffer }

func (b *buf) line(s string) {
	b.WriteString(s)
	b.WriteString("\r\n")
}

func (b *buf) lines(ls []string) {
	for _, l := range ls {
		b.line(l)
	}
}

// header writes a field folded at spaces to width columns where it can be,
// and never longer than maxLine.
func (b *buf) header(name, value string, width int) {
	b.lines(wrap(name+": "+value, width, wrapIndent))
}

// wrap breaks s at spaces into lines of at most width octets, continuation
// lines indented by indent spaces, as Postfix's line_wrap does. A word too
// long for a line of maxLine octets is cut, at a character boundary.
func wrap(s string, width, indent int) []string {
	pad := strings.Repeat(" ", indent)
	var lines []string
	line, empty := "", true
	for _, w := range strings.Split(s, " ") {
		if !empty && len(line)+1+len(w) > width {
			lines = append(lines, strings.TrimRight(line, " "))
			line, empty = pad, true
		}
		if !empty {
			line += " "
		}
		line += w
		empty = false
		for len(line) > maxLine {
			cut := runeCut([]byte(line), maxLine)
			lines = append(lines, line[:cut])
			line = pad + line[cut:]
		}
	}
	return append(lines, strings.TrimRight(line, " "))
}

// runeCut returns the largest index up to n that does not split a UTF-8
// sequence (or n itself for text that is not UTF-8).
func runeCut(b []byte, n int) int {
	for i := n; i > n-utf8.UTFMax && i > 0; i-- {
		if utf8.RuneStart(b[i]) {
			return i
		}
	}
	return n
}

// clean makes s safe for one header or field line: CR and LF (header
// injection from a remote reply) and other control characters become
// spaces, and bytes that are not UTF-8 become "?".
func clean(s string) string {
	s = strings.ToValidUTF8(s, "?")
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, s)
	return strings.TrimSpace(s)
}

// address cleans an address and drops angle brackets around it.
func address(s string) string {
	s = clean(s)
	if len(s) >= 2 && s[0] == '<' && s[len(s)-1] == '>' {
		s = strings.TrimSpace(s[1 : len(s)-1])
	}
	return s
}

// asciiOnly masks non-ASCII characters as Postfix masks them in its
// bounce logs.
func asciiOnly(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 0x80 {
			return '?'
		}
		return r
	}, s)
}

func isASCII(b []byte) bool {
	for _, ch := range b {
		if ch >= 0x80 {
			return false
		}
	}
	return true
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// validToken accepts what a hostname or queue id may hold and what may
// appear unquoted in a Message-Id and in a MIME boundary.
func validToken(s string) bool {
	if len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !isAlnum(ch) && ch != '.' && ch != '-' && ch != '_' {
			return false
		}
	}
	return s != ""
}

func validAtom(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) && s[i] != '-' {
			return false
		}
	}
	return s != ""
}

// validBoundary checks RFC 2046's bchars and length.
func validBoundary(s string) bool {
	if len(s) > 70 || s[len(s)-1] == ' ' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) && !strings.ContainsRune("'()+_,-./:=? ", rune(s[i])) {
			return false
		}
	}
	return true
}

// validStatus checks RFC 3463's class.subject.detail.
func validStatus(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || (parts[0] != "2" && parts[0] != "4" && parts[0] != "5") {
		return false
	}
	for _, p := range parts[1:] {
		if len(p) < 1 || len(p) > 3 {
			return false
		}
		for i := 0; i < len(p); i++ {
			if p[i] < '0' || p[i] > '9' {
				return false
			}
		}
	}
	return true
}

func isAlnum(ch byte) bool {
	return ch >= '0' && ch <= '9' || ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z'
}

func fmtDate(t time.Time) string {
	return t.Format("Mon, 2 Jan 2006 15:04:05 -0700")
}
