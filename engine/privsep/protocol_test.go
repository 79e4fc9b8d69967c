package privsep

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/deliver"
)

// validRequests are requests Decode accepts, one or more of each op and
// at the edges of the limits.
func validRequests() []*Request {
	words := make([]string, MaxArgv)
	for i := range words {
		words[i] = fmt.Sprintf("w%d", i)
	}
	words[0] = "/usr/bin/true"
	return []*Request{
		{ID: 1, ReadForward: &ReadForward{User: "alice", Path: "/home/alice/.forward"}},
		{ID: 0xffffffff, ReadForward: &ReadForward{User: "_a" + strings.Repeat("b", 30), Path: "/" + strings.Repeat("x", MaxString-1)}},
		{ID: 2, DeliverMailbox: &DeliverMailbox{User: "alice", Mailbox: "/home/alice/Maildir/", Folder: "Lists/go",
			QueueID: "4XyZ.abc_1", Sender: "bob@example.org", Rcpt: "alice@example.com", OrigRcpt: "al@example.com", SizeLimit: 51200000}},
		{ID: 3, DeliverMailbox: &DeliverMailbox{User: "mail-user.2", Mailbox: "/var/mail/alice", Rcpt: "a@b"}},
		{ID: 4, DeliverMailbox: &DeliverMailbox{User: "u", Mailbox: "/m/", Rcpt: "ü@bücher.example", SizeLimit: 1 << 62}},
		{ID: 5, DeliverFile: &DeliverFile{User: "nobody", Path: "/var/log/mail-archive", QueueID: "Q", Sender: "s@x", Rcpt: "r@y", OrigRcpt: "o@y"}},
		{ID: 6, RunPipe: &RunPipe{User: "nobody", Command: "procmail -a \"$EXTENSION\"\necho 'ok'", Rcpt: "x@y", Timeout: time.Minute}},
		{ID: 7, RunPipe: &RunPipe{User: "nobody", Argv: []string{"/usr/lib/dovecot/dovecot-lda", "-f", "${sender}", ""}, Sender: "s@x",
			Rcpt: "x@y", OrigRcpt: "o@y", Dir: "/"}},
		{ID: 8, RunPipe: &RunPipe{User: "nobody", Argv: words, Rcpt: "x@y", Timeout: MaxTimeout, Dir: "/var/spool"}},
		{ID: 9, RunPipe: &RunPipe{User: "nobody", Argv: []string{strings.Repeat("a", MaxWord)}, Rcpt: "x@y"}},
		{ID: 10, RunFilter: &RunFilter{User: "alice", Path: "/home/alice/.larkpost.star", Timeout: 2 * time.Second}},
		{ID: 11, DeliverMailbox: &DeliverMailbox{User: "#5000:5000", Mailbox: "/srv/vmail/example.com/bob/", Rcpt: "bob@example.com"}},
		{ID: 12, RunFilter: &RunFilter{User: "#2147483647:1", Path: "/f", Timeout: MaxTimeout}},
	}
}

func hdr(op byte) []byte { return []byte{Version, 0, 0, 0, 7, op} }

func fld(tag byte, v string) []byte { return appendField(nil, tag, []byte(v)) }

