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
		{func() { l.Info("connect from localhost[127.0.0.1]") }, `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z larkpost/master\[\d+\]: connect from localhost\[127\.0\.0\.1\]$`},
		{func() { l.Warn("disk full", "dir", "/var/x y") }, `larkpost/master\[\d+\]: warning: disk full dir="/var/x y"$`},
		{func() { l.Warn("warning: already prefixed") }, `: warning: already prefixed$`},
		{func() { l.Error("boom", "n", 3) }, `: error: boom n=3$`},
		{func() { l.With("id", "ABC").WithGroup("g").Info("m", "k", "v") }, `: m id=ABC g\.k=v$`},
		{func() { l.Debug("hidden") }, `^$`},
		// The program: from With, from the record (which wins), never
		// among the attributes; a plain "program" attribute stays one.
		{func() { l.With(Program("smtpd")).Info("connect from x[192.0.2.1]") }, `larkpost/smtpd\[\d+\]: connect from x\[192\.0\.2\.1\]$`},
		{func() { l.Info("ABC: to=<a@b>, relay=local, status=sent", Program("local")) }, `larkpost/local\[\d+\]: ABC: to=<a@b>, relay=local, status=sent$`},
		{func() { l.With(Program("qmgr")).Info("ABC: removed", Program("bounce"), "k", 1) }, `larkpost/bounce\[\d+\]: ABC: removed k=1$`},
		{func() { l.With("id", "X", Program("cleanup")).WithGroup("g").Info("m", "k", "v") }, `larkpost/cleanup\[\d+\]: m id=X g\.k=v$`},
		{func() { l.With(Program("smtpd")).Info("script: x", "program", "evil") }, `larkpost/smtpd\[\d+\]: script: x program=evil$`},
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

func TestHandlerEscapes(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(New(&buf, slog.LevelInfo))
	tests := []struct {
		msg, key, val string
		want          string
	}{
		{"helo=<a\x1b[31mred\x07>", "", "", `helo=<a\033[31mred\007>`},
		{"subject x\nforged: to=<root>, status=sent", "", "", `subject x\012forged: to=<root>, status=sent`},
		{"cr\rnul\x00del\x7f", "", "", `cr\015nul\000del\177`},
		{"c1 \u009b31m and bad utf8 \xff and fine utf8 café", "", "", `c1 \302\23331m and bad utf8 \377 and fine utf8 café`},
		{"line separator \u2028", "", "", `line separator \342\200\250`},
		{"script: x", "source", "a\nb", `script: x source=a\012b`},
		{"script: z", "source", "a b\n", `script: z source="a b\n"`},
		{"script: y", "k\x1b", "v\x1b", `script: y k\033=v\033`},
	}
	for _, tt := range tests {
		buf.Reset()
		if tt.key != "" {
			l.Info(tt.msg, tt.key, tt.val)
		} else {
			l.Info(tt.msg)
		}
		out := buf.String()
		if bytes.Count(buf.Bytes(), []byte("\n")) != 1 || !bytes.HasSuffix(buf.Bytes(), []byte("\n")) {
			t.Errorf("%q: not exactly one line: %q", tt.msg, out)
		}
		for _, c := range out[:len(out)-1] {
			if c < 0x20 || c == 0x7f || c >= 0x80 && c < 0xa0 {
				t.Errorf("%q: control character %q in %q", tt.msg, c, out)
			}
		}
		if !bytes.HasSuffix(bytes.TrimSuffix(buf.Bytes(), []byte("\n")), []byte(tt.want)) {
			t.Errorf("got %q, want it to end in %q", out, tt.want)
		}
	}
}
