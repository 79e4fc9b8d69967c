package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigVerb(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "larkpost.star")
	os.WriteFile(cfg, []byte(`config(hostname = "mx.example.com", message_size_limit = "20MB", state_store = "redis://10.0.0.5:6379/0")`), 0o600)
	tests := []struct {
		name     string
		args     []string
		code     int
		want     []string
		not      []string
		stderrIs string
	}{
		{"-n: only what the config sets", []string{"-n", cfg}, 0,
			[]string{`hostname = "mx.example.com"  # restart`, `message_size_limit = "20MB"  # restart`, `state_store = "redis://10.0.0.5:6379/0"  # restart`},
			[]string{"# default", "relayhost ="}, ""},
		{"all: set values and defaults", []string{"-c", cfg}, 0,
			[]string{`message_size_limit = "20MB"  # restart`, "relayhost = ", "# default, "}, nil, ""},
		{"-d: the defaults", []string{"-d", "-c", cfg, "message_size_limit"}, 0,
			[]string{"message_size_limit = 10240000"}, []string{"20MB", "hostname"}, ""},
		{"names", []string{"-c", cfg, "hostname", "state_store"}, 0,
			[]string{`hostname = "mx.example.com"`, `state_store = "redis://`}, []string{"message_size_limit"}, ""},
		{"a misspelt name", []string{"-c", cfg, "hostnme"}, 2, nil, nil, `unknown setting "hostnme"; did you mean hostname?`},
		{"-n and -d", []string{"-n", "-d", "-c", cfg}, 2, nil, nil, "exclude each other"},
		{"--json", []string{"-n", "--json", "-c", cfg}, 0, []string{`"name": "hostname"`, `"binding": "restart"`}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(append([]string{"config"}, tt.args...), &out, &errOut)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %s", code, tt.code, errOut.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("no %q in\n%s", w, out.String())
				}
			}
			for _, n := range tt.not {
				if strings.Contains(out.String(), n) {
					t.Errorf("%q in\n%s", n, out.String())
				}
			}
			if tt.stderrIs != "" && !strings.Contains(errOut.String(), tt.stderrIs) {
				t.Errorf("stderr %q, want %q", errOut.String(), tt.stderrIs)
			}
		})
	}
}
