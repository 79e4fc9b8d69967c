package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/larkpost/larkpost/rules"
	"go.starlark.net/starlark"
)

// The CLI reference's entry for `larkpost man` (see verbDocs in
// cliref_test.go, where it may move).
func init() {
	if _, ok := verbDocs["man"]; !ok {
		verbDocs["man"] = verbDoc{
			synopsis: []string{"man [8|5]", "man --install [DIR]"},
			help:     []string{"man", "-h"},
			desc: "Prints a man page in roff: `larkpost(8)` (the default), every command with its usage and options, " +
				"the exit statuses, the environment and the files; or `larkpost.star(5)`, the config file: every " +
				"setting with its type, default and when a change takes effect, the hooks, the decisions and " +
				"effects, and an example. Both are made from the same tables as `--help`, the completion script " +
				"and the references. With `--install` it writes both, mode 0644, as `DIR/man8/larkpost.8` and " +
				"`DIR/man5/larkpost.star.5`, creating the directories (DIR defaults to `/usr/local/share/man`, " +
				"where `man` looks), and prints each file it wrote; then `man larkpost` and `man larkpost.star` " +
				"show them. `larkpost man 5 | man -l -` shows a page without installing it.",
			exits: [][2]string{{"0", "printed or written"}, {"1", "a directory or file cannot be written"}, {"2", "usage: a section other than 8 or 5, an extra argument, bad flags"}},
		}
	}
	if !slices.Contains(verbOrder, "man") {
		at := slices.Index(verbOrder, "completion") + 1 // 0 when missing: first
		verbOrder = slices.Insert(verbOrder, at, "man")
	}
}

// manSection is the part of page from the line .SS "larkpost NAME" to the
// next section or subsection.
func manSection(t *testing.T, page, name string) string {
	t.Helper()
	head := ".SS \"larkpost " + name + "\"\n"
	i := strings.Index(page, head)
	if i < 0 {
		t.Errorf("larkpost(8) has no %q", strings.TrimSpace(head))
		return ""
	}
	rest := page[i+len(head):]
	if j := regexp.MustCompile(`(?m)^\.S[SH] `).FindStringIndex(rest); j != nil {
		rest = rest[:j[0]]
	}
	return rest
}

// hasFlag reports whether section shows the flag, in bold with one dash or two.
func hasFlag(section, flagName string) bool {
	n := roffEscape(strings.TrimLeft(flagName, "-"))
	return strings.Contains(section, `\fB\-`+n+`\fR`) || strings.Contains(section, `\fB\-\-`+n+`\fR`)
}

// TestManPage8Verbs: every verb of the command table is in the synopsis
// and has its own subsection with each of its flags, as the CLI
// reference and the completion script find them.
func TestManPage8Verbs(t *testing.T) {
	t.Setenv("LARKPOST_CONFIG", "")
	page := manPage8()
	synopsis := page[strings.Index(page, ".SH SYNOPSIS"):strings.Index(page, ".SH DESCRIPTION")]
	completion := completionFlags()
	for name := range verbs {
		if !strings.Contains(synopsis, `\fBlarkpost\fR \fB`+roffEscape(name)+`\fR`) {
			t.Errorf("%s is not in the SYNOPSIS", name)
		}
		sec := manSection(t, page, name)
		if sec == "" {
			continue
		}
		d, ok := verbDocs[name]
		if !ok {
			t.Errorf("no verbDocs entry for %s", name)
			continue
		}
		for _, f := range verbFlags(t, name, d) {
			for _, alias := range strings.Split(f.name, ", ") {
				flagName := strings.Fields(alias)[0]
				if !hasFlag(sec, flagName) && !strings.Contains(sec, roffEscape(flagName)) {
					t.Errorf("larkpost %s: flag %s is not in its section of larkpost(8)", name, flagName)
				}
			}
		}
		for _, f := range completion[name] {
			if !hasFlag(sec, f) {
				t.Errorf("larkpost %s: flag %s (from the completion script) is not in its section of larkpost(8)", name, f)
			}
		}
	}
	for _, s := range []string{".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION", ".SH COMMANDS", ".SH \"EXIT STATUS\"", ".SH ENVIRONMENT", ".SH FILES", ".SH \"SEE ALSO\""} {
		if !strings.Contains(page, "\n"+s+"\n") {
			t.Errorf("larkpost(8) has no %s", s)
		}
	}
}

