package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/mail"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/larkpost/larkpost/engine"
	"github.com/larkpost/larkpost/engine/maildrop"
	"github.com/larkpost/larkpost/rules"
	"github.com/larkpost/larkpost/stdlib/addr"
)

// The sendmail exit statuses of sysexits.h, which cron, PHP and every
// other caller of sendmail understand.
const (
	exUsage    = 64 // bad arguments or recipients
	exDataErr  = 65 // the message itself cannot be sent (too big, bad header)
	exTempFail = 75 // try again later: nothing was submitted
)

// invokedAs turns the name larkpost was started under into the arguments
// of run: like Postfix, one program is installed as sendmail, mailq and
// newaliases through links.
func invokedAs(argv0 string, args []string) []string {
	switch filepath.Base(argv0) {
	case "sendmail":
		return append([]string{"sendmail"}, args...)
	case "mailq":
		return append([]string{"queue", "list", "--limit", "0"}, args...)
	case "newaliases":
		return []string{"sendmail", "-bi"}
	}
	return args
}

// sendmailOpts is a parsed sendmail command line.
type sendmailOpts struct {
	config   string
	mode     byte // 'm' submit (the default), 's' SMTP on stdin, 'p' list the queue, 'i' aliases, 'q' flush
	extract  bool // -t
	dotEnds  bool // a lone "." ends the message; -i and -oi turn it off
	from     string
	hasFrom  bool // -f "" is the null sender, not "no -f"
	fullName string
	rcpts    []string
}

// sendmailArgOptions are the option letters that take an argument, as
// Postfix's sendmail has them plus -c for larkpost's config file.
const sendmailArgOptions = "BCFLNORVXbcefhopr"

// parseSendmailArgs reads sendmail's options by hand: "-oi", "-fADDR" and
// "-f ADDR" are all usual, which the flag package cannot express. Options
// that do not matter here are ignored as Postfix ignores them; parsing
// stops at the first argument that is not an option, as Postfix's does.
func parseSendmailArgs(args []string) (*sendmailOpts, error) {
	o := &sendmailOpts{config: os.Getenv("LARKPOST_CONFIG"), mode: 'm', dotEnds: true}
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			i++
			break
		}
		if len(a) < 2 || a[0] != '-' {
			break
		}
	cluster:
		for j := 1; j < len(a); j++ {
			c := a[j]
			if c == 'q' {
				// Bare -q flushes the queue; -q with an interval or a
				// selector is daemon business and ignored.
				if j == 1 && len(a) == 2 {
					o.mode = 'q'
				}
				break cluster
			}
			if !strings.ContainsRune(sendmailArgOptions, rune(c)) {
				switch c {
				case 't':
					o.extract = true
				case 'i':
					o.dotEnds = false
				case 'I':
					o.mode = 'i'
				case 'G', 'U', 'm', 'n', 'v', 'x':
				default:
					// Unknown: ignore the rest of the word rather than
					// guess whether the next one is its argument.
					break cluster
				}
				continue
			}
			val := a[j+1:]
			if val == "" {
				i++
				if i >= len(args) {
					return nil, fmt.Errorf("option -%c needs an argument", c)
				}
				val = args[i]
			}
			switch c {
			case 'c', 'C':
				o.config = val
			case 'f', 'r':
				o.from, o.hasFrom = val, true
			case 'F':
				o.fullName = val
			case 'o':
				if val == "i" {
					o.dotEnds = false
				}
			case 'b':
				switch val {
				case "m", "s", "p", "i":
					o.mode = val[0]
				case "d", "D":
					return nil, fmt.Errorf("-b%s is not supported: the server is `larkpost serve`", val)
				default:
					return nil, fmt.Errorf("-b%s is not supported", val)
				}
			}
			break cluster
		}
	}
	if i < len(args) {
		o.rcpts = args[i:]
	}
	return o, nil
}

