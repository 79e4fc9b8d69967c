package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"unicode"

	"github.com/larkpost/larkpost/rules"
)

// runMan is `larkpost man [8|5]`: print larkpost(8) or larkpost.star(5)
// in roff, or with --install write both under DIR/man8 and DIR/man5. The
// pages are made from the same tables as --help, the completion script
// and the references: the verb table and each verb's flag set, the
// settings table, the hooks and the decision kinds of package rules.
func runMan(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("man", stderr)
	install := fs.Bool("install", false, "write larkpost.8 and larkpost.star.5 under DIR/man8 and DIR/man5 (DIR default "+manDir+")")
	if code, ok := parseFlags(fs, interleaved(args, fs.Lookup), stdout, stderr); !ok {
		return code
	}
	args = fs.Args()
	if *install {
		if extraArgs("man", args, 1, stderr) {
			return 2
		}
		dir := manDir
		if len(args) == 1 {
			dir = args[0]
		}
		return installManPages(dir, stdout, stderr)
	}
	if extraArgs("man", args, 1, stderr) {
		return 2
	}
	section := "8"
	if len(args) == 1 {
		section = args[0]
	}
	switch section {
	case "8":
		fmt.Fprint(stdout, manPage8())
	case "5":
		fmt.Fprint(stdout, manPage5())
	default:
		fmt.Fprintf(stderr, "larkpost man: no section %q (want 8, larkpost(8), or 5, larkpost.star(5)); usage: larkpost %s\n", section, manSynopsis())
		return 2
	}
	return 0
}

// manDir is where --install writes without a DIR: the local man tree
// that man(1) searches by default.
const manDir = "/usr/local/share/man"

func manSynopsis() string {
	syn, _, _ := strings.Cut(verbUsage("man"), "  ")
	return strings.TrimSpace(syn)
}

// installManPages writes DIR/man8/larkpost.8 and DIR/man5/larkpost.star.5,
// mode 0644, and says what it wrote.
func installManPages(dir string, stdout, stderr io.Writer) int {
	pages := []struct{ sub, name, text string }{
		{"man8", "larkpost.8", manPage8()},
		{"man5", "larkpost.star.5", manPage5()},
	}
	for _, p := range pages {
		d := filepath.Join(dir, p.sub)
		if err := os.MkdirAll(d, 0o755); err != nil {
			fmt.Fprintf(stderr, "larkpost man: %v\n", err)
			return 1
		}
		f := filepath.Join(d, p.name)
		if err := os.WriteFile(f, []byte(p.text), 0o644); err != nil {
			fmt.Fprintf(stderr, "larkpost man: %v\n", err)
			return 1
		}
		// WriteFile keeps the mode of an existing file and applies the
		// umask to a new one: the page must be readable by everyone.
		if err := os.Chmod(f, 0o644); err != nil {
			fmt.Fprintf(stderr, "larkpost man: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "wrote %s\n", f)
	}
	return 0
}

// roffWriter builds a man page, one input line at a time.
type roffWriter struct{ b strings.Builder }

// macro writes a request line; each argument is escaped, and quoted when
// it has blanks or is empty.
func (w *roffWriter) macro(name string, args ...string) {
	w.b.WriteString("." + name)
	for _, a := range args {
		e := roffEscape(a)
		if e == "" || strings.ContainsAny(e, " \t") {
			e = `"` + strings.ReplaceAll(e, `"`, `\(dq`) + `"`
		}
		w.b.WriteString(" " + e)
	}
	w.b.WriteString("\n")
}

// comment writes a roff comment line.
func (w *roffWriter) comment(s string) { w.b.WriteString(`.\" ` + roffEscape(s) + "\n") }

// raw writes already escaped text, a line each, so that no text line is
// taken for a request: a line that starts with '.' or '\” gets the
// zero-width \& before it, and a blank line (a break in roff) becomes \&.
func (w *roffWriter) raw(s string) {
	for _, line := range strings.Split(s, "\n") {
		if line == "" || line[0] == '.' || line[0] == '\'' {
			line = `\&` + line
		}
		w.b.WriteString(line + "\n")
	}
}

// text writes plain text, with `code` spans in bold.
func (w *roffWriter) text(s string) { w.raw(roffInline(strings.TrimSpace(s))) }

// code writes lines as they are, unfilled (an example).
func (w *roffWriter) code(s string) {
	w.macro("nf")
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		w.raw(roffEscape(line))
	}
	w.macro("fi")
}

func (w *roffWriter) String() string { return w.b.String() }

// roffEscape escapes text for roff: a backslash is \e, every hyphen is
// \- (options and code stay ASCII minus signs to copy and search), and
// characters beyond ASCII are named by their code point, so the page
// renders the same whatever encoding the formatter assumes.
func roffEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\e`)
		case r == '-':
			b.WriteString(`\-`)
		case r == '\t':
			b.WriteString(" ")
		case r > unicode.MaxASCII:
			fmt.Fprintf(&b, `\[u%04X]`, r)
		case r < ' ':
			// control characters have no place in a page
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// roffInline escapes s and sets its `code` spans (Markdown's backticks,
// as the doc texts write them) in bold.
func roffInline(s string) string {
	parts := strings.Split(s, "`")
	if len(parts)%2 == 0 { // an unpaired backtick: keep it
		return roffEscape(s)
	}
	var b strings.Builder
	for i, p := range parts {
		if i%2 == 1 {
			b.WriteString(bold(p))
		} else {
			b.WriteString(roffEscape(p))
		}
	}
	return b.String()
}

