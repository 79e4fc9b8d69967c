package privsep

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/deliver"
	"github.com/larkpost/larkpost/engine/enginetest"
	"github.com/larkpost/larkpost/rules/postfix"
)

// socketpair is a connected pair of unix stream sockets.
func socketpair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// start runs a Server on one end of a socketpair and returns a Client on
// the other; at the end of the test the client closes and Serve must
// return nil.
func start(t *testing.T, s *Server) *Client {
	t.Helper()
	cc, sc := socketpair(t)
	done := make(chan error, 1)
	go func() { done <- s.Serve(sc) }()
	c := NewClient(cc, t.TempDir())
	t.Cleanup(func() {
		c.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after the client closed")
		}
	})
	return c
}

// asRoot skips a test that needs root, and returns the account nobody.
func asRoot(t *testing.T) postfix.Account {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CI runs as root)")
	}
	nobody, ok := postfix.LookupAccount("nobody")
	if !ok || nobody.UID == 0 || nobody.GID == 0 {
		t.Fatal("no unprivileged account nobody")
	}
	return nobody
}

// public is a directory anyone may traverse (t.TempDir is root's, 0700).
func public(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "privsep-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o711); err != nil {
		t.Fatal(err)
	}
	return d
}

// home makes a directory owned by acct, mode 0700.
func home(t *testing.T, parent string, acct postfix.Account) string {
	t.Helper()
	h := filepath.Join(parent, acct.Name)
	if err := os.Mkdir(h, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(h, acct.UID, acct.GID); err != nil {
		t.Fatal(err)
	}
	return h
}

func owner(t *testing.T, path string) (uid int, mode fs.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return int(fi.Sys().(*syscall.Stat_t).Uid), fi.Mode()
}

func body(s string) deliver.Body { return strings.NewReader(s) }

func newFiles(t *testing.T, maildir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(maildir, "new"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, filepath.Join(maildir, "new", e.Name()))
	}
	return out
}

func TestDeliverMailboxAsUser(t *testing.T) {
	nobody := asRoot(t)
	c := start(t, &Server{})
	h := home(t, public(t), nobody)
	for _, tc := range []struct {
		name, folder, sub string
	}{
		{"inbox", "", ""},
		{"folder", "Lists/go", ".Lists.go"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			box := filepath.Join(h, "Maildir") + "/"
			msg := "Subject: hi\r\nFrom: <s@example.org>\r\n\r\nhello\r\n.dot line\r\nlast line without end"
			st := c.DeliverMailbox(context.Background(), DeliverMailbox{User: "nobody", Mailbox: box, Folder: tc.folder,
				QueueID: "Q1", Sender: "s@example.org", Rcpt: "nobody@example.com", OrigRcpt: "nb@example.com"}, body(msg))
			if !st.OK() {
				t.Fatalf("status %+v", st)
			}
			files := newFiles(t, filepath.Join(h, "Maildir", tc.sub))
			if len(files) != 1 {
				t.Fatalf("%d messages in new/", len(files))
			}
			uid, mode := owner(t, files[0])
			if uid != nobody.UID || mode != 0o600 {
				t.Fatalf("message owned by %d, mode %v; want %d, 0600", uid, mode, nobody.UID)
			}
			if uid, _ := owner(t, filepath.Join(h, "Maildir", tc.sub, "new")); uid != nobody.UID {
				t.Fatalf("new/ owned by %d", uid)
			}
			got, err := os.ReadFile(files[0])
			if err != nil {
				t.Fatal(err)
			}
			want := "Return-Path: <s@example.org>\nDelivered-To: nobody@example.com\nX-Original-To: nb@example.com\n" +
				"Subject: hi\nFrom: <s@example.org>\n\nhello\n.dot line\nlast line without end\n"
			if string(got) != want {
				t.Fatalf("message:\n%q\nwant\n%q", got, want)
			}
		})
	}
}

