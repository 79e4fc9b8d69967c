package main

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/larkpost/larkpost/rules"
	"github.com/larkpost/larkpost/rules/startest"
	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
)

// docBlock is one fenced code block of a Markdown page.
type docBlock struct {
	file   string
	line   int    // of the opening fence
	lang   string // python, sh, ...
	mark   string // from an HTML comment on the line before the fence, see docMark
	arg    string // the mark's argument (files: DIR)
	source string
}

// docMark is how a page says what a block is, in an HTML comment on the
// line before it (invisible on a forge):
//
//	<!-- fragment -->       part of a config: not checked
//	<!-- fails -->          a config with errors: check must refuse it
//	<!-- files: DIR -->     check it beside the files of DIR (tables)
//	<!-- with: PAGE -->     a test block for the last config on PAGE
//	<!-- illustrative -->   commands that need a server, root or other programs
var docMark = regexp.MustCompile(`^<!--\s*(fragment|fails|illustrative|files:|with:)\s*(\S*)\s*-->\s*$`)

// repoRoot is the checkout's root, from cmd/larkpost.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// docBlocks reads every fenced block of the README, the examples'
// READMEs and the pages under docs/.
func docBlocks(t *testing.T, root string) []docBlock {
	t.Helper()
	files := []string{filepath.Join(root, "README.md")}
	examples, _ := filepath.Glob(filepath.Join(root, "examples", "*", "README.md"))
	files = append(files, examples...)
	filepath.WalkDir(filepath.Join(root, "docs"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".md") {
			files = append(files, p)
		}
		return nil
	})
	var out []docBlock
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, 1<<20)
		var cur *docBlock
		prev, n := "", 0
		for sc.Scan() {
			n++
			line := sc.Text()
			switch {
			case cur == nil && strings.HasPrefix(line, "```"):
				rel, _ := filepath.Rel(root, f)
				cur = &docBlock{file: rel, line: n, lang: strings.Fields(line[3:] + " x")[0]}
				if m := docMark.FindStringSubmatch(prev); m != nil {
					cur.mark, cur.arg = strings.TrimSuffix(m[1], ":"), m[2]
				}
			case cur != nil && strings.HasPrefix(line, "```"):
				out = append(out, *cur)
				cur = nil
			case cur != nil:
				cur.source += line + "\n"
			}
			if strings.TrimSpace(line) != "" {
				prev = line
			}
		}
	}
	return out
}

// TestDocConfigs: every python block in the README and docs/ is a config
// that `larkpost check` accepts, or a *_test.star file that `larkpost
// test` passes against the last config before it on the same page, or
// marked as a fragment (<!-- fragment --> on the line before the fence).
// So the documentation cannot show a config that does not load.
func TestDocConfigs(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	configs := map[string]docBlock{} // page -> the last config block seen
	for _, b := range docBlocks(t, root) {
		if (b.lang != "python" && b.lang != "star") || b.mark == "fragment" {
			continue
		}
		if b.file == filepath.Join("docs", "reference", "settings.md") {
			continue // generated; rules.TestSettingDocs loads every example with its tables
		}
		where := b.file + ":" + strconv.Itoa(b.line)
		dir := t.TempDir()
		cfg := filepath.Join(dir, "larkpost.star")
		isTest := strings.Contains(b.source, "def test_")
		conf := b
		if isTest {
			conf = configs[b.file]
			if b.mark == "with" {
				conf = configs[b.arg]
			}
			if conf.source == "" {
				t.Errorf("%s: a test block with no config before it on the page (mark it <!-- fragment -->)", where)
				continue
			}
			os.WriteFile(filepath.Join(dir, "doc_test.star"), []byte(b.source), 0o600)
		}
		if conf.mark == "files" {
			copyFiles(t, filepath.Join(root, conf.arg), dir)
		}
		os.WriteFile(cfg, []byte(conf.source), 0o600)
		var out bytes.Buffer
		args := []string{"check", "-c", cfg}
		if isTest {
			args = []string{"test", "-c", cfg, dir}
		}
		code := run(args, &out, &out)
		switch {
		case b.mark == "fails" && code == 0:
			t.Errorf("%s: marked <!-- fails -->, but larkpost check accepts it", where)
		case b.mark != "fails" && code != 0:
			t.Errorf("%s: larkpost %s exits %d:\n%s\n(mark a partial config <!-- fragment -->, one that needs tables <!-- files: DIR -->)", where, args[0], code, out.String())
		case !isTest && b.mark != "fails":
			configs[b.file] = b
		}
	}
}