func bold(s string) string   { return `\fB` + roffEscape(s) + `\fR` }
func italic(s string) string { return `\fI` + roffEscape(s) + `\fR` }

// roffSynopsis sets a command line as man pages do: literal words and
// options in bold, placeholders (FILE, ID...) in italic, brackets and bars
// in roman.
func roffSynopsis(s string) string {
	var b strings.Builder
	word := func(w string) {
		if w == "" {
			return
		}
		hasUpper := strings.IndexFunc(w, unicode.IsUpper) >= 0
		hasLower := strings.IndexFunc(w, unicode.IsLower) >= 0
		if w[0] != '-' && hasUpper && !hasLower {
			b.WriteString(italic(w))
		} else {
			b.WriteString(bold(w))
		}
	}
	start := 0
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(" []|()", s[i]) >= 0 {
			word(s[start:i])
			b.WriteString(roffEscape(s[i : i+1]))
			start = i + 1
		}
	}
	word(s[start:])
	return b.String()
}

// sentenceCase capitalizes a one-line help text and ends it with a full
// stop; a text that starts with a name (a_setting, canonical(5)) stays.
func sentenceCase(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return s
	}
	if f := strings.Fields(s)[0]; s[0] >= 'a' && s[0] <= 'z' && !strings.ContainsAny(f, "_(.") {
		s = strings.ToUpper(s[:1]) + s[1:]
	}
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}

// manTH is the .TH line's version and date: the version set at link time
// or of the module, and the day of the commit it was built from, so that
// a page is the same wherever it is made from one binary.
func manTH() (ver, date string) {
	ver = "larkpost"
	bi, ok := debug.ReadBuildInfo()
	v := version
	if v == "" && ok && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	if v != "" {
		ver += " " + v
	}
	if ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.time" && len(s.Value) >= 10 {
				date = s.Value[:10]
			}
		}
	}
	return ver, date
}

// manVerbOrder is the order of the COMMANDS section: a first session's
// commands, then the operator's. A verb missing here comes after them.
var manVerbOrder = []string{"serve", "check", "config", "test", "trace", "map", "init", "queue", "reload", "status", "dkim", "sendmail", "completion", "man", "version", "help"}

func manVerbs() []string {
	var out, rest []string
	for _, n := range manVerbOrder {
		if _, ok := verbs[n]; ok {
			out = append(out, n)
		}
	}
	for n := range verbs {
		if !slices.Contains(out, n) {
			rest = append(rest, n)
		}
	}
	slices.Sort(rest)
	return append(out, rest...)
}

// manSubcommands is how a verb with sub-commands is asked for its flags:
// the sub-commands whose flag sets the page lists (queue's share one).
var manSubcommands = map[string][]string{
	"queue": {"list"},
	"map":   {"query"},
	"dkim":  {"keygen", "dns"},
}

// manFlag is one option of a verb, as the page lists it.
type manFlag struct{ name, arg, usage, def string }

// manFlagSet is the options of a verb, or of one of its sub-commands.
type manFlagSet struct {
	sub   string // "" for the verb itself, or for sub-commands that share the set
	flags []manFlag
}

