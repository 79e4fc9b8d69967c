package importer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

func readFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}

// reportSrc is IMPORT-REPORT.md.
func (c *conv) reportSrc() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	r := c.res
	w("# Postfix import report\n\n")
	w("Imported from `%s` into `%s` by `larkpost import postfix` (larkpost %s) on %s.\n\n", c.o.Dir, c.o.OutDir, c.o.Version, c.o.Now.Format("2006-01-02"))
	if len(r.Hand) == 0 {
		w("**Nothing needs hand work.** %d parameters converted, %d notes.\n\n", len(r.Converted), len(r.Notes))
	} else {
		w("**%d item(s) need hand work** (below); %d parameters converted, %d notes.\n\n", len(r.Hand), len(r.Converted), len(r.Notes))
	}
	w("Check the result with `larkpost check -c larkpost.star` and\n`larkpost test -c larkpost.star postfix_import_test.star`.\n")
	section := func(title, intro string, items []Item, todo bool) {
		w("\n## %s\n\n", title)
		if len(items) == 0 {
			w("None.\n")
			return
		}
		if intro != "" {
			w("%s\n\n", intro)
		}
		for _, it := range items {
			text := ""
			if it.Text != "" {
				text = " `" + strings.ReplaceAll(it.Text, "`", "'") + "`"
			}
			w("- %s%s\n  - why: %s\n", it.Where(), text, it.Why)
			if todo && it.Todo != "" {
				w("  - to do: %s\n", it.Todo)
			}
		}
	}
	section("Needs hand work", "These lines were not converted, or only in part.", r.Hand, true)
	var conv []Item
	for _, it := range r.Converted {
		it.Why = "converted to " + it.Why
		conv = append(conv, it)
	}
	section("Converted", "", conv, false)
	section("Notes", "Converted with a difference worth knowing, or nothing to convert.", r.Notes, false)
	w("\n## Known differences\n\n")
	for _, d := range knownDifferences(c) {
		w("- %s\n", d)
	}
	return b.String()
}

func knownDifferences(c *conv) []string {
	out := []string{
		"Tables are read from their text source files (the `.db` files postmap builds are not used); a change applies within a second, without postmap.",
		"Reply texts follow Postfix's, but the hooks decide at RCPT TO with larkpost's default policy afterwards: unknown users get `550 5.1.1`, relaying `554 5.7.1 Relay access denied`.",
		"A restriction that refuses in `smtpd_client_restrictions` with `smtpd_delay_reject = no` refuses the connection instead of every later command.",
		"`DEFER_IF_PERMIT` and `DEFER_IF_REJECT` access results defer at once; `defer_if_permit` covers the rest of its own list only.",
		"A WARN, PREPEND, REDIRECT, BCC, DISCARD or HOLD result of an access table ends its stage with that effect; Postfix goes on evaluating the list.",
	}
	if c.rs != nil && c.rs.delay {
		out = append(out, "With `smtpd_delay_reject = yes` (the default) the client, HELO and sender restrictions run at each RCPT TO, as in Postfix.")
	}
	return out
}

// ErrNotEmpty is Write's error for an output folder that has files.
var ErrNotEmpty = errors.New("output folder is not empty")

// Files are the names Write creates.
var Files = []string{"larkpost.star", "postfix_import_test.star", "IMPORT-REPORT.md"}

// Write writes the three files into dir, which must be empty or missing
// unless force.
func (r *Result) Write(dir string, force bool) error {
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 && !force {
		return fmt.Errorf("%s: %w (use --force to overwrite)", dir, ErrNotEmpty)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i, data := range [][]byte{r.Star, r.Test, r.Report} {
		if err := os.WriteFile(filepath.Join(dir, Files[i]), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
