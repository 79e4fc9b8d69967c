// Package policy is the Starlark `policy` module: a client for Postfix's
// SMTP access policy delegation protocol (SMTPD_POLICY_README), so that
// the policy servers written for Postfix (postgrey, policyd-spf,
// policyd-rate-limit, ...) work from hooks unchanged:
//
//	return access(policy.check("inet:127.0.0.1:10023", tx, rcpt))
//
//	policy.check(service, tx, rcpt=None, timeout="10s",
//	             default="451 4.3.5 Server configuration problem")
//	    the action the service answers ("DUNNO", "DEFER_IF_PERMIT text",
//	    "PREPEND X-Greylist: ..."), or default when it could not be asked
//	policy.query(service, tx, rcpt=None, timeout="10s")
//	    struct(action, error): the action, or "" and why it failed
//
// The request is what Postfix's check_policy_service sends: name=value
// lines, then an empty line; the reply is action=... then an empty line.
// Values come from the Starlark values a hook gets (tx, or conn where
// there is no transaction yet, and rcpt), read by attribute name, so the
// module depends on no server type. Values are client data: control
// characters in them become '?', so a client cannot add lines to the
// request.
//
// Connections are kept per service and reused as Postfix's attr_clnt
// does: at most maxIdle idle ones, closed after maxIdleTime unused or
// maxTTL old (smtpd_policy_service_max_idle and _max_ttl). A reused
// connection the server has closed in the meantime is retried once on a
// new one; nothing else is retried, so a slow or broken service costs a
// hook at most `timeout`, which the hook's own deadline bounds too.
package policy
