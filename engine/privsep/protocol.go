// Package privsep splits larkpost into a small privileged parent, which
// runs as root and does nothing but what needs another user's rights, and
// an unprivileged daemon (SMTP, queue, scheduler, running as mail_owner)
// that asks the parent over a socketpair. The parent runs a [Server], the
// daemon a [Client].
//
// # Protocol
//
// This section is the specification; the code follows it.
//
// Transport. One stream: a connected AF_UNIX SOCK_STREAM socketpair, the
// daemon's end a [Client], the parent's end a [Server]. It carries frames
// both ways. Requests go from the daemon to the parent, responses back.
// Several requests may be in flight; responses come in any order.
//
// Frame. A 4-byte big-endian unsigned length n, then n bytes of payload.
// 1 ≤ n ≤ [MaxPayload] (64 KiB) for a request, 1 ≤ n ≤
// [MaxResponsePayload] for a response (a response may carry [MaxData] of
// data plus its status texts). A frame out of these bounds is a protocol
// error: the stream cannot be trusted any more and the reader closes it.
//
// Request payload.
//
//	version  uint8   = 1 (Version); anything else closes the stream
//	id       uint32  big-endian, chosen by the client, echoed in the response
//	op       uint8   1 ReadForward, 2 DeliverMailbox, 3 DeliverFile, 4 RunPipe,
//	                 5 OpenDrop, 6 RunFilter
//	field*
//
// Response payload.
//
//	version  uint8   = 1
//	id       uint32  the request's id
//	field*
//
// Field. tag uint8, length uint32 big-endian, then length bytes of value.
// Fields appear in strictly increasing tag order, so each at most once;
// a tag the op does not have, a missing field, a repeated or out-of-order
// field, a length past the end of the payload and trailing bytes are all
// errors. The encoding of a request is therefore canonical: encoding a
// decoded request gives back the same bytes.
//
// Value types.
//
//	string  the bytes, no NUL byte; at most 4096 bytes unless said otherwise
//	line    a string without control characters (no byte < 0x20 nor 0x7f)
//	int     8 bytes, big-endian, as a signed value ≥ 0
//	path    a string that is absolute and clean (filepath.Clean(p) == p), not "/"
//	user    matches ^[a-z_][a-z0-9_.-]{0,31}$, or is #UID:GID (decimal
//	        numbers, each 1..2^31-1: an owner from virtual_uid_maps)
//	argv    uint8 count (1..64), then per word: uint16 big-endian length
//	        (≤ 4096) and the word, no NUL; the first word not empty
//
// Request tags.
//
//	 1 User       user
//	 2 Path       path  (DeliverMailbox: the mailbox; a trailing "/" means
//	                     a Maildir, the rest must be a path)
//	 3 Folder     line, ≤ 255 bytes, "" = the inbox
//	 4 QueueID    line of printable ASCII without space, ≤ 64 bytes
//	 5 Sender     line, "" = the null sender <>
//	 6 Rcpt       line, not empty
//	 7 OrigRcpt   line, "" = Rcpt
//	 8 SizeLimit  int, bytes, 0 = no limit
//	 9 Command    string, ≤ 32 KiB, not empty: run with /bin/sh -c
//	10 Argv       argv: run without a shell
//	11 Timeout    int, nanoseconds, ≤ 24h, 0 = the server's default
//	12 Dir        "" or an absolute clean path (here "/" is allowed)
//
// Ops and their fields, every one required unless said otherwise.
//
//	1 ReadForward     User Path
//	2 DeliverMailbox  User Path Folder QueueID Sender Rcpt OrigRcpt SizeLimit
//	3 DeliverFile     User Path QueueID Sender Rcpt OrigRcpt SizeLimit
//	4 RunPipe         User Sender Rcpt OrigRcpt SizeLimit (exactly one of
//	                  Command, Argv) Timeout Dir
//	5 OpenDrop        Path
//	6 RunFilter       User Path Timeout
//
// Body. DeliverMailbox, DeliverFile and RunPipe come with the message
// body, RunFilter with the filter child's input (see FilterInput): exactly one file descriptor of a regular file, opened for reading,
// sent with SCM_RIGHTS in the same sendmsg(2) as the first byte of the
// request's frame. The parent counts the descriptors received while it
// reads that frame: a delivery op with none or with more than one, or any
// other op with one, is refused (and every descriptor received is
// closed). The parent reads the body with pread(2) from offset 0 to the
// size fstat(2) gives when the request arrives, and closes the
// descriptor when the op ends. The client passes an unlinked temporary
// file, so nothing is left behind.
//
// Response tags, every one always present.
//
//	1 Code      2 bytes, big-endian: the SMTP reply code, 0 or 200..599
//	2 Enhanced  the RFC 3463 status, "2.0.0", "4.3.0", "5.2.2"; "" only with Err
//	3 Text      ≤ 4096 bytes, the status text
//	4 Data      ≤ 64 KiB: ReadForward's content, RunFilter's filing, else empty
//	5 Errno     4 bytes, big-endian: the errno behind Err when there is one, else 0
//	6 Err       ≤ 4096 bytes, why the op failed, "" when it did not fail
//
// A request the parent cannot decode is answered, when its id can be read,
// with Enhanced 4.3.0 and Err; when not, the parent closes the stream.
// A request for root, or for any account with uid 0 or group 0, is
// refused the same way. The parent runs every op with the rights of the
// request's user: ReadForward and the deliveries with the user's fsuid,
// fsgid and groups (postfix.Account.Do), RunPipe as a process of the
// user, RunFilter as a filter child of the user (FilterChild) whose
// standard input is the body. When the stream ends the parent cancels the commands still
// running; when the parent goes away every pending and later call of the
// client fails with a temporary status (4.3.0).
package privsep

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/larkpost/larkpost/engine/deliver"
)

