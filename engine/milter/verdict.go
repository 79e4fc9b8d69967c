package milter

import (
	"fmt"
	"strconv"
	"strings"

	gomilter "github.com/emersion/go-milter"
)

// Verdict actions.
const (
	// Continue: no objection; keep going.
	Continue = "continue"
	// Accept: no objection, and the milter wants nothing more of this
	// message (or, at connect and HELO, of this connection). Also the
	// answer for every stage once a failed milter is skipped under
	// DefaultAction "accept".
	Accept = "accept"
	// Reject: refuse with Code/Status/Text (5xx). At RCPT it refuses
	// only that recipient; at connect and HELO it refuses every later
	// command of the connection, and the Session keeps answering so.
	Reject = "reject"
	// Tempfail: as Reject, with a 4xx reply.
	Tempfail = "tempfail"
	// Discard: accept the message and silently drop it.
	Discard = "discard"
	// Quarantine: accept the message and hold it (only at end of
	// message; Text is the milter's reason).
	Quarantine = "quarantine"
)

// Verdict is a milter's answer to one stage.
type Verdict struct {
	Action string
	// Code, Status and Text are the SMTP reply for Reject and Tempfail:
	// the milter's own (SMFIR_REPLYCODE) or Postfix's standard one.
	// Text may hold several lines separated by "\n", without codes.
	Code   int
	Status string
	Text   string
}

// String renders the verdict as an SMTP reply, or the bare action.
func (v Verdict) String() string {
	if v.Code == 0 {
		if v.Text != "" {
			return v.Action + ": " + v.Text
		}
		return v.Action
	}
	r := strconv.Itoa(v.Code) + " " + v.Status
	if v.Text != "" {
		r += " " + v.Text
	}
	return r
}

// The replies Postfix gives for SMFIR_REJECT and SMFIR_TEMPFAIL, and for
// an unavailable milter under milter_default_action reject or tempfail.
var (
	continueVerdict = Verdict{Action: Continue}
	rejectVerdict   = Verdict{Action: Reject, Code: 550, Status: "5.7.1", Text: "Command rejected"}
	tempfailVerdict = Verdict{Action: Tempfail, Code: 451, Status: "4.7.1", Text: "Service unavailable - try again later"}
)

// verdictOf turns a go-milter action into a Verdict.
func verdictOf(a *gomilter.Action) (Verdict, error) {
	if a.Code == gomilter.ActReplyCode {
		// go-milter split the reply after the code; put it together
		// again for the common parser.
		return replyVerdict(strconv.Itoa(a.SMTPCode) + " " + a.SMTPText)
	}
	return simpleVerdict(byte(a.Code))
}

func simpleVerdict(code byte) (Verdict, error) {
	switch gomilter.ActionCode(code) {
	case gomilter.ActContinue:
		return continueVerdict, nil
	case gomilter.ActAccept:
		return Verdict{Action: Accept}, nil
	case gomilter.ActDiscard:
		return Verdict{Action: Discard}, nil
	case gomilter.ActReject:
		return rejectVerdict, nil
	case gomilter.ActTempFail:
		return tempfailVerdict, nil
	}
	return Verdict{}, fmt.Errorf("%w: unexpected reply %q", errProtocol, code)
}

// replyVerdict parses an SMFIR_REPLYCODE text: one or more lines of
// "ddd[ -][x.y.z ]text" with CRLF in between. Like Postfix, it insists on
// a 4xx or 5xx code with a matching enhanced status class, and undoes
// Sendmail's "%%" quoting. A missing enhanced status becomes x.7.1.
func replyVerdict(s string) (Verdict, error) {
	bad := func() (Verdict, error) {
		return Verdict{}, fmt.Errorf("%w: malformed reply %q", errProtocol, s)
	}
	s = strings.TrimRight(s, "\r\n")
	lines := strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n")
	var v Verdict
	for i, l := range lines {
		if len(l) < 3 || (l[0] != '4' && l[0] != '5') || !isDigit(l[1]) || !isDigit(l[2]) ||
			(len(l) > 3 && l[3] != ' ' && l[3] != '-') {
			return bad()
		}
		code, _ := strconv.Atoi(l[:3])
		if i == 0 {
			v.Code = code
		} else if code != v.Code {
			return bad()
		}
		text := ""
		if len(l) > 4 {
			text = l[4:]
		}
		if st, rest, _ := strings.Cut(text, " "); isStatus(st) {
			if st[0] != l[0] {
				return bad()
			}
			if i == 0 {
				v.Status = st
			}
			text = rest
		}
		lines[i] = text
	}
	v.Text = strings.ReplaceAll(strings.Join(lines, "\n"), "%%", "%")
	if v.Code/100 == 4 {
		v.Action = Tempfail
	} else {
		v.Action = Reject
	}
	if v.Status == "" {
		v.Status = strconv.Itoa(v.Code/100) + ".7.1"
	}
	return v, nil
}

func isDigit(b byte) bool { return b >= '0' && b <= '9' }

// isStatus reports whether s looks like an RFC 3463 status code.
func isStatus(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || (parts[0][0] != '2' && parts[0][0] != '4' && parts[0][0] != '5') {
		return false
	}
	for _, p := range parts[1:] {
		if len(p) == 0 || len(p) > 3 {
			return false
		}
		for i := range len(p) {
			if !isDigit(p[i]) {
				return false
			}
		}
	}
	return true
}
