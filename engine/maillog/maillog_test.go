package maillog

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
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

// writeSafeByteWise is writeSafe as it was before printable runs were
// written at once: the reference the fast one must equal.
func writeSafeByteWise(b *strings.Builder, s string) {
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c < 0x7f {
			b.WriteByte(c)
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size <= 1 || r < 0x20 || r >= 0x7f && r < 0xa0 || r == 0x2028 || r == 0x2029 {
			for _, x := range []byte(s[i : i+max(size, 1)]) {
				b.WriteString(fmt.Sprintf("\\%03o", x))
			}
			i += max(size, 1)
			continue
		}
		b.WriteString(s[i : i+size])
		i += size
	}
}

func TestWriteSafeSameAsByteWise(t *testing.T) {
	// Runs of each kind, so that runs start and end at every kind of byte.
	pieces := []string{"a", "plain text", " ", "\x00", "\n", "\r\n", "\x1b[31m", "\x7f", "\u009b", "é", "café", "\u2028", "\u2029", "\xff", "\xe2\x80", "~", "\t"}
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 20000; n++ {
		var s strings.Builder
		for k := rng.IntN(8); k > 0; k-- {
			s.WriteString(pieces[rng.IntN(len(pieces))])
		}
		var got, want strings.Builder
		writeSafe(&got, s.String())
		writeSafeByteWise(&want, s.String())
		if got.String() != want.String() {
			t.Fatalf("writeSafe(%q) = %q, byte-wise %q", s.String(), got.String(), want.String())
		}
	}
}

func TestLineAllocations(t *testing.T) {
	l := slog.New(New(io.Discard, slog.LevelInfo))
	l = l.With(Program("local"))
	allocs := testing.AllocsPerRun(200, func() {
		l.Info("1K1WFHHMNWX00: to=<benchuser@bench.test>, relay=local, delay=0.01, delays=0.00/0.00/0/0.01, dsn=2.0.0, status=sent (delivered to maildir)")
	})
	// The body's string only (Postfix-style lines carry no attributes):
	// the builder grown byte by byte, the time formatted and the line
	// concatenated took 10.
	if allocs > 2 {
		t.Errorf("%.0f allocations a line, want at most 2", allocs)
	}
}