func num(tag byte, v uint64) []byte {
	return appendField(nil, tag, binary.BigEndian.AppendUint64(nil, v))
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func argv(words ...string) []byte {
	b := []byte{byte(len(words))}
	for _, w := range words {
		b = binary.BigEndian.AppendUint16(b, uint16(len(w)))
		b = append(b, w...)
	}
	return appendField(nil, tagArgv, b)
}

// mailbox is a DeliverMailbox payload with the given path and folder.
func mailbox(path, folder string) []byte {
	return cat(hdr(2), fld(1, "alice"), fld(2, path), fld(3, folder), fld(4, "Q1"), fld(5, "s@x"), fld(6, "r@y"), fld(7, ""), num(8, 0))
}

func file(path string) []byte {
	return cat(hdr(3), fld(1, "alice"), fld(2, path), fld(4, "Q1"), fld(5, "s@x"), fld(6, "r@y"), fld(7, ""), num(8, 0))
}

func forward(user, path string) []byte { return cat(hdr(1), fld(1, user), fld(2, path)) }

// pipe is a RunPipe payload with cmd (a Command or Argv field) and dir.
func pipe(cmd []byte, timeout uint64, dir string) []byte {
	return cat(hdr(4), fld(1, "nobody"), fld(5, ""), fld(6, "r@y"), fld(7, ""), num(8, 0), cmd, num(11, timeout), fld(12, dir))
}

type badCase struct {
	name    string
	payload []byte
	want    string // in the error
}

func badRequests() []badCase {
	many := make([]string, MaxArgv+1)
	for i := range many {
		many[i] = "x"
	}
	big := make([]string, 20)
	for i := range big {
		big[i] = strings.Repeat("y", MaxWord)
	}
	return []badCase{
		{"empty", nil, "truncated"},
		{"short header", []byte{1, 0, 0, 0, 7}, "truncated"},
		{"version 0", cat([]byte{0, 0, 0, 0, 7, 1}, fld(1, "a"), fld(2, "/f")), "version 0"},
		{"version 2", cat([]byte{2, 0, 0, 0, 7, 1}, fld(1, "a"), fld(2, "/f")), "version 2"},
		{"op 0", cat(hdr(0), fld(1, "a")), "unknown op 0"},
		{"op 7", cat(hdr(7), fld(1, "a")), "unknown op 7"},
		{"RunFilter without timeout", cat(hdr(6), fld(1, "a"), fld(2, "/x")), "missing Timeout"},
		{"RunFilter with a folder", cat(hdr(6), fld(1, "a"), fld(2, "/x"), fld(3, "")), "RunFilter has no field 3"},
		{"op 255", hdr(255), "unknown op 255"},
		{"no fields", hdr(1), "missing User, Path"},
		{"missing path", cat(hdr(1), fld(1, "alice")), "missing Path"},
		{"missing user", cat(hdr(1), fld(2, "/f")), "missing User"},
		{"field of another op", cat(hdr(1), fld(1, "alice"), fld(2, "/f"), fld(3, "x")), "has no field 3"},
		{"unknown tag", cat(forward("alice", "/f"), fld(13, "x")), "has no field 13"},
		{"tag 255", cat(forward("alice", "/f"), fld(255, "x")), "has no field 255"},
		{"tag 0", cat(hdr(1), fld(0, ""), fld(1, "alice"), fld(2, "/f")), "has no field 0"},
		{"repeated field", cat(hdr(1), fld(1, "alice"), fld(1, "bob"), fld(2, "/f")), "repeated or out of order"},
		{"out of order", cat(hdr(1), fld(2, "/f"), fld(1, "alice")), "repeated or out of order"},
		{"trailing bytes", cat(forward("alice", "/f"), []byte{1, 2, 3}), "truncated"},
		{"length past the end", cat(hdr(1), fld(1, "alice"), []byte{2, 0, 0, 0, 9, '/'}), "past the end"},
		{"huge length", cat(hdr(1), []byte{1, 0xff, 0xff, 0xff, 0xff}), "past the end"},
		{"user empty", forward("", "/f"), "User"},
		{"user upper case", forward("Alice", "/f"), "bad byte"},
		{"user digit first", forward("1alice", "/f"), "bad byte"},
		{"user dash first", forward("-alice", "/f"), "bad byte"},
		{"user space", forward("al ice", "/f"), "bad byte"},
		{"user slash", forward("../root", "/f"), "bad byte"},
		{"user NUL", forward("al\x00", "/f"), "bad byte"},
		{"user 33 bytes", forward("a"+strings.Repeat("b", 32), "/f"), "33 bytes"},
		{"path relative", forward("alice", ".forward"), "not absolute"},
		{"path empty", forward("alice", ""), "not absolute"},
		{"path dotdot", forward("alice", "/home/alice/../root/.forward"), "not clean"},
		{"path double slash", forward("alice", "/home//alice"), "not clean"},
		{"path dot", forward("alice", "/home/./alice"), "not clean"},
		{"path trailing slash", forward("alice", "/home/alice/"), "not clean"},
		{"path root", forward("alice", "/"), `"/" is not a file`},
		{"path NUL", forward("alice", "/home/al\x00ice"), "NUL"},
		{"path too long", forward("alice", "/"+strings.Repeat("x", MaxString)), "more than 4096"},
		{"maildir root", mailbox("/", ""), "maildir"},
		{"maildir double slash", mailbox("//", ""), "maildir"},
		{"maildir unclean", mailbox("/a//", ""), "maildir"},
		{"maildir dot", mailbox("/a/./", ""), "maildir"},
		{"maildir relative", mailbox("Maildir/", ""), "maildir"},
		{"file maildir", file("/a/"), "not clean"},
		{"folder newline", mailbox("/m/", "a\nb"), "control character"},
		{"folder DEL", mailbox("/m/", "a\x7f"), "control character"},
		{"folder too long", mailbox("/m/", strings.Repeat("f", 256)), "more than 255"},
		{"queue id space", cat(hdr(3), fld(1, "a"), fld(2, "/f"), fld(4, "Q 1"), fld(5, ""), fld(6, "r"), fld(7, ""), num(8, 0)), "byte 0x20"},
		{"queue id 8bit", cat(hdr(3), fld(1, "a"), fld(2, "/f"), fld(4, "Q\x80"), fld(5, ""), fld(6, "r"), fld(7, ""), num(8, 0)), "byte 0x80"},
		{"queue id too long", cat(hdr(3), fld(1, "a"), fld(2, "/f"), fld(4, strings.Repeat("q", 65)), fld(5, ""), fld(6, "r"), fld(7, ""), num(8, 0)), "more than 64"},
		{"sender header injection", cat(hdr(3), fld(1, "a"), fld(2, "/f"), fld(4, "Q"), fld(5, "s@x>\r\nX-Evil: 1"), fld(6, "r"), fld(7, ""), num(8, 0)), "control character"},
		{"sender NUL", cat(hdr(3), fld(1, "a"), fld(2, "/f"), fld(4, "Q"), fld(5, "s\x00"), fld(6, "r"), fld(7, ""), num(8, 0)), "control character"},
		{"rcpt empty", cat(hdr(3), fld(1, "a"), fld(2, "/f"), fld(4, "Q"), fld(5, ""), fld(6, ""), fld(7, ""), num(8, 0)), "Rcpt: empty"},
		{"orig rcpt tab", cat(hdr(3), fld(1, "a"), fld(2, "/f"), fld(4, "Q"), fld(5, ""), fld(6, "r"), fld(7, "o\t"), num(8, 0)), "control character"},
		{"size limit short", cat(hdr(3), fld(1, "a"), fld(2, "/f"), fld(4, "Q"), fld(5, ""), fld(6, "r"), fld(7, ""), appendField(nil, 8, []byte{0, 0, 0, 1})), "4 bytes, want 8"},
		{"size limit negative", cat(hdr(3), fld(1, "a"), fld(2, "/f"), fld(4, "Q"), fld(5, ""), fld(6, "r"), fld(7, ""), num(8, 1<<63)), "out of range"},
		{"file missing size limit", cat(hdr(3), fld(1, "a"), fld(2, "/f"), fld(4, "Q"), fld(5, ""), fld(6, "r"), fld(7, "")), "missing SizeLimit"},
		{"mailbox missing folder", cat(hdr(2), fld(1, "a"), fld(2, "/m/"), fld(4, "Q"), fld(5, ""), fld(6, "r"), fld(7, ""), num(8, 0)), "missing Folder"},
		{"pipe neither command nor argv", pipe(nil, 0, ""), "missing Command or Argv"},
		{"pipe both", pipe(cat(fld(9, "true"), argv("/bin/true")), 0, ""), "both Command and Argv"},
		{"pipe empty command", pipe(fld(9, ""), 0, ""), "Command: empty"},
		{"pipe command NUL", pipe(fld(9, "true\x00rm"), 0, ""), "NUL"},
		{"pipe command too long", pipe(fld(9, strings.Repeat("c", MaxCommand+1)), 0, ""), "more than 32768"},
		{"pipe no words", pipe(argv(), 0, ""), "0 words"},
		{"pipe 65 words", pipe(argv(many...), 0, ""), "65 words"},
		{"pipe long word", pipe(argv("/bin/echo", strings.Repeat("w", MaxWord+1)), 0, ""), "more than 4096"},
		{"pipe word NUL", pipe(argv("/bin/echo", "a\x00b"), 0, ""), "NUL"},
		{"pipe empty name", pipe(argv("", "x"), 0, ""), "empty command name"},
		{"pipe argv trailing", pipe(appendField(nil, tagArgv, []byte{1, 0, 1, 'x', 'y'}), 0, ""), "after the last word"},
		{"pipe argv truncated word", pipe(appendField(nil, tagArgv, []byte{2, 0, 1, 'x', 0}), 0, ""), "truncated"},
		{"pipe argv empty value", pipe(appendField(nil, tagArgv, nil), 0, ""), "truncated"},
		{"pipe timeout too long", pipe(fld(9, "true"), uint64(MaxTimeout)+1, ""), "out of range"},
		{"pipe dir relative", pipe(fld(9, "true"), 0, "tmp"), "not absolute"},
		{"pipe dir unclean", pipe(fld(9, "true"), 0, "/tmp/"), "not clean"},
		{"pipe missing dir", cat(hdr(4), fld(1, "nobody"), fld(5, ""), fld(6, "r@y"), fld(7, ""), num(8, 0), fld(9, "true"), num(11, 0)), "missing Dir"},
		{"pipe missing size limit", cat(hdr(4), fld(1, "nobody"), fld(5, ""), fld(6, "r@y"), fld(7, ""), fld(9, "true"), num(11, 0), fld(12, "/")), "missing SizeLimit"},
		{"payload too large", pipe(argv(big...), 0, ""), "larger than 65536"},
	}
}

func TestDecodeRoundTrip(t *testing.T) {
	for _, req := range validRequests() {
		t.Run(req.Op().String()+fmt.Sprint(req.ID), func(t *testing.T) {
			b, err := req.Encode()
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, req) {
				t.Fatalf("Decode(Encode(r)) = %+v, want %+v", got, req)
			}
			again, _ := got.Encode()
			if !bytes.Equal(again, b) {
				t.Fatal("encoding is not canonical")
			}
			// Every strict prefix is refused.
			for n := range len(b) {
				if _, err := Decode(b[:n]); err == nil {
					t.Fatalf("the first %d of %d bytes decode", n, len(b))
				}
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, c := range badRequests() {
		t.Run(c.name, func(t *testing.T) {
			r, err := Decode(c.payload)
			if err == nil {
				t.Fatalf("decoded %+v", r)
			}
			if r != nil {
				t.Fatal("a request and an error")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
		})
	}
}

func TestDecodeFieldsInSpecOrder(t *testing.T) {
	// The same RunPipe with an argv: the fields as the spec lists them.
	want := pipe(argv("/bin/cat"), uint64(time.Second), "/")
	got, err := (&Request{ID: 7, RunPipe: &RunPipe{User: "nobody", Argv: []string{"/bin/cat"}, Rcpt: "r@y", Timeout: time.Second, Dir: "/"}}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Encode = %q\nwant     %q", got, want)
	}
}

func TestEncodeRefuses(t *testing.T) {
	for _, c := range []struct {
		name string
		req  *Request
	}{
		{"no op", &Request{ID: 1}},
		{"two ops", &Request{ReadForward: &ReadForward{User: "a", Path: "/f"}, DeliverFile: &DeliverFile{User: "a", Path: "/f", Rcpt: "r"}}},
		{"bad user", &Request{ReadForward: &ReadForward{User: "Root", Path: "/f"}}},
		{"relative path", &Request{DeliverFile: &DeliverFile{User: "a", Path: "f", Rcpt: "r"}}},
		{"negative size limit", &Request{DeliverFile: &DeliverFile{User: "a", Path: "/f", Rcpt: "r", SizeLimit: -1}}},
		{"negative timeout", &Request{RunPipe: &RunPipe{User: "a", Command: "true", Rcpt: "r", Timeout: -time.Second}}},
		{"no command", &Request{RunPipe: &RunPipe{User: "a", Rcpt: "r"}}},
		{"too many words", &Request{RunPipe: &RunPipe{User: "a", Argv: make([]string, MaxArgv+1), Rcpt: "r"}}},
		{"long word", &Request{RunPipe: &RunPipe{User: "a", Argv: []string{strings.Repeat("x", 70000)}, Rcpt: "r"}}},
		{"numeric uid 0", &Request{RunFilter: &RunFilter{User: "#0:5000"}}},
		{"numeric gid 0", &Request{RunFilter: &RunFilter{User: "#5000:0"}}},
		{"numeric leading zero", &Request{RunFilter: &RunFilter{User: "#05000:5000"}}},
		{"numeric too large", &Request{RunFilter: &RunFilter{User: "#2147483648:5000"}}},
		{"numeric sign", &Request{RunFilter: &RunFilter{User: "#+5:5"}}},
		{"numeric one number", &Request{RunFilter: &RunFilter{User: "#5000"}}},
		{"negative filter timeout", &Request{RunFilter: &RunFilter{User: "a", Timeout: -1}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if b, err := c.req.Encode(); err == nil {
				t.Fatalf("encoded %q", b)
			}
		})
	}
}

func TestResponseRoundTrip(t *testing.T) {
	for _, r := range []*response{
		{ID: 1, Status: deliver.Sent("delivered to maildir")},
		{ID: 2, Status: deliver.Sent("read"), Data: bytes.Repeat([]byte("x"), MaxData)},
		{ID: 3, Status: deliver.Temp("4.3.0", "cannot"), Errno: syscall.ENOENT, Err: "open /x: no such file or directory"},
		{ID: 4, Status: deliver.Status{Code: 552, Enhanced: "5.2.2", Text: "too big"}},
		{ID: 5, Err: "only an error"},
	} {
		b, err := r.encode()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > MaxResponsePayload {
			t.Fatalf("%d bytes", len(b))
		}
		got, err := decodeResponse(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("got %+v, want %+v", got, r)
		}
	}
	// Long texts are cut, and never inside a UTF-8 sequence.
	long := &response{ID: 6, Status: deliver.Temp("4.3.0", "x"+strings.Repeat("é", MaxText)), Err: strings.Repeat("e", 2*MaxText)}
	b, err := long.encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Status.Text) > MaxText || len(got.Err) != MaxText || !strings.HasSuffix(got.Status.Text, "é") {
		t.Fatalf("text %d bytes (%q...), err %d bytes", len(got.Status.Text), got.Status.Text[len(got.Status.Text)-4:], len(got.Err))
	}
}

func TestResponseRejects(t *testing.T) {
	rh := []byte{Version, 0, 0, 0, 9}
	code := func(c uint16) []byte { return appendField(nil, rtagCode, binary.BigEndian.AppendUint16(nil, c)) }
	errno := func(n uint32) []byte { return appendField(nil, rtagErrno, binary.BigEndian.AppendUint32(nil, n)) }
	good := func(enh string, e string) []byte {
		return cat(rh, code(0), fld(rtagEnhanced, enh), fld(rtagText, "t"), fld(rtagData, ""), errno(0), fld(rtagErr, e))
	}
	if _, err := decodeResponse(good("2.0.0", "")); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"empty":          nil,
		"version":        cat([]byte{2, 0, 0, 0, 9}, good("2.0.0", "")[5:]),
		"no status":      good("", ""),
		"bad status":     good("3.0.0", ""),
		"status letters": good("4.x.0", ""),
		"status long":    good("4.1234.0", ""),
		"missing errno":  cat(rh, code(0), fld(rtagEnhanced, "2.0.0"), fld(rtagText, ""), fld(rtagData, ""), fld(rtagErr, "")),
		"code 600":       cat(rh, code(600), fld(rtagEnhanced, "2.0.0"), fld(rtagText, ""), fld(rtagData, ""), errno(0), fld(rtagErr, "")),
		"errno huge":     cat(rh, code(0), fld(rtagEnhanced, "2.0.0"), fld(rtagText, ""), fld(rtagData, ""), errno(5000), fld(rtagErr, "")),
		"extra field":    cat(good("2.0.0", ""), fld(7, "")),
		"trailing":       cat(good("2.0.0", ""), []byte{0}),
	} {
		if r, err := decodeResponse(b); err == nil {
			t.Errorf("%s: decoded %+v", name, r)
		}
	}
}

// corpus is the seed corpus of FuzzDecode: every valid request and every
// broken one of the tests.
func corpus() [][]byte {
	var out [][]byte
	for _, r := range validRequests() {
		b, _ := r.Encode()
		out = append(out, b)
	}
	for _, c := range badRequests() {
		out = append(out, c.payload)
	}
	return out
}

// TestWriteCorpus writes the seed corpus into testdata/fuzz/FuzzDecode
// when PRIVSEP_WRITE_CORPUS=1; go test reads it from there.
func TestWriteCorpus(t *testing.T) {
	if os.Getenv("PRIVSEP_WRITE_CORPUS") != "1" {
		t.Skip("set PRIVSEP_WRITE_CORPUS=1 to write testdata/fuzz/FuzzDecode")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, b := range corpus() {
		name := filepath.Join(dir, fmt.Sprintf("seed-%03d", i))
		if err := os.WriteFile(name, fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, b := range corpus() {
		if len(b) <= MaxPayload {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Decode(data)
		if err != nil {
			if r != nil {
				t.Fatal("a request and an error")
			}
			return
		}
		if r.Op() == 0 {
			t.Fatal("decoded a request without one op")
		}
		b, err := r.Encode()
		if err != nil {
			t.Fatalf("a decoded request does not encode: %v", err)
		}
		if !bytes.Equal(b, data) {
			t.Fatalf("not canonical:\n in  %q\n out %q", data, b)
		}
	})
}

func FuzzDecodeResponse(f *testing.F) {
	for _, r := range []*response{
		{ID: 1, Status: deliver.Sent("ok"), Data: []byte("|/bin/true\n")},
		{ID: 2, Status: deliver.Temp("4.3.0", "no"), Errno: syscall.EACCES, Err: "permission denied"},
	} {
		b, _ := r.encode()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeResponse(data)
		if err != nil {
			return
		}
		b, err := r.encode()
		if err != nil {
			t.Fatalf("a decoded response does not encode: %v", err)
		}
		if !bytes.Equal(b, data) {
			t.Fatalf("not canonical:\n in  %q\n out %q", data, b)
		}
	})
}
