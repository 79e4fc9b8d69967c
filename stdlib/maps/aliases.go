package maps

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/larkpost/larkpost/stdlib/addr"
)

// TargetKind says what an alias target is.
type TargetKind int

const (
	TargetAddress TargetKind = iota // a local name or a full address: expanded again (recursively) by the caller
	TargetFile                      // "/path/to/file": append the message to the file (mbox style)
	TargetPipe                      // "|command args": pipe the message to the command
	TargetInclude                   // never returned by Lookup: :include: is resolved at load time
)

// Target is one right-hand-side element of an alias.
//
// Value is the address, the path, or the command without "|". Quoting is
// removed as local(8) does before it delivers, so `"a b"@example.com`
// becomes `a b@example.com` (which addr.Parse accepts) and `\root` becomes
// `root`. A local name is not qualified with a domain: that is the
// caller's job, as is treating an alias that names itself (root: \root,
// alice) as delivery to the mailbox rather than a loop.
type Target struct {
	Kind  TargetKind
	Value string
}

// AliasReloadInterval bounds how often an Aliases from OpenAliases stats its
// files. It is the default for the files OpenAliases opens from then on;
// an Aliases keeps the value it was opened with.
var AliasReloadInterval = time.Second

// aliasesMaxDepth is the :include: nesting limit. Cycles are caught
// anyway; this stops a chain of generated files from growing without end,
// and no real tree of lists is ten deep.
const aliasesMaxDepth = 10

// Aliases is a parsed aliases(5) file, safe for concurrent use, reloaded when
// it or an included file changes.
type Aliases struct {
	path       string // "" for ParseAliases: nothing to reload
	includeDir string
	logf       func(string)

	cur    atomic.Pointer[aliasesTable]
	reload *reloader // nil for ParseAliases
}

type aliasesTable struct {
	entries  map[string][]Target
	names    []string
	warnings []aliasesDiag
}

var aliasesEmpty = &aliasesTable{}

// aliasesDiag is one problem of a load. Warnings carry "warning: " in
// their message, as postalias(1) prints them, and do not fail the load.
type aliasesDiag struct {
	Diagnostic
	warning bool
}

// aliasesMaxDiags bounds the problems one load reports: a binary file
// given by mistake would otherwise log a line per line of junk.
const aliasesMaxDiags = 100

// aliasesError lists every problem of a load, one per line, so that an
// administrator fixes them all in one go rather than one per reload.
type aliasesError struct {
	diags []aliasesDiag
}

func (e *aliasesError) Error() string {
	lines := make([]string, len(e.diags))
	for i, d := range e.diags {
		lines[i] = d.String()
	}
	return strings.Join(lines, "\n")
}

// ParseAliases parses aliases(5) text. name is used in diagnostics
// ("/etc/aliases:12: message"). includeDir resolves relative :include:
// paths. It returns every problem found; a file with problems is still
// returned with the good entries (the caller decides), plus a non-nil error
// listing all problems.
//
// An entry with any bad value is left out entirely, because delivering to
// part of a list would lose mail silently. A duplicate name is a warning,
// not an error: like postalias(1), the first definition wins. Warnings are
// listed in the error only when there is an error anyway.
func ParseAliases(r io.Reader, name, includeDir string) (*Aliases, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := newAliasesParser(includeDir, aliasesReadInclude)
	tab := p.parse(data, name)
	a := &Aliases{}
	a.cur.Store(tab)
	return a, p.err()
}

// OpenAliases reads the file at path. On a later change (checked at most
// every AliasReloadInterval, by mtime and size of the file and of every
// :include: file, inside Lookup), it re-parses; if the new version has
// errors, it keeps the last good version and calls logf once with each
// "FILE:LINE: message". As with the tables of Open, a changed file is
// loaded only once the files have not changed for a second, and a file
// that became empty only once it has stayed empty for a second, so that a
// file caught half-written is not used.
//
// Relative :include: paths are resolved against the directory of path. If
// the file has problems, OpenAliases returns both the good entries and the
// error, as ParseAliases does; it returns a nil *Aliases only when path
// cannot be read. Warnings, such as duplicate entries, go to logf at every
// load. logf may be nil.
func OpenAliases(path string, logf func(string)) (*Aliases, error) {
	return openAliases(path, logf, reloadOptions{interval: AliasReloadInterval, coolDown: defaultCoolDown})
}