// Limits of the protocol.
const (
	// Version is the protocol version, the first byte of every payload.
	Version = 1
	// MaxPayload bounds a request's payload.
	MaxPayload = 64 << 10
	// MaxData bounds ReadForward's content in a response (as much as
	// postfix.ReadForward reads).
	MaxData = 64 << 10
	// MaxText bounds a response's Text and Err.
	MaxText = 4096
	// MaxResponsePayload bounds a response's payload: MaxData plus the
	// status, with room to spare.
	MaxResponsePayload = MaxData + 16<<10
	// MaxString bounds a string field unless said otherwise.
	MaxString = 4096
	// MaxCommand bounds RunPipe's Command.
	MaxCommand = 32 << 10
	// MaxArgv bounds the words of RunPipe's Argv, MaxWord each word.
	MaxArgv = 64
	MaxWord = 4096
	// MaxTimeout bounds RunPipe's Timeout.
	MaxTimeout = 24 * time.Hour

	maxFolder  = 255
	maxQueueID = 64
	maxEnh     = 16
)

// Op names an operation.
type Op uint8

// The operations.
const (
	OpReadForward    Op = 1
	OpDeliverMailbox Op = 2
	OpDeliverFile    Op = 3
	OpRunPipe        Op = 4
	OpOpenDrop       Op = 5
	OpRunFilter      Op = 6
)

