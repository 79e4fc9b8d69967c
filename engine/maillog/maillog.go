// Package maillog formats log/slog records as one greppable line each, in
// the shape of Postfix's maillog:
//
//	2026-11-22T10:04:05.123456Z larkpost[812]: 0N3V7K2XQ8A5C: to=<ann@example.org>, relay=local, ... status=sent
//
// Warnings and errors get Postfix's "warning: " and "error: " prefixes;
// attributes follow the message as key=value.
//
// Much of what is logged comes from clients and scripts (HELO names,
// addresses, Message-IDs, print() output). Every control character,
// C1 control and invalid UTF-8 byte in the message and the attributes is
// written as \ooo (octal, as Postfix does), so a log line is always one
// line: no forged lines, no terminal escape sequences.
package maillog

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Handler is a slog.Handler writing maillog lines.
type Handler struct {
	mu     *sync.Mutex
	w      io.Writer
	level  slog.Leveler
	prefix string // " larkpost[pid]: "
	attrs  string // preformatted attributes from WithAttrs
	group  string
}

// New returns a Handler writing to w records at level or above.
func New(w io.Writer, level slog.Leveler) *Handler {
	return &Handler{mu: &sync.Mutex{}, w: w, level: level,
		prefix: " larkpost[" + strconv.Itoa(os.Getpid()) + "]: "}
}

func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	t := r.Time
	if t.IsZero() {
		t = time.Now()
	}
	b.WriteString(t.UTC().Format("2006-01-02T15:04:05.000000Z"))
	b.WriteString(h.prefix)
	switch {
	case strings.HasPrefix(r.Message, "fatal:") || strings.HasPrefix(r.Message, "error:") || strings.HasPrefix(r.Message, "warning:"):
	case r.Level >= slog.LevelError:
		b.WriteString("error: ")
	case r.Level >= slog.LevelWarn:
		b.WriteString("warning: ")
	}
	writeSafe(&b, r.Message)
	b.WriteString(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		writeAttr(&b, h.group, a)
		return true
	})
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

func writeAttr(b *strings.Builder, group string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		g := a.Key
		if group != "" {
			g = group + "." + g
		}
		for _, ga := range a.Value.Group() {
			writeAttr(b, g, ga)
		}
		return
	}
	b.WriteByte(' ')
	if group != "" {
		b.WriteString(group + ".")
	}
	writeSafe(b, a.Key)
	b.WriteByte('=')
	v := a.Value.String()
	if v == "" || strings.ContainsAny(v, " \t\"=") {
		v = strconv.Quote(v) // Quote escapes control characters itself
	}
	writeSafe(b, v)
}

// writeSafe writes s with every byte that could end the line or drive a
// terminal written as \ooo.
func writeSafe(b *strings.Builder, s string) {
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

func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	h2 := *h
	var b strings.Builder
	b.WriteString(h.attrs)
	for _, a := range attrs {
		writeAttr(&b, h.group, a)
	}
	h2.attrs = b.String()
	return &h2
}

func (h *Handler) WithGroup(name string) slog.Handler {
	h2 := *h
	if h2.group != "" {
		name = h2.group + "." + name
	}
	h2.group = name
	return &h2
}
