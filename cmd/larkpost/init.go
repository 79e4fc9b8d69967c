package main

import (
	"bytes"
	"embed"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/template"
)

//go:embed profiles/*.star
var profileFS embed.FS

// profiles are the four setups Debian's postfix installer offers.
var profiles = []string{"internet", "smarthost", "satellite", "local"}

type profileVars struct{ Hostname, Domain, Relayhost string }

func runInit(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("init", stderr)
	profile := fs.String("profile", "internet", "setup: "+strings.Join(profiles, ", "))
	host, _ := os.Hostname()
	hostname := fs.String("hostname", strings.ToLower(host), "this host's fully qualified `NAME`")
	domain := fs.String("domain", "", "mail `DOMAIN` (default: hostname minus its first label)")
	relayhost := fs.String("relayhost", "[smtp.example.net]:587", "smarthost for the smarthost and satellite profiles")
	force := fs.Bool("force", false, "overwrite existing files")
	if code, ok := parseFlags(fs, interleaved(args, fs.Lookup), stdout, stderr); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: larkpost init [--profile P] DIR")
		return 2
	}
	known := false
	for _, p := range profiles {
		known = known || p == *profile
	}
	if !known {
		fmt.Fprintf(stderr, "larkpost init: unknown profile %q (want one of %s)\n", *profile, strings.Join(profiles, ", "))
		return 2
	}
	if *domain == "" {
		*domain = "localdomain"
		if _, rest, ok := strings.Cut(*hostname, "."); ok && rest != "" {
			*domain = rest
		}
	}
	dir := fs.Arg(0)
	files, err := renderProfile(*profile, profileVars{Hostname: *hostname, Domain: *domain, Relayhost: *relayhost})
	if err != nil {
		fmt.Fprintf(stderr, "larkpost init: %v\n", err)
		return 1
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintf(stderr, "larkpost init: %v\n", err)
		return 1
	}
	for name := range files {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil && !*force {
			fmt.Fprintf(stderr, "larkpost init: %s exists (use --force to overwrite)\n", filepath.Join(dir, name))
			return 1
		}
	}
	for _, name := range []string{"larkpost.star", "larkpost_test.star"} {
		if err := os.WriteFile(filepath.Join(dir, name), files[name], 0o644); err != nil {
			fmt.Fprintf(stderr, "larkpost init: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "wrote %s\n", filepath.Join(dir, name))
	}
	cfg := filepath.Join(dir, "larkpost.star")
	fmt.Fprintf(stdout, "next: larkpost check -c %s && larkpost test -c %s\n", cfg, cfg)
	return 0
}

// renderProfile fills in a profile's config and test file.
func renderProfile(profile string, v profileVars) (map[string][]byte, error) {
	out := map[string][]byte{}
	for name, src := range map[string]string{"larkpost.star": profile + ".star", "larkpost_test.star": profile + "_test.star"} {
		text, err := profileFS.ReadFile("profiles/" + src)
		if err != nil {
			return nil, err
		}
		t, err := template.New(src).Parse(string(text))
		if err != nil {
			return nil, err
		}
		var b bytes.Buffer
		if err := t.Execute(&b, v); err != nil {
			return nil, err
		}
		out[name] = b.Bytes()
	}
	return out, nil
}