// openAliases is OpenAliases with the reload timings given.
func openAliases(path string, logf func(string), o reloadOptions) (*Aliases, error) {
	dir := filepath.Dir(path)
	if abs, err := filepath.Abs(dir); err == nil {
		// A later chdir must not move the include files.
		dir = abs
	}
	a := &Aliases{path: path, includeDir: dir, logf: logf, reload: &reloader{opts: o}}
	// At startup there is no previous version to fall back on, so
	// recently changed files are read anyway.
	tab, p, read, err := a.load(false)
	if err != nil {
		return nil, err
	}
	a.reload.took(read)
	a.cur.Store(tab)
	a.reload.schedule()
	for _, d := range tab.warnings {
		a.log(d.String())
	}
	return a, p.err()
}

// load parses the files afresh. err is set only when the file itself
// cannot be read; problems inside it are in p. As readStable does for a
// table, files that change while they are read are read again, a few
// times. With settled set, load fails with errBusy rather than parse files
// that may be half-written; settled requires a.reload.mu.
func (a *Aliases) load(settled bool) (*aliasesTable, *aliasesParser, []fileStamp, error) {
	for try := 0; ; try++ {
		tab, p, read, err := a.read()
		if err != nil {
			return nil, nil, read, err
		}
		stable := unchanged(read)
		if stable || try == 2 {
			if settled && !a.reload.settled(read, stable, time.Now()) {
				return nil, nil, nil, errBusy
			}
			return tab, p, read, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// read reads and parses the file and its includes once, and returns the
// stamps of what it read.
func (a *Aliases) read() (*aliasesTable, *aliasesParser, []fileStamp, error) {
	f, err := os.Open(a.path)
	if err != nil {
		return nil, nil, []fileStamp{{a.path, nil}}, err
	}
	defer f.Close()
	// Stat the open file before reading it, so that a write racing with
	// this load leaves a newer stamp behind and triggers another load.
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, []fileStamp{{a.path, nil}}, err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, nil, []fileStamp{{a.path, fi}}, err
	}
	p := newAliasesParser(a.includeDir, aliasesReadInclude)
	p.stamps = append(p.stamps, fileStamp{a.path, fi})
	tab := p.parse(data, a.path)
	return tab, p, p.stamps, nil
}

func (a *Aliases) log(msg string) {
	if a.logf != nil {
		a.logf(msg)
	}
}

// table returns the current version, reloading it first if it is due.
func (a *Aliases) table() *aliasesTable {
	if a.reload != nil {
		a.reload.poll(a.check)
	}
	if t := a.cur.Load(); t != nil {
		return t
	}
	return aliasesEmpty
}

// check reloads the files if they changed. A version that does not load
// is remembered, so that its problems are logged once rather than at
// every check. a.reload.mu must be held.
func (a *Aliases) check() {
	if !a.reload.stale(statFiles(a.reload.paths()), time.Now()) {
		return
	}
	tab, p, read, err := a.load(true)
	if err == errBusy {
		return
	}
	if err != nil {
		a.reload.rejected(read)
		a.log(Diagnostic{File: a.path, Msg: aliasesErrText(err)}.String())
		return
	}
	for _, d := range p.diags {
		a.log(d.String())
	}
	if p.failed {
		a.reload.rejected(read)
		return
	}
	a.cur.Store(tab)
	a.reload.took(read)
}

// Lookup returns the targets of name (case-insensitive, as local(8) folds
// case). ok is false when name has no alias.
//
// name is a bare local part, without quotes and without a domain; an
// address extension (user+ext) is not stripped here, because the caller
// knows the recipient delimiters and whether to retry without it.
func (a *Aliases) Lookup(name string) (targets []Target, ok bool) {
	t, ok := a.table().entries[aliasesFold(name)]
	// A copy: the stored slice is shared by every goroutine, and the
	// caller may well rewrite what it is given while expanding it.
	return slices.Clone(t), ok
}

// Owner returns the "owner-name" alias target address if present (local(8):
// errors about delivery to a mailing list alias go to owner-<name>, and the
// envelope sender becomes owner-<name>).
//
// When owner-<name> has exactly one target and it is an address, Owner
// returns that address (what Postfix does with expand_owner_alias = yes).
// Otherwise it returns "owner-<name>" itself, which is deliverable through
// this very alias, as Postfix does by default; the caller qualifies a bare
// name with its domain either way.
func (a *Aliases) Owner(name string) (string, bool) {
	owner := "owner-" + aliasesFold(name)
	t, ok := a.table().entries[owner]
	if !ok {
		return "", false
	}
	if len(t) == 1 && t[0].Kind == TargetAddress {
		return t[0].Value, true
	}
	return owner, true
}

// Names lists the alias names (sorted), for `larkpost map query` and tests.
// The names are lower-case and unquoted, as Lookup matches them.
func (a *Aliases) Names() []string {
	return slices.Clone(a.table().names)
}

// Path returns the file path ("" for parsed text).
func (a *Aliases) Path() string {
	return a.path
}

// aliasesFold folds case as local(8) does before the alias lookup.
func aliasesFold(s string) string {
	return strings.ToLower(s)
}

// aliasesErrText drops the operation and path from err when the
// diagnostic prints the path already.
func aliasesErrText(err error) string {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err.Error()
	}
	return err.Error()
}

// aliasesReadInclude reads an include file. Only regular files are
// accepted: a device or FIFO such as /dev/zero would hang the load.
func aliasesReadInclude(path string) ([]byte, fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fi, errors.New("not a regular file")
	}
	data, err := io.ReadAll(f)
	return data, fi, err
}

