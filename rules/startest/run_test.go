package startest

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/larkpost/larkpost/rules"
)

const runnerConfig = `
config(hostname = "mx.example.com", networks = ["10.0.0.0/8"])

def on_mail(tx, sender):
    if sender.domain == "spam.example":
        return reject("no thanks", code = 554)
`

func TestRun(t *testing.T) {
	tests := []struct {
		name   string
		files  map[string]string
		run    string
		want   []string // regexps, each must match a line, in order
		passed int
		failed int
	}{
		{"pass", map[string]string{"a_test.star": `
def test_local():
    assert.accepted(testing.run(sender = "x@example.org", to = "bob@mx.example.com"))
`}, "", []string{`^1 passed, 0 failed$`}, 1, 0},
		{"fail with line and message", map[string]string{"policy_test.star": `
def test_relay():
    r = testing.run(sender = "x@example.org", to = "x@elsewhere.example")
    assert.accepted(r, rcpt = "x@elsewhere.example")
    assert.eq(r.queued, True)
`}, "", []string{
			`^--- FAIL: .*policy_test.star:test_relay \(line 4\): expected accept at rcpt for x@elsewhere.example, got reject 554 5.7.1 <x@elsewhere.example>: Relay access denied \(from default policy\)$`,
			`^    .*policy_test.star:5: expected True, got False$`,
			`^0 passed, 1 failed$`}, 0, 1},
		{"expected reject got accept", map[string]string{"policy_test.star": `
def test_relay():
    r = testing.run(client_ip = "10.0.0.1", sender = "x@example.org", to = "x@elsewhere.example")
    assert.rejected(r, 554, stage = "rcpt")
`}, "", []string{`^--- FAIL: .*:test_relay \(line 4\): expected reject 554 at rcpt, got accept \(from default policy\)$`}, 0, 1},
		{"error in a test", map[string]string{"e_test.star": `
def test_boom():
    x = {}
    return x["missing"]

def test_ok():
    pass
`}, "", []string{`^--- FAIL: .*e_test.star:test_boom \(line 4\): error: key "missing" not in dict$`, `^1 passed, 1 failed$`}, 1, 1},
		{"broken test file", map[string]string{"b_test.star": "def test_x(:\n"}, "", []string{
			`^--- FAIL: .*b_test.star: .*b_test.star:1:13: syntax error: `, `^0 passed, 1 failed$`}, 0, 1},
		{"undefined name in test file", map[string]string{"u_test.star": "def test_x():\n    asert.eq(1, 1)\n"}, "", []string{
			`^--- FAIL: .*u_test.star: .*u_test.star:2:5: undefined: asert$`}, 0, 1},
		{"run filter", map[string]string{"f_test.star": `
def test_alpha():
    pass
def test_beta():
    assert.true(False)
`}, "alpha", []string{`^1 passed, 0 failed$`}, 1, 0},
		{"policy globals and stage decisions", map[string]string{"g_test.star": `
def test_policy():
    r = testing.run(sender = "a@spam.example", to = "bob@mx.example.com")
    assert.rejected(r, code = 554, stage = "mail", text = "no thanks")
    assert.eq(r.stopped_at, "mail")
    assert.eq(r.mail.source.endswith("larkpost.star:6"), True)
    assert.eq(r.connect.kind, "accept")
    assert.eq(r.rcpt, {})
    assert.fails(lambda: policy.on_mail(None, None), "has no .domain field|attribute")
`}, "", []string{`^1 passed, 0 failed$`}, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "larkpost.star")
			os.WriteFile(cfg, []byte(runnerConfig), 0o600)
			for name, src := range tt.files {
				os.WriteFile(filepath.Join(dir, name), []byte(src), 0o600)
			}
			p, err := rules.LoadFile(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			opts := Options{Out: &out}
			if tt.run != "" {
				opts.Run = regexp.MustCompile(tt.run)
			}
			sum, err := Run(p, opts)
			if err != nil {
				t.Fatal(err)
			}
			if sum.Passed != tt.passed || sum.Failed != tt.failed {
				t.Errorf("summary %+v, want %d passed %d failed\n%s", sum, tt.passed, tt.failed, out.String())
			}
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			i := 0
			for _, want := range tt.want {
				rx := regexp.MustCompile(want)
				for i < len(lines) && !rx.MatchString(lines[i]) {
					i++
				}
				if i == len(lines) {
					t.Errorf("output lacks %s (in order):\n%s", want, out.String())
					break
				}
			}
			if last := lines[len(lines)-1]; !regexp.MustCompile(`^\d+ passed, \d+ failed$`).MatchString(last) {
				t.Errorf("last line %q is not the summary", last)
			}
		})
	}
}

func TestRunNoFiles(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "larkpost.star")
	os.WriteFile(cfg, []byte(runnerConfig), 0o600)
	p, _ := rules.LoadFile(cfg)
	if _, err := Run(p, Options{Out: &bytes.Buffer{}}); err == nil || !strings.Contains(err.Error(), "no *_test.star files") {
		t.Errorf("err = %v, want no test files", err)
	}
}