// TestManPage5: every setting, hook and decision builtin is in
// larkpost.star(5), and the hooks and decisions are written as their
// references write them.
func TestManPage5(t *testing.T) {
	page := manPage5()
	for _, name := range rules.SettingNames() {
		if !strings.Contains(page, ".TP\n"+bold(name)+" (") {
			t.Errorf("setting %s is not in larkpost.star(5)", name)
		}
	}
	for _, d := range rules.SettingDocs() {
		if w := manBinding(d.Binding); w == string(d.Binding) {
			t.Errorf("setting %s: binding %q has no words in manBinding", d.Name, d.Binding)
		}
	}
	root := repoRoot(t)
	hooksRef, err := os.ReadFile(filepath.Join(root, "docs", "reference", "hooks.md"))
	if err != nil {
		t.Fatal(err)
	}
	hooks := rules.HookNames()
	for _, name := range hooks {
		h, ok := manHooks[name]
		switch {
		case !ok:
			t.Errorf("hook %s has no manHooks entry", name)
		case !strings.HasPrefix(h.sig, name+"("):
			t.Errorf("manHooks[%s] signature %q is another hook's", name, h.sig)
		case !bytes.Contains(hooksRef, []byte("`"+h.sig+"`")):
			t.Errorf("manHooks[%s] signature %q is not the hook reference's", name, h.sig)
		case !strings.Contains(page, ".TP\n"+bold(h.sig)+"\n"):
			t.Errorf("hook %s is not in larkpost.star(5)", name)
		}
	}
	for name := range manHooks {
		if !slices.Contains(hooks, name) {
			t.Errorf("manHooks has %s, which is no hook", name)
		}
	}

	// The decision builtins, found as TestReferenceHeadings finds them.
	decisionsRef, err := os.ReadFile(filepath.Join(root, "docs", "reference", "stdlib", "decisions.md"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := rules.LoadDefault()
	if err != nil {
		t.Fatal(err)
	}
	var builtins []string
	for name, v := range p.Predeclared() {
		if strings.HasPrefix(name, "_lp_") || name == "config" || starlark.Universe[name] != nil || isModule(v) {
			continue
		}
		builtins = append(builtins, name)
	}
	for k := rules.Accept; k <= rules.Sign; k++ {
		if !slices.Contains(builtins, k.String()) {
			t.Errorf("decision kind %s has no builtin", k)
		}
	}
	order := manDecisionOrder()
	for _, name := range builtins {
		d, ok := manDecisions[name]
		switch {
		case !ok:
			t.Errorf("decision builtin %s has no manDecisions entry", name)
		case !slices.Contains(order, name):
			t.Errorf("decision builtin %s is not in manDecisionOrder", name)
		case !bytes.Contains(decisionsRef, []byte("`"+d.sig+"`")):
			t.Errorf("manDecisions[%s] signature %q is not the decisions reference's", name, d.sig)
		case !strings.Contains(page, ".TP\n"+bold(d.sig)+"\n"):
			t.Errorf("%s is not in larkpost.star(5)", name)
		}
	}
	for name := range manDecisions {
		if !slices.Contains(builtins, name) {
			t.Errorf("manDecisions has %s, which is not predeclared", name)
		}
	}
	for _, s := range []string{".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION", ".SH SETTINGS", ".SH HOOKS", ".SH \"DECISIONS AND EFFECTS\"", ".SH EXAMPLE", ".SH FILES", ".SH \"SEE ALSO\""} {
		if !strings.Contains(page, "\n"+s+"\n") {
			t.Errorf("larkpost.star(5) has no %s", s)
		}
	}
}

// TestManExample: the example of larkpost.star(5) loads, and its on_mail
// refuses what it says it refuses.
func TestManExample(t *testing.T) {
	t.Setenv("LARKPOST_CONFIG", "")
	cfg := filepath.Join(t.TempDir(), "larkpost.star")
	if err := os.WriteFile(cfg, []byte(manStarExample), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if code := run([]string{"check", "-c", cfg}, &out, &out); code != 0 {
		t.Fatalf("larkpost check of the example: exit %d\n%s", code, out.String())
	}
	out.Reset()
	run([]string{"trace", "-c", cfg, "--from", "x@spam.example", "--to", "bob@example.com"}, &out, &out)
	if !strings.Contains(out.String(), "sender domain blocked") {
		t.Errorf("the example's on_mail does not refuse spam.example:\n%s", out.String())
	}
}

// roffEscapes are the escapes the pages use.
var roffEscapes = regexp.MustCompile(`^\\(e|-|&|f[BIR]|\[u[0-9A-F]{4,6}\]|\(dq)`)

// roffMacros are the requests the pages use.
var roffMacros = map[string]bool{`\"`: true, "TH": true, "SH": true, "SS": true, "TP": true, "PP": true, "br": true,
	"nf": true, "fi": true, "RS": true, "RE": true, "nh": true, "ad": true}

// checkRoff checks that every line of page is a known request or text
// that cannot be taken for one, that hyphens and backslashes are escaped
// and that only ASCII is used.
func checkRoff(t *testing.T, name, page string) {
	t.Helper()
	if !strings.HasSuffix(page, "\n") {
		t.Errorf("%s does not end with a newline", name)
	}
	fill := true
	for i, line := range strings.Split(strings.TrimSuffix(page, "\n"), "\n") {
		where := name + ":" + strconv.Itoa(i+1)
		switch line {
		case ".nf":
			fill = false
		case ".fi":
			fill = true
		}
		switch {
		case line == "":
			t.Errorf("%s: a blank line (a break in roff)", where)
		case line[0] == '\'':
			t.Errorf("%s: a line starts with an unescaped apostrophe: %q", where, line)
		case line[0] == '.':
			m := strings.Fields(line[1:] + " ")
			if len(m) == 0 || !roffMacros[m[0]] {
				t.Errorf("%s: unknown request or unescaped leading dot: %q", where, line)
			}
			if m[0] == `\"` {
				continue // a comment
			}
		case line[0] == ' ' && fill:
			t.Errorf("%s: a line starts with a blank (a break in roff): %q", where, line)
		}
		for j := 0; j < len(line); j++ {
			switch c := line[j]; {
			case c >= 0x80 || c < ' ':
				t.Errorf("%s: byte %#x: name characters beyond ASCII as \\[uXXXX]", where, c)
			case c == '-' && (j == 0 || line[j-1] != '\\'):
				t.Errorf("%s: unescaped hyphen at column %d: %q", where, j+1, line)
			case c == '\\':
				m := roffEscapes.FindString(line[j:])
				if m == "" {
					t.Errorf("%s: unknown escape at column %d: %q", where, j+1, line)
					continue
				}
				j += len(m) - 1
			}
		}
	}
}

// TestManRoff: both pages are well-formed roff, and the writer escapes
// what would be taken for a request or an escape.
func TestManRoff(t *testing.T) {
	t.Setenv("LARKPOST_CONFIG", "")
	checkRoff(t, "larkpost.8", manPage8())
	checkRoff(t, "larkpost.star.5", manPage5())

	var w roffWriter
	w.text(".start with a dot")
	w.text("'start with an apostrophe")
	w.text(`C:\path -x --long ` + "`.code` é")
	w.code("line one\n\n.dot\n    indented \\n")
	w.macro("TP", `a "quoted" arg`, "")
	want := `\&.start with a dot
\&'start with an apostrophe
C:\epath \-x \-\-long \fB.code\fR \[u00E9]
.nf
line one
\&
\&.dot
    indented \en
.fi
.TP "a \(dqquoted\(dq arg" ""
`
	if w.String() != want {
		t.Errorf("roffWriter wrote\n%s\nwant\n%s", w.String(), want)
	}
	if got, want := roffSynopsis("trace [-c FILE] --to B [MSG|-] ID..."), `\fBtrace\fR [\fB\-c\fR \fIFILE\fR] \fB\-\-to\fR \fIB\fR [\fIMSG\fR|\fB\-\fR] \fIID...\fR`; got != want {
		t.Errorf("roffSynopsis = %s, want %s", got, want)
	}
}

// TestManGroff: groff renders both pages without a warning. It needs
// groff (Debian's groff-base), which CI installs; without it the test
// skips, saying so.
func TestManGroff(t *testing.T) {
	t.Setenv("LARKPOST_CONFIG", "")
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Skip("groff is not installed (apt-get install groff-base): the man pages are not rendered")
	}
	for _, p := range []struct{ name, page, want string }{
		{"larkpost.8", manPage8(), "EXIT STATUS"},
		{"larkpost.star.5", manPage5(), "DECISIONS AND EFFECTS"},
	} {
		cmd := exec.Command(groff, "-man", "-Tutf8", "-ww")
		cmd.Stdin = strings.NewReader(p.page)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("groff -man -Tutf8 -ww %s: %v\n%s", p.name, err, stderr.String())
		}
		// grotty overstrikes bold and underlined characters (c BS c).
		text := regexp.MustCompile(".\b").ReplaceAllString(stdout.String(), "")
		if !strings.Contains(text, p.want) {
			t.Errorf("groff's rendering of %s has no %q:\n%s", p.name, p.want, stdout.String())
		}
	}
}

// TestManCommand: `larkpost man` prints the pages, --install writes them.
func TestManCommand(t *testing.T) {
	t.Setenv("LARKPOST_CONFIG", "")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"man"}, manPage8()},
		{[]string{"man", "8"}, manPage8()},
		{[]string{"man", "5"}, manPage5()},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(c.args, &stdout, &stderr); code != 0 || stdout.String() != c.want {
			t.Errorf("larkpost %v: exit %d, printed the page: %v\n%s", c.args, code, stdout.String() == c.want, stderr.String())
		}
	}
	runCLICases(t, []cliCase{
		{name: "no such section", args: []string{"man", "1"}, code: 2, stderr: `no section "1"`},
		{name: "two sections", args: []string{"man", "8", "5"}, code: 2, stderr: "unexpected argument"},
		{name: "install two dirs", args: []string{"man", "--install", "a", "b"}, code: 2, stderr: "unexpected argument"},
		{name: "bad flag", args: []string{"man", "--bogus"}, code: 2, stderr: "flag provided but not defined"},
	})

	dir := filepath.Join(t.TempDir(), "share", "man")
	// An old page, unreadable to others, is replaced and made readable.
	os.MkdirAll(filepath.Join(dir, "man8"), 0o755)
	os.WriteFile(filepath.Join(dir, "man8", "larkpost.8"), []byte("old"), 0o600)
	var stdout, stderr bytes.Buffer
	if code := run([]string{"man", "--install", dir}, &stdout, &stderr); code != 0 {
		t.Fatalf("man --install: exit %d\n%s", code, stderr.String())
	}
	for _, f := range []struct{ path, want string }{
		{filepath.Join(dir, "man8", "larkpost.8"), manPage8()},
		{filepath.Join(dir, "man5", "larkpost.star.5"), manPage5()},
	} {
		got, err := os.ReadFile(f.path)
		if err != nil {
			t.Errorf("man --install: %v", err)
			continue
		}
		if string(got) != f.want {
			t.Errorf("%s is not the page", f.path)
		}
		if fi, err := os.Stat(f.path); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: mode %v, want 0644 (%v)", f.path, fi.Mode().Perm(), err)
		}
		if !strings.Contains(stdout.String(), "wrote "+f.path+"\n") {
			t.Errorf("man --install does not say it wrote %s:\n%s", f.path, stdout.String())
		}
	}
	// A directory that cannot be made: exit 1.
	blocker := filepath.Join(t.TempDir(), "file")
	os.WriteFile(blocker, nil, 0o600)
	stderr.Reset()
	if code := run([]string{"man", "--install", blocker}, &stdout, &stderr); code != 1 {
		t.Errorf("man --install over a file: exit %d, want 1\n%s", code, stderr.String())
	}
}