// manFlagDefaults are defaults that depend on the machine (the environment,
// the host name) and so are described rather than taken from the flag.
var manFlagDefaults = map[string]string{
	"c":             "", // $LARKPOST_CONFIG: the usage says so
	"init hostname": "this host's name, lower-cased",
}

// verbManFlags asks a verb for its help with flagSetMade set, as the
// completion script and the CLI reference do, and returns the flags of
// the flag sets it made.
func verbManFlags(name string) []manFlagSet {
	if name == "sendmail" {
		return []manFlagSet{{flags: sendmailManFlags}}
	}
	subs, hasSubs := manSubcommands[name]
	if !hasSubs {
		subs = []string{""}
	}
	syn, _, _ := strings.Cut(verbUsage(name), "  ")
	syn = " " + syn
	var out []manFlagSet
	for _, sub := range subs {
		args := []string{"-h"}
		if sub != "" {
			args = []string{sub, "-h"}
		}
		var sets []*flag.FlagSet
		flagSetMade = func(fs *flag.FlagSet) { sets = append(sets, fs) }
		verbs[name].run(args, io.Discard, io.Discard)
		flagSetMade = nil
		set := manFlagSet{}
		if len(subs) > 1 {
			set.sub = sub
		}
		for _, fs := range sets {
			fs.VisitAll(func(f *flag.Flag) {
				arg, usage := flag.UnquoteUsage(f)
				dash := "--"
				if len(f.Name) == 1 || strings.Contains(syn, " -"+f.Name+" ") || strings.Contains(syn, "[-"+f.Name+" ") || strings.Contains(syn, "[-"+f.Name+"]") {
					dash = "-"
				}
				def := f.DefValue
				if def == "false" {
					def = ""
				}
				if d, ok := manFlagDefaults[f.Name]; ok {
					def = d
				}
				if d, ok := manFlagDefaults[name+" "+f.Name]; ok {
					def = d
				}
				set.flags = append(set.flags, manFlag{name: dash + f.Name, arg: arg, usage: usage, def: def})
			})
		}
		if len(set.flags) > 0 {
			out = append(out, set)
		}
	}
	return out
}

// sendmailManFlags are sendmail's options, which it parses itself as
// sendmail(1) does (TestManSendmailFlags keeps them in step with the CLI
// reference).
var sendmailManFlags = []manFlag{
	{name: "-c", arg: "FILE", usage: "config file; also -C FILE (default: $LARKPOST_CONFIG, else the embedded default)"},
	{name: "-t", usage: "also take recipients from To:, Cc: and Bcc: (the Resent- ones when present)"},
	{name: "-f", arg: "ADDR", usage: "the envelope sender; also -r ADDR (-f \"\" or -f \"<>\": the null sender; default LOGIN@origin)"},
	{name: "-F", arg: "NAME", usage: "the full name for an added From: (default: the user's GECOS name)"},
	{name: "-i", usage: "a line with a single . does not end the message; also -oi"},
	{name: "-bm", usage: "submit (the default)"},
	{name: "-bs", usage: "speak SMTP on stdin and stdout, relayed to the running server's first listener"},
	{name: "-bp", usage: "list the queue: larkpost queue list"},
	{name: "-bi", usage: "nothing to do (newaliases)"},
	{name: "-q", usage: "flush the queue: larkpost queue flush --all"},
}

// manExits is the EXIT STATUS section: what the CLI reference gives for
// each verb, gathered by status (TestManExitStatus checks it has them all).
var manExits = [][2]string{
	{"0", "success: the command did what it was asked (`check`: the config is valid; `test`: every test passed; `map query`: the key was found)."},
	{"1", "failure: the config has errors, a test failed, a key or message was not found, a file cannot be read or written, a listener cannot bind, or the server refused."},
	{"2", "usage: no command or an unknown one, bad flags, a missing or extra argument; for `queue`, `reload` and `status` also: no server is running."},
	{"3", "`import`: the config was written, but its report lists items that need hand work."},
	{"64", "`sendmail`: bad options or addresses, or no recipient (EX_USAGE)."},
	{"65", "`sendmail`: the message is over `message_size_limit`, or a header `-t` reads has a bad address (EX_DATAERR)."},
	{"75", "`sendmail`: the config cannot be loaded or the maildrop cannot be written (EX_TEMPFAIL); try again later."},
}

