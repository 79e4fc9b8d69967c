package rules

import (
	"strings"

	"github.com/larkpost/larkpost/stdlib/addr"
)

// senderLogin is Postfix's reject_sender_login_mismatch: a logged in
// client may only use a sender smtpd_sender_login_maps gives its login;
// one that is not logged in may not use a sender that belongs to a
// login. The null sender belongs to no one. A table that fails defers
// the sender with Postfix's 451 4.3.0: taken for "no owner", it would let
// anyone send as the address, or refuse its owner with a 5xx.
func (p *Policy) senderLogin(c *Conn, sender addr.Address) (Decision, bool) {
	if !p.Settings.RejectSenderLoginMismatch || sender.IsNull() {
		return Decision{}, false
	}
	owners, _, found, err := p.tables.LookupSenderLogins(p.postfixConfig(), sender.String())
	if err != nil {
		p.log.Warn("warning: " + err.Error())
		return Decision{Kind: Defer, Code: 451, Status: "4.3.0", Hook: "on_mail", Source: loginSource,
			Text: "<" + sender.String() + ">: Temporary lookup failure"}, true
	}
	refuse := func(why string) (Decision, bool) {
		return Decision{Kind: Reject, Code: 553, Status: "5.7.1", Hook: "on_mail", Source: loginSource,
			Text: "<" + sender.String() + ">: Sender address rejected: " + why}, true
	}
	if c.User == "" {
		if found {
			return refuse("not logged in")
		}
		return Decision{}, false
	}
	for _, o := range owners {
		if strings.EqualFold(o, c.User) {
			return Decision{}, false
		}
	}
	return refuse("not owned by user " + c.User)
}
