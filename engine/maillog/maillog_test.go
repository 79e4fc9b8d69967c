package maillog

import (
	"bytes"
	"log/slog"
	"regexp"
	"testing"
)

func TestHandlerLines(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(New(&buf, slog.LevelInfo))
	tests := []struct {
		log  func()
		want string
	}{
		{func() { l.Info("connect from localhost[127.0.0.1]") }, `larkpost\[\d+\]: connect from localhost\[127\.0\.0\.1\]$`},
		{func() { l.Warn("disk full", "dir", "/var/x y") }, `larkpost\[\d+\]: warning: disk full dir="/var/x y"$`},
		{func() { l.Warn("warning: already prefixed") }, `: warning: already prefixed$`},
		{func() { l.Error("boom", "n", 3) }, `: error: boom n=3$`},
		{func() { l.With("id", "ABC").WithGroup("g").Info("m", "k", "v") }, `: m id=ABC g\.k=v$`},
		{func() { l.Debug("hidden") }, `^$`},
	}
	for _, tt := range tests {
		buf.Reset()
		tt.log()
		line := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
		if !regexp.MustCompile(tt.want).Match(line) {
			t.Errorf("got %q, want match %s", line, tt.want)
		}
		if bytes.Count(buf.Bytes(), []byte("\n")) > 1 {
			t.Errorf("more than one line: %q", buf.String())
		}
	}
}
