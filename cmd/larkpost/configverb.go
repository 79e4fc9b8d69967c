package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/larkpost/larkpost/rules"
)

// runConfig prints settings as postconf(1) does: every setting's value
// as the config sets it or its default, -n only those the config sets,
// -d only the defaults, or the settings named; each with when a change
// takes effect after a reload.
func runConfig(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("config", stderr)
	file := configFlag(fs)
	nonDefault := fs.Bool("n", false, "only the settings the config sets (postconf -n)")
	defaults := fs.Bool("d", false, "the default of each setting, whatever the config says (postconf -d)")
	asJSON := fs.Bool("json", false, "print JSON")
	if code, ok := parseFlags(fs, interleaved(args, fs.Lookup), stdout, stderr); !ok {
		return code
	}
	names := configArg(fs, file, fs.Args(), nil)
	if *nonDefault && *defaults {
		fmt.Fprintln(stderr, "larkpost config: -n and -d exclude each other")
		return 2
	}
	docs := rules.SettingDocs()
	byName := map[string]rules.SettingDoc{}
	for _, d := range docs {
		byName[d.Name] = d
	}
	for _, n := range names {
		if _, ok := byName[n]; !ok {
			fmt.Fprintf(stderr, "larkpost config: unknown setting %q%s\n", n, nearestSetting(n, docs))
			return 2
		}
	}
	p, ok := loadPolicy(*file, stderr, nil)
	if !ok {
		return 1
	}
	type line struct {
		Name    string `json:"name"`
		Value   string `json:"value"`
		Default bool   `json:"default"`
		Binding string `json:"binding"`
	}
	var out []line
	for _, d := range docs {
		if len(names) > 0 && !slices.Contains(names, d.Name) {
			continue
		}
		raw, set := p.Settings.Raw(d.Name)
		l := line{Name: d.Name, Value: raw, Binding: string(d.Binding)}
		switch {
		case *nonDefault && !set:
			continue
		case *defaults || !set:
			l.Value, l.Default = d.Default, true
		}
		out = append(out, l)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(map[string]any{"config": configName(p.File), "settings": out})
		return 0
	}
	for _, l := range out {
		note := "  # " + l.Binding
		if l.Default {
			note = "  # default, " + l.Binding
		}
		fmt.Fprintf(stdout, "%s = %s%s\n", l.Name, l.Value, note)
	}
	return 0
}

// nearestSetting suggests a setting for a misspelt name.
func nearestSetting(n string, docs []rules.SettingDoc) string {
	for _, d := range docs {
		if strings.Contains(d.Name, n) || levenshtein(n, d.Name) <= 2 {
			return "; did you mean " + d.Name + "?"
		}
	}
	return ""
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