type aliasesParser struct {
	includeDir string
	// read is replaced by the fuzz test, which must not read the disk.
	read func(path string) ([]byte, fs.FileInfo, error)

	diags   []aliasesDiag
	seen    map[aliasesDiag]bool
	dropped int
	failed  bool // an error, not only warnings

	// includes caches the files of this load, so that a list included
	// by many aliases is read once and stamped once.
	includes map[string]aliasesInclude
	stamps   []fileStamp
}

type aliasesInclude struct {
	lines []string
	err   error
}

func newAliasesParser(includeDir string, read func(string) ([]byte, fs.FileInfo, error)) *aliasesParser {
	return &aliasesParser{
		includeDir: includeDir,
		read:       read,
		seen:       map[aliasesDiag]bool{},
		includes:   map[string]aliasesInclude{},
	}
}

func (p *aliasesParser) report(file string, line int, warning bool, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if warning {
		msg = "warning: " + msg
	} else {
		p.failed = true
	}
	d := aliasesDiag{Diagnostic{File: file, Line: line, Msg: msg}, warning}
	// A broken include file shared by several aliases is one problem.
	if p.seen[d] {
		return
	}
	p.seen[d] = true
	if len(p.diags) >= aliasesMaxDiags {
		p.dropped++
		return
	}
	p.diags = append(p.diags, d)
}

func (p *aliasesParser) err() error {
	if !p.failed {
		return nil
	}
	return &aliasesError{diags: p.diags}
}

// aliasesLogical is a logical line: a line and its continuation lines
// joined, with the physical line number of each part for diagnostics.
// It is built in buf because a list continued over thousands of lines
// must not be copied at each one.
type aliasesLogical struct {
	buf    strings.Builder
	text   string // buf's contents, once complete
	starts []int  // offset in text where each physical line begins
	lines  []int
	bad    bool // a physical line was rejected; skip the whole entry
}

func (l *aliasesLogical) lineAt(off int) int {
	i, found := slices.BinarySearch(l.starts, off)
	if !found {
		i--
	}
	return l.lines[max(i, 0)]
}

