// Package maillog formats log/slog records as one greppable line each, in
// the shape of Postfix's maillog:
//
//	2026-11-22T10:04:05.123456Z larkpost/local[812]: 0N3V7K2XQ8A5C: to=<ann@example.org>, relay=local, ... status=sent
//
// Each line names the Postfix program whose job it describes, after the
// syslog name: larkpost/smtpd, larkpost/cleanup, larkpost/qmgr,
// larkpost/local, larkpost/smtp, larkpost/bounce, larkpost/pickup, and
// larkpost/master for the daemon's own lines. A logger says its program
// with the Program attribute (log.With(maillog.Program("smtpd")), or on
// one record); the handler takes it out of the attributes and puts it in
// the prefix.
//
// Warnings and errors get Postfix's "warning: " and "error: " prefixes;
// attributes follow the message as key=value.
//
// Much of what is logged comes from clients and scripts (HELO names,
// addresses, Message-IDs, print() output). Every control character,
// C1 control and invalid UTF-8 byte in the message and the attributes is
// written as \ooo (octal, as Postfix does), so a log line is always one
// line: no forged lines, no terminal escape sequences.
//
// Open sends the lines elsewhere: the local syslog daemon (RFC 3164 over
// its datagram socket, as syslog(3) writes it), the systemd journal's
// native socket, and in JSON instead of text (see Config).
package maillog

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// ProgramKey is the key of the Program attribute (and of the program
// field of JSON lines).
const ProgramKey = "program"

// DefaultProgram is the program of lines whose logger names none: the
// daemon's own lines (started, listening, reload, fatal), as Postfix's
// master logs them.
const DefaultProgram = "master"

// program is the Program attribute's value type, so that an attribute a
// script or a client names "program" is not taken for it.
type program string

func (p program) String() string { return string(p) }

// Program is the attribute naming the Postfix program a line speaks for
// ("smtpd", "cleanup", "qmgr", "local", "smtp", "bounce", "pickup", ...).
// The handler renders it in the prefix (NAME/PROG[PID]) and not among the
// key=value attributes. Other handlers show it as program=PROG.
func Program(name string) slog.Attr { return slog.Any(ProgramKey, program(name)) }

// Delivery is the Program attribute of a delivery line (to=<...>,
// relay=..., status=...) made by a transport: the Postfix delivery agent
// that does that job. A mailbox or a file is local's, a command pipe's,
// SMTP and LMTP are smtp's and lmtp's; the error and retry (defer)
// pseudo-transports are error's, discard discard's. Anything else
// ("" included) is qmgr's, which logs what no agent did.
func Delivery(transport string) slog.Attr {
	switch transport {
	case "local", "file":
		return Program("local")
	case "pipe", "smtp", "lmtp", "virtual", "discard", "error":
		return Program(transport)
	case "defer", "retry":
		return Program("error")
	}
	return Program("qmgr")
}

// programOf reports whether a is a Program attribute, and its name.
func programOf(a slog.Attr) (string, bool) {
	if a.Key != ProgramKey || a.Value.Kind() != slog.KindAny {
		return "", false
	}
	p, ok := a.Value.Any().(program)
	return string(p), ok
}

// Handler is a slog.Handler writing maillog lines to its output (stderr,
// syslog or the journal; see Open).
type Handler struct {
	sw      *switcher // shared by the handlers With makes
	level   slog.Leveler
	program string // from a Program attribute of WithAttrs; "" is DefaultProgram
	attrs   string // preformatted text attributes from WithAttrs
	ops     []op   // the same, structured, for JSON and the journal
	group   string
}

// op is one WithAttrs or WithGroup call, in order.
type op struct {
	group string
	attrs []slog.Attr
}

// switcher holds where a handler and the handlers made from it with
// WithAttrs and WithGroup write; Switch changes it for all of them.
type switcher struct{ p atomic.Pointer[output] }

func newSwitcher(o *output) *switcher {
	sw := &switcher{}
	sw.p.Store(o)
	return sw
}

// New returns a Handler writing text lines with the syslog name
// "larkpost" to w, records at level or above.
func New(w io.Writer, level slog.Leveler) *Handler {
	return &Handler{sw: newSwitcher(&output{target: "stderr", format: "text", name: "larkpost", pid: os.Getpid(), w: w, mu: &sync.Mutex{}}), level: level}
}

func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

