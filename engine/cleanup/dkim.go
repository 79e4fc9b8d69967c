package cleanup

import (
	"bytes"
	"errors"
	"io"
	"net/mail"
	"strings"

	"github.com/larkpost/larkpost/engine/dkimsign"
	"github.com/larkpost/larkpost/rules"
)

// sign returns the DKIM-Signature fields for the message as it will be
// queued (prefix, then the client's data after skip), or "". What is
// signed by default is what larkpost sends for its own users: mail from
// networks, logged-in clients, sendmail and the server itself (bounces,
// vacation replies); a hook's sign() decides otherwise. A failure to sign
// is logged and the message goes unsigned: refusing it would lose mail
// for want of a header.
func (c *Cleanup) sign(p *rules.Policy, sub *Submission, id string, prefix []byte, skip int64) string {
	signer := p.DKIMSigner()
	if signer == nil || sub.Content == nil {
		return "" // forwards reuse a queued message (Copy): not ours to sign
	}
	ct := sub.Content
	header := append([]byte(nil), prefix...)
	if skip == 0 {
		header = append(header, ct.Header...)
	}
	domain, forced, ok := signingDomain(sub, header)
	if !ok {
		return ""
	}
	body := bodyOf(ct)
	field, err := signer.Sign(domain, header, body)
	switch {
	case err == nil:
		c.log.Info(id + ": dkim: signed (" + signedWith(field) + ")")
		return field
	case errors.Is(err, dkimsign.ErrNoKey):
		if forced {
			c.log.Warn(id + ": warning: dkim: sign() asked for a signature, but no key covers " + domain)
		}
		return ""
	}
	c.log.Warn(id + ": warning: dkim: not signed: " + err.Error())
	return ""
}

// signingDomain is the domain to sign for: the one a hook named, else the
// From address's domain for the senders signed by default.
func signingDomain(sub *Submission, header []byte) (domain string, forced, ok bool) {
	byDefault := sub.Origin != SMTP || sub.Client.InNetworks || sub.Client.User != ""
	for _, e := range sub.Effects {
		if e.Kind == rules.Sign {
			forced, domain = e.Text != rules.NoSign, e.Text
			byDefault = forced
		}
	}
	if !byDefault {
		return "", false, false
	}
	if domain != "" {
		return domain, forced, true
	}
	from := fieldValue(header, "from")
	list, err := mail.ParseAddressList(from)
	if err != nil || len(list) == 0 {
		return "", forced, false
	}
	_, d, found := strings.Cut(list[0].Address, "@")
	if !found || d == "" {
		return "", forced, false
	}
	return strings.ToLower(d), forced, true
}

// bodyOf is the client's body: what follows the header and its blank
// line, read where it is (memory or the body file).
func bodyOf(ct *Content) io.Reader {
	var r io.ReaderAt
	if ct.File != nil {
		r = ct.File
	} else {
		r = bytes.NewReader(ct.Data)
	}
	start := int64(len(ct.Header))
	sep := make([]byte, 2)
	n, _ := r.ReadAt(sep, start)
	switch {
	case n >= 2 && sep[0] == '\r' && sep[1] == '\n':
		start += 2
	case n >= 1 && sep[0] == '\n':
		start++
	}
	return io.NewSectionReader(r, start, max(ct.Size-start, 0))
}

// signedWith is "d=..., s=..." of the fields, for the log line.
func signedWith(fields string) string {
	var out []string
	for _, f := range strings.Split(strings.TrimSpace(fields), "DKIM-Signature:") {
		if f == "" {
			continue
		}
		tag := func(name string) string {
			for t := range strings.SplitSeq(f, ";") {
				k, v, _ := strings.Cut(strings.TrimSpace(t), "=")
				if k == name {
					return strings.Join(strings.Fields(v), "")
				}
			}
			return ""
		}
		out = append(out, "d="+tag("d")+" s="+tag("s")+" a="+tag("a"))
	}
	return strings.Join(out, ", ")
}
