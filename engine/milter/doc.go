// Package milter is the SMTP server's milter client: it consults external
// mail filters (OpenDKIM, OpenDMARC, rspamd, ClamAV milters, ...) speaking
// the Sendmail milter protocol, as Postfix's smtpd_milters does, and
// behaves like Postfix wherever the protocol leaves room. The protocol
// work is done by github.com/emersion/go-milter; this package adds the
// timeouts, failure policy, macros and streaming an MTA needs.
//
// # Use
//
// New checks a Config once. For each SMTP connection, Open connects to
// the milter and reports the client; the server then calls, as the SMTP
// conversation goes, Helo, Mail, Rcpt, Data, and EndOfMessage once the
// message is received, Abort on RSET, and Close when the client leaves.
// Each call returns a Verdict to apply (continue, accept, reject,
// tempfail, discard, quarantine, with the SMTP reply for reject and
// tempfail) and, only when the milter failed, an error to log. Several
// milters are several Sessions, consulted in order; the first that does
// not answer continue or accept decides.
//
// One milter connection serves the whole SMTP connection, every message
// included, as in Postfix: the protocol carries per-connection state
// (connect, HELO, macros), and libmilter ends the conversation when told
// the SMTP client has left, so it cannot be pooled across connections.
//
// # Failures and DefaultAction
//
// A milter that cannot be reached, does not answer in time, or breaks the
// protocol (malformed packets, unexpected replies, reply codes other than
// 4xx/5xx) is abandoned for the rest of the SMTP connection: its
// connection is closed, since a reply may still be in flight, and
// DefaultAction (milter_default_action) decides this and every later
// stage:
//
//   - "tempfail" (default): 451 4.7.1 Service unavailable - try again later.
//     Mail waits in the sender's queue until the milter is back, so no
//     message skips filtering.
//   - "reject": 550 5.7.1 Command rejected. For filters that must never be
//     bypassed and where bouncing is preferable to delay.
//   - "accept": the milter is skipped for the rest of the connection (every
//     stage answers accept), so mail flows unfiltered while it is down.
//
// The error is returned only by the call that failed. Note that Postfix
// itself replies "550 5.5.0 Service unavailable" under "reject"; we use
// the reply of a milter's own SMFIR_REJECT, which says more to the sender.
// Postfix's "quarantine" default action is not offered.
//
// # Timeouts
//
// Every network operation has a deadline; nothing can hang. ConnectTimeout
// (default 30s) covers connecting and option negotiation, CommandTimeout
// (30s) each SMTP-command exchange (connect, HELO, MAIL, RCPT, DATA, RSET,
// QUIT), and ContentTimeout (300s) each exchange while the message is sent:
// each header field, each body chunk, and each packet of the answer to
// end-of-message, so that a slow content scanner that sends "progress"
// packets is given more time (progress says it is alive). These are
// Postfix's milter_connect_timeout, milter_command_timeout and
// milter_content_timeout, with the same defaults and the same per-exchange
// meaning: a large body is not limited by ContentTimeout as a whole.
// Every method also takes a context: its cancellation or deadline cuts any
// exchange short (the result is then a failure, as above).
//
// # Message content
//
// EndOfMessage takes the header block and the body as an io.Reader. Header
// fields are sent one by one, as Sendmail and Postfix send them: without
// the space after the colon (unless the milter asks for it) and with
// continuation lines joined by LF. The body is read in chunks of at most
// 65535 bytes (the protocol's limit) into one reused buffer and each chunk
// sent before the next is read, so the message is never held in memory;
// the caller can hand over its spool file. A milter that answers a chunk
// with "skip" gets no more body.
//
// Modifications come back in the milter's order, for the caller to apply:
// header additions, insertions, changes and deletions (values ready to
// write after "Name:"), sender change, recipient additions and
// deletions, quarantine, and body replacement. The replacement body is
// copied from the connection straight into a temporary file (in
// Config.TempDir), unlinked at once so no failure can leave it behind, and
// handed over as an open *os.File positioned at its start, with CRLF line
// endings; the caller must Close it. Memory use is thus bounded whatever
// the sizes of the message and of its replacement.
//
// # Macros
//
// Milters read Sendmail macros (smfi_getsymval). The names sent at each
// stage are Postfix's defaults (milter_*_macros), with, at connect, the
// {client_*} and {if_*} macros that Sendmail sends and many milters read:
//
//	connect:        j {daemon_name} {daemon_addr} v _ {if_name} {if_addr}
//	                {client_addr} {client_port} {client_name}
//	HELO:           {tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}
//	MAIL:           i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}
//	RCPT:           i {rcpt_addr} {rcpt_host} {rcpt_mailer}
//	DATA, end of header, end of message: i
//
// Config.Macros changes any of these lists. Values come from Info at Open,
// from Mail and Rcpt ({mail_addr}, {rcpt_addr}), and from SetMacro for
// what the server learns later: the queue ID (i) before MAIL, AUTH and
// TLS details once known. Only macros with a value are sent. Per-message
// ones (i, {mail_*}, {rcpt_*}) are forgotten when the message ends.
//
// # Protocol versions
//
// Protocol (milter_protocol, default 6) sets the features offered. go-milter
// always announces version 6 and gives up on a milter that answers with an
// older version when version 6 features were offered; Postfix instead
// falls back to what the milter knows. We reconnect once offering only
// version 2 features, and remember that for the milter's later sessions.
// Such a milter gets no DATA event (it appeared in version 4). Actions are
// not checked against what the milter asked to do at negotiation; neither
// does Postfix.
package milter
