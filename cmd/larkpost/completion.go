package main

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// runCompletion prints a shell completion script made from the verb table
// and the flags each verb really has (the same source as the CLI
// reference), so it cannot drift from the commands.
func runCompletion(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("completion", stderr)
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	args = fs.Args()
	if len(args) != 1 || (args[0] != "bash" && args[0] != "zsh") {
		fmt.Fprintln(stderr, "usage: larkpost "+verbs["completion"].usage)
		return 2
	}
	script := bashCompletion(completionFlags())
	if args[0] == "zsh" {
		// zsh runs bash completion functions through bashcompinit.
		script = "autoload -U +X compinit && compinit\nautoload -U +X bashcompinit && bashcompinit\n" + script
	}
	fmt.Fprint(stdout, script)
	return 0
}

// completionFlags is each verb's flags, found by asking the verb for its help
// with flagSetMade set, as TestCLIReference does.
func completionFlags() map[string][]string {
	out := map[string][]string{}
	for name := range verbs {
		if name == "completion" || name == "sendmail" || name == "help" || name == "version" {
			continue
		}
		var sets []*flag.FlagSet
		flagSetMade = func(fs *flag.FlagSet) { sets = append(sets, fs) }
		args := []string{"-h"}
		switch name {
		case "queue":
			args = []string{"list", "-h"}
		case "map":
			args = []string{"query", "-h"}
		case "dkim":
			args = []string{"keygen", "-h"}
		}
		verbs[name].run(args, io.Discard, io.Discard)
		flagSetMade = nil
		for _, fs := range sets {
			fs.VisitAll(func(f *flag.Flag) {
				dash := "-"
				if len(f.Name) > 1 {
					dash = "--"
				}
				out[name] = append(out[name], dash+f.Name)
			})
		}
		slices.Sort(out[name])
		out[name] = slices.Compact(out[name])
	}
	return out
}

func bashCompletion(flags map[string][]string) string {
	names := make([]string, 0, len(verbs))
	for n := range verbs {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	b.WriteString("# larkpost completion (bash): source it, or put it in /etc/bash_completion.d/larkpost\n")
	b.WriteString("_larkpost() {\n")
	b.WriteString("\tlocal cur=${COMP_WORDS[COMP_CWORD]}\n")
	b.WriteString("\tif [ \"$COMP_CWORD\" -eq 1 ]; then\n")
	fmt.Fprintf(&b, "\t\tCOMPREPLY=($(compgen -W %q -- \"$cur\"))\n\t\treturn\n\tfi\n", strings.Join(names, " "))
	b.WriteString("\tlocal words\n\tcase ${COMP_WORDS[1]} in\n")
	for _, n := range names {
		w := flags[n]
		switch n {
		case "queue":
			w = append([]string{"list", "show", "flush", "hold", "release", "requeue", "delete"}, w...)
		case "map":
			w = append([]string{"query"}, w...)
		case "dkim":
			w = append([]string{"keygen", "dns"}, w...)
		case "help":
			w = names
		case "completion":
			w = []string{"bash", "zsh"}
		}
		if len(w) > 0 {
			fmt.Fprintf(&b, "\t%s) words=%q ;;\n", n, strings.Join(w, " "))
		}
	}
	b.WriteString("\tesac\n")
	b.WriteString("\tif [[ $cur == -* || -n $words && $cur != */* ]]; then\n")
	b.WriteString("\t\tCOMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n")
	b.WriteString("\tfi\n")
	b.WriteString("\t[ ${#COMPREPLY[@]} -eq 0 ] && COMPREPLY=($(compgen -f -- \"$cur\"))\n")
	b.WriteString("}\ncomplete -o filenames -F _larkpost larkpost\n")
	return b.String()
}