// manPage8 is larkpost(8): the command line.
func manPage8() string {
	var w roffWriter
	ver, date := manTH()
	w.comment("Code generated by larkpost man from the command table; DO NOT EDIT.")
	w.macro("TH", "LARKPOST", "8", date, ver, "System Manager's Manual")
	w.macro("nh") // no hyphenation: options and file names stay whole
	w.macro("ad", "l")
	w.macro("SH", "NAME")
	w.raw(`larkpost \- a mail router whose policy is Starlark code`)

	w.macro("SH", "SYNOPSIS")
	w.raw(bold("larkpost") + " " + italic("COMMAND") + " [" + italic("options") + "] [" + italic("arguments") + "]")
	for _, n := range manVerbs() {
		syn, _, _ := strings.Cut(verbs[n].usage, "  ")
		for _, alt := range strings.Split(strings.TrimSpace(syn), " | ") {
			w.macro("br")
			w.raw(bold("larkpost") + " " + roffSynopsis(strings.TrimSpace(alt)))
		}
	}

	w.macro("SH", "DESCRIPTION")
	w.text("larkpost receives mail over SMTP, queues it and delivers it by SMTP, LMTP, to mailboxes and to commands, as Postfix does; its policy is a Starlark script, the config file (larkpost.star(5)), whose hooks decide at each stage of a message.")
	w.macro("PP")
	w.text("Every command is `larkpost COMMAND [options]`. `-c FILE` names the config file; it defaults to `$LARKPOST_CONFIG`, else the embedded default config (SMTP on 127.0.0.1:2525, mail under `./larkpost-data`). Without `-c`, a lone argument ending in `.star` is the config file. Flags take one dash or two (`-json` is `--json`) and may come before or after the arguments; an argument a command does not take is an error.")
	w.macro("PP")
	w.text("`larkpost help`, `larkpost -h` and `larkpost --help` print the command list; `larkpost help COMMAND`, `larkpost COMMAND -h` and `larkpost COMMAND --help` print a command's usage and options (for `sendmail`, whose `-h` is the hop count, only `--help`). Linked as `sendmail`, `mailq` or `newaliases`, larkpost is that program.")

	w.macro("SH", "COMMANDS")
	for _, n := range manVerbs() {
		usage := verbs[n].usage
		syn, desc, _ := strings.Cut(usage, "  ")
		w.macro("SS", "larkpost "+n)
		for i, alt := range strings.Split(strings.TrimSpace(syn), " | ") {
			if i > 0 {
				w.macro("br")
			}
			w.raw(bold("larkpost") + " " + roffSynopsis(strings.TrimSpace(alt)))
		}
		w.macro("PP")
		w.text(sentenceCase(desc))
		for _, set := range verbManFlags(n) {
			if set.sub != "" {
				w.macro("PP")
				w.raw("Options of " + bold(n+" "+set.sub) + ":")
			}
			for _, f := range set.flags {
				w.macro("TP")
				head := bold(f.name)
				if f.arg != "" {
					head += " " + italic(f.arg)
				}
				w.raw(head)
				u := sentenceCase(f.usage)
				if f.def != "" {
					u = strings.TrimSuffix(u, ".") + " (default: " + f.def + ")."
				}
				w.raw(roffEscape(u))
			}
		}
	}

	w.macro("SH", "EXIT STATUS")
	w.text("Each command's statuses are in the CLI reference; in short:")
	for _, e := range manExits {
		w.macro("TP")
		w.raw(bold(e[0]))
		w.text(e[1])
	}

	w.macro("SH", "ENVIRONMENT")
	w.macro("TP")
	w.raw(bold("LARKPOST_CONFIG"))
	w.text("The config file, when `-c` is not given.")
	w.macro("TP")
	w.raw(bold("LARKPOST_CPUPROFILE"))
	w.text("For `serve`: a file to write a CPU profile to when it exits on a signal.")
	w.macro("TP")
	w.raw(bold("LARKPOST_MEMPROFILE"))
	w.text("For `serve`: a file to write a heap profile to when it exits on a signal.")
	w.macro("TP")
	w.raw(bold("LARKPOST_TRACE"))
	w.text("For `serve`: a file to write Go's execution trace of the whole run to, for `go tool trace`.")

	w.macro("SH", "FILES")
	files := [][2]string{
		{"larkpost.star", "The config file, named by `-c` or `$LARKPOST_CONFIG`: a Starlark script (larkpost.star(5)). Without one, the embedded default runs."},
		{"*_test.star", "Rule tests beside the config, run by `larkpost test`."},
		{"DATA_DIR", "The `data_dir` setting (default `./larkpost-data`): the queue, the state and the files below."},
		{"DATA_DIR/control.sock", "The control socket that `queue`, `reload` and `status` talk to (mode 0600, 0660 for `control_group`)."},
		{"DATA_DIR/maildrop/", "Where `sendmail` leaves messages for the server's pickup."},
		{manDir + "/man8/larkpost.8", "This page, written by `larkpost man --install`."},
		{manDir + "/man5/larkpost.star.5", "larkpost.star(5), written by `larkpost man --install`."},
		{"/etc/bash_completion.d/larkpost", "The bash completion script, `larkpost completion bash`."},
	}
	for _, f := range files {
		w.macro("TP")
		w.raw(italic(f[0]))
		w.text(f[1])
	}

	w.macro("SH", "SEE ALSO")
	w.raw(bold("larkpost.star") + "(5), " + bold("sendmail") + "(1), " + bold("postconf") + "(5), " + bold("postqueue") + "(1), " + bold("postsuper") + "(1)")
	w.macro("PP")
	w.text("The documentation in the source tree, `docs/`: the CLI reference (`docs/reference/cli.md`) has each command's description and exit statuses, the guides how to run a server (`docs/guide/operating.md`).")
	return w.String()
}

