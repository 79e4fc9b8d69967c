// Package dkimsign signs outgoing mail with DKIM (RFC 6376), for the
// server to call once per message before relaying it. Verification lives
// elsewhere (stdlib/dkim); this package only makes signatures, using
// github.com/emersion/go-msgauth/dkim for the hashing and formatting.
//
// # Keys
//
// Each key is a (domain, selector, file) triple; New loads them all and
// reports every bad one at once, naming its file. Files are PEM: PKCS#1
// "RSA PRIVATE KEY" (opendkim-genkey's output) or PKCS#8 "PRIVATE KEY"
// holding RSA or Ed25519 (openssl genpkey's, and Keygen's). Encrypted keys
// are not supported: the server would need the passphrase in its config,
// which protects nothing.
//
// RSA keys must have 1024 to 4096 bits (RFC 8301: signers MUST NOT go
// below 1024, verifiers need not go above 4096); under 2048 the key is
// loaded with a warning, since RFC 8301 asks for 2048 and large receivers
// treat 1024-bit signatures as weak. Keygen makes 2048 bits by default.
//
// A key file must be a regular file that other users can neither read nor
// write (mode & 0o006 == 0): a private key the whole host can read is not
// private, and one anyone can write lets them sign as you. opendkim only
// warns about this; we refuse, because the fix (chmod o-rwx, or 0640 with
// a group the server runs as) is one command and the risk is silent.
//
// Key files are looked at again at most once a second, when a message is
// signed, and reloaded if their identity (inode), size, mtime or mode
// changed; Reload forces it (for SIGHUP). If the new version does not
// load, the key in force stays and the error is logged once per version:
// signing with the previous key is what the operator had a second ago,
// while refusing to sign would silently fail DMARC for all outgoing mail.
// A reload may not change the algorithm: the DNS record at the selector
// says which one verifiers use, so a new algorithm needs a new selector.
//
// # Which key
//
// Sign(domain, ...) is given the domain to sign for, normally that of the
// From address, since that is what DMARC aligns with. The key is the
// domain's own, else the nearest parent domain's: a key for example.com
// signs mail from news.example.com with d=example.com, which passes
// DMARC's default relaxed alignment (same organizational domain). Several
// keys for one domain all sign, each adding its own DKIM-Signature; that
// is how to dual-sign with RSA and Ed25519 (RFC 8463 expects signers to
// keep an RSA signature, since not every verifier knows Ed25519), or to
// overlap two selectors during a key rotation.
//
// # What is signed
//
// Canonicalization is relaxed/relaxed: simple survives no whitespace change
// or header refolding, and relays, list managers and security gateways
// make such changes routinely. Relaxed is what OpenDKIM, rspamd and the
// large mailbox providers use for outgoing mail. There is no l= (a body
// length limit lets anyone append content under the signature) and no x=
// unless Options.Expire asks for one.
//
// The signed header fields (DefaultHeaders) follow OpenDKIM's default list
// (RFC 4871's recommendation) and rspamd's: the fields a reader sees or a
// client acts on (From, Reply-To, Subject, Date, To, Cc, Sender), threading
// (Message-ID, In-Reply-To, References), MIME structure (MIME-Version,
// Content-Type, Content-Transfer-Encoding: changing them changes how the
// body is read), Resent-*, the List-* fields (RFC 8058 requires a signature
// over List-Unsubscribe and List-Unsubscribe-Post for one-click
// unsubscribe to be honoured) and Autocrypt (its key must not be
// swappable). Trace and transport fields (Received, Return-Path,
// Authentication-Results, other DKIM-Signatures) are left out: they are
// added or rewritten in transit.
//
// Only fields present in the message are named in h=, each as many times
// as it occurs, except the oversigned ones (DefaultOversign: From), which
// are named once more. A verifier hashes a named field that is missing as
// nothing, so the extra name costs nothing now but breaks the signature if
// anyone adds a second From later, the classic way to show a forged sender
// above a valid signature. An oversigned field the message lacks is named
// once, sealing its absence. From alone is the default because a second
// From is what matters most, while other fields are legitimately added on
// the way (mailing lists add Reply-To and List-*), and oversigning them
// would turn each such addition into a failed signature; add Reply-To,
// Subject, To, Cc to Options.Oversign for a stricter seal.
//
// # Input
//
// Sign gets the raw header block and the body as a stream, which is read
// once and never held whole: go-msgauth hashes it as it goes, in the
// 32 KB pieces io.Copy hands it. (One limit of go-msgauth: under relaxed
// canonicalization it buffers a run of line breaks until the next other
// character, because trailing empty lines are not hashed; a body made of
// megabytes of empty lines costs up to about four times that run in
// memory while it is signed. The server's message size limit bounds it.)
// A header or body line ending in a bare LF is
// signed as if it ended in CRLF, which is what the message is on the wire
// (SMTP DATA requires CRLF and the client converts); refusing would leave
// locally submitted mail (sendmail pipes) unsigned. What cannot be read
// one way only is refused: a blank line inside the header block (it would
// split header and body differently for the verifier), a bare CR or NUL, a
// line without a colon, a leading continuation line, or no From field.
//
// The returned field is folded at whitespace the signature already had
// (relaxed canonicalization makes folding there invisible to the hash) so
// that lines stay within 78 characters; h= cannot be folded without
// changing the signed text, so a long h= takes a longer line of its own.
// t= comes from the wall clock, as go-msgauth takes it from time.Now;
// Options.Now only paces the key file checks.
package dkimsign