// rendered is one record, ready for the output.
type rendered struct {
	t       time.Time
	level   slog.Level
	prog    string
	out     *output
	body    string      // the text after "NAME/PROG[PID]: ", escaped
	msg     string      // the message as given (JSON, journal)
	attrs   []slog.Attr // the record's attributes without Program
	handler *Handler
}

func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	t := r.Time
	if t.IsZero() {
		t = time.Now()
	}
	o := h.sw.p.Load()
	rd := rendered{t: t, level: r.Level, prog: h.program, msg: r.Message, handler: h, out: o}
	if r.NumAttrs() > 0 {
		rd.attrs = make([]slog.Attr, 0, r.NumAttrs())
		r.Attrs(func(a slog.Attr) bool {
			if p, ok := programOf(a); ok {
				rd.prog = p
			} else {
				rd.attrs = append(rd.attrs, a)
			}
			return true
		})
	}
	if rd.prog == "" {
		rd.prog = DefaultProgram
	}
	if o.format == "json" && o.target != "journald" {
		rd.body = h.jsonBody(&rd)
	} else {
		rd.body = h.textBody(&rd)
	}
	return o.write(&rd)
}

// textBody is the line after the prefix: Postfix's severity word, the
// message and the attributes, escaped.
func (h *Handler) textBody(rd *rendered) string {
	var b strings.Builder
	b.Grow(len(rd.msg) + len(h.attrs) + 32*len(rd.attrs) + 16)
	switch {
	case hasSeverityWord(rd.msg):
	case rd.level >= slog.LevelError:
		b.WriteString("error: ")
	case rd.level >= slog.LevelWarn:
		b.WriteString("warning: ")
	}
	writeSafe(&b, rd.msg)
	b.WriteString(h.attrs)
	for _, a := range rd.attrs {
		writeAttr(&b, h.group, a)
	}
	return b.String()
}

func hasSeverityWord(msg string) bool {
	for _, w := range []string{"fatal:", "panic:", "error:", "warning:"} {
		if strings.HasPrefix(msg, w) {
			return true
		}
	}
	return false
}

// jsonBody is the record as one JSON object, in slog.JSONHandler's
// encoding: time (RFC 3339, microseconds), level, msg, program, pid and
// the attributes.
func (h *Handler) jsonBody(rd *rendered) string {
	var buf bytes.Buffer
	jh := slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: jsonTime})
	nr := slog.NewRecord(rd.t, rd.level, rd.msg, 0)
	nr.AddAttrs(slog.String(ProgramKey, rd.out.name+"/"+rd.prog), slog.Int("pid", rd.out.pid))
	nr.AddAttrs(h.nest(rd.attrs)...)
	if err := jh.Handle(context.Background(), nr); err != nil {
		return `{"msg":"maillog: ` + strings.ReplaceAll(err.Error(), `"`, `'`) + `"}`
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

func jsonTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey && a.Value.Kind() == slog.KindTime {
		return slog.String(slog.TimeKey, a.Value.Time().UTC().Format("2006-01-02T15:04:05.000000Z07:00"))
	}
	return a
}

// nest returns the With attributes and groups around the record's
// attributes rec, as slog groups (empty groups are dropped, as slog does).
func (h *Handler) nest(rec []slog.Attr) []slog.Attr {
	cur := rec
	for i := len(h.ops) - 1; i >= 0; i-- {
		o := h.ops[i]
		if o.group != "" {
			if len(cur) > 0 {
				cur = []slog.Attr{{Key: o.group, Value: slog.GroupValue(cur...)}}
			}
			continue
		}
		cur = append(append([]slog.Attr(nil), o.attrs...), cur...)
	}
	return cur
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
		// Printable ASCII, nearly every byte of a log line, a run at a
		// time: byte by byte the builder grew a dozen times a line.
		j := i
		for j < len(s) && s[j] >= 0x20 && s[j] < 0x7f {
			j++
		}
		b.WriteString(s[i:j])
		if i = j; i == len(s) {
			break
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
	var kept []slog.Attr
	for _, a := range attrs {
		if p, ok := programOf(a); ok {
			h2.program = p
			continue
		}
		kept = append(kept, a)
		writeAttr(&b, h.group, a)
	}
	h2.attrs = b.String()
	if len(kept) > 0 {
		h2.ops = append(h.ops[:len(h.ops):len(h.ops)], op{attrs: kept})
	}
	return &h2
}

func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.ops = append(h.ops[:len(h.ops):len(h.ops)], op{group: name})
	if h2.group != "" {
		name = h2.group + "." + name
	}
	h2.group = name
	return &h2
}
