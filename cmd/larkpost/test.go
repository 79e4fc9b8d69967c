package main

import (
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/larkpost/larkpost/rules/startest"
)

func runTest(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("test", stderr)
	file := configFlag(fs)
	run := fs.String("run", "", "run only tests whose FILE:NAME matches `REGEX`")
	verbose := fs.Bool("v", false, "print every test, not only failures")
	user := fs.String("user", "", "run the tests beside `NAME`'s filter script (filter_path)")
	if code, ok := parseFlags(fs, interleaved(args, fs.Lookup), stdout, stderr); !ok {
		return code
	}
	// A test file (x_test.star) is a PATH, never the config.
	paths := configArg(fs, file, fs.Args(), func(a string) bool { return !strings.HasSuffix(a, "_test.star") })
	opts := startest.Options{Paths: paths, Verbose: *verbose, Out: stdout, User: *user}
	if *run != "" {
		rx, err := regexp.Compile(*run)
		if err != nil {
			fmt.Fprintf(stderr, "larkpost test: bad -run: %v\n", err)
			return 2
		}
		opts.Run = rx
	}
	p, ok := loadPolicy(*file, stderr, nil)
	if !ok {
		return 1
	}
	sum, err := startest.Run(p, opts)
	if err != nil {
		fmt.Fprintf(stderr, "larkpost %v\n", err)
		return 1
	}
	if sum.Failed > 0 {
		return 1
	}
	return 0
}