func TestDeliverFileRights(t *testing.T) {
	nobody := asRoot(t)
	c := start(t, &Server{})
	pub := public(t)
	h := home(t, pub, nobody)
	secret := t.TempDir() // root's, 0700
	rootFile := filepath.Join(pub, "root-only")
	if err := os.WriteFile(rootFile, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	readable := filepath.Join(pub, "root-readable")
	if err := os.WriteFile(readable, []byte("public\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Hour).Truncate(time.Second)
	for _, p := range []string{rootFile, readable} {
		os.Chtimes(p, past, past)
	}
	for _, tc := range []struct {
		name, path string
		ok         bool
		before     string // "": the file must not exist afterwards (unless ok)
	}{
		{"file in a root-only directory", filepath.Join(secret, "mbox"), false, ""},
		{"root-only file", rootFile, false, "secret\n"},
		{"root file readable by all", readable, false, "public\n"},
		{"new file in a root directory", filepath.Join(pub, "new-mbox"), false, ""},
		{"the user's own file", filepath.Join(h, "archive"), true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := c.DeliverFile(context.Background(), DeliverFile{User: "nobody", Path: tc.path, QueueID: "Q2",
				Sender: "s@example.org", Rcpt: "nobody@example.com"}, body("Subject: x\r\n\r\nappend me\r\n"))
			if tc.ok {
				if !st.OK() {
					t.Fatalf("status %+v", st)
				}
				if uid, mode := owner(t, tc.path); uid != nobody.UID || mode.Perm()&0o077 != 0 {
					t.Fatalf("file owned by %d mode %v", uid, mode)
				}
				got, _ := os.ReadFile(tc.path)
				if !strings.HasPrefix(string(got), "From s@example.org ") || !strings.HasSuffix(string(got), "\nappend me\n\n") {
					t.Fatalf("file %q", got)
				}
				return
			}
			if !st.Temporary() || !strings.HasPrefix(st.Enhanced, "4.") {
				t.Fatalf("status %+v, want 4.x", st)
			}
			fi, err := os.Stat(tc.path)
			if tc.before == "" {
				if err == nil {
					t.Fatalf("%s was created", tc.path)
				}
				return
			}
			got, _ := os.ReadFile(tc.path)
			if err != nil || string(got) != tc.before || !fi.ModTime().Equal(past) || fi.Sys().(*syscall.Stat_t).Uid != 0 {
				t.Fatalf("%s changed: %q, %v, %v", tc.path, got, fi.ModTime(), err)
			}
		})
	}
}

func TestReadForwardRights(t *testing.T) {
	nobody := asRoot(t)
	c := start(t, &Server{})
	pub := public(t)
	h := home(t, pub, nobody)
	rootOnly := filepath.Join(pub, "shadow")
	os.WriteFile(rootOnly, []byte("leaked@evil.test\n"), 0o600)
	rootReadable := filepath.Join(pub, "root.forward")
	os.WriteFile(rootReadable, []byte("root-owned@example.org\n"), 0o644)
	write := func(name, content string, mode fs.FileMode) string {
		p := filepath.Join(h, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		os.Chown(p, nobody.UID, nobody.GID)
		return p
	}
	link := func(name, target string) string {
		p := filepath.Join(h, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		os.Lchown(p, nobody.UID, nobody.GID)
		return p
	}
	for _, tc := range []struct {
		name, user, path string
		want             string // content, or "" for an error
		is               error  // what the error must be
	}{
		{"own forward", "nobody", write("good", "|/usr/bin/procmail\nother@example.org\n", 0o644), "|/usr/bin/procmail\nother@example.org\n", nil},
		{"symlink to a root-only file", "nobody", link("evil", rootOnly), "", fs.ErrPermission},
		{"symlink to a root file readable by all", "nobody", link("rootlink", rootReadable), "root-owned@example.org\n", nil},
		{"group-writable", "nobody", write("gw", "x@y\n", 0o664), "", nil},
		{"missing", "nobody", filepath.Join(h, "none"), "", fs.ErrNotExist},
		{"in a root-only directory", "nobody", filepath.Join(t.TempDir(), ".forward"), "", fs.ErrPermission},
		{"no such account", "no_such_user_x", filepath.Join(h, "good"), "", fs.ErrNotExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := c.ReadForward(tc.user, tc.path)
			if tc.want != "" {
				if err != nil || string(data) != tc.want {
					t.Fatalf("got %q, %v; want %q", data, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("read %q", data)
			}
			if strings.Contains(err.Error(), "leaked") || len(data) > 0 {
				t.Fatalf("leaked: %q %v", data, err)
			}
			var re *RemoteError
			if !errors.As(err, &re) {
				t.Fatalf("error %T %v is not the parent's", err, err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("error %v is not %v", err, tc.is)
			}
		})
	}
}

func TestRunPipeAsUser(t *testing.T) {
	nobody := asRoot(t)
	c := start(t, &Server{})
	pub := public(t)
	out := filepath.Join(pub, "out")
	os.Mkdir(out, 0o777)
	os.Chmod(out, 0o777)
	ctx := context.Background()

	uidFile := filepath.Join(out, "uid")
	st := c.RunPipe(ctx, RunPipe{User: "nobody", Command: "id -u > " + uidFile + "; pwd >> " + uidFile, Sender: "s@x", Rcpt: "nobody@example.com", Dir: out}, body("x\r\n"))
	if !st.OK() {
		t.Fatalf("status %+v", st)
	}
	got, _ := os.ReadFile(uidFile)
	if want := strconv.Itoa(nobody.UID) + "\n" + out + "\n"; string(got) != want {
		t.Fatalf("id -u; pwd = %q, want %q", got, want)
	}
	if uid, _ := owner(t, uidFile); uid != nobody.UID {
		t.Fatalf("output owned by %d", uid)
	}

	catFile := filepath.Join(out, "body")
	st = c.RunPipe(ctx, RunPipe{User: "nobody", Argv: []string{"/bin/sh", "-c", `cat > "$0"; echo "$SENDER $RECIPIENT" >> "$0"`, catFile},
		Sender: "s@x", Rcpt: "nobody@example.com"}, body("Subject: p\r\n\r\nbody\r\n"))
	if !st.OK() {
		t.Fatalf("status %+v", st)
	}
	if got, _ := os.ReadFile(catFile); string(got) != "Subject: p\n\nbody\ns@x nobody@example.com\n" {
		t.Fatalf("command got %q", got)
	}

	for _, tc := range []struct {
		name    string
		req     RunPipe
		class   byte
		maxTime time.Duration
	}{
		{"EX_TEMPFAIL", RunPipe{Command: "exit 75"}, '4', 10 * time.Second},
		{"failure", RunPipe{Command: "echo no such user >&2; exit 67"}, '5', 10 * time.Second},
		{"timeout", RunPipe{Command: "sleep 30", Timeout: 300 * time.Millisecond}, '4', 10 * time.Second},
		{"root-only file", RunPipe{Command: "echo x >> " + filepath.Join(t.TempDir(), "f")}, '5', 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.User, tc.req.Rcpt = "nobody", "nobody@example.com"
			t0 := time.Now()
			st := c.RunPipe(ctx, tc.req, body("x\r\n"))
			if st.Enhanced == "" || st.Enhanced[0] != tc.class || time.Since(t0) > tc.maxTime {
				t.Fatalf("status %+v after %v", st, time.Since(t0))
			}
		})
	}
}

// TestRefusesRoot needs no root: the parent refuses before it looks.
func TestRefusesRoot(t *testing.T) {
	c := start(t, &Server{})
	pub := public(t)
	target := filepath.Join(pub, "target")
	ctx := context.Background()
	if os.Geteuid() == 0 {
		os.WriteFile(filepath.Join(pub, "root.forward"), []byte("x@y\n"), 0o644)
	}
	data, err := c.ReadForward("root", filepath.Join(pub, "root.forward"))
	var re *RemoteError
	if err == nil || !errors.As(err, &re) || !errors.Is(err, fs.ErrPermission) || data != nil {
		t.Fatalf("ReadForward as root: %q, %v", data, err)
	}
	for name, st := range map[string]deliver.Status{
		"DeliverMailbox": c.DeliverMailbox(ctx, DeliverMailbox{User: "root", Mailbox: target + "/", Rcpt: "root@x"}, body("x\r\n")),
		"DeliverFile":    c.DeliverFile(ctx, DeliverFile{User: "root", Path: target, Rcpt: "root@x"}, body("x\r\n")),
		"RunPipe":        c.RunPipe(ctx, RunPipe{User: "root", Command: "touch " + target, Rcpt: "root@x"}, body("x\r\n")),
	} {
		if st.Enhanced != "4.3.0" || !strings.Contains(st.Text, "root") {
			t.Errorf("%s as root: %+v", name, st)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := os.Lstat(target); err == nil {
		t.Fatal("a request for root did something")
	}
	// An account that does not exist is refused too.
	if st := c.DeliverFile(ctx, DeliverFile{User: "no_such_user_x", Path: target, Rcpt: "x@y"}, body("x")); st.Enhanced != "4.3.0" {
		t.Fatalf("no such user: %+v", st)
	}
}

// fakeParent reads requests on conn and hands each to answer, which may
// write a reply, sleep, or close the stream.
func fakeParent(t *testing.T, conn *net.UnixConn, answer func(req *Request)) {
	t.Helper()
	go func() {
		fr := newFrameReader(conn)
		for {
			payload, got, err := fr.read(MaxPayload)
			if err != nil {
				return
			}
			got.close()
			req, err := Decode(payload)
			if err != nil {
				t.Errorf("fake parent: %v", err)
				return
			}
			answer(req)
		}
	}()
}

var mbReq = DeliverMailbox{User: "nobody", Mailbox: "/nonexistent/Maildir/", Rcpt: "nobody@example.com"}

func TestParentGoesAway(t *testing.T) {
	cc, sc := socketpair(t)
	c := NewClient(cc, t.TempDir())
	defer c.Close()
	var seen sync.WaitGroup
	seen.Add(5)
	fakeParent(t, sc, func(*Request) { seen.Done() })
	// Five calls wait for answers that never come; then the parent dies.
	type result struct {
		st deliver.Status
		d  time.Duration
	}
	results := make(chan result, 5)
	for range 5 {
		go func() {
			t0 := time.Now()
			st := c.DeliverMailbox(context.Background(), mbReq, body("x\r\n"))
			results <- result{st, time.Since(t0)}
		}()
	}
	seen.Wait()
	closed := time.Now()
	sc.Close()
	for range 5 {
		select {
		case r := <-results:
			if r.st.Enhanced != "4.3.0" || !strings.Contains(r.st.Text, "unavailable") {
				t.Fatalf("pending call: %+v", r.st)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a pending call hangs after the parent went away")
		}
	}
	if d := time.Since(closed); d > 2*time.Second {
		t.Fatalf("pending calls took %v to notice", d)
	}
	// Later calls fail at once.
	t0 := time.Now()
	if st := c.DeliverFile(context.Background(), DeliverFile{User: "nobody", Path: "/x", Rcpt: "r"}, body("x")); st.Enhanced != "4.3.0" {
		t.Fatalf("later call: %+v", st)
	}
	if st := c.RunPipe(context.Background(), RunPipe{User: "nobody", Command: "true", Rcpt: "r"}, body("x")); st.Enhanced != "4.3.0" {
		t.Fatalf("later call: %+v", st)
	}
	if _, err := c.ReadForward("nobody", "/x"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("later ReadForward: %v", err)
	}
	if d := time.Since(t0); d > time.Second {
		t.Fatalf("later calls took %v", d)
	}
}

func TestContextCancel(t *testing.T) {
	cc, sc := socketpair(t)
	c := NewClient(cc, t.TempDir())
	defer c.Close()
	defer sc.Close()
	var mu sync.Mutex
	var held []*Request
	// The parent answers only ReadForward, and late.
	fakeParent(t, sc, func(req *Request) {
		mu.Lock()
		held = append(held, req)
		mu.Unlock()
		if req.ReadForward != nil {
			go func() {
				time.Sleep(50 * time.Millisecond)
				b, _ := (&response{ID: req.ID, Status: deliver.Sent("read"), Data: []byte("a@b\n")}).encode()
				writeFrame(sc, b, -1)
			}()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	st := c.DeliverMailbox(ctx, mbReq, body("x\r\n"))
	if st.Enhanced != "4.3.0" || !strings.Contains(st.Text, "deadline") || time.Since(t0) > 2*time.Second {
		t.Fatalf("status %+v after %v", st, time.Since(t0))
	}
	// A cancelled call leaves the client usable.
	data, err := c.ReadForward("nobody", "/home/nobody/.forward")
	if err != nil || string(data) != "a@b\n" {
		t.Fatalf("ReadForward after a cancelled call: %q, %v", data, err)
	}
	// A context already done sends nothing.
	done, cancelNow := context.WithCancel(context.Background())
	cancelNow()
	if st := c.RunPipe(done, RunPipe{User: "nobody", Command: "true", Rcpt: "r"}, body("x")); st.Enhanced != "4.3.0" {
		t.Fatalf("done context: %+v", st)
	}
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(held) != 2 {
		t.Fatalf("the parent saw %d requests, want 2", len(held))
	}
}

func TestPipeTimeoutFromContext(t *testing.T) {
	cc, sc := socketpair(t)
	c := NewClient(cc, t.TempDir())
	defer c.Close()
	defer sc.Close()
	got := make(chan time.Duration, 1)
	fakeParent(t, sc, func(req *Request) {
		got <- req.RunPipe.Timeout
		b, _ := (&response{ID: req.ID, Status: deliver.Sent("ok")}).encode()
		writeFrame(sc, b, -1)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if st := c.RunPipe(ctx, RunPipe{User: "nobody", Command: "true", Rcpt: "r", Timeout: time.Hour}, body("x")); !st.OK() {
		t.Fatalf("status %+v", st)
	}
	if d := <-got; d <= 0 || d > 5*time.Second {
		t.Fatalf("timeout sent %v", d)
	}
}

func TestConcurrentDeliveries(t *testing.T) {
	nobody := asRoot(t)
	c := start(t, &Server{MaxInFlight: 16})
	h := home(t, public(t), nobody)
	box := filepath.Join(h, "Maildir") + "/"
	const n = 100
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := fmt.Sprintf("Subject: %d\r\n\r\nmessage %d\r\n", i, i)
			st := c.DeliverMailbox(context.Background(), DeliverMailbox{User: "nobody", Mailbox: box, QueueID: fmt.Sprintf("Q%d", i),
				Sender: "s@x", Rcpt: "nobody@example.com"}, body(msg))
			if !st.OK() {
				errs <- fmt.Sprintf("%d: %+v", i, st)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	files := newFiles(t, box)
	if len(files) != n {
		t.Fatalf("%d messages, want %d", len(files), n)
	}
	seen := map[string]bool{}
	for _, f := range files {
		if uid, mode := owner(t, f); uid != nobody.UID || mode != 0o600 {
			t.Fatalf("%s: uid %d mode %v", f, uid, mode)
		}
		b, _ := os.ReadFile(f)
		i := strings.LastIndex(string(b), "message ")
		seen[string(b[i:])] = true
	}
	if len(seen) != n {
		t.Fatalf("%d distinct bodies, want %d", len(seen), n)
	}
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

// rawFrame is a frame as a hostile daemon writes it: any payload, any
// descriptors.
func rawFrame(t *testing.T, conn *net.UnixConn, payload []byte, fds ...int) {
	t.Helper()
	buf := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
	buf = append(buf, payload...)
	var oob []byte
	if len(fds) > 0 {
		oob = syscall.UnixRights(fds...)
	}
	if _, _, err := conn.WriteMsgUnix(buf, oob, nil); err != nil {
		t.Fatal(err)
	}
}

func readResponse(t *testing.T, br *responseReader) *response {
	t.Helper()
	r, err := br.next()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

type responseReader struct{ conn *net.UnixConn }

func (r *responseReader) next() (*response, error) {
	r.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var hdr [4]byte
	if _, err := readFull(r.conn, hdr[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	if _, err := readFull(r.conn, b); err != nil {
		return nil, err
	}
	return decodeResponse(b)
}

func readFull(c *net.UnixConn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// TestHostileFrames is a daemon that does not follow the protocol: the
// parent answers what it can, refuses, closes every descriptor it does
// not use, and gives up on the stream when the framing is lost.
func TestHostileFrames(t *testing.T) {
	before := openFDs(t)
	cc, sc := socketpair(t)
	done := make(chan error, 1)
	go func() { done <- (&Server{}).Serve(sc) }()
	rr := &responseReader{cc}

	tmp, err := os.CreateTemp(t.TempDir(), "body")
	if err != nil {
		t.Fatal(err)
	}
	defer tmp.Close()
	bodyFD := int(tmp.Fd())
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(p[0])
	defer syscall.Close(p[1])
	dir, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()

	mb, _ := (&Request{ID: 10, DeliverMailbox: &mbReq}).Encode()
	fwd, _ := (&Request{ID: 11, ReadForward: &ReadForward{User: "no_such_user_x", Path: "/x/.forward"}}).Encode()
	bad := append(append([]byte(nil), mb...), 0) // trailing byte: refused, id 10
	for _, tc := range []struct {
		name    string
		payload []byte
		fds     []int
		err     string
	}{
		{"delivery without a body", mb, nil, "no file descriptor"},
		{"delivery with two bodies", mb, []int{bodyFD, bodyFD}, "more than one"},
		{"ReadForward with a descriptor", fwd, []int{bodyFD}, "takes no file descriptor"},
		{"body is a pipe", mb, []int{p[0]}, "not a regular file"},
		{"body is a directory", mb, []int{int(dir.Fd())}, "not a regular file"},
		{"undecodable request", bad, []int{bodyFD}, "decode: field header: truncated"},
		{"no such account", fwd, nil, "no account"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rawFrame(t, cc, tc.payload, tc.fds...)
			r := readResponse(t, rr)
			if r.Status.Enhanced != "4.3.0" || !strings.Contains(r.Err, tc.err) {
				t.Fatalf("response %+v, want 4.3.0 and %q", r, tc.err)
			}
		})
	}
	// A frame larger than the limit ends the stream.
	rawFrame(t, cc, make([]byte, MaxPayload+1))
	select {
	case err := <-done:
		if !errors.Is(err, errFrameSize) {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve goes on after an oversized frame")
	}
	cc.Close()
	// Every descriptor the parent received is closed: only ours remain.
	tmp.Close()
	dir.Close()
	syscall.Close(p[0])
	syscall.Close(p[1])
	if after := openFDs(t); after > before {
		t.Fatalf("%d descriptors open, %d before", after, before)
	}
}

func TestVersionMismatchEndsStream(t *testing.T) {
	cc, sc := socketpair(t)
	defer cc.Close()
	done := make(chan error, 1)
	go func() { done <- (&Server{}).Serve(sc) }()
	rawFrame(t, cc, []byte{2, 0, 0, 0, 1, 1})
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "version 2") {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve goes on after a foreign version")
	}
}

// TestDaemonGoesAway: when the stream ends the parent kills the commands
// it runs for the daemon, and Serve returns.
func TestDaemonGoesAway(t *testing.T) {
	asRoot(t)
	cc, sc := socketpair(t)
	done := make(chan error, 1)
	go func() { done <- (&Server{}).Serve(sc) }()
	c := NewClient(cc, t.TempDir())
	out := filepath.Join(public(t), "out")
	os.Mkdir(out, 0o777)
	os.Chmod(out, 0o777)
	marker := filepath.Join(out, "after")
	res := make(chan deliver.Status, 1)
	go func() {
		res <- c.RunPipe(context.Background(), RunPipe{User: "nobody", Command: "sleep 3; touch " + marker, Rcpt: "r@x"}, body("x"))
	}()
	time.Sleep(300 * time.Millisecond)
	t0 := time.Now()
	c.Close()
	if st := <-res; st.Enhanced != "4.3.0" {
		t.Fatalf("status %+v", st)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("Serve took %v: the command was not killed", d)
	}
	time.Sleep(3500 * time.Millisecond)
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the command ran on after the daemon went away")
	}
}

// TestOpenDrop: the parent opens a file in its maildrop directory that
// the daemon could not read and passes it back; anything outside that
// directory, a symbolic link, or a file with another link is refused.
func TestOpenDrop(t *testing.T) {
	dir := t.TempDir()
	drop := filepath.Join(dir, "new")
	os.Mkdir(drop, 0o700)
	os.WriteFile(filepath.Join(drop, "A1"), []byte("envelope and message"), 0o600)
	os.WriteFile(filepath.Join(dir, "outside"), []byte("secret"), 0o600)
	os.Symlink(filepath.Join(dir, "outside"), filepath.Join(drop, "L1"))
	os.WriteFile(filepath.Join(drop, "H1"), []byte("x"), 0o600)
	os.Link(filepath.Join(drop, "H1"), filepath.Join(dir, "hardlink"))
	c := start(t, &Server{DropDir: drop})
	f, err := c.OpenDrop(filepath.Join(drop, "A1"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "envelope and message" {
		t.Errorf("read %q through the passed descriptor", b)
	}
	for _, p := range []string{filepath.Join(dir, "outside"), filepath.Join(drop, "L1"), filepath.Join(drop, "H1"),
		filepath.Join(drop, "..", "outside"), filepath.Join(drop, "missing")} {
		if f, err := c.OpenDrop(p); err == nil {
			f.Close()
			t.Errorf("OpenDrop(%s) was allowed", p)
		}
	}
	if f, err := start(t, &Server{}).OpenDrop(filepath.Join(drop, "A1")); err == nil {
		f.Close()
		t.Errorf("a server without DropDir opened a file")
	}
}

// TestMailboxSharesCommits: the parent's Maildir deliveries sync in the
// daemon's queue commits (Server.Commits, fed by queue.Follow in a split
// server).
func TestMailboxSharesCommits(t *testing.T) {
	nobody := asRoot(t)
	h := home(t, public(t), nobody)
	var st syscall.Stat_t
	if err := syscall.Stat(h, &st); err != nil {
		t.Fatal(err)
	}
	cc := &enginetest.BusyCommits{Device: uint64(st.Dev)}
	c := start(t, &Server{Commits: cc})
	box := filepath.Join(h, "Maildir") + "/"
	if s := c.DeliverMailbox(context.Background(), DeliverMailbox{User: "nobody", Mailbox: box, Rcpt: "nobody@example.com"}, body("Subject: x\r\n\r\nhi\r\n")); !s.OK() {
		t.Fatalf("status %+v", s)
	}
	if n := len(newFiles(t, box)); n != 1 {
		t.Fatalf("%d messages in new/", n)
	}
	if n := cc.Asked(); n != 2 {
		t.Errorf("the delivery asked for %d commits, want 2 (file, directory)", n)
	}
}
