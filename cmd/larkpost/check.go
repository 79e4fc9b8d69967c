package main

import (
	"fmt"
	"io"
)

func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("check", stderr)
	file := configFlag(fs)
	if code, ok := parseFlags(fs, interleaved(args, fs.Lookup), stdout, stderr); !ok {
		return code
	}
	if extraArgs("check", configArg(fs, file, fs.Args(), nil), 0, stderr) {
		return 2
	}
	p, ok := loadPolicy(*file, stderr, nil)
	if !ok {
		return 1
	}
	s := p.Settings
	fmt.Fprintf(stdout, "%s: ok (hostname %s, destinations %v, %d listener(s))\n", p.File, s.Hostname, s.Destinations, len(s.Listen))
	return 0
}