// TestManMachineDefaults: a page is the same on every machine: no flag
// default taken from the environment or the host name.
func TestManMachineDefaults(t *testing.T) {
	t.Setenv("LARKPOST_CONFIG", "/sentinel/larkpost.star")
	page := manPage8()
	if strings.Contains(page, "sentinel") {
		t.Error("larkpost(8) shows $LARKPOST_CONFIG's value as a default")
	}
	if host, err := os.Hostname(); err == nil && strings.Contains(page, "(default: "+roffEscape(strings.ToLower(host))+")") {
		t.Errorf("larkpost(8) shows this host's name %q as a default", host)
	}
}

// TestManExitStatus: EXIT STATUS has every status the CLI reference
// gives, and no other.
func TestManExitStatus(t *testing.T) {
	have := map[string]bool{}
	for _, e := range manExits {
		have[e[0]] = true
	}
	used := map[string]bool{}
	for name, d := range verbDocs {
		for _, e := range d.exits {
			used[e[0]] = true
			if !have[e[0]] {
				t.Errorf("larkpost %s exits %s, which EXIT STATUS of larkpost(8) does not list", name, e[0])
			}
		}
	}
	for code := range have {
		if !used[code] {
			t.Errorf("EXIT STATUS lists %s, which no command's reference gives", code)
		}
	}
}

// TestManSendmailFlags: sendmail's options on the page are the CLI
// reference's.
func TestManSendmailFlags(t *testing.T) {
	var names []string
	for _, f := range sendmailManFlags {
		names = append(names, f.name)
		for _, w := range strings.Fields(f.usage) {
			if strings.HasPrefix(w, "-") {
				names = append(names, strings.TrimRight(w, ".,;)"))
			}
		}
	}
	for _, f := range verbDocs["sendmail"].flags {
		for _, alias := range strings.Split(f.name, ", ") {
			if n := strings.Fields(alias)[0]; !slices.Contains(names, n) {
				t.Errorf("sendmail option %s of the CLI reference is not in larkpost(8)", n)
			}
		}
	}
}
