// Package addr parses e-mail addresses and provides the Starlark module
// "addr" and the address values scripts see as sender and rcpt.
//
// # Addresses
//
// An address is an RFC 5321 mailbox, local@domain. The null sender, written
// <> in SMTP, is an address with an empty local part and domain; it is
// shown as the empty string.
//
// The local part is kept as the SMTP server delivered it, with quoting
// removed: "a b"@example.com has the local part a b. Any printable
// character except < and > is allowed in it, and so is UTF-8 (SMTPUTF8).
// It is not limited to 64 octets, because Postfix accepts longer ones, but
// the whole address is limited to 320 octets.
//
// The domain is lower-cased. It is either a host name made of labels
// separated by dots, each 1 to 63 octets of letters, digits and hyphens
// (UTF-8 letters allowed) and not starting or ending with a hyphen, at most
// 253 octets in all and without a trailing dot; or an address literal in
// brackets, [192.0.2.1] or [IPv6:2001:db8::1], which is stored in canonical
// form (the tag spelt IPv6, the IPv6 address compressed and in lower case).
//
// Control characters and invalid UTF-8 are rejected anywhere. A bare local
// part such as postmaster, without a domain, is not an address.
//
// When an address is turned back into a string, its local part is quoted
// if it is not a dot-atom (RFC 5322 atext, UTF-8 included, separated by
// single dots): the local part a b gives "a b"@example.com, and a"b gives
// "a\"b"@example.com.
//
// Addresses compare equal when they differ only in case, in the local part
// as well as in the domain. RFC 5321 says the local part is case-sensitive,
// but Postfix and practically every mail system treat it otherwise.
//
// # Extensions
//
// The recipient delimiters, like Postfix's recipient_delimiter, are a set
// of characters such as "+" or "+-". The local part is split at the first
// of them into the user and the extension: with delimiters "+-",
// joe+lists-go has the user joe and the extension lists-go. A local part
// that starts with a delimiter, like +joe, is not split, and neither is
// anything when there are no delimiters. A trailing delimiter, as in joe+,
// gives an empty extension.
//
// # Address values
//
// Scripts see addresses as values of type "address": sender, rcpt, and the
// results of addr.parse. They are read-only and have these attributes:
//
//	local      the local part, unquoted (string)
//	domain     the domain in lower case (string)
//	user       the local part without the delimiter and extension (string)
//	extension  the extension without the delimiter (string), or None if the
//	           local part has no delimiter
//	is_null    True for the null sender <> (bool)
//	address    the whole address, quoted as needed; the same as str(a)
//
// An address is false in a boolean context only if it is the null sender,
// so `if sender:` tests for a bounce. Addresses can be compared with == and
// != (case-insensitively, see above) and used as dict keys; the ordering
// operators < <= > >= are errors.
//
// # The addr module
//
// The functions taking an address string s accept surrounding whitespace
// and surrounding angle brackets, and treat "" and "<>" as the null
// address. Invalid input makes them fail with an error such as
//
//	addr.parse: bad address syntax: missing @
//
// except for addr.valid, which returns False instead.
//
// addr.parse(s) returns s as an address value.
//
// addr.valid(s) reports whether addr.parse(s) would succeed; note that this
// includes "" and "<>".
//
// addr.split(local) splits a local part at the recipient delimiters and
// returns the tuple (user, extension), with extension None when there is
// no delimiter.
//
// addr.domain(s) returns the domain of s in lower case, or "" for the null
// address.
//
// addr.normalize(s) returns s in canonical form: the domain in lower case,
// the local part unchanged but quoted if needed, and "" for the null
// address.
package addr
