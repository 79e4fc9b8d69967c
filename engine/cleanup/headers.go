package cleanup

import (
	"bytes"
	"fmt"
	"net/mail"
	"strconv"
	"strings"
	"time"

	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
	"github.com/larkpost/larkpost/stdlib/authres"
)

// headerRoles are the fields canonical mapping covers, as Postfix's
// cleanup does, and whether they carry senders.
var headerRoles = map[string]bool{
	"from": true, "sender": true, "reply-to": true, "return-path": true, "resent-from": true, "resent-sender": true,
	"to": false, "cc": false, "resent-to": false, "resent-cc": false,
}

// rewriteHeaders applies fn to the addresses in the address fields of a
// header block (complete CRLF lines) and returns the new block, or nil
// when nothing changed. A field whose addresses all stay the same keeps
// its exact bytes, so DKIM signatures over the other fields survive.
func rewriteHeaders(head []byte, fn func(addr, field string, sender bool) string) []byte {
	var out bytes.Buffer
	changed := false
	for len(head) > 0 {
		// One field: its first line and the continuation lines after it.
		n := 0
		for {
			i := bytes.Index(head[n:], []byte("\r\n"))
			if i < 0 {
				n = len(head)
				break
			}
			n += i + 2
			if n >= len(head) || (head[n] != ' ' && head[n] != '\t') {
				break
			}
		}
		field := head[:n]
		head = head[n:]
		name, value, ok := bytes.Cut(field, []byte(":"))
		sender, known := headerRoles[strings.ToLower(string(bytes.TrimSpace(name)))]
		if !ok || !known {
			out.Write(field)
			continue
		}
		list, err := mail.ParseAddressList(strings.TrimSpace(strings.NewReplacer("\r\n", "").Replace(string(value))))
		if err != nil || len(list) == 0 {
			out.Write(field)
			continue
		}
		differs := false
		for _, a := range list {
			if na := fn(a.Address, string(name), sender); na != a.Address {
				a.Address, differs = na, true
			}
		}
		if !differs {
			out.Write(field)
			continue
		}
		changed = true
		parts := make([]string, len(list))
		for i, a := range list {
			parts[i] = a.String()
		}
		out.WriteString(string(name) + ": " + strings.Join(parts, ", ") + "\r\n")
	}
	if !changed {
		return nil
	}
	return out.Bytes()
}

// HeaderLen is the length of the header block at the start of data: the
// field lines and their continuations, up to the blank line or the first
// line that is no field (the SMTP receiver's rule, for messages that
// arrive whole).
func HeaderLen(data []byte) int {
	n := 0
	for n < len(data) {
		i := bytes.IndexByte(data[n:], '\n')
		if i < 0 {
			return n
		}
		line := data[n : n+i+1]
		switch {
		case len(line) <= 2 && (len(line) == 1 || line[0] == '\r'):
			return n
		case (line[0] == ' ' || line[0] == '\t') && n > 0, IsField(line):
		default:
			return n
		}
		n += len(line)
	}
	return n
}

// IsField reports a header field line: a name of printable ASCII other
// than ':', optional white space, then ':' (RFC 5322, with the obsolete
// space before the colon).
func IsField(line []byte) bool {
	i := 0
	for i < len(line) && line[i] > 32 && line[i] < 127 && line[i] != ':' {
		i++
	}
	if i == 0 {
		return false
	}
	for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
		i++
	}
	return i < len(line) && line[i] == ':'
}

// fieldValue is the unfolded, trimmed value of the first field called
// name (lower case) in a header block, "" when there is none.
func fieldValue(head []byte, name string) string {
	for len(head) > 0 {
		n := 0
		for {
			i := bytes.IndexByte(head[n:], '\n')
			if i < 0 {
				n = len(head)
				break
			}
			n += i + 1
			if n >= len(head) || (head[n] != ' ' && head[n] != '\t') {
				break
			}
		}
		field := head[:n]
		head = head[n:]
		k, v, ok := bytes.Cut(field, []byte(":"))
		if ok && strings.EqualFold(string(bytes.TrimSpace(k)), name) {
			v = bytes.ReplaceAll(bytes.ReplaceAll(v, []byte("\r"), nil), []byte("\n"), nil)
			return strings.TrimSpace(string(v))
		}
	}
	return ""
}

// hasField reports whether the header block has a field called name.
func hasField(head []byte, name string) bool {
	for len(head) > 0 {
		line := head
		if i := bytes.IndexByte(head, '\n'); i >= 0 {
			line, head = head[:i+1], head[i+1:]
		} else {
			head = nil
		}
		if k, _, ok := bytes.Cut(line, []byte(":")); ok && line[0] != ' ' && line[0] != '\t' &&
			strings.EqualFold(string(bytes.TrimSpace(k)), name) {
			return true
		}
	}
	return false
}

// addsMissing reports whether cleanup adds the Message-ID and Date a
// message lacks: always for local submissions and for clients in
// networks (Postfix's local_header_rewrite_clients), for everyone with
// always_add_missing_headers.
func addsMissing(p *rules.Policy, sub *Submission) bool {
	switch sub.Origin {
	case Sendmail:
		return true
	case SMTP:
		return p.Settings.AlwaysAddMissingHeaders || sub.Client.InNetworks
	}
	return false
}

