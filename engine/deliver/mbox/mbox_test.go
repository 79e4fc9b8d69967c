package mbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"golang.org/x/sys/unix"
)

// holdEnv makes the test binary, re-executed by TestFcntlLockedByOtherProcess,
// hold an fcntl lock on the named file instead of running tests: fcntl locks
// are per process, so only another process can show that they are honoured.
const holdEnv = "MBOX_TEST_HOLD_FCNTL"

func TestMain(m *testing.M) {
	if path := os.Getenv(holdEnv); path != "" {
		os.Exit(holdFcntl(path))
	}
	os.Exit(m.Run())
}

// holdFcntl takes a classic fcntl lock, as Postfix and mutt do, reports it
// on stdout and keeps it until stdin is closed, so that the child cannot
// outlive a parent that dies.
func holdFcntl(path string) int {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("locked")
	io.Copy(io.Discard, os.Stdin)
	return 0
}

var when = time.Date(2024, time.March, 5, 9, 7, 3, 0, time.UTC)

const fromAlice = "From alice@example.org Tue Mar  5 09:07:03 2024\n"

func TestDeliverContent(t *testing.T) {
	long := strings.Repeat("x", 100<<10) + "From " + strings.Repeat("y", 100<<10)
	fromLong := "From " + strings.Repeat("z", 200<<10)
	// More '>' than any buffer holds, so the quoting decision for the
	// line is only possible after several reads.
	manyGT := strings.Repeat(">", 70<<10)
	tests := []struct {
		name   string
		sender string
		msgs   []string
		want   string
	}{
		{"plain", "alice@example.org",
			[]string{"Subject: hi\n\nhello\n"},
			fromAlice + "Subject: hi\n\nhello\n\n"},
		{"From at line starts", "alice@example.org",
			[]string{"Subject: x\n\nFrom here\nnot From here\n  From indented\nFrom \n"},
			fromAlice + "Subject: x\n\n>From here\nnot From here\n  From indented\n>From \n\n"},
		{"already quoted From", "alice@example.org",
			[]string{"Subject: x\n\n>From a\n>>From b\n> From c\n>From\n>\n"},
			fromAlice + "Subject: x\n\n>>From a\n>>>From b\n> From c\n>From\n>\n\n"},
		{"From without space", "alice@example.org",
			[]string{"Subject: x\n\nFrom\nFromage\nFrom\tx\nfrom y\n"},
			fromAlice + "Subject: x\n\nFrom\nFromage\nFrom\tx\nfrom y\n\n"},
		{"From header", "alice@example.org",
			[]string{"From: x@example.org\nTo: y@example.org\n\nbody\n"},
			fromAlice + "From: x@example.org\nTo: y@example.org\n\nbody\n\n"},
		{"first line is From_", "alice@example.org",
			[]string{"From bob Mon Jan  1 00:00:00 2024\nSubject: x\n\nb\n"},
			fromAlice + ">From bob Mon Jan  1 00:00:00 2024\nSubject: x\n\nb\n\n"},
		{"no trailing newline", "alice@example.org",
			[]string{"Subject: x\n\nbody"},
			fromAlice + "Subject: x\n\nbody\n\n"},
		{"ends in From_ without newline", "alice@example.org",
			[]string{"Subject: x\n\nFrom "},
			fromAlice + "Subject: x\n\n>From \n\n"},
		{"ends in partial From", "alice@example.org",
			[]string{"Subject: x\n\n>>Fro"},
			fromAlice + "Subject: x\n\n>>Fro\n\n"},
		{"empty message", "alice@example.org",
			[]string{""},
			fromAlice + "\n"},
		{"blank lines kept", "alice@example.org",
			[]string{"Subject: x\n\n\n\nb\n\n"},
			fromAlice + "Subject: x\n\n\n\nb\n\n\n"},
		{"long line with From inside", "alice@example.org",
			[]string{"Subject: x\n\n" + long + "\n"},
			fromAlice + "Subject: x\n\n" + long + "\n\n"},
		{"long line starting with From", "alice@example.org",
			[]string{"Subject: x\n\n" + fromLong + "\nFrom end\n"},
			fromAlice + "Subject: x\n\n>" + fromLong + "\n>From end\n\n"},
		{"long run of > before From", "alice@example.org",
			[]string{"Subject: x\n\n" + manyGT + "From x\n" + manyGT + "x\n"},
			fromAlice + "Subject: x\n\n>" + manyGT + "From x\n" + manyGT + "x\n\n"},
		{"null sender", "",
			[]string{"Subject: bounce\n\nsorry\n"},
			"From MAILER-DAEMON Tue Mar  5 09:07:03 2024\nSubject: bounce\n\nsorry\n\n"},
		{"sender needing quotes", "john smith@example.org",
			[]string{"Subject: x\n\nb\n"},
			"From \"john smith\"@example.org Tue Mar  5 09:07:03 2024\nSubject: x\n\nb\n\n"},
		{"sender with newline", "a\nFrom b@example.org",
			[]string{"Subject: x\n\nb\n"},
			"From \"a?From b\"@example.org Tue Mar  5 09:07:03 2024\nSubject: x\n\nb\n\n"},
		{"two deliveries", "alice@example.org",
			[]string{"Subject: one\n\nFrom a\n", "Subject: two\n\nb"},
			fromAlice + "Subject: one\n\n>From a\n\n" + fromAlice + "Subject: two\n\nb\n\n"},
	}
	readers := []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"whole", func(r io.Reader) io.Reader { return r }},
		// A byte at a time puts a read boundary inside every "From ".
		{"onebyte", iotest.OneByteReader},
	}
	for _, tt := range tests {
		for _, rd := range readers {
			t.Run(tt.name+"/"+rd.name, func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "mbox")
				var total int64
				for _, m := range tt.msgs {
					n, err := Deliver(path, tt.sender, when, rd.wrap(strings.NewReader(m)))
					if err != nil {
						t.Fatal(err)
					}
					total += n
				}
				got, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != tt.want {
					t.Errorf("mbox differs\n got %.300q\nwant %.300q", got, tt.want)
				}
				if total != int64(len(got)) {
					t.Errorf("Deliver reported %d bytes, file has %d", total, len(got))
				}
				if _, err := os.Lstat(path + ".lock"); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("dotlock left behind: %v", err)
				}
			})
		}
	}
}

