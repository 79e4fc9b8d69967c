package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/larkpost/larkpost/engine/resolver"
	"io"
	"log/slog"
	"os"

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
	if flagSetMade != nil {
		flagSetMade(fs)
	}
	return fs
}