func (o Op) String() string {
	switch o {
	case OpReadForward:
		return "ReadForward"
	case OpDeliverMailbox:
		return "DeliverMailbox"
	case OpDeliverFile:
		return "DeliverFile"
	case OpRunPipe:
		return "RunPipe"
	case OpOpenDrop:
		return "OpenDrop"
	case OpRunFilter:
		return "RunFilter"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// HasBody reports whether the op comes with a message body (a file
// descriptor).
func (o Op) HasBody() bool {
	return o == OpDeliverMailbox || o == OpDeliverFile || o == OpRunPipe || o == OpRunFilter
}

// ReadForward asks for User's .forward at Path, read with the user's
// rights and postfix.ReadForward's checks.
type ReadForward struct {
	User string
	Path string
}

// DeliverMailbox asks to write the body into a mailbox with User's rights
// (local.Deliver): Mailbox is a Maildir when it ends in "/", else an mbox
// file; Folder a Maildir++ folder or an mbox file beside it ("" the inbox).
type DeliverMailbox struct {
	User      string
	Mailbox   string
	Folder    string
	QueueID   string
	Sender    string
	Rcpt      string
	OrigRcpt  string
	SizeLimit int64
}

// DeliverFile asks to append the body in mbox format to a file named by
// an alias or a .forward, with User's rights.
type DeliverFile struct {
	User      string
	Path      string
	QueueID   string
	Sender    string
	Rcpt      string
	OrigRcpt  string
	SizeLimit int64
}

// RunPipe asks to run a command as User with the body on its standard
// input (local.DeliverPipe): Argv without a shell, else Command with
// /bin/sh -c.
type RunPipe struct {
	User     string
	Command  string
	Argv     []string
	Sender   string
	Rcpt     string
	OrigRcpt string
	// SizeLimit is the largest file the command may write
	// (RLIMIT_FSIZE, from mailbox_size_limit); 0 = no limit.
	SizeLimit int64
	Timeout   time.Duration // 0: the server's default
	Dir       string        // working directory; "" = /
}

// OpenDrop asks for a maildrop file the daemon cannot read (another
// user's `larkpost sendmail` wrote it, mode 0600), opened read-only by the
// parent and passed back as a descriptor: only a regular file with one
// link directly in the maildrop directory the parent was given
// (Server.DropDir), never followed through a symbolic link.
type OpenDrop struct {
	Path string
}

// RunFilter asks to run a user's filter script in a filter child of
// User, killed Timeout (plus a grace) after it starts: its input is the
// body, its filing the response's Data. A Path that does not exist for
// User (stat with the user's rights) spares the child.
type RunFilter struct {
	User string
	// Path is the script: when it does not exist for User, no child is
	// started (the answer is the inbox).
	Path    string
	Timeout time.Duration
}

// Request is one decoded request: its id and exactly one op.
type Request struct {
	ID             uint32
	ReadForward    *ReadForward
	DeliverMailbox *DeliverMailbox
	DeliverFile    *DeliverFile
	RunPipe        *RunPipe
	OpenDrop       *OpenDrop
	RunFilter      *RunFilter
}

// Op is the request's operation, 0 when it has none or several.
func (r *Request) Op() Op {
	var op Op
	n := 0
	if r.ReadForward != nil {
		op, n = OpReadForward, n+1
	}
	if r.DeliverMailbox != nil {
		op, n = OpDeliverMailbox, n+1
	}
	if r.DeliverFile != nil {
		op, n = OpDeliverFile, n+1
	}
	if r.RunPipe != nil {
		op, n = OpRunPipe, n+1
	}
	if r.OpenDrop != nil {
		op, n = OpOpenDrop, n+1
	}
	if r.RunFilter != nil {
		op, n = OpRunFilter, n+1
	}
	if n != 1 {
		return 0
	}
	return op
}

// User is the account the request runs as.
func (r *Request) User() string {
	switch r.Op() {
	case OpReadForward:
		return r.ReadForward.User
	case OpDeliverMailbox:
		return r.DeliverMailbox.User
	case OpDeliverFile:
		return r.DeliverFile.User
	case OpRunPipe:
		return r.RunPipe.User
	case OpRunFilter:
		return r.RunFilter.User
	}
	return ""
}

// Request field tags.
const (
	tagUser      = 1
	tagPath      = 2
	tagFolder    = 3
	tagQueueID   = 4
	tagSender    = 5
	tagRcpt      = 6
	tagOrigRcpt  = 7
	tagSizeLimit = 8
	tagCommand   = 9
	tagArgv      = 10
	tagTimeout   = 11
	tagDir       = 12
)

var tagNames = [...]string{"", "User", "Path", "Folder", "QueueID", "Sender", "Rcpt", "OrigRcpt", "SizeLimit", "Command", "Argv", "Timeout", "Dir"}

func bit(tags ...int) uint32 {
	var m uint32
	for _, t := range tags {
		m |= 1 << t
	}
	return m
}

// The fields of each op: all required, except that RunPipe has exactly
// one of Command and Argv.
var opFields = map[Op]uint32{
	OpReadForward:    bit(tagUser, tagPath),
	OpDeliverMailbox: bit(tagUser, tagPath, tagFolder, tagQueueID, tagSender, tagRcpt, tagOrigRcpt, tagSizeLimit),
	OpDeliverFile:    bit(tagUser, tagPath, tagQueueID, tagSender, tagRcpt, tagOrigRcpt, tagSizeLimit),
	OpRunPipe:        bit(tagUser, tagSender, tagRcpt, tagOrigRcpt, tagSizeLimit, tagTimeout, tagDir),
	OpOpenDrop:       bit(tagPath),
	OpRunFilter:      bit(tagUser, tagPath, tagTimeout),
}

const pipeCommand = 1<<tagCommand | 1<<tagArgv

var errTruncated = errors.New("truncated")

func decodeErr(format string, args ...any) error {
	return fmt.Errorf("privsep: decode: "+format, args...)
}

// field is one tag-length-value of a payload.
type field struct {
	tag byte
	val []byte
}

// fields splits b into fields, in strictly increasing tag order.
func fields(b []byte) ([]field, error) {
	var out []field
	last := -1
	for len(b) > 0 {
		if len(b) < 5 {
			return nil, decodeErr("field header: %v", errTruncated)
		}
		tag, n := b[0], binary.BigEndian.Uint32(b[1:5])
		b = b[5:]
		if uint64(n) > uint64(len(b)) {
			return nil, decodeErr("field %d: length %d past the end", tag, n)
		}
		if int(tag) <= last {
			return nil, decodeErr("field %d: repeated or out of order", tag)
		}
		last = int(tag)
		out = append(out, field{tag, b[:n:n]})
		b = b[n:]
	}
	return out, nil
}

// Decode reads a request payload (without the frame's length). It never
// panics, and it accepts only what Encode writes.
func Decode(payload []byte) (*Request, error) {
	if len(payload) > MaxPayload {
		return nil, decodeErr("payload of %d bytes is larger than %d", len(payload), MaxPayload)
	}
	if len(payload) < 6 {
		return nil, decodeErr("header: %v", errTruncated)
	}
	if payload[0] != Version {
		return nil, decodeErr("version %d, want %d", payload[0], Version)
	}
	id := binary.BigEndian.Uint32(payload[1:5])
	op := Op(payload[5])
	want, ok := opFields[op]
	if !ok {
		return nil, decodeErr("unknown op %d", payload[5])
	}
	fs, err := fields(payload[6:])
	if err != nil {
		return nil, err
	}
	var (
		v    values
		seen uint32
	)
	for _, f := range fs {
		allowed := want
		if op == OpRunPipe {
			allowed |= pipeCommand
		}
		if f.tag >= 32 || allowed&(1<<f.tag) == 0 {
			return nil, decodeErr("%v has no field %d", op, f.tag)
		}
		seen |= 1 << f.tag
		if err := v.set(op, f); err != nil {
			return nil, decodeErr("%s: %v", tagNames[f.tag], err)
		}
	}
	if missing := want &^ seen; missing != 0 {
		return nil, decodeErr("%v: missing %s", op, names(missing))
	}
	if op == OpRunPipe {
		switch seen & pipeCommand {
		case 0:
			return nil, decodeErr("RunPipe: missing Command or Argv")
		case pipeCommand:
			return nil, decodeErr("RunPipe: both Command and Argv")
		}
	}
	r := &Request{ID: id}
	switch op {
	case OpReadForward:
		r.ReadForward = &ReadForward{User: v.user, Path: v.path}
	case OpDeliverMailbox:
		r.DeliverMailbox = &DeliverMailbox{User: v.user, Mailbox: v.path, Folder: v.folder, QueueID: v.queueID,
			Sender: v.sender, Rcpt: v.rcpt, OrigRcpt: v.origRcpt, SizeLimit: v.sizeLimit}
	case OpDeliverFile:
		r.DeliverFile = &DeliverFile{User: v.user, Path: v.path, QueueID: v.queueID,
			Sender: v.sender, Rcpt: v.rcpt, OrigRcpt: v.origRcpt, SizeLimit: v.sizeLimit}
	case OpRunPipe:
		r.RunPipe = &RunPipe{User: v.user, Command: v.command, Argv: v.argv, Sender: v.sender, Rcpt: v.rcpt,
			OrigRcpt: v.origRcpt, SizeLimit: v.sizeLimit, Timeout: v.timeout, Dir: v.dir}
	case OpOpenDrop:
		r.OpenDrop = &OpenDrop{Path: v.path}
	case OpRunFilter:
		r.RunFilter = &RunFilter{User: v.user, Path: v.path, Timeout: v.timeout}
	}
	return r, nil
}

func names(mask uint32) string {
	var out []string
	for t := range tagNames {
		if t > 0 && mask&(1<<t) != 0 {
			out = append(out, tagNames[t])
		}
	}
	return strings.Join(out, ", ")
}

// values are the decoded fields of a request.
type values struct {
	user, path, folder, queueID     string
	sender, rcpt, origRcpt, command string
	dir                             string
	argv                            []string
	sizeLimit                       int64
	timeout                         time.Duration
}

func (v *values) set(op Op, f field) error {
	var err error
	s := string(f.val)
	switch f.tag {
	case tagUser:
		v.user, err = s, checkUser(s)
	case tagPath:
		if op == OpDeliverMailbox {
			err = checkMailbox(s)
		} else {
			err = checkPath(s)
		}
		v.path = s
	case tagFolder:
		v.folder, err = s, checkLine(s, maxFolder)
	case tagQueueID:
		v.queueID, err = s, checkQueueID(s)
	case tagSender:
		v.sender, err = s, checkLine(s, MaxString)
	case tagRcpt:
		v.rcpt, err = s, checkLine(s, MaxString)
		if err == nil && s == "" {
			err = errors.New("empty")
		}
	case tagOrigRcpt:
		v.origRcpt, err = s, checkLine(s, MaxString)
	case tagSizeLimit:
		var n int64
		n, err = decodeInt(f.val, 1<<62)
		v.sizeLimit = n
	case tagCommand:
		v.command, err = s, checkString(s, MaxCommand)
		if err == nil && s == "" {
			err = errors.New("empty")
		}
	case tagArgv:
		v.argv, err = decodeArgv(f.val)
	case tagTimeout:
		var n int64
		n, err = decodeInt(f.val, int64(MaxTimeout))
		v.timeout = time.Duration(n)
	case tagDir:
		v.dir = s
		if s != "" && s != "/" {
			err = checkPath(s)
		}
	default:
		err = errors.New("unknown field")
	}
	return err
}

func decodeInt(b []byte, max int64) (int64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%d bytes, want 8", len(b))
	}
	u := binary.BigEndian.Uint64(b)
	if u > uint64(max) {
		return 0, fmt.Errorf("%d is out of range (0..%d)", u, max)
	}
	return int64(u), nil
}

func decodeArgv(b []byte) ([]string, error) {
	if len(b) < 1 {
		return nil, errTruncated
	}
	n := int(b[0])
	if n < 1 || n > MaxArgv {
		return nil, fmt.Errorf("%d words, want 1..%d", n, MaxArgv)
	}
	b = b[1:]
	argv := make([]string, 0, n)
	for i := range n {
		if len(b) < 2 {
			return nil, fmt.Errorf("word %d: %v", i, errTruncated)
		}
		l := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		if l > MaxWord {
			return nil, fmt.Errorf("word %d: %d bytes, more than %d", i, l, MaxWord)
		}
		if l > len(b) {
			return nil, fmt.Errorf("word %d: %v", i, errTruncated)
		}
		w := string(b[:l])
		if strings.IndexByte(w, 0) >= 0 {
			return nil, fmt.Errorf("word %d: NUL byte", i)
		}
		argv = append(argv, w)
		b = b[l:]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%d bytes after the last word", len(b))
	}
	if argv[0] == "" {
		return nil, errors.New("empty command name")
	}
	return argv, nil
}

func checkString(s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%d bytes, more than %d", len(s), max)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return errors.New("NUL byte")
	}
	return nil
}

