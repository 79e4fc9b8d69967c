package local

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/larkpost/larkpost/engine/enginetest"
)

func TestDeliver(t *testing.T) {
	body := []byte("Received: from x\r\nSubject: hi\r\n\r\nFrom me\r\nbye\r\n")
	tests := []struct {
		name    string
		req     Request
		status  string
		content string // expected file content (Maildir) or suffix (mbox); "" to skip
	}{
		{"maildir", Request{Sender: "ann@example.org", Rcpt: "bob@example.com", Mailbox: "md/"}, "2.0.0",
			"Return-Path: <ann@example.org>\nDelivered-To: bob@example.com\nX-Original-To: bob@example.com\nReceived: from x\nSubject: hi\n\nFrom me\nbye\n"},
		{"original recipient", Request{Sender: "", Rcpt: "bob@example.com", OrigRcpt: "info@example.com", Mailbox: "md2/"}, "2.0.0",
			"Return-Path: <>\nDelivered-To: bob@example.com\nX-Original-To: info@example.com\nReceived: from x\nSubject: hi\n\nFrom me\nbye\n"},
		{"mbox quotes From", Request{Sender: "ann@example.org", Rcpt: "bob@example.com", Mailbox: "mbox"}, "2.0.0",
			"Subject: hi\n\n>From me\nbye\n\n"},
		{"size limit", Request{Sender: "a@b.example", Rcpt: "bob@example.com", Mailbox: "md3/", SizeLimit: 50}, "5.2.2", ""},
		{"unwritable defers", Request{Sender: "a@b.example", Rcpt: "bob@example.com", Mailbox: "file/md/"}, "4.3.0", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "file"), nil, 0o600)
			tt.req.Mailbox = filepath.Join(dir, tt.req.Mailbox)
			if strings.HasSuffix(tt.req.Mailbox, "md") || strings.HasSuffix(tt.req.Mailbox, "md2") || strings.HasSuffix(tt.req.Mailbox, "md3") {
				tt.req.Mailbox += "/"
			}
			tt.req.Body = bytes.NewReader(body)
			res := Deliver(&tt.req)
			if res.Enhanced != tt.status {
				t.Fatalf("status %s (%s), want %s", res.Enhanced, res.Text, tt.status)
			}
			if tt.content == "" {
				return
			}
			var got []byte
			if strings.HasSuffix(tt.req.Mailbox, "/") {
				files, _ := filepath.Glob(filepath.Join(tt.req.Mailbox, "new", "*"))
				if len(files) != 1 {
					t.Fatalf("%d files in new/", len(files))
				}
				got, _ = os.ReadFile(files[0])
				if string(got) != tt.content {
					t.Errorf("got %q, want %q", got, tt.content)
				}
				return
			}
			got, _ = os.ReadFile(tt.req.Mailbox)
			if !strings.HasPrefix(string(got), "From ann@example.org ") || !strings.HasSuffix(string(got), tt.content) {
				t.Errorf("mbox content %q", got)
			}
		})
	}
}

func TestLoopDetection(t *testing.T) {
	dir := t.TempDir()
	body := []byte("Delivered-To: Bob@Example.com\r\nSubject: again\r\n\r\nDelivered-To: bob@example.com\r\n")
	res := Deliver(&Request{Rcpt: "bob@example.com", Mailbox: dir + "/md/", Body: bytes.NewReader(body)})
	if res.Enhanced != "5.4.6" || !strings.Contains(res.Text, "mail forwarding loop") {
		t.Errorf("got %+v, want a 5.4.6 loop bounce", res)
	}
	// Only the header counts: a body line is no loop.
	res = Deliver(&Request{Rcpt: "carol@example.com", Mailbox: dir + "/md/", Body: bytes.NewReader(body)})
	if !res.OK() {
		t.Errorf("got %+v for another recipient", res)
	}
}

