package engine

import (
	"bytes"
	"net/mail"
	"strings"
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