// manBinding words when a setting change takes effect, as the settings
// reference does.
func manBinding(b rules.Binding) string {
	switch b {
	case rules.BindRestart:
		return "at restart"
	case rules.BindSession:
		return "for new SMTP sessions"
	case rules.BindDelivery:
		return "at the next delivery"
	}
	return string(b)
}

// manHook documents one hook for larkpost.star(5): its signature, when it
// runs and what it returns. TestManHooks keeps it in step with the hooks
// of package rules and the hook reference.
type manHook struct{ sig, called, returns string }

var manHooks = map[string]manHook{
	"on_connect": {"on_connect(conn)", "after the connection limits and the client name lookup, before the banner", "a decision or None; a reject or defer answers 554 or 421 instead of the banner"},
	"on_helo":    {"on_helo(conn, name)", "at the first HELO/EHLO; a changed name is judged again at the next MAIL FROM", "a decision or None; a reject or defer refuses the HELO/EHLO"},
	"on_auth":    {"on_auth(conn, user, mechanism)", "after a successful AUTH login, before it counts", "a decision or None; a reject or defer refuses the login (use 535, 5.7.8)"},
	"on_mail":    {"on_mail(tx, sender)", "at MAIL FROM, after the syntax check", "a decision or None; a reject or defer refuses the sender"},
	"on_rcpt":    {"on_rcpt(tx, rcpt)", "at each RCPT TO, before the default policy", "a decision or None; a reject or defer refuses this recipient"},
	"on_data":    {"on_data(tx, msg)", "at the end of DATA or the last BDAT, after the size and bare-newline checks", "a decision or None; a reject or defer refuses the whole message"},
	"rewrite":    {"rewrite(addr, ctx)", "in cleanup, for the envelope sender, each recipient and each address in the sender and recipient header fields", "a new address, or None for the canonical maps and masquerade_domains"},
	"expand":     {"expand(rcpt)", "in cleanup, for each recipient after rewriting, and again for each address it returns", "a list of addresses, \"/files\" and \"|commands\", or None for virtual_alias_maps, then aliases and .forward"},
	"route":      {"route(rcpt, msg)", "at each delivery attempt, for each final address", "a transport string (\"smtp:[host]:587\", \"lmtp:unix:/path\", \"error:5.1.1 text\", ...), or None for transport_maps, then the default"},
	"file":       {"file(msg, user)", "at each delivery attempt to a local or virtual mailbox, before the user's filter script", "a folder name (\"Junk\", \"INBOX\"), forward(address), discard(), or None for the user's filter at filter_path, then the inbox"},

	"on_delivered": {"on_delivered(msg, rcpt, result)", "after a recipient was delivered and the result is on disk", "nothing that counts; a failure is logged"},
	"on_deferred":  {"on_deferred(msg, rcpt, result)", "after a delivery attempt failed temporarily; the message stays queued", "nothing that counts; a failure is logged"},
	"on_bounced":   {"on_bounced(msg, rcpt, result)", "after a recipient bounced (a permanent failure, or the queue lifetime ran out)", "nothing that counts; a failure is logged"},
}

