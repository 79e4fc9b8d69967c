// Package rules is larkpost's policy runtime: it loads a config script
// (Starlark) into a frozen Policy, with its settings and hooks, and runs
// the hooks under a sandbox with step, time and memory budgets. Each SMTP
// stage goes through an Intake, which turns hook results into decisions,
// applies the whole-message semantics of Postfix (discard and hold at any
// stage, soft_bounce) and keeps the decision log that travels with the
// message; the dry run (larkpost trace, testing.run) drives the same
// Intake. Cleanup-time hooks (rewrite, expand), routing (route) and the
// file step with users' filter scripts are here too.
//
// What applies when no hook decides, Postfix's semantics over lookup
// tables, is in rules/postfix; the *_test.star runner is rules/startest.
package rules