func TestDeliverPipe(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	body := []byte("Subject: piped\r\n\r\nhello\r\n")
	tests := []struct {
		name, cmd, status, text string
	}{
		{"success", "cat > " + out + "; echo \"$SENDER $RECIPIENT $USER $EXTENSION $DOMAIN\" >> " + out, "2.0.0", ""},
		{"EX_TEMPFAIL defers", "echo busy >&2; exit 75", "4.3.0", "busy"},
		{"killed by a signal defers", "kill -9 $$", "4.3.0", "died with signal 9"},
		{"other status bounces with stderr", "echo 'no such queue' >&2; exit 67", "5.3.0", "no such queue"},
		{"timeout defers", "sleep 5", "4.3.0", "timed out"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := DeliverPipe(context.Background(), &PipeRequest{Command: tt.cmd, Sender: "ann@example.org", Rcpt: "tickets+urgent@example.com",
				Body: bytes.NewReader(body), Timeout: 500 * time.Millisecond})
			if res.Enhanced != tt.status || !strings.Contains(res.Text, tt.text) {
				t.Fatalf("got %+v, want %s containing %q", res, tt.status, tt.text)
			}
		})
	}
	got, _ := os.ReadFile(out)
	if string(got) != "Subject: piped\n\nhello\nann@example.org tickets+urgent@example.com tickets urgent example.com\n" {
		t.Errorf("command saw %q", got)
	}
}

func TestLFReader(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a\r\nb\r\n", "a\nb\n"},
		{"bare\rcr\r\n", "bare\rcr\n"},
		{"ends in cr\r", "ends in cr\r"},
		{"\r\n\r\n\r", "\n\n\r"},
		{"no newline", "no newline"},
		{"", ""},
	}
	for _, tt := range tests {
		// Every read size, so a CRLF split across reads is joined.
		for _, size := range []int{1, 2, 3, 64} {
			r := NewLFReader(strings.NewReader(tt.in))
			var out []byte
			buf := make([]byte, size)
			for {
				n, err := r.Read(buf)
				out = append(out, buf[:n]...)
				if err != nil {
					break
				}
			}
			if string(out) != tt.want {
				t.Errorf("%q in reads of %d: got %q, want %q", tt.in, size, out, tt.want)
			}
		}
	}
	big := strings.Repeat("0123456789\r\n", 100000)
	got, _ := io.ReadAll(NewLFReader(strings.NewReader(big)))
	if string(got) != strings.ReplaceAll(big, "\r\n", "\n") {
		t.Error("large input converted wrongly")
	}
}

// TestLFReaderWriteTo: io.Copy's path (a chunk converted where it lies)
// gives what Read gives, on the table's inputs and on random ones of CR,
// LF and letters, whatever pieces the source returns: a CRLF split
// between two reads is joined, a CR at the very end is kept.
func TestLFReaderWriteTo(t *testing.T) {
	inputs := []string{"a\r\nb\r\n", "bare\rcr\r\n", "ends in cr\r", "\r\n\r\n\r", "\r\r\n\n\r", "no newline", ""}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		b := make([]byte, rng.IntN(400_000))
		for i := range b {
			b[i] = "\r\nab"[rng.IntN(4)]
		}
		inputs = append(inputs, string(b))
	}
	sources := map[string]func(string) io.Reader{
		"whole":    func(s string) io.Reader { return strings.NewReader(s) },
		"one byte": func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) },
		"halves":   func(s string) io.Reader { return iotest.HalfReader(strings.NewReader(s)) },
	}
	for name, src := range sources {
		for i, in := range inputs {
			if name == "one byte" && len(in) > 10_000 {
				continue
			}
			var out bytes.Buffer
			n, err := NewLFReader(src(in)).(io.WriterTo).WriteTo(&out)
			want := strings.ReplaceAll(in, "\r\n", "\n")
			if err != nil || out.String() != want || n != int64(len(want)) {
				t.Fatalf("%s, input %d (%d bytes): wrote %d, %v; equal %v", name, i, len(in), n, err, out.String() == want)
			}
		}
	}
	// Read first, then io.Copy: nothing Read buffered is lost.
	r := NewLFReader(strings.NewReader("head\r\nbody\r\n"))
	first := make([]byte, 3)
	r.Read(first)
	var rest bytes.Buffer
	io.Copy(&rest, r)
	if got := string(first) + rest.String(); got != "head\nbody\n" {
		t.Errorf("Read then WriteTo: %q", got)
	}
}