// manDecision documents a decision builtin. TestManDecisions keeps the
// table in step with the decision kinds and the predeclared builtins.
type manDecision struct{ sig, doc string }

// manDecisions is keyed by the name of the builtin, which for the kinds
// of package rules is Kind.String().
var manDecisions = map[string]manDecision{
	"accept":   {"accept()", "Accepts at this stage: the connection, the sender, the recipient (even one the default policy would refuse as relaying) or the message."},
	"reject":   {`reject(text="Access denied", code=550, status="5.7.1")`, "Refuses with a permanent error, a 5xx code and a 5.x.x status (a status at the start of the text is taken as the status); `soft_bounce` turns it into a 4xx."},
	"defer":    {`defer(text="Try again later", code=451, status="4.7.1")`, "Refuses with a temporary error, a 4xx code and a 4.x.x status."},
	"discard":  {`discard(reason="")`, "Answers 250 and drops the whole message."},
	"hold":     {`hold(reason="")`, "Accepts the whole message into the hold queue, where it waits for `larkpost queue release`."},
	"warn":     {"warn(text)", "Effect: logs a warning line with the text and the stage."},
	"prepend":  {"prepend(header)", "Effect: adds the header line \"Name: value\" to the message."},
	"redirect": {"redirect(address)", "Effect: replaces all the message's recipients with the address."},
	"bcc":      {"bcc(address)", "Effect: adds the address as a recipient."},
	"sign":     {`sign(domain="")`, "Effect: DKIM-signs the message with the key of its From domain, or of the domain given; `sign(False)` leaves it unsigned. The last one of a transaction wins."},
	"forward":  {"forward(address)", "The same as redirect, for the file hook to return."},
	"access":   {"access(action)", "A Postfix access(5) action, the right-hand side of an access table (\"REJECT\", \"OK\", \"DUNNO\", \"550 text\", ...), as a decision: `return access(ACCESS.access(sender))`."},
}