func runSendmail(args []string, stdout, stderr io.Writer) int {
	// --help among the options: sendmail's -h is the hop count, so only
	// the long form asks for help.
	for _, a := range args {
		if a == "--" || !strings.HasPrefix(a, "-") {
			break
		}
		if a == "--help" {
			fmt.Fprintln(stdout, "usage: larkpost "+verbs["sendmail"].usage)
			return 0
		}
	}
	o, err := parseSendmailArgs(args)
	if err != nil {
		fmt.Fprintln(stderr, "larkpost sendmail: "+err.Error())
		return exUsage
	}
	var cfg []string
	if o.config != "" {
		cfg = []string{"-c", o.config}
	}
	switch o.mode {
	case 'p':
		return run(append([]string{"queue", "list", "--limit", "0"}, cfg...), stdout, stderr)
	case 'q':
		return run(append([]string{"queue", "flush", "--all"}, cfg...), stdout, stderr)
	case 'i':
		fmt.Fprintln(stdout, "newaliases: larkpost reads aliases directly; nothing to do")
		return 0
	}
	pol, ok := sendmailPolicy(o.config, stderr)
	if !ok {
		return exTempFail
	}
	if o.mode == 's' {
		return sendmailSMTP(pol, os.Stdin, stdout, stderr)
	}
	code, err := submit(o, pol, os.Stdin)
	if err != nil {
		fmt.Fprintln(stderr, "larkpost sendmail: "+err.Error())
	}
	return code
}

// sendmailPolicy loads the config for its settings. Its warnings are not
// printed: cron mails whatever sendmail prints, on every run.
func sendmailPolicy(file string, stderr io.Writer) (*rules.Policy, bool) {
	var out bytes.Buffer
	p, ok := loadPolicy(file, &out, nil)
	if !ok {
		first, _, _ := strings.Cut(strings.TrimSpace(out.String()), "\n")
		fmt.Fprintln(stderr, "larkpost sendmail: cannot load the config: "+strings.TrimPrefix(first, "larkpost: "))
	}
	return p, ok
}

// submit reads the message and leaves it in the maildrop. Nothing is
// printed on success: callers such as cron treat any output as a problem.
func submit(o *sendmailOpts, pol *rules.Policy, stdin io.Reader) (int, error) {
	set := pol.Settings
	me := invokingUser()
	sender := me.name + "@" + set.Origin
	if o.hasFrom {
		s, err := parseSender(o.from, set.Origin)
		if err != nil {
			return exUsage, err
		}
		sender = s
	}
	var rcpts []string
	for _, a := range o.rcpts {
		list, err := parseAddressList(a, set.Origin)
		if err != nil {
			return exUsage, fmt.Errorf("recipient %q: %w", a, err)
		}
		rcpts = append(rcpts, list...)
	}

	raw, err := readMessage(stdin, o.dotEnds, set.MessageSizeLimit)
	if errors.Is(err, errMessageTooBig) {
		return exDataErr, err
	}
	if err != nil {
		return exTempFail, fmt.Errorf("read the message: %w", err)
	}
	m := splitMessage(raw)
	if o.extract {
		fields := []string{"To", "Cc", "Bcc"}
		// RFC 5322 3.6.6: a resent message goes to its Resent- recipients.
		if m.has("Resent-To") || m.has("Resent-Cc") || m.has("Resent-Bcc") {
			fields = []string{"Resent-To", "Resent-Cc", "Resent-Bcc"}
		}
		for _, f := range fields {
			for _, v := range m.get(f) {
				list, err := parseAddressList(v, set.Origin)
				if err != nil {
					return exDataErr, fmt.Errorf("%s: header: %w", f, err)
				}
				rcpts = append(rcpts, list...)
			}
		}
	}
	rcpts = dedupe(rcpts)
	if len(rcpts) == 0 {
		return exUsage, errors.New("no recipients")
	}
	// Bcc is removed with or without -t, as Postfix's cleanup does: a
	// copy that names its blind recipients gives them away.
	m.remove("Bcc")
	m.remove("Resent-Bcc")

	now := time.Now()
	if !m.has("From") {
		name := o.fullName
		if name == "" && !o.hasFrom {
			name = me.fullName
		}
		from := sender
		if from == "" {
			from = "MAILER-DAEMON@" + set.Origin
		}
		m.add("From: " + (&mail.Address{Name: name, Address: from}).String())
	}
	if !m.has("Date") {
		m.add("Date: " + now.Format("Mon, 02 Jan 2006 15:04:05 -0700 (MST)"))
	}
	needID := !m.has("Message-Id")
	dir, err := filepath.Abs(filepath.Join(set.DataDir, "maildrop"))
	if err != nil {
		return exTempFail, err
	}
	for tries := 0; ; tries++ {
		env := &maildrop.Envelope{ID: maildrop.NewID(), Sender: sender, Rcpts: rcpts, UID: os.Getuid(), User: me.name, Time: now}
		msg := m
		if needID {
			// The id is in the Message-ID, as Postfix's is, so a retry
			// with another id gets its own.
			msg = m.with("Message-ID: <" + now.Format("20060102150405") + "." + env.ID + "@" + set.Hostname + ">")
		}
		b := msg.bytes()
		if size := crlfSize(b); size > set.MessageSizeLimit {
			return exDataErr, fmt.Errorf("%w: %d bytes as queued (message_size_limit is %d bytes)", errMessageTooBig, size, set.MessageSizeLimit)
		}
		_, err = maildrop.Write(dir, env, b)
		if errors.Is(err, maildrop.ErrExist) && tries < 3 {
			continue
		}
		if err != nil {
			return exTempFail, err
		}
		return 0, nil
	}
}