func checkLine(s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%d bytes, more than %d", len(s), max)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return fmt.Errorf("control character %#x", c)
		}
	}
	return nil
}

func checkQueueID(s string) error {
	if len(s) > maxQueueID {
		return fmt.Errorf("%d bytes, more than %d", len(s), maxQueueID)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= 0x20 || c >= 0x7f {
			return fmt.Errorf("byte %#x", c)
		}
	}
	return nil
}

// checkUser accepts ^[a-z_][a-z0-9_.-]{0,31}$ and #UID:GID.
func checkUser(s string) error {
	if _, _, ok := NumericUser(s); ok {
		return nil
	}
	if len(s) < 1 || len(s) > 32 {
		return fmt.Errorf("user name of %d bytes", len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c == '_' || i > 0 && (c >= '0' && c <= '9' || c == '.' || c == '-')
		if !ok {
			return fmt.Errorf("user name %q: bad byte %#x", s, c)
		}
	}
	return nil
}

// checkPath accepts an absolute, clean path other than "/".
func checkPath(s string) error {
	if err := checkString(s, MaxString); err != nil {
		return err
	}
	switch {
	case !filepath.IsAbs(s):
		return fmt.Errorf("%q is not absolute", s)
	case filepath.Clean(s) != s:
		return fmt.Errorf("%q is not clean", s)
	case s == "/":
		return errors.New(`"/" is not a file`)
	}
	return nil
}

// checkMailbox accepts a path, or a path and "/" (a Maildir).
func checkMailbox(s string) error {
	if p, ok := strings.CutSuffix(s, "/"); ok {
		if err := checkPath(p); err != nil {
			return fmt.Errorf("maildir %q: %v", s, err)
		}
		return nil
	}
	return checkPath(s)
}

// Encode writes the request's payload. It fails, rather than write what
// Decode would refuse, when the request has not exactly one op or a field
// is out of bounds.
func (r *Request) Encode() ([]byte, error) {
	b := []byte{Version, 0, 0, 0, 0, byte(r.Op())}
	binary.BigEndian.PutUint32(b[1:], r.ID)
	str := func(tag byte, s string) { b = appendField(b, tag, []byte(s)) }
	num := func(tag byte, n int64) { b = appendField(b, tag, binary.BigEndian.AppendUint64(nil, uint64(n))) }
	switch r.Op() {
	case OpReadForward:
		o := r.ReadForward
		str(tagUser, o.User)
		str(tagPath, o.Path)
	case OpDeliverMailbox:
		o := r.DeliverMailbox
		str(tagUser, o.User)
		str(tagPath, o.Mailbox)
		str(tagFolder, o.Folder)
		str(tagQueueID, o.QueueID)
		str(tagSender, o.Sender)
		str(tagRcpt, o.Rcpt)
		str(tagOrigRcpt, o.OrigRcpt)
		num(tagSizeLimit, o.SizeLimit)
	case OpDeliverFile:
		o := r.DeliverFile
		str(tagUser, o.User)
		str(tagPath, o.Path)
		str(tagQueueID, o.QueueID)
		str(tagSender, o.Sender)
		str(tagRcpt, o.Rcpt)
		str(tagOrigRcpt, o.OrigRcpt)
		num(tagSizeLimit, o.SizeLimit)
	case OpRunPipe:
		o := r.RunPipe
		str(tagUser, o.User)
		str(tagSender, o.Sender)
		str(tagRcpt, o.Rcpt)
		str(tagOrigRcpt, o.OrigRcpt)
		num(tagSizeLimit, o.SizeLimit)
		if len(o.Argv) > 0 {
			if len(o.Argv) > MaxArgv {
				return nil, fmt.Errorf("privsep: encode: %d argv words, more than %d", len(o.Argv), MaxArgv)
			}
			a := []byte{byte(len(o.Argv))}
			for _, w := range o.Argv {
				if len(w) > MaxWord {
					return nil, fmt.Errorf("privsep: encode: argv word of %d bytes, more than %d", len(w), MaxWord)
				}
				a = binary.BigEndian.AppendUint16(a, uint16(len(w)))
				a = append(a, w...)
			}
			b = appendField(b, tagArgv, a)
		} else {
			str(tagCommand, o.Command)
		}
		num(tagTimeout, int64(o.Timeout))
		str(tagDir, o.Dir)
	case OpOpenDrop:
		str(tagPath, r.OpenDrop.Path)
	case OpRunFilter:
		str(tagUser, r.RunFilter.User)
		str(tagPath, r.RunFilter.Path)
		num(tagTimeout, int64(r.RunFilter.Timeout))
	default:
		return nil, errors.New("privsep: encode: a request needs exactly one op")
	}
	// The same rules both ways: what does not decode is not sent.
	if _, err := Decode(b); err != nil {
		return nil, errors.New("privsep: encode: " + strings.TrimPrefix(err.Error(), "privsep: decode: "))
	}
	return b, nil
}

func appendField(b []byte, tag byte, val []byte) []byte {
	b = append(b, tag)
	b = binary.BigEndian.AppendUint32(b, uint32(len(val)))
	return append(b, val...)
}

// peekID reads the id of a request payload that Decode refused, when the
// version is ours; otherwise the request cannot be answered.
func peekID(payload []byte) (uint32, bool) {
	if len(payload) < 5 || payload[0] != Version {
		return 0, false
	}
	return binary.BigEndian.Uint32(payload[1:5]), true
}

// response is the parent's answer to one request.
type response struct {
	ID     uint32
	Status deliver.Status
	Data   []byte
	Errno  syscall.Errno
	Err    string
	// FD is a descriptor passed with the response (OpenDrop), -1 or 0
	// for none; it is not part of the payload.
	FD *os.File
}

// Response field tags.
const (
	rtagCode     = 1
	rtagEnhanced = 2
	rtagText     = 3
	rtagData     = 4
	rtagErrno    = 5
	rtagErr      = 6
	rtagAll      = 1<<rtagCode | 1<<rtagEnhanced | 1<<rtagText | 1<<rtagData | 1<<rtagErrno | 1<<rtagErr
)

// encode writes the response's payload, cutting Text and Err to MaxText.
func (r *response) encode() ([]byte, error) {
	if len(r.Data) > MaxData {
		return nil, fmt.Errorf("privsep: encode: %d bytes of data, more than %d", len(r.Data), MaxData)
	}
	if r.Status.Enhanced != "" && !validEnhanced(r.Status.Enhanced) || r.Status.Enhanced == "" && r.Err == "" {
		return nil, fmt.Errorf("privsep: encode: bad status %q", r.Status.Enhanced)
	}
	if c := r.Status.Code; c != 0 && (c < 200 || c > 599) {
		return nil, fmt.Errorf("privsep: encode: bad reply code %d", c)
	}
	b := []byte{Version, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], r.ID)
	b = appendField(b, rtagCode, binary.BigEndian.AppendUint16(nil, uint16(r.Status.Code)))
	b = appendField(b, rtagEnhanced, []byte(r.Status.Enhanced))
	b = appendField(b, rtagText, []byte(cut(r.Status.Text, MaxText)))
	b = appendField(b, rtagData, r.Data)
	b = appendField(b, rtagErrno, binary.BigEndian.AppendUint32(nil, uint32(r.Errno)))
	b = appendField(b, rtagErr, []byte(cut(r.Err, MaxText)))
	return b, nil
}