func TestFromLineUsesNowsLocation(t *testing.T) {
	tz := time.FixedZone("X", -5*3600)
	tests := []struct {
		now  time.Time
		want string
	}{
		{when, "From a@b Tue Mar  5 09:07:03 2024\n"},
		{when.In(tz), "From a@b Tue Mar  5 04:07:03 2024\n"},
		{time.Date(2025, time.December, 31, 23, 59, 59, 999, time.UTC), "From a@b Wed Dec 31 23:59:59 2025\n"},
	}
	for _, tt := range tests {
		if got := fromLine("a@b", tt.now); got != tt.want {
			t.Errorf("fromLine(%v) = %q, want %q", tt.now, got, tt.want)
		}
	}
}

func TestQuoteSender(t *testing.T) {
	tests := []struct{ in, want string }{
		{"alice@example.org", "alice@example.org"},
		{"first.last+tag@example.org", "first.last+tag@example.org"},
		{"no-domain", "no-domain"},
		{"john smith@example.org", `"john smith"@example.org`},
		{`a"b\c@example.org`, `"a\"b\\c"@example.org`},
		{"a..b@example.org", `"a..b"@example.org`},
		{".a@example.org", `".a"@example.org`},
		{"@example.org", `""@example.org`},
		{"a@b@example.org", `"a@b"@example.org`},
		{"jörg@example.org", "jörg@example.org"},
		{"a\r\nb@example.org", `"a??b"@example.org`},
	}
	for _, tt := range tests {
		if got := quoteSender(tt.in); got != tt.want {
			t.Errorf("quoteSender(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestDeliverCreatesWithModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool", "mail")
	path := filepath.Join(dir, "alice")
	if _, err := Deliver(path, "a@b", when, strings.NewReader("x\n")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		max  os.FileMode
	}{{dir, 0o700}, {path, 0o600}} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&^c.max != 0 {
			t.Errorf("%s has mode %v, want at most %v", c.path, fi.Mode().Perm(), c.max)
		}
	}
}

var errBoom = errors.New("boom")

// failingReader returns its data and then errBoom, recording how big the
// mailbox was at that moment to show that the failure came after bytes had
// reached the file.
type failingReader struct {
	r        io.Reader
	mbox     string
	sizeThen int64
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		if fi, serr := os.Stat(f.mbox); serr == nil {
			f.sizeThen = fi.Size()
		}
		return n, errBoom
	}
	return n, err
}

