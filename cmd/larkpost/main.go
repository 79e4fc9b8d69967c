// Command larkpost is a mail router whose policy is Starlark code.
//
// Usage:
//
//	larkpost serve    [-c FILE]          run the router (no config: the embedded default)
//	larkpost init     [--profile P] DIR  write a starter config and its tests
//	larkpost check    [-c FILE]          validate a config; errors as FILE:LINE:COL: message
//	larkpost test     [-c FILE] [PATH]   run *_test.star rule tests
//	larkpost trace    [-c FILE] --from A --to B [MSG]  dry-run a message through every hook
//	larkpost map      query TABLE KEY    look a key up as the router would (postmap -q)
//	larkpost queue    list|show|flush|hold|release|requeue|delete  the running server's queue
//	larkpost sendmail [-t] [-i] [-f FROM] [RCPT...]  submit a message (also as sendmail, mailq, newaliases)
//	larkpost reload | status | version | help
//
// The config file can also be given as $LARKPOST_CONFIG. `larkpost help`
// prints every verb with its options.
package main

import (
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/larkpost/larkpost/engine/privsep"
)

// verb is one subcommand: its one-line help and its entry point, which
// returns the process exit status.
type verb struct {
	usage string
	run   func(args []string, stdout, stderr io.Writer) int
}

var verbs map[string]verb

func init() {
	// Assigned here rather than in the declaration because help refers
	// back to the table.
	verbs = map[string]verb{
		"init":       {"init [--profile internet|smarthost|satellite|local] DIR  write a starter config and its tests", runInit},
		"import":     {"import postfix [DIR] [-o OUTDIR] [--force]  convert a Postfix configuration (default /etc/postfix) into a larkpost config, its tests and a report", runImport},
		"map":        {"map query [-c FILE] TABLE KEY  look KEY up as the router would (postmap -q)", runMap},
		"queue":      {"queue list|show|flush|hold|release|requeue|delete [filters] [ID...]  inspect and change the queue (mailq, postcat, postqueue, postsuper)", runQueue},
		"reload":     {"reload [-c FILE]           reload config, scripts and tables in the running server", runReload},
		"status":     {"status [-c FILE] [--json]  listeners, uptime, config, queue counts, delivery rate", runStatus},
		"serve":      {"serve [-c FILE]            run the router (no config: embedded default)", runServe},
		"check":      {"check [-c FILE]            validate config and scripts; FILE:LINE:COL: message", runCheck},
		"completion": {"completion bash|zsh       print a shell completion script (source it, or install it: see the CLI reference)", runCompletion},
		"man":        {"man [8|5] | man --install [DIR]  print the man page larkpost(8) or larkpost.star(5), or write both under DIR (default /usr/local/share/man)", runMan},
		"config":     {"config [-c FILE] [-n|-d] [--json] [NAME...]  print settings as postconf does: values, defaults, when a change applies", runConfig},
		"dkim":       {"dkim keygen [--algorithm rsa|ed25519] DOMAIN SELECTOR | dkim dns [-c FILE]  make a DKIM key and print its DNS record (opendkim-genkey)", runDKIM},
		"test":       {"test [-c FILE] [-run RE] [-v] [PATH...]  run *_test.star rule tests", runTest},
		"trace":      {"trace [-c FILE] --from A --to B [--client-ip IP] [--helo H] [--auth U] [--json] [MSG|-]  dry-run a message through every hook", runTrace},
		"version":    {"version                    print the version", runVersion},
		"help":       {"help [COMMAND]             this list, or COMMAND's usage and options", runHelp},

		// Also run as sendmail, mailq and newaliases: see invokedAs.
		"sendmail": {"sendmail [-t] [-i] [-f FROM] [-F NAME] [-bs|-bp|-bi] [RCPT...]  submit a message from stdin, as sendmail(1)", runSendmail},
	}
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == privsep.FilterChildArg {
		privsep.FilterChildMain() // a user's filter, started by the server
	}
	// Linked as sendmail, mailq or newaliases, larkpost is that program.
	os.Exit(run(invokedAs(os.Args[0], os.Args[1:]), os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		runHelp(nil, stderr, stderr)
		return 2
	}
	if isHelpArg(args[0]) {
		return runHelp(args[1:], stdout, stderr)
	}
	v, ok := verbs[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "larkpost: unknown command %q\n", args[0])
		runHelp(nil, stderr, stderr)
		return 2
	}
	return v.run(args[1:], stdout, stderr)
}

// runHelp prints the verb list, or with an argument, that verb's usage
// (what `larkpost VERB --help` prints).
func runHelp(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		if extraArgs("help", args, 1, stderr) {
			return 2
		}
		if isHelpArg(args[0]) {
			args = []string{"help"}
		}
		v, ok := verbs[args[0]]
		if !ok {
			fmt.Fprintf(stderr, "larkpost help: unknown command %q\n", args[0])
			runHelp(nil, stderr, stderr)
			return 2
		}
		switch args[0] {
		case "help", "version":
			fmt.Fprintln(stdout, "usage: larkpost "+v.usage)
			return 0
		}
		return v.run([]string{"--help"}, stdout, stderr)
	}
	fmt.Fprintln(stdout, "usage: larkpost COMMAND [options]  (larkpost help COMMAND, or larkpost COMMAND --help, for its options)")
	names := make([]string, 0, len(verbs))
	for n := range verbs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintln(stdout, "  larkpost "+verbs[n].usage)
	}
	return 0
}