func (p *aliasesParser) parse(data []byte, name string) *aliasesTable {
	tab := &aliasesTable{entries: map[string][]Target{}}
	first := map[string]int{}
	var cur *aliasesLogical
	flush := func() {
		if cur != nil && !cur.bad {
			cur.text = cur.buf.String()
			p.entry(tab, first, cur, name)
		}
		cur = nil
	}
	for i, line := range aliasesLines(data) {
		lineNo := i + 1
		if i == 0 {
			line = strings.TrimPrefix(line, "\uFEFF")
		}
		trimmed := strings.TrimLeft(line, " \t")
		// aliases(5): blank lines and lines whose first non-whitespace
		// character is '#' are ignored, even inside a logical line.
		if trimmed == "" || trimmed[0] == '#' {
			continue
		}
		msg := aliasesCheckChars(line)
		if len(trimmed) < len(line) {
			// aliases(5): a line that starts with whitespace continues
			// the logical line.
			if cur == nil {
				p.report(name, lineNo, false, "continuation line without an alias before it")
				continue
			}
		} else {
			flush()
			cur = &aliasesLogical{}
		}
		if msg != "" {
			p.report(name, lineNo, false, "%s", msg)
			cur.bad = true
			continue
		}
		cur.starts = append(cur.starts, cur.buf.Len())
		cur.lines = append(cur.lines, lineNo)
		cur.buf.WriteString(line)
	}
	flush()
	if p.dropped > 0 {
		msg := fmt.Sprintf("%d more problems not shown", p.dropped)
		if !p.failed {
			msg = "warning: " + msg
		}
		p.diags = append(p.diags, aliasesDiag{Diagnostic{File: name, Msg: msg}, !p.failed})
	}
	for n := range tab.entries {
		tab.names = append(tab.names, n)
	}
	slices.Sort(tab.names)
	for _, d := range p.diags {
		if d.warning {
			tab.warnings = append(tab.warnings, d)
		}
	}
	return tab
}

// entry parses one "name: value, ..." logical line into tab.
func (p *aliasesParser) entry(tab *aliasesTable, first map[string]int, l *aliasesLogical, file string) {
	start := l.lines[0]
	colon, open := aliasesIndexUnquoted(l.text, ':')
	if colon < 0 {
		if open >= 0 {
			p.report(file, l.lineAt(open), false, "unterminated quote")
		} else {
			p.report(file, start, false, `missing ":" after alias name`)
		}
		return
	}
	rawName := strings.TrimSpace(l.text[:colon])
	name, bareSpace, bareAt := aliasesUnquote(rawName)
	switch {
	case name == "":
		p.report(file, start, false, "empty alias name")
		return
	case bareSpace:
		p.report(file, start, false, "unquoted space in alias name %q", rawName)
		return
	case bareAt:
		p.report(file, start, false, "alias name %q has a domain part; quote it or use the local part only", rawName)
		return
	}
	name = aliasesFold(name)

	var targets []Target
	ok := true
	values := 0
	done := map[string]bool{}
	aliasesSplit(l.text, colon+1, func(off int, raw string, unterminated bool) {
		values++
		line := l.lineAt(off)
		if unterminated {
			p.report(file, line, false, "unterminated quote")
			ok = false
			return
		}
		t, msg := aliasesParseValue(raw)
		if msg != "" {
			p.report(file, line, false, "%s", msg)
			ok = false
			return
		}
		if t.Kind == TargetInclude {
			got, good := p.include(t.Value, file, line, nil, done)
			targets = append(targets, got...)
			ok = ok && good
			return
		}
		targets = append(targets, t)
	})
	if values == 0 {
		p.report(file, start, false, "empty value list for %q", name)
		return
	}
	if prev, dup := first[name]; dup {
		p.report(file, start, true, "duplicate entry %q ignored, first defined on line %d", name, prev)
		return
	}
	first[name] = start
	switch {
	case ok && len(targets) > 0:
		tab.entries[name] = targets
	case ok:
		// A list whose include files are all empty is a state, not a
		// mistake, so the file still loads; the name is left out so
		// that mail to it bounces as unknown rather than vanishing.
		p.report(file, start, true, "alias %q ignored: its :include: files list no values", name)
	}
}

