package postfix

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/larkpost/larkpost/stdlib/addr"
	"github.com/larkpost/larkpost/stdlib/maps"
)

// Refusal is the reply the default policy refuses a recipient with.
type Refusal struct {
	Code   int
	Status string
	Text   string // "<rcpt>: why"
	Err    error  // set for a table that failed: the reply is then 451 4.3.0
}

// CheckRecipient is the default recipient policy, Postfix's
// smtpd_recipient_restrictions and *_recipient_maps checks: local,
// virtual alias, virtual mailbox and relay domains are accepted, anything
// else only when mayRelay (a client in mynetworks or authenticated);
// relocated users and users unknown in their domain's table are refused,
// unless a canonical or virtual alias table has the address.
// nil accepts.
//
// A table that fails gives Postfix's reply for it, 451 4.3.0 "Temporary
// lookup failure", with the cause in Err: the client tries again later,
// where "User unknown" would make it bounce the message.
func (t *Tables) CheckRecipient(c *Config, rcpt addr.Address, mayRelay bool) *Refusal {
	refuse := func(code int, status, text string) *Refusal {
		return &Refusal{Code: code, Status: status, Text: "<" + rcpt.String() + ">: " + text}
	}
	failed := func(setting string, err error) *Refusal {
		r := refuse(451, "4.3.0", "Temporary lookup failure")
		r.Err = fmt.Errorf("%s: %w", setting, err)
		return r
	}
	local := c.IsLocalDomain(rcpt.Domain)
	virtual := c.isVirtualAliasDomain(rcpt.Domain)
	vmailbox := c.IsVirtualMailboxDomain(rcpt.Domain)
	if !local && !virtual && !vmailbox && !c.IsRelayDomain(rcpt.Domain) && !mayRelay {
		return refuse(554, "5.7.1", "Relay access denied")
	}
	to, moved, err := t.relocatedTo(c, rcpt.String())
	if err != nil {
		return failed("relocated_maps", err)
	}
	if moved {
		return refuse(550, "5.1.6", "Recipient address rejected: User has moved; please try "+to)
	}
	// An address recipient_canonical_maps, canonical_maps or
	// virtual_alias_maps has is known, whatever its domain's table says:
	// cleanup rewrites it before delivery (Postfix's smtpd does the same).
	aliased := false
	for _, m := range []struct {
		setting string
		tables  []maps.Table
	}{{"recipient_canonical_maps", t.recipCanonical}, {"canonical_maps", t.canonical}, {"virtual_alias_maps", t.virtualAlias}} {
		_, _, ok, err := lookupAddress(c, m.tables, rcpt.String())
		if err != nil {
			return failed(m.setting, err)
		}
		if ok {
			aliased = true
			break
		}
	}
	switch {
	case virtual && !aliased:
		return refuse(550, "5.1.1", "Recipient address rejected: User unknown in virtual alias table")
	case local && !aliased && !t.isLocalRecipient(c, rcpt):
		return refuse(550, "5.1.1", "Recipient address rejected: User unknown in local recipient table")
	case vmailbox && !aliased:
		_, ok, err := t.VirtualMailbox(c, rcpt.String())
		if err != nil {
			r := refuse(451, "4.3.0", "Temporary lookup failure")
			r.Err = err
			return r
		}
		if !ok {
			return refuse(550, "5.1.1", "Recipient address rejected: User unknown in virtual mailbox table")
		}
	}
	return nil
}

// isLocalRecipient is Postfix's local_recipient_maps check: a known user
// (local_recipients, or any safe name when that list is empty) or an alias.
func (t *Tables) isLocalRecipient(c *Config, rcpt addr.Address) bool {
	box, valid := c.Mailbox(rcpt)
	if valid && c.IsLocalUser(box) {
		return true
	}
	user, _, _ := addr.Split(rcpt.Local, c.RecipientDelimiter)
	for _, a := range t.aliases {
		if _, ok := a.Lookup(user); ok {
			return true
		}
	}
	return false
}

// IsLocalUser reports whether user is in local_recipients; without that
// list every local part is accepted (a development catch-all).
func (c *Config) IsLocalUser(user string) bool {
	l := c.LocalRecipients
	return len(l) == 0 || containsFold(l, user)
}

// ExpandMailboxPath expands mailbox_path for a local user.
func (c *Config) ExpandMailboxPath(user, domain string) string {
	path := c.MailboxPath
	r := strings.NewReplacer("{data_dir}", c.dataDir(), "{user}", user, "{domain}", domain)
	return r.Replace(path)
}

// Mailbox returns the mailbox (directory) name for a local recipient: the
// local part, lower-cased, without its +extension. valid is false when the
// name cannot safely be a directory name.
func (c *Config) Mailbox(rcpt addr.Address) (name string, valid bool) {
	user, _, _ := addr.Split(rcpt.Local, c.RecipientDelimiter)
	user = strings.ToLower(user)
	return user, validMailbox(user)
}

// validMailbox reports whether name may be a mailbox directory name:
// letters (any script, for SMTPUTF8 users), digits and "._=+-", at most 64
// bytes, not starting with a punctuation character, no "..": nothing that
// could climb out of the mail directory or hide as a dotfile.
func validMailbox(name string) bool {
	if name == "" || len(name) > 64 || strings.IndexByte("._=+-", name[0]) >= 0 || strings.Contains(name, "..") {
		return false
	}
	for _, r := range name {
		if !(unicode.IsLetter(r) && !unicode.IsUpper(r) || unicode.IsDigit(r) || strings.ContainsRune("._=+-", r)) {
			return false
		}
	}
	return true
}