// decodeResponse reads a response payload, as strictly as Decode.
func decodeResponse(payload []byte) (*response, error) {
	if len(payload) > MaxResponsePayload {
		return nil, decodeErr("response of %d bytes is larger than %d", len(payload), MaxResponsePayload)
	}
	if len(payload) < 5 {
		return nil, decodeErr("response header: %v", errTruncated)
	}
	if payload[0] != Version {
		return nil, decodeErr("response version %d, want %d", payload[0], Version)
	}
	r := &response{ID: binary.BigEndian.Uint32(payload[1:5])}
	fs, err := fields(payload[5:])
	if err != nil {
		return nil, err
	}
	var seen uint32
	for _, f := range fs {
		if f.tag >= 32 || rtagAll&(1<<f.tag) == 0 {
			return nil, decodeErr("response has no field %d", f.tag)
		}
		seen |= 1 << f.tag
		switch f.tag {
		case rtagCode:
			if len(f.val) != 2 {
				return nil, decodeErr("response code of %d bytes", len(f.val))
			}
			c := int(binary.BigEndian.Uint16(f.val))
			if c != 0 && (c < 200 || c > 599) {
				return nil, decodeErr("response code %d", c)
			}
			r.Status.Code = c
		case rtagEnhanced:
			if s := string(f.val); s != "" && !validEnhanced(s) {
				return nil, decodeErr("response status %q", cut(s, 32))
			}
			r.Status.Enhanced = string(f.val)
		case rtagText:
			if len(f.val) > MaxText {
				return nil, decodeErr("response text of %d bytes", len(f.val))
			}
			r.Status.Text = string(f.val)
		case rtagData:
			if len(f.val) > MaxData {
				return nil, decodeErr("response data of %d bytes", len(f.val))
			}
			if len(f.val) > 0 {
				r.Data = append([]byte(nil), f.val...)
			}
		case rtagErrno:
			if len(f.val) != 4 {
				return nil, decodeErr("response errno of %d bytes", len(f.val))
			}
			n := binary.BigEndian.Uint32(f.val)
			if n > 4095 {
				return nil, decodeErr("response errno %d", n)
			}
			r.Errno = syscall.Errno(n)
		case rtagErr:
			if len(f.val) > MaxText {
				return nil, decodeErr("response error of %d bytes", len(f.val))
			}
			r.Err = string(f.val)
		}
	}
	if seen != rtagAll {
		return nil, decodeErr("response: missing fields")
	}
	if r.Status.Enhanced == "" && r.Err == "" {
		return nil, decodeErr("response has neither a status nor an error")
	}
	return r, nil
}

// validEnhanced accepts an RFC 3463 status: class 2, 4 or 5, then two
// numbers of one to three digits.
func validEnhanced(s string) bool {
	if len(s) > maxEnh || len(s) < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.' {
		return false
	}
	subj, det, ok := strings.Cut(s[2:], ".")
	return ok && digits(subj) && digits(det)
}

func digits(s string) bool {
	if len(s) < 1 || len(s) > 3 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// cut shortens s to at most n bytes without splitting a UTF-8 sequence.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && i > n-4 && s[i]&0xc0 == 0x80 {
		i--
	}
	return s[:i]
}

// NumericUser reads a #UID:GID user (deliver.NumericOwner): an owner
// given by numbers (virtual_uid_maps, virtual_gid_maps), with no account
// behind it. Neither may be 0.
func NumericUser(s string) (uid, gid int, ok bool) {
	uid, gid, ok = deliver.ParseNumericOwner(s)
	return uid, gid, ok && uid > 0 && gid > 0
}