// include expands an :include: file referenced from file:line. stack holds
// the files being expanded, for cycle detection; done holds every file
// already expanded for this alias, so a list included twice is read once
// and cannot blow up exponentially.
func (p *aliasesParser) include(path, file string, line int, stack []string, done map[string]bool) ([]Target, bool) {
	if !filepath.IsAbs(path) {
		if p.includeDir == "" {
			p.report(file, line, false, ":include: file %q is relative and there is no include directory", path)
			return nil, false
		}
		path = filepath.Join(p.includeDir, path)
	}
	path = filepath.Clean(path)
	if i := slices.Index(stack, path); i >= 0 {
		p.report(file, line, false, ":include: cycle: %s -> %s", strings.Join(stack[i:], " -> "), path)
		return nil, false
	}
	if len(stack) >= aliasesMaxDepth {
		p.report(file, line, false, ":include: nested more than %d deep at %s", aliasesMaxDepth, path)
		return nil, false
	}
	if done[path] {
		return nil, true
	}
	done[path] = true

	inc, cached := p.includes[path]
	if !cached {
		data, fi, err := p.read(path)
		p.stamps = append(p.stamps, fileStamp{path, fi})
		inc.err = err
		if err == nil {
			inc.lines = aliasesLines(data)
		}
		p.includes[path] = inc
	}
	if inc.err != nil {
		p.report(file, line, false, ":include: file %q: %s", path, aliasesErrText(inc.err))
		return nil, false
	}

	stack = append(stack, path)
	var targets []Target
	ok := true
	for i, text := range inc.lines {
		lineNo := i + 1
		trimmed := strings.TrimSpace(text)
		if trimmed == "" || trimmed[0] == '#' {
			continue
		}
		if msg := aliasesCheckChars(text); msg != "" {
			p.report(path, lineNo, false, "%s", msg)
			ok = false
			continue
		}
		// aliases(5): include files have the syntax of the right-hand
		// side, so values are separated by commas as well as by lines.
		aliasesSplit(text, 0, func(_ int, raw string, unterminated bool) {
			if unterminated {
				p.report(path, lineNo, false, "unterminated quote")
				ok = false
				return
			}
			t, msg := aliasesParseValue(raw)
			if msg != "" {
				p.report(path, lineNo, false, "%s", msg)
				ok = false
				return
			}
			if t.Kind == TargetInclude {
				got, good := p.include(t.Value, path, lineNo, stack, done)
				targets = append(targets, got...)
				ok = ok && good
				return
			}
			// Postfix's allow_mail_to_commands / allow_mail_to_files
			// defaults ("alias, forward"): an include file is often
			// writable by a list owner, so it may not run commands or
			// write files as the mail system.
			if t.Kind == TargetPipe || t.Kind == TargetFile {
				p.report(path, lineNo, false, "commands and files are not allowed in :include: files")
				ok = false
				return
			}
			targets = append(targets, t)
		})
	}
	return targets, ok
}

// aliasesLines splits data into lines without their "\n" or "\r\n".
func aliasesLines(data []byte) []string {
	s := string(data)
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSuffix(l, "\r")
	}
	return lines
}

// aliasesCheckChars rejects what no address, path or command should hold,
// with the rules of addr.Parse, so that every address target passes them.
func aliasesCheckChars(s string) string {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			return "invalid UTF-8"
		case r == '\t':
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f):
			return "control character"
		}
		i += size
	}
	return ""
}

// aliasesIndexUnquoted returns the offset of the first c in s that is
// neither inside a quoted string nor escaped with a backslash, or -1; then
// open is the offset of a quote left unterminated, or -1.
func aliasesIndexUnquoted(s string, c byte) (idx, open int) {
	inQuote := false
	open = -1
	for i := 0; i < len(s); i++ {
		switch ch := s[i]; {
		case ch == '\\':
			i++
		case ch == '"':
			inQuote = !inQuote
			if inQuote {
				open = i
			}
		case ch == c && !inQuote:
			return i, -1
		}
	}
	if !inQuote {
		open = -1
	}
	return -1, open
}

