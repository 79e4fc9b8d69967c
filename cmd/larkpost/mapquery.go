package main

import (
	"fmt"
	"io"

	"github.com/larkpost/larkpost/stdlib/maps"
)

// runMap is `larkpost map query [-c FILE] TABLE KEY`, Postfix's postmap -q:
// TABLE is a table setting of the config (virtual_alias_maps, alias_maps,
// ...), searched as the router searches it, or a table spec
// ("hash:/etc/postfix/access"), searched by the shape of KEY.
func runMap(args []string, stdout, stderr io.Writer) int {
	const usage = "usage: larkpost map query [-c FILE] TABLE KEY"
	if len(args) > 0 && isHelpArg(args[0]) {
		fmt.Fprintln(stdout, usage)
		return 0
	}
	if len(args) == 0 || args[0] != "query" {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	fs := newFlagSet("map query", stderr)
	file := configFlag(fs)
	if code, ok := parseFlags(fs, interleaved(args[1:], fs.Lookup), stdout, stderr); !ok {
		return code
	}
	rest := fs.Args()
	if len(rest) == 3 {
		// A config given as the first argument: map query policy.star TABLE KEY.
		rest = append(configArg(fs, file, rest[:1], nil), rest[1:]...)
	}
	if len(rest) != 2 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	table, key := rest[0], rest[1]
	p, ok := loadPolicy(*file, stderr, nil)
	if !ok {
		return 1
	}
	if res, isSetting, err := p.LookupSetting(table, key); isSetting {
		if err != nil {
			// A database that is down is not "not found": the server
			// would answer 451 or defer.
			fmt.Fprintf(stderr, "larkpost map: %v (temporary: the server would defer)\n", err)
			return 1
		}
		if len(res) == 0 {
			fmt.Fprintf(stderr, "%s: %s: not found\n", table, key)
			return 1
		}
		for _, r := range res {
			fmt.Fprintf(stdout, "%s\t(%s, key %q)\n", r.Value, r.Table, r.Matched)
		}
		return 0
	}
	t, err := maps.Open(table, p.BaseDir(), nil)
	if err != nil {
		fmt.Fprintf(stderr, "larkpost map: %v\n", err)
		return 1
	}
	how := maps.QueryMode(key)
	v, matched, found, err := maps.QueryAs(t, how, key, p.AddrOptions())
	if err != nil {
		fmt.Fprintf(stderr, "larkpost map: %v (temporary: the server would defer)\n", err)
		return 1
	}
	if !found {
		fmt.Fprintf(stderr, "%s: %s: not found (%s lookup)\n", t.Name(), key, how)
		return 1
	}
	fmt.Fprintf(stdout, "%s\t(%s, %s lookup, key %q)\n", v, t.Name(), how, matched)
	return 0
}