type localUser struct{ name, fullName string }

// invokingUser is who runs sendmail: the default sender, and the name
// recorded with the message (pickup trusts only the file's owner).
func invokingUser() localUser {
	if u, err := user.Current(); err == nil {
		full, _, _ := strings.Cut(u.Name, ",") // GECOS: the name, then office and phone
		return localUser{u.Username, full}
	}
	for _, v := range []string{"LOGNAME", "USER"} {
		if n := os.Getenv(v); n != "" {
			return localUser{name: n}
		}
	}
	return localUser{name: strconv.Itoa(os.Getuid())}
}

// parseSender reads -f: "" and "<>" are the null sender.
func parseSender(s, origin string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "<>" {
		return "", nil
	}
	list, err := parseAddressList(s, origin)
	if err != nil {
		return "", fmt.Errorf("sender %q: %w", s, err)
	}
	if len(list) != 1 {
		return "", fmt.Errorf("sender %q: not one address", s)
	}
	return list[0], nil
}

// addressParser reads header addresses; a display name in an unknown
// charset must not make its address unreadable.
var addressParser = &mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
}}

// parseAddressList reads a list of addresses as a header or an argument
// gives them, qualifying bare local parts with origin (myorigin) and
// checking each as the server will.
func parseAddressList(s, origin string) ([]string, error) {
	var raw []string
	if list, err := addressParser.ParseList(s); err == nil {
		for _, a := range list {
			raw = append(raw, a.Address)
		}
	} else {
		// net/mail wants a domain, and crontab's MAILTO=root has none.
		for _, part := range splitAddresses(s) {
			if part = strings.TrimSpace(part); part == "" {
				continue
			}
			if a, err := addressParser.Parse(part); err == nil {
				raw = append(raw, a.Address)
				continue
			}
			if i := strings.LastIndexByte(part, '<'); i >= 0 && strings.HasSuffix(part, ">") {
				part = part[i+1 : len(part)-1]
			}
			if !isLocalPart(part) {
				return nil, fmt.Errorf("bad address %q", part)
			}
			raw = append(raw, part)
		}
	}
	out := make([]string, 0, len(raw))
	for _, a := range raw {
		if !strings.Contains(a, "@") {
			a += "@" + origin
		}
		if _, err := addr.Parse(a); err != nil {
			return nil, fmt.Errorf("bad address %q: %w", a, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// splitAddresses splits a list at the commas outside quotes, comments
// and angle brackets.
func splitAddresses(s string) []string {
	var out []string
	quoted, esc, depth, angle, start := false, false, 0, false, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case esc:
			esc = false
		case c == '\\':
			esc = true
		case quoted:
			quoted = c != '"'
		case c == '"':
			quoted = true
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case c == '<' && depth == 0:
			angle = true
		case c == '>' && depth == 0:
			angle = false
		case c == ',' && depth == 0 && !angle:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

func isLocalPart(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-/=?^_`{|}~.", c) >= 0) {
			return false
		}
	}
	return true
}

// dedupe keeps the first of recipients that differ only in case, as
// Postfix's cleanup does, so nobody gets two copies.
func dedupe(rcpts []string) []string {
	seen := map[string]bool{}
	out := rcpts[:0]
	for _, r := range rcpts {
		if k := strings.ToLower(r); !seen[k] {
			seen[k] = true
			out = append(out, r)
		}
	}
	return out
}

var errMessageTooBig = errors.New("message too big")

// crlfSize is the message's size once queued with CRLF line endings,
// which is the size the server's limit applies to.
func crlfSize(b []byte) int64 {
	n := int64(len(b))
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			n++
		}
	}
	return n
}

// readMessage reads the message from stdin, refusing more than limit
// bytes before they are all in memory. Unless dotEnds is off (-i), a line
// holding only "." ends it, as with sendmail; lines are not unstuffed,
// since sendmail never stuffed them.
func readMessage(r io.Reader, dotEnds bool, limit int64) ([]byte, error) {
	br := bufio.NewReader(r)
	var buf bytes.Buffer
	lineStart := true
	for {
		chunk, err := br.ReadSlice('\n')
		if dotEnds && lineStart {
			if s := string(chunk); s == ".\n" || s == ".\r\n" || s == "." && err == io.EOF {
				return buf.Bytes(), nil
			}
		}
		buf.Write(chunk)
		if int64(buf.Len()) > limit {
			return nil, fmt.Errorf("%w (message_size_limit is %d bytes)", errMessageTooBig, limit)
		}
		switch err {
		case nil:
			lineStart = true
		case bufio.ErrBufferFull:
			lineStart = false // the rest of a long line follows
		case io.EOF:
			return buf.Bytes(), nil
		default:
			return nil, err
		}
	}
}

// message is a message split into header fields, so that fields can be
// added and removed without touching anything else, line endings included.
type message struct {
	fields [][]byte // each field with its continuation lines and line endings
	sep    []byte   // the empty line ending the header; nil when there is none
	body   []byte
	nl     string // the message's line ending, for added fields
}

func splitMessage(raw []byte) *message {
	m := &message{nl: "\n"}
	if i := bytes.IndexByte(raw, '\n'); i > 0 && raw[i-1] == '\r' {
		m.nl = "\r\n"
	}
	// A mailbox "From " line is not part of the message (Postfix drops it too).
	if bytes.HasPrefix(raw, []byte("From ")) {
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			raw = raw[i+1:]
		} else {
			raw = nil
		}
	}
	for len(raw) > 0 {
		end := bytes.IndexByte(raw, '\n') + 1
		if end == 0 {
			end = len(raw)
		}
		line := raw[:end]
		switch {
		case len(bytes.TrimRight(line, "\r\n")) == 0:
			m.sep, m.body = line, raw[end:]
			return m
		case (line[0] == ' ' || line[0] == '\t') && len(m.fields) > 0:
			m.fields[len(m.fields)-1] = append(m.fields[len(m.fields)-1], line...)
		case fieldName(line) != "":
			m.fields = append(m.fields, append([]byte(nil), line...))
		default:
			// Not a header: the body starts here, with no empty line
			// before it; bytes adds one.
			m.body = raw
			return m
		}
		raw = raw[end:]
	}
	return m
}

// fieldName returns the name of the header field line starts, or "".
func fieldName(line []byte) string {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return ""
	}
	for _, c := range line[:i] {
		if c < 33 || c > 126 {
			return ""
		}
	}
	return string(line[:i])
}

func (m *message) has(name string) bool { return len(m.get(name)) > 0 }

// get returns the unfolded values of the fields called name.
func (m *message) get(name string) []string {
	var out []string
	for _, f := range m.fields {
		if strings.EqualFold(fieldName(f), name) {
			v := string(f[len(name)+1:])
			v = strings.NewReplacer("\r\n", "", "\n", "", "\r", "").Replace(v)
			out = append(out, strings.TrimSpace(v))
		}
	}
	return out
}

func (m *message) remove(name string) {
	kept := m.fields[:0]
	for _, f := range m.fields {
		if !strings.EqualFold(fieldName(f), name) {
			kept = append(kept, f)
		}
	}
	m.fields = kept
}

// add appends a field at the end of the header.
func (m *message) add(field string) {
	if n := len(m.fields); n > 0 && !bytes.HasSuffix(m.fields[n-1], []byte("\n")) {
		m.fields[n-1] = append(m.fields[n-1], m.nl...)
	}
	m.fields = append(m.fields, []byte(field+m.nl))
}

// with is a copy of m with one more field.
func (m *message) with(field string) *message {
	c := *m
	c.fields = append([][]byte(nil), m.fields...)
	c.add(field)
	return &c
}

func (m *message) bytes() []byte {
	var b bytes.Buffer
	for _, f := range m.fields {
		b.Write(f)
	}
	switch {
	case m.sep != nil:
		b.Write(m.sep)
	case len(m.body) > 0:
		b.WriteString(m.nl)
	}
	b.Write(m.body)
	return b.Bytes()
}

// sendmailSMTP is -bs: an SMTP session on stdin and stdout, relayed to
// the running server's first listener. The server sees a client on the
// loopback address rather than a local user.
func sendmailSMTP(pol *rules.Policy, stdin io.Reader, stdout, stderr io.Writer) int {
	target, err := smtpTarget(pol)
	if err != nil {
		fmt.Fprintln(stderr, "larkpost sendmail: -bs: "+err.Error())
		return exTempFail
	}
	c, err := net.DialTimeout("tcp", target, 10*time.Second)
	if err != nil {
		fmt.Fprintln(stderr, "larkpost sendmail: -bs: no server answers: "+err.Error())
		return exTempFail
	}
	defer c.Close()
	go func() {
		io.Copy(c, stdin)
		// The server's answers to the last commands are still to come.
		if tc, ok := c.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}()
	io.Copy(stdout, c)
	return 0
}

// smtpTarget is where -bs connects: the first listener by name, at the
// address the running server reports (the config may say port 0), with
// a wildcard host replaced by the loopback address.
func smtpTarget(pol *rules.Policy) (string, error) {
	names := make([]string, 0, len(pol.Settings.Listen))
	for n := range pol.Settings.Listen {
		names = append(names, n)
	}
	if len(names) == 0 {
		return "", errors.New("the config has no listener")
	}
	sort.Strings(names)
	target := pol.Settings.Listen[names[0]]
	if dir, err := filepath.Abs(pol.Settings.DataDir); err == nil {
		// Only the server's own user may use the control socket; others
		// get the configured address.
		if rep, err := engine.Control(dir, engine.Request{Cmd: "status"}); err == nil && rep.Status != nil && rep.Status.Listeners[names[0]] != "" {
			target = rep.Status.Listeners[names[0]]
		}
	}
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return "", fmt.Errorf("listener %s: %w", names[0], err)
	}
	if port == "0" {
		return "", fmt.Errorf("listener %s is on port 0 and no server reports its port", names[0])
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port), nil
}
