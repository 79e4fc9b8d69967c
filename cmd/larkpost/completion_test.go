package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCompletion: the bash script completes verbs, sub-commands and each
// verb's real flags when bash runs it.
func TestCompletion(t *testing.T) {
	var script bytes.Buffer
	if code := run([]string{"completion", "bash"}, &script, &script); code != 0 {
		t.Fatalf("exit %d: %s", code, script.String())
	}
	f := filepath.Join(t.TempDir(), "larkpost.bash")
	os.WriteFile(f, script.Bytes(), 0o600)
	tests := []struct {
		words []string
		want  string
	}{
		{[]string{"larkpost", "que"}, "queue"},
		{[]string{"larkpost", "queue", "li"}, "list"},
		{[]string{"larkpost", "trace", "--mil"}, "--milters"},
		{[]string{"larkpost", "config", "-"}, "--json -c -d -n"},
		{[]string{"larkpost", "completion", "z"}, "zsh"},
	}
	for _, tt := range tests {
		cmd := exec.Command("bash", "-c", `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); _larkpost; echo "${COMPREPLY[*]}"`, "bash", f)
		cmd.Args = append(cmd.Args, tt.words...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", tt.words, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != tt.want {
			t.Errorf("%v: completes %q, want %q", tt.words, got, tt.want)
		}
	}
	var zsh, errOut bytes.Buffer
	if code := run([]string{"completion", "zsh"}, &zsh, &errOut); code != 0 || !strings.HasPrefix(zsh.String(), "autoload -U +X compinit") {
		t.Errorf("zsh: exit %d:\n%s", code, zsh.String())
	}
	if code := run([]string{"completion", "fish"}, &zsh, &errOut); code != 2 {
		t.Errorf("fish: exit %d, want 2", code)
	}
}
