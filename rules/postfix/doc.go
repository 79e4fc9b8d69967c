// Package postfix is Postfix's semantics over lookup tables: what applies
// when no hook decides. Canonical mapping and masquerading, virtual
// aliases, aliases(5) and .forward lookups, relocated users,
// transport_maps, virtual mailboxes, local users and mailbox paths, and
// smtp_tls_policy_maps and smtp_sasl_password_maps lookups by nexthop.
//
// Package rules, the Starlark runtime, calls it for every default; it
// knows nothing of scripts or hooks.
package postfix