// aliasesSplit calls f with each non-empty comma-separated value of
// s[from:], trimmed, and its offset in s. Empty values (a,,b or a trailing
// comma) are skipped as tok822 does. An unterminated quote ends the list
// with a call where unterminated is set and off is that of the quote.
func aliasesSplit(s string, from int, f func(off int, raw string, unterminated bool)) {
	for {
		rest := s[from:]
		i, open := aliasesIndexUnquoted(rest, ',')
		if i < 0 && open >= 0 {
			f(from+open, "", true)
			return
		}
		item := rest
		if i >= 0 {
			item = rest[:i]
		}
		if v := strings.TrimSpace(item); v != "" {
			f(from+len(item)-len(strings.TrimLeft(item, " \t")), v, false)
		}
		if i < 0 {
			return
		}
		from += i + 1
	}
}

// aliasesUnquote removes double quotes and backslash escapes, as tok822
// internalises an address, and reports whether s had whitespace or an '@'
// outside quotes.
func aliasesUnquote(s string) (out string, bareSpace, bareAt bool) {
	if !strings.ContainsAny(s, "\"\\") {
		return s, strings.ContainsAny(s, " \t"), strings.Contains(s, "@")
	}
	var b strings.Builder
	inQuote := false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '\\' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
			continue
		case ch == '"':
			inQuote = !inQuote
			continue
		case !inQuote && (ch == ' ' || ch == '\t'):
			bareSpace = true
		case !inQuote && ch == '@':
			bareAt = true
		}
		b.WriteByte(ch)
	}
	return b.String(), bareSpace, bareAt
}

const aliasesIncludePrefix = ":include:"

func aliasesHasInclude(s string) bool {
	return len(s) >= len(aliasesIncludePrefix) && strings.EqualFold(s[:len(aliasesIncludePrefix)], aliasesIncludePrefix)
}

// aliasesParseValue parses one trimmed right-hand-side value. On error it
// returns a message for the diagnostic.
func aliasesParseValue(raw string) (Target, string) {
	s := raw
	internal := false
	// An unquoted command or path is kept verbatim, quotes included, so
	// that |/bin/sh -c "a b" reaches the shell as written; only a value
	// quoted as a whole ("|cmd, with comma") is unquoted first.
	if s[0] != '|' && s[0] != '/' && !aliasesHasInclude(s) {
		if len(s) >= 2 && s[0] == '<' && s[len(s)-1] == '>' {
			s = strings.TrimSpace(s[1 : len(s)-1])
		}
		var bareSpace bool
		s, bareSpace, _ = aliasesUnquote(s)
		internal = true
		if bareSpace && s != "" && s[0] != '|' && s[0] != '/' && !aliasesHasInclude(s) {
			return Target{}, fmt.Sprintf("unquoted space in address %q; missing comma?", raw)
		}
	}
	switch {
	case strings.HasPrefix(s, "|"):
		cmd := strings.TrimSpace(s[1:])
		if cmd == "" {
			return Target{}, `empty command after "|"`
		}
		return Target{TargetPipe, cmd}, ""
	case strings.HasPrefix(s, "/"):
		return Target{TargetFile, s}, ""
	case aliasesHasInclude(s):
		path := strings.TrimSpace(s[len(aliasesIncludePrefix):])
		if !internal {
			path, _, _ = aliasesUnquote(path)
		}
		if path == "" {
			return Target{}, "empty :include: file name"
		}
		return Target{TargetInclude, path}, ""
	case s == "":
		return Target{}, "empty address"
	}
	if !strings.Contains(s, "@") && strings.Contains(s, "/") {
		// aliases(5) only knows /file/name; a relative path would
		// depend on the delivery agent's working directory.
		return Target{}, fmt.Sprintf("file name %q is not an absolute path", s)
	}
	check := s
	if !strings.Contains(s, "@") {
		check += "@localhost"
	}
	if _, err := addr.Parse(check); err != nil {
		return Target{}, fmt.Sprintf("bad address %q: %s", s, strings.TrimPrefix(err.Error(), addr.ErrSyntax.Error()+": "))
	}
	return Target{TargetAddress, s}, ""
}
