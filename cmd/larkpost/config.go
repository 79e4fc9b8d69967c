package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/larkpost/larkpost/engine/resolver"

	"github.com/larkpost/larkpost/engine/privsep"
	"github.com/larkpost/larkpost/rules"
)

// configFlag registers -c on fs; the value falls back to $LARKPOST_CONFIG.
func configFlag(fs *flag.FlagSet) *string {
	return fs.String("c", os.Getenv("LARKPOST_CONFIG"), "config `FILE` (default: $LARKPOST_CONFIG, else the embedded default)")
}

// daemonReadForward is set in the daemon of a split server: .forward files
// are read by the root parent, with the user's rights.
var daemonReadForward func(user, path string) ([]byte, error)

// daemonRunFilter is set in the daemon of a split server: users' filters
// run in filter children the root parent starts.
var daemonRunFilter func(context.Context, rules.FilterJob) rules.Filing

// rootFilters are the filter children of a one-process root server,
// shared by every config it loads.
var rootFilters = &privsep.FilterChildren{}

// runFilter is how users' filter scripts run: in a child with the user's
// rights and resource limits when a process of this server is root (the
// parent of a split server, or this one), else in this process under the
// script budget.
func runFilter() func(context.Context, rules.FilterJob) rules.Filing {
	if daemonRunFilter != nil {
		return daemonRunFilter
	}
	if os.Geteuid() == 0 {
		return privsep.FilterRunner(nil, rootFilters)
	}
	return nil
}

// dnsCache is the process's DNS cache: every policy loaded (at start and
// on reload) resolves through it, so a reload does not forget answers.
var dnsCache = resolver.NewCache()

// loadPolicy loads the config file, or the embedded default when none is
// given, printing every diagnostic to stderr.
func loadPolicy(file string, stderr io.Writer, log *slog.Logger) (*rules.Policy, bool) {
	var p *rules.Policy
	var err error
	o := rules.Options{Logger: log, ReadForward: daemonReadForward, RunFilter: runFilter(), DNSCache: dnsCache}
	if file == "" {
		p, err = rules.LoadDefaultWith(o)
	} else {
		p, err = rules.LoadFileWith(file, o)
	}
	if err != nil {
		var ds rules.Diagnostics
		if errors.As(err, &ds) {
			for _, d := range ds {
				fmt.Fprintln(stderr, d.String())
			}
		} else {
			fmt.Fprintf(stderr, "larkpost: %v\n", err)
		}
		if file != "" && looksLikePostfix(file) {
			fmt.Fprintf(stderr, "larkpost: %s looks like a Postfix configuration, not a larkpost script: convert it with `larkpost import postfix %s`\n",
				file, filepath.Dir(file))
		}
		return nil, false
	}
	for _, w := range p.Warnings {
		fmt.Fprintln(stderr, w.String())
	}
	return p, true
}

// flagSetMade, when set (by TestCLIReference), is given every flag set a
// verb makes, so the CLI reference lists the flags the verbs really have.
var flagSetMade func(*flag.FlagSet)

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("larkpost "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		w := fs.Output()
		// The verb table's line is "SYNOPSIS   description".
		syn, desc, _ := strings.Cut(verbUsage(name), "  ")
		fmt.Fprintf(w, "usage: larkpost %s\n", syn)
		if desc = strings.TrimSpace(desc); desc != "" {
			fmt.Fprintf(w, "%s\n", desc)
		}
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintln(w, "options:")
			fs.PrintDefaults()
		}
	}
	if flagSetMade != nil {
		flagSetMade(fs)
	}
	return fs
}

// verbUsage is the synopsis of a verb's line in the verb table; name may
// have a sub-command after the verb ("queue list").
func verbUsage(name string) string {
	v, ok := verbs[strings.Fields(name)[0]]
	if !ok {
		return name
	}
	return v.usage
}

// isHelpArg reports whether a is one of the ways to ask for help.
func isHelpArg(a string) bool {
	return a == "-h" || a == "-help" || a == "--help"
}

// parseFlags parses args into fs. Asked for help (-h, --help), it prints
// the usage on stdout and returns exit status 0 and false; on a bad flag
// it prints the error and usage on stderr and returns 2 and false.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (int, bool) {
	var out bytes.Buffer
	fs.SetOutput(&out)
	err := fs.Parse(args)
	fs.SetOutput(stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		stdout.Write(out.Bytes())
		return 0, false
	case err != nil:
		stderr.Write(out.Bytes())
		return 2, false
	}
	return 0, true
}

// flagGiven reports whether the flag name was on the command line.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// configArg takes the config file from the positional arguments when -c
// was not given: the one argument that ends in ".star" and that isConfig
// accepts (nil: any) is the config, so `larkpost check policy.star` checks
// policy.star rather than the default. It returns the other arguments.
func configArg(fs *flag.FlagSet, file *string, args []string, isConfig func(string) bool) []string {
	if flagGiven(fs, "c") {
		return args
	}
	at := -1
	for i, a := range args {
		if strings.HasSuffix(a, ".star") && (isConfig == nil || isConfig(a)) {
			if at >= 0 {
				return args // two of them: leave both to the verb's own check
			}
			at = i
		}
	}
	if at < 0 {
		return args
	}
	*file = args[at]
	return append(append([]string(nil), args[:at]...), args[at+1:]...)
}

// extraArgs prints an error and returns true when args has more than max
// arguments, which the verb would otherwise ignore.
func extraArgs(verb string, args []string, max int, stderr io.Writer) bool {
	if len(args) <= max {
		return false
	}
	extra := args[max:]
	hint := ""
	if strings.HasSuffix(extra[0], ".star") {
		hint = " (one config file: -c FILE or a lone FILE.star)"
	}
	syn, _, _ := strings.Cut(verbUsage(verb), "  ")
	fmt.Fprintf(stderr, "larkpost %s: unexpected argument %q%s; usage: larkpost %s\n", verb, extra[0], hint, strings.TrimSpace(syn))
	return true
}

var postfixParam = regexp.MustCompile(`^[a-z][a-z0-9_]*\s*=`)

// looksLikePostfix reports a main.cf or master.cf given where a larkpost
// script was wanted: the name says so, or most of its first lines are
// main.cf's "name = value" with no config(...) call.
func looksLikePostfix(file string) bool {
	switch filepath.Base(file) {
	case "main.cf", "master.cf", "main.cf.dist", "master.cf.dist":
		return true
	}
	f, err := os.Open(file)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 64<<10))
	params, other := 0, 0
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.Contains(line, "config("):
			return false
		case line == "" || line[0] == '#' || line[0] == ' ' || line[0] == '\t':
		case postfixParam.MatchString(line) && (strings.Contains(line, "$") || !strings.ContainsAny(line, "\"'([{")):
			params++
		default:
			other++
		}
	}
	return params >= 3 && params > other
}