// TestDocCommands: an sh block runs larkpost commands that work from the
// repository root (check, test, trace, map query ... on the examples), or
// is marked illustrative (<!-- illustrative --> before the fence): those
// that need a running server, root, or programs other than larkpost.
func TestDocCommands(t *testing.T) {
	root := repoRoot(t)
	t.Chdir(root)
	t.Setenv("LARKPOST_CONFIG", "")
	for _, b := range docBlocks(t, root) {
		if b.lang != "sh" || b.mark == "illustrative" {
			continue
		}
		for i, line := range strings.Split(strings.TrimRight(b.source, "\n"), "\n") {
			where := b.file + ":" + strconv.Itoa(b.line+1+i)
			cmd := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "$ "))
			switch {
			case cmd == "" || strings.HasPrefix(cmd, "#"):
				continue
			case strings.HasPrefix(cmd, "go run ./cmd/larkpost "):
				cmd = "larkpost " + strings.TrimPrefix(cmd, "go run ./cmd/larkpost ")
			case !strings.HasPrefix(cmd, "larkpost "):
				t.Errorf("%s: %q is not a larkpost command: mark the block <!-- illustrative -->", where, cmd)
				continue
			}
			args, ok := shellWords(strings.TrimPrefix(cmd, "larkpost "))
			if !ok || len(args) == 0 {
				t.Errorf("%s: cannot read %q: mark the block <!-- illustrative -->", where, cmd)
				continue
			}
			switch args[0] {
			case "serve", "reload", "status", "queue", "sendmail", "init":
				t.Errorf("%s: larkpost %s needs a server or writes files: mark the block <!-- illustrative -->", where, args[0])
				continue
			}
			var out bytes.Buffer
			if code := run(args, &out, &out); code != 0 {
				t.Errorf("%s: %s exits %d:\n%s", where, cmd, code, out.String())
			}
		}
	}
}

// shellWords splits a command line the way sh does for the simple cases
// the docs use: spaces, single and double quotes. Anything else (pipes,
// redirections, variables) is not for this test.
func shellWords(s string) ([]string, bool) {
	var words []string
	var w strings.Builder
	inWord, quote := false, byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
			w.WriteByte(c)
		case c == '\'' || c == '"':
			quote, inWord = c, true
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		case strings.IndexByte("|&;<>$`\\*?(){}", c) >= 0:
			return nil, false
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, false
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, true
}

// copyFiles copies the regular files of dir (not the config, not tests)
// into dst, for a doc block that names tables.
func copyFiles(t *testing.T, dir, dst string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.IsDir() || e.Name() == "larkpost.star" || strings.HasSuffix(e.Name(), "_test.star") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600)
	}
}

// TestReferenceHeadings: every hook, every function of the stdlib modules
// and every decision builtin has its own heading in docs/reference, so it
// can be linked to (docs/reference/stdlib/re.md#rematch), and a new one
// cannot go undocumented.
func TestReferenceHeadings(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	headings := func(page string) map[string]bool {
		data, err := os.ReadFile(filepath.Join(root, "docs", "reference", page))
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "#") {
				h := strings.TrimSpace(strings.TrimLeft(line, "#"))
				h = strings.Trim(h, "`")
				if i := strings.IndexByte(h, '('); i > 0 {
					h = h[:i] // "re.match(pattern, s)" is re.match's heading
				}
				out[h] = true
			}
		}
		return out
	}
	p, err := rules.LoadDefault()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"hooks.md": rules.HookNames()}
	for name, v := range p.Predeclared() {
		switch {
		case strings.HasPrefix(name, "_lp_"), name == "config", starlark.Universe[name] != nil:
			// guards, the settings (settings.md) and the Starlark language
		case isModule(v):
			for member := range v.(*starlarkstruct.Module).Members {
				want["stdlib/"+name+".md"] = append(want["stdlib/"+name+".md"], name+"."+member)
			}
		default:
			want["stdlib/decisions.md"] = append(want["stdlib/decisions.md"], name)
		}
	}
	for _, m := range []string{"testing", "assert"} {
		for _, member := range startest.ModuleMembers(m) {
			want["stdlib/testing.md"] = append(want["stdlib/testing.md"], m+"."+member)
		}
	}
	for page, names := range want {
		have := headings(page)
		for _, n := range names {
			if !have[n] {
				t.Errorf("docs/reference/%s has no heading for %s", page, n)
			}
		}
	}
}

func isModule(v starlark.Value) bool {
	_, ok := v.(*starlarkstruct.Module)
	return ok
}