func TestFailedDeliveryIsTruncated(t *testing.T) {
	big := "Subject: big\n\n" + strings.Repeat("From line that is long enough to matter\n", 10000)
	tests := []struct {
		name      string
		data      string
		wantGrown bool // the failure must come after a flush to the file
	}{
		{"at once", "", false},
		{"after 10 bytes", big[:10], false},
		{"after 300 KiB", big, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mbox")
			if _, err := Deliver(path, "a@b", when, strings.NewReader("Subject: first\n\nkeep me\n")); err != nil {
				t.Fatal(err)
			}
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			fr := &failingReader{r: strings.NewReader(tt.data), mbox: path}
			n, err := Deliver(path, "a@b", when, fr)
			if !errors.Is(err, errBoom) {
				t.Fatalf("Deliver = %d, %v; want errBoom", n, err)
			}
			if n != 0 {
				t.Errorf("failed Deliver reported %d bytes", n)
			}
			if tt.wantGrown && fr.sizeThen <= int64(len(before)) {
				t.Errorf("mailbox was %d bytes at the failure, want more than %d", fr.sizeThen, len(before))
			}
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(after, before) {
				t.Errorf("mailbox changed by failed delivery: %d bytes, was %d", len(after), len(before))
			}
			if _, err := os.Lstat(path + ".lock"); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("dotlock left behind: %v", err)
			}
		})
	}
}

func TestDotlock(t *testing.T) {
	tests := []struct {
		name     string
		age      time.Duration
		stale    time.Duration // Options.StaleLockAge
		wantLock bool          // want ErrLocked
	}{
		{"fresh lock is honoured", 0, 0, true},
		{"one hour old lock is broken", time.Hour, 0, false},
		{"lock younger than StaleLockAge is honoured", 10 * time.Second, time.Minute, true},
		{"lock older than StaleLockAge is broken", 10 * time.Second, 5 * time.Second, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mbox")
			lock := path + ".lock"
			if err := os.WriteFile(lock, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if tt.age > 0 {
				old := time.Now().Add(-tt.age)
				if err := os.Chtimes(lock, old, old); err != nil {
					t.Fatal(err)
				}
			}
			const timeout = 300 * time.Millisecond
			start := time.Now()
			_, err := DeliverOptions(path, "a@b", when, strings.NewReader("x\n"),
				Options{LockTimeout: timeout, StaleLockAge: tt.stale})
			elapsed := time.Since(start)
			if !tt.wantLock {
				if err != nil {
					t.Fatalf("Deliver with stale dotlock: %v", err)
				}
				if _, err := os.Lstat(lock); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("dotlock left behind: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrLocked) {
				t.Fatalf("Deliver = %v, want ErrLocked", err)
			}
			if elapsed < timeout || elapsed > timeout+time.Second {
				t.Errorf("gave up after %v, want about %v", elapsed, timeout)
			}
			if _, err := os.Lstat(lock); err != nil {
				t.Errorf("someone else's dotlock was removed: %v", err)
			}
			if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("mailbox touched without the dotlock: %v", err)
			}
		})
	}
}

func TestFcntlLockedByOtherProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mbox")
	release := startHolder(t, path)

	for _, o := range []Options{
		{NoDotlock: true, LockTimeout: 300 * time.Millisecond},
		{LockTimeout: 300 * time.Millisecond},
	} {
		start := time.Now()
		_, err := DeliverOptions(path, "a@b", when, strings.NewReader("x\n"), o)
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("Deliver %+v under another process's fcntl lock = %v, want ErrLocked", o, err)
		}
		if elapsed := time.Since(start); elapsed < o.LockTimeout || elapsed > o.LockTimeout+time.Second {
			t.Errorf("gave up after %v, want about %v", elapsed, o.LockTimeout)
		}
		if _, err := os.Lstat(path + ".lock"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("dotlock left behind: %v", err)
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Fatalf("mailbox written under another process's lock: %v, %v", fi, err)
	}

	release()
	if _, err := Deliver(path, "a@b", when, strings.NewReader("x\n")); err != nil {
		t.Fatalf("Deliver after the lock was released: %v", err)
	}
}

// startHolder runs the test binary as another process holding an fcntl
// lock on path, and returns a function that makes it let go and exit.
func startHolder(t *testing.T, path string) (release func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), holdEnv+"="+path)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			stdin.Close()
			if err := cmd.Wait(); err != nil {
				t.Errorf("lock holder: %v", err)
			}
		})
	}
	t.Cleanup(release)
	if line, err := bufio.NewReader(stdout).ReadString('\n'); line != "locked\n" {
		t.Fatalf("lock holder said %q, %v", line, err)
	}
	return release
}