// missingHeaders are the Message-ID and Date fields the header lacks, in
// Postfix's form.
func missingHeaders(host string, rec *queue.Record, head []byte) []byte {
	var b []byte
	if !hasField(head, "message-id") {
		b = append(b, "Message-ID: <"+rec.Arrival.UTC().Format("20060102150405")+"."+rec.ID+"@"+host+">\r\n"...)
	}
	if !hasField(head, "date") {
		b = append(b, "Date: "+rec.Arrival.Format(dateLayout)+"\r\n"...)
	}
	return b
}

// dateLayout is the RFC 5322 date Postfix writes, with the zone's name
// as a comment.
const dateLayout = "Mon, 02 Jan 2006 15:04:05 -0700 (MST)"

// smtpReceived is the SMTP server's trace header in Postfix's shape:
//
//	Received: from helo (name [ip])
//		(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits))
//		(No client certificate requested)
//		by host (larkpost) with ESMTPS id ID
//		for <rcpt>; date
//
// The two TLS lines are smtpd_tls_received_header's.
func smtpReceived(host string, sub *Submission, rec *queue.Record, tlsDetail bool) string {
	c := sub.Client
	proto := orDefault(sub.Proto, "SMTP")
	if sub.UTF8 {
		proto = "UTF8" + proto
	}
	if c.TLS {
		proto += "S"
	}
	if c.User != "" {
		proto += "A"
	}
	var b strings.Builder
	ip := c.IP.String()
	if c.IP.Is6() && !c.IP.Is4In6() {
		ip = "IPv6:" + ip // RFC 5321's address literal, as Postfix writes it
	}
	b.WriteString("Received: from " + printable(c.Helo) + " (" + c.RDNS + " [" + ip + "])\r\n")
	if t := c.TLSInfo; c.TLS && t != nil && tlsDetail {
		fmt.Fprintf(&b, "\t(using %s with cipher %s (%d/%d bits))\r\n", t.Version, t.Cipher, t.Bits, t.Bits)
		switch {
		case t.PeerSubject == "" && t.CertAsked:
			b.WriteString("\t(Client did not present a certificate)\r\n")
		case t.PeerSubject == "":
			b.WriteString("\t(No client certificate requested)\r\n")
		case t.PeerVerified:
			fmt.Fprintf(&b, "\t(Client CN %q, Issuer %q (verified OK))\r\n", printable(t.PeerSubject), printable(t.PeerIssuer))
		default:
			fmt.Fprintf(&b, "\t(Client CN %q, Issuer %q (not verified))\r\n", printable(t.PeerSubject), printable(t.PeerIssuer))
		}
	}
	b.WriteString("\tby " + host + " (larkpost) with " + proto + " id " + rec.ID)
	if len(sub.Rcpts) == 1 {
		b.WriteString("\r\n\tfor <" + printable(sub.Rcpts[0].Addr) + ">")
	}
	b.WriteString("; " + rec.Arrival.Format(dateLayout) + "\r\n")
	return b.String()
}

// pickupReceived is pickup's trace header, in the shape of Postfix's.
func pickupReceived(host string, uid int, id string, t time.Time) string {
	return "Received: by " + host + " (larkpost, from userid " + strconv.Itoa(uid) + ")\r\n\tid " + id + "; " +
		t.Format(dateLayout) + "\r\n"
}

// printable keeps client-supplied text from breaking the header.
func printable(s string) string {
	if s == "" {
		return "unknown"
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || r == '(' || r == ')' {
			return '?'
		}
		return r
	}, s)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// stripAuthResults removes the Authentication-Results fields of head
// whose authserv-id is authservID, with their continuation lines, and
// returns the new header and how many it removed.
func stripAuthResults(head []byte, authservID string) ([]byte, int) {
	const name = "authentication-results"
	if !bytes.Contains(bytes.ToLower(head), []byte(name)) {
		return head, 0
	}
	var out []byte
	removed := 0
	for len(head) > 0 {
		// One field: its first line and the continuation lines after it.
		end := 0
		for {
			nl := bytes.IndexByte(head[end:], '\n')
			if nl < 0 {
				end = len(head)
				break
			}
			end += nl + 1
			if end >= len(head) || (head[end] != ' ' && head[end] != '\t') {
				break
			}
		}
		field := head[:end]
		head = head[end:]
		// Space before the colon is obsolete syntax that readers still
		// accept, so it is no way around the check.
		if colon := bytes.IndexByte(field, ':'); colon > 0 && strings.EqualFold(strings.TrimRight(string(field[:colon]), " \t"), name) &&
			authres.IsOurs(unfold(field[colon+1:]), authservID) {
			removed++
			continue
		}
		out = append(out, field...)
	}
	return out, removed
}

// unfold joins a field value's lines.
func unfold(v []byte) string {
	return strings.NewReplacer("\r\n", "", "\n", "").Replace(string(v))
}