// manDecisionOrder is the order of the DECISIONS section: the verdicts,
// the effects, then the others. The verdicts and effects come from the
// decision kinds; the rest are builtins that make them.
func manDecisionOrder() []string {
	var out []string
	for k := rules.Accept; k <= rules.Sign; k++ {
		out = append(out, k.String())
	}
	for _, n := range []string{"forward", "access"} {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

const manStarExample = `config(
    hostname = "mx.example.com",
    destinations = ["example.com"],
    networks = ["127.0.0.0/8", "192.0.2.0/24"],
    message_size_limit = "25MB",
)

BLOCKED = ["spam.example", "junk.example"]

def on_mail(tx, sender):
    if sender.domain in BLOCKED:
        return reject("5.7.1 sender domain blocked")
    return None

def on_data(tx, msg):
    if "viagra" in msg.subject.lower():
        return hold("looks like spam")
    return prepend("X-Checked-By: larkpost")
`

// manPage5 is larkpost.star(5): the config file.
func manPage5() string {
	var w roffWriter
	ver, date := manTH()
	w.comment("Code generated by larkpost man from the settings, hooks and decisions of package rules; DO NOT EDIT.")
	w.macro("TH", "LARKPOST.STAR", "5", date, ver, "File Formats Manual")
	w.macro("nh")
	w.macro("ad", "l")
	w.macro("SH", "NAME")
	w.raw(`larkpost.star \- larkpost configuration file`)

	w.macro("SH", "SYNOPSIS")
	w.raw(bold("config(") + italic("setting") + " = " + italic("value") + ", ...)")
	w.macro("br")
	w.raw(bold("def") + " " + italic("hook") + "(" + italic("arguments") + "): " + bold("return") + " " + italic("decision"))

	w.macro("SH", "DESCRIPTION")
	w.text("The config file of larkpost(8) is a Starlark script, a small dialect of Python. It calls `config(...)` with the settings below as keyword arguments, and defines hooks: functions with the names below that the server calls at each stage of a message. A hook returns a decision (`accept()`, `reject(...)`, ...), an effect (`warn(...)`, `prepend(...)`, ...) or None, which leaves the decision to the default policy: Postfix's, set by the settings. The file may `load()` other files, and has the stdlib modules predeclared (addr, re, dns, ...).")
	w.macro("PP")
	w.text("`larkpost serve -c FILE` runs it (or `$LARKPOST_CONFIG` names it); `larkpost check` validates it, errors as FILE:LINE:COL: message; `larkpost config` prints its settings as postconf(1) does; `larkpost test` runs the rule tests of its `*_test.star` files; `larkpost trace` shows what each hook decides for a message. `larkpost reload`, or SIGHUP, loads a changed file into the running server.")

	w.macro("SH", "SETTINGS")
	w.text("Durations are seconds (`300`) or strings (`\"90s\"`, `\"5m\"`, `\"1h\"`, `\"5d\"`, `\"1w\"`); sizes are bytes or strings with K, M, G (powers of 1024, `\"10MB\"`). Lists of domains, networks and users also accept one string separated by commas or spaces, as main.cf writes them, and so do lists of tables (`\"hash:/etc/postfix/virtual\"`); relative table paths are taken from the config file's directory. Ints have a minimum of 1 unless noted. Each setting says when a change takes effect after `larkpost reload`: at restart, for new SMTP sessions (and messages queued from then on), or at the next delivery (mail already queued included).")
	for _, d := range rules.SettingDocs() {
		w.macro("TP")
		w.raw(bold(d.Name) + " (" + italic(d.Type) + ")")
		w.text(sentenceCase(d.Doc))
		var facts []string
		if d.Default != "" {
			facts = append(facts, "Default: "+roffEscape(d.Default)+".")
		}
		facts = append(facts, "Takes effect "+manBinding(d.Binding)+".")
		if d.Postfix != "" {
			facts = append(facts, "Postfix: "+roffEscape(d.Postfix)+".")
		}
		w.macro("br")
		w.raw(strings.Join(facts, " "))
		if d.Example != "" {
			w.macro("br")
			w.raw("Example: " + bold(d.Example))
		}
	}

	w.macro("SH", "HOOKS")
	w.text("Every hook is optional: a hook that is missing, or returns None, leaves the decision to the default. `conn` is the client (ip, rdns, helo, tls, user, listener, in_networks), `tx` the mail transaction (conn, id, sender, rcpts), `msg` the message (header(), body, size, ...); `sender`, `rcpt` and `addr` are address values. Each call runs within the budget of hook_max_steps, hook_timeout and hook_max_memory; a hook that fails (an error, an overrun, a bad return value) never bounces or loses mail: the client gets 451 4.3.5 and retries, a failing route hook defers the delivery, and a failing file hook files to the inbox.")
	for _, name := range rules.HookNames() {
		h := manHooks[name]
		w.macro("TP")
		w.raw(bold(h.sig))
		w.text(sentenceCase("called " + h.called))
		w.text(sentenceCase("returns " + h.returns))
	}

	w.macro("SH", "DECISIONS AND EFFECTS")
	w.text("A decision ends the stage; an effect (warn, prepend, redirect, bcc, sign) changes the message or logs, and the stage goes on. discard and hold apply to the whole message at any stage. A bad argument is an error (in a hook: 451).")
	for _, name := range manDecisionOrder() {
		d := manDecisions[name]
		w.macro("TP")
		w.raw(bold(d.sig))
		w.text(d.doc)
	}

	w.macro("SH", "EXAMPLE")
	w.text("A server for example.com that relays for 192.0.2.0/24, refuses two sender domains and holds a kind of spam:")
	w.macro("PP")
	w.macro("RS", "4")
	w.code(manStarExample)
	w.macro("RE")
	w.macro("PP")
	w.text("`larkpost init DIR` writes a starter config and its tests for one of Debian's Postfix setups.")

	w.macro("SH", "FILES")
	w.macro("TP")
	w.raw(italic("larkpost.star"))
	w.text("The config file; any name works, given with `-c` or `$LARKPOST_CONFIG`.")
	w.macro("TP")
	w.raw(italic("*_test.star"))
	w.text("Rule tests beside it: functions named `test_*`, run by `larkpost test`.")

	w.macro("SH", "SEE ALSO")
	w.raw(bold("larkpost") + "(8), " + bold("postconf") + "(5), " + bold("access") + "(5), " + bold("aliases") + "(5)")
	w.macro("PP")
	w.text("The settings reference (`docs/reference/settings.md`), the hook reference (`docs/reference/hooks.md`) and the standard library (`docs/reference/stdlib/`) in the source tree.")
	return w.String()
}