func TestMailboxReplacedWhileWaiting(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mbox")
	release := startHolder(t, path)
	old, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()

	done := make(chan error, 1)
	go func() {
		_, err := DeliverOptions(path, "a@b", when, strings.NewReader("x\n"), Options{NoDotlock: true})
		done <- err
	}()
	// Give Deliver time to open the old file and start waiting on its
	// lock; if it is slower, it opens the new file directly and the test
	// still passes without exercising the check.
	time.Sleep(200 * time.Millisecond)
	must(t, os.WriteFile(filepath.Join(dir, "new"), []byte("rewritten\n"), 0o600))
	must(t, os.Rename(filepath.Join(dir, "new"), path))
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(old); len(b) != 0 {
		t.Errorf("delivered into the replaced file: %q", b)
	}
	want := "rewritten\nFrom a@b Tue Mar  5 09:07:03 2024\nx\n\n"
	if b, _ := os.ReadFile(path); string(b) != want {
		t.Errorf("mailbox is %q, want %q", b, want)
	}
}

func TestConcurrentDeliveries(t *testing.T) {
	const goroutines, each = 20, 10
	// Bodies larger than the write buffer take several write(2) calls,
	// so broken locking would show up as interleaving.
	body := func(g, i int) string {
		return fmt.Sprintf("Subject: g%02d m%02d\n\nFrom g%02d m%02d\n%s", g, i, g, i,
			strings.Repeat(fmt.Sprintf("line of g%02d m%02d\n", g, i), 5000))
	}
	for _, o := range []Options{{}, {NoDotlock: true}, {NoFcntl: true}} {
		t.Run(fmt.Sprintf("%+v", o), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mbox")
			var wg sync.WaitGroup
			for g := range goroutines {
				wg.Go(func() {
					for i := range each {
						if _, err := DeliverOptions(path, "a@b", when, strings.NewReader(body(g, i)), o); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()

			want := map[string]bool{}
			for g := range goroutines {
				for i := range each {
					want[strings.Replace(body(g, i), "\nFrom ", "\n>From ", 1)+"\n"] = true
				}
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			const from = "From a@b Tue Mar  5 09:07:03 2024\n"
			if !bytes.HasPrefix(data, []byte(from)) {
				t.Fatalf("mbox starts with %.80q", data)
			}
			msgs := strings.Split(string(data[len("From "):]), "\nFrom ")
			if len(msgs) != goroutines*each {
				t.Fatalf("%d messages, want %d", len(msgs), goroutines*each)
			}
			for n, m := range msgs {
				m, ok := strings.CutPrefix("From "+m, from)
				if !ok {
					t.Fatalf("message %d has a bad From_ line: %.80q", n, m)
				}
				if n < len(msgs)-1 {
					m += "\n" // eaten by the split
				}
				if !want[m] {
					t.Fatalf("message %d is not one that was sent, or came twice: %.200q", n, m)
				}
				delete(want, m)
			}
		})
	}
}

func TestRefusesNonRegular(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, path string) (check func(t *testing.T))
	}{
		{"symlink to a file", func(t *testing.T, path string) func(*testing.T) {
			target := filepath.Join(filepath.Dir(path), "target")
			must(t, os.WriteFile(target, []byte("precious\n"), 0o600))
			must(t, os.Symlink(target, path))
			return func(t *testing.T) {
				if b, _ := os.ReadFile(target); string(b) != "precious\n" {
					t.Errorf("symlink target changed to %q", b)
				}
			}
		}},
		{"dangling symlink", func(t *testing.T, path string) func(*testing.T) {
			target := filepath.Join(filepath.Dir(path), "target")
			must(t, os.Symlink(target, path))
			return func(t *testing.T) {
				if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("symlink target created: %v", err)
				}
			}
		}},
		{"directory", func(t *testing.T, path string) func(*testing.T) {
			must(t, os.Mkdir(path, 0o700))
			return func(*testing.T) {}
		}},
		{"fifo", func(t *testing.T, path string) func(*testing.T) {
			must(t, unix.Mkfifo(path, 0o600))
			return func(*testing.T) {}
		}},
		{"hard link", func(t *testing.T, path string) func(*testing.T) {
			other := filepath.Join(filepath.Dir(path), "other")
			must(t, os.WriteFile(other, []byte("precious\n"), 0o600))
			must(t, os.Link(other, path))
			return func(t *testing.T) {
				if b, _ := os.ReadFile(other); string(b) != "precious\n" {
					t.Errorf("hard-linked file changed to %q", b)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mbox")
			check := tt.setup(t, path)
			n, err := Deliver(path, "a@b", when, strings.NewReader("x\n"))
			if err == nil {
				t.Fatalf("Deliver into %s succeeded with %d bytes", tt.name, n)
			}
			t.Log(err)
			check(t)
			if _, err := os.Lstat(path + ".lock"); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("dotlock left behind: %v", err)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// FuzzQuote checks that mboxrd quoting is reversible and never leaves a line
// that a reader would take for the start of another message.
func FuzzQuote(f *testing.F) {
	for _, s := range []string{
		"Subject: x\n\nFrom here\n>From there\n",
		"From ",
		">>>From x",
		"Fro",
		"",
		"\n\n\n",
		"a\r\nFrom b\r\n",
	} {
		f.Add([]byte(s))
	}
	const from = "From fuzz@example.org Tue Mar  5 09:07:03 2024\n"
	f.Fuzz(func(t *testing.T, msg []byte) {
		path := filepath.Join(t.TempDir(), "mbox")
		n, err := Deliver(path, "fuzz@example.org", when, bytes.NewReader(msg))
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if n != int64(len(data)) {
			t.Errorf("Deliver reported %d bytes, file has %d", n, len(data))
		}
		body, ok := bytes.CutPrefix(data, []byte(from))
		if !ok {
			t.Fatalf("no From_ line: %q", data)
		}
		body, ok = bytes.CutSuffix(body, []byte("\n"))
		if !ok {
			t.Fatalf("no blank line at the end: %q", data)
		}
		var got []byte
		for _, line := range bytes.SplitAfter(body, []byte("\n")) {
			rest := bytes.TrimLeft(line, ">")
			if bytes.HasPrefix(rest, []byte("From ")) {
				if len(rest) == len(line) {
					t.Fatalf("unquoted From_ line %q in %q", line, data)
				}
				line = line[1:]
			}
			got = append(got, line...)
		}
		want := msg
		if len(want) > 0 && want[len(want)-1] != '\n' {
			want = append(want[:len(want):len(want)], '\n')
		}
		if !bytes.Equal(got, want) {
			t.Errorf("round trip of %q gave %q", msg, got)
		}
	})
}

// FuzzQuoteChunks compares the streaming quoter, fed in reads of a fuzzed
// size, with a plain line-by-line quoting. It runs in memory, so it gets
// through far more inputs than FuzzQuote with its fsync per input.
func FuzzQuoteChunks(f *testing.F) {
	f.Add([]byte(">>From x\nFrom y\n>Fro"), uint8(1))
	f.Add([]byte("a\nFrom "), uint8(3))
	f.Fuzz(func(t *testing.T, msg []byte, chunk uint8) {
		var got bytes.Buffer
		bw := bufio.NewWriter(&got)
		r := &chunkReader{data: msg, size: int(chunk)%17 + 1}
		if err := copyMessage(bw, make([]byte, 64), "a@b", when, r); err != nil {
			t.Fatal(err)
		}
		if err := bw.Flush(); err != nil {
			t.Fatal(err)
		}
		want := []byte(fromLine("a@b", when))
		if len(msg) > 0 {
			for _, line := range bytes.SplitAfter(msg, []byte("\n")) {
				if bytes.HasPrefix(bytes.TrimLeft(line, ">"), []byte("From ")) {
					want = append(want, '>')
				}
				want = append(want, line...)
			}
			if msg[len(msg)-1] != '\n' {
				want = append(want, '\n')
			}
		}
		want = append(want, '\n')
		if !bytes.Equal(got.Bytes(), want) {
			t.Errorf("quoting %q in reads of %d gave %q, want %q", msg, r.size, got.Bytes(), want)
		}
	})
}

type chunkReader struct {
	data []byte
	size int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.size)], c.data)
	c.data = c.data[n:]
	return n, nil
}

func BenchmarkDeliver(b *testing.B) {
	var msg bytes.Buffer
	msg.WriteString("From: bench@example.org\nTo: alice@example.org\nSubject: benchmark\n\n")
	for msg.Len() < 2048 {
		msg.WriteString("From here, a line of body text\n")
	}
	msg.Truncate(2047)
	msg.WriteByte('\n')
	path := filepath.Join(b.TempDir(), "mbox")
	b.SetBytes(int64(msg.Len()))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Deliver(path, "bench@example.org", when, bytes.NewReader(msg.Bytes())); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkQuote measures the copying and quoting alone, without the locks
// and the fsync that dominate BenchmarkDeliver.
func BenchmarkQuote(b *testing.B) {
	msg := []byte("Subject: x\n\n" + strings.Repeat("From a line of body text, 32 b\n>From another one, 27 b\n", 1<<14))
	bw := bufio.NewWriterSize(io.Discard, bufSize)
	buf := make([]byte, bufSize)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if err := copyMessage(bw, buf, "a@b", when, bytes.NewReader(msg)); err != nil {
			b.Fatal(err)
		}
	}
}