// TestDeliverPipeHonoursContext: a stopping server does not wait out
// command_time_limit; the command is killed and the recipient deferred.
func TestDeliverPipeHonoursContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	res := DeliverPipe(ctx, &PipeRequest{Command: "sleep 30", Rcpt: "a@example.com",
		Body: bytes.NewReader([]byte("x\r\n")), Timeout: time.Minute})
	if !res.Temporary() || !strings.Contains(res.Text, "interrupted") {
		t.Errorf("got %+v, want a deferral saying the delivery was interrupted", res)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v: the command outlived its context", d)
	}
}

// TestPipeFileSizeLimit: a command may write no file larger than
// mailbox_size_limit (RLIMIT_FSIZE, as local(8) sets it); past it the
// kernel stops it with SIGXFSZ and the delivery defers.
func TestPipeFileSizeLimit(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		req  PipeRequest
	}{
		{"shell command", PipeRequest{Command: "head -c 5000 /dev/zero > " + dir + "/shell"}},
		{"argv", PipeRequest{Argv: []string{"/usr/bin/dd", "if=/dev/zero", "of=" + dir + "/argv", "bs=5000", "count=1"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := c.req
			req.Rcpt, req.Body, req.SizeLimit, req.Timeout = "bob@example.com", strings.NewReader("x\r\n"), 1024, 10*time.Second
			st := DeliverPipe(context.Background(), &req)
			if st.Enhanced != "4.3.0" || !strings.Contains(st.Text, "signal 25") {
				t.Errorf("status %v, want a deferral for SIGXFSZ", st)
			}
			out := filepath.Join(dir, strings.Fields(c.name)[0])
			if fi, err := os.Stat(out); err != nil || fi.Size() > 1024 {
				t.Errorf("wrote %v (%v), want at most 1024 bytes", fi.Size(), err)
			}
			req.SizeLimit = 0
			if st := DeliverPipe(context.Background(), &req); !st.OK() {
				t.Errorf("without a limit: %v", st)
			}
		})
	}
}

// TestDeliverPipeUnreadableBody: a command must never get a shorter
// message for the whole: when the queued message cannot be read to its
// end the command is killed before its input ends, and the recipient is
// deferred with the reason.
func TestDeliverPipeUnreadableBody(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "finished")
	body := []byte("Subject: long\r\n\r\n" + strings.Repeat(strings.Repeat("x", 76)+"\r\n", 4000))
	res := DeliverPipe(context.Background(), &PipeRequest{Command: "cat > /dev/null && touch " + marker,
		Rcpt: "a@example.com", Body: enginetest.FailingBody{B: body, Fail: 100 << 10}, Timeout: 10 * time.Second})
	if res.Enhanced != "4.3.0" || !strings.Contains(res.Text, "error reading the queued message: read bodies/Q1: input/output error") {
		t.Errorf("got %+v, want 4.3.0 naming the read error", res)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the command read to the end of a truncated message and finished")
	}
}

// TestSmallMessageSameAsStream: the in-memory conversion gives exactly
// what the streaming path writes (header, LF line ends, a final LF),
// whatever was left in the reused buffer.
func TestSmallMessageSameAsStream(t *testing.T) {
	hdr := []byte("Return-Path: <a@example.org>\nDelivered-To: b@example.com\n")
	bodies := []string{
		"", "x", "\r\n", "\r", "\n", "a\r\nb\r\n", "no final newline", "bare\rcr\r\n", "bare\nlf\r\n",
		"\r\r\n\r\n", "ends in cr\r", "\r\n\r\n\r", strings.Repeat("0123456789\r\n", 5000),
	}
	dirty := bytes.Repeat([]byte{'#'}, 100)
	for _, b := range bodies {
		body := bytes.NewReader([]byte(b))
		want, _ := io.ReadAll(io.MultiReader(bytes.NewReader(hdr), NewLFReader(io.NewSectionReader(body, 0, body.Size())), finalNewline(body)))
		for _, buf := range [][]byte{nil, dirty[:0], bytes.Clone(dirty)} {
			got, err := smallMessage(buf, hdr, body)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("body %q (buffer cap %d): got %q, %v; want %q", b, cap(buf), got, err, want)
			}
		}
	}
}
