// Package enginetest holds test helpers shared by larkpost's end-to-end
// tests: an SMTP dialog runner and a concurrency-safe log buffer.
package enginetest

import (
	"bufio"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// Dialog runs an SMTP conversation against addr. Each line of script is
//
//	-> TEXT      send TEXT followed by CRLF
//	=> "GO"      send a Go-quoted string exactly as given (bare LF, CR, ...)
//	<- TEXT      expect this reply line exactly
//	<~ REGEXP    expect a reply line matching REGEXP
//	<+ REGEXP    skip reply lines until one matches REGEXP (multi-line replies)
//	<* CLOSED    expect the server to close the connection
//	# ...        a comment
//
// Leading whitespace is ignored. The dialog fails the test at the first
// mismatch and reports the script line.
func Dialog(t testing.TB, addr, script string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	for i, raw := range strings.Split(script, "\n") {
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		op, arg, _ := strings.Cut(line, " ")
		c.SetDeadline(time.Now().Add(10 * time.Second))
		switch op {
		case "->":
			if _, err := c.Write([]byte(arg + "\r\n")); err != nil {
				t.Fatalf("dialog line %d: send %q: %v", i+1, arg, err)
			}
		case "=>":
			s, err := strconv.Unquote(arg)
			if err != nil {
				t.Fatalf("dialog line %d: bad quoted string %s: %v", i+1, arg, err)
			}
			if _, err := c.Write([]byte(s)); err != nil {
				t.Fatalf("dialog line %d: send %q: %v", i+1, s, err)
			}
		case "<-", "<~":
			got, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("dialog line %d: want %q, read error: %v (got %q)", i+1, arg, err, got)
			}
			got = strings.TrimRight(got, "\r\n")
			if op == "<-" && got != arg {
				t.Fatalf("dialog line %d: got %q, want %q", i+1, got, arg)
			}
			if op == "<~" && !regexp.MustCompile(arg).MatchString(got) {
				t.Fatalf("dialog line %d: got %q, want match %q", i+1, got, arg)
			}
		case "<+":
			rx := regexp.MustCompile(arg)
			for {
				got, err := r.ReadString('\n')
				if err != nil {
					t.Fatalf("dialog line %d: want match %q, read error: %v", i+1, arg, err)
				}
				if rx.MatchString(strings.TrimRight(got, "\r\n")) {
					break
				}
			}
		case "<*":
			got, err := r.ReadString('\n')
			if err == nil {
				t.Fatalf("dialog line %d: want connection closed, got %q", i+1, got)
			}
		default:
			t.Fatalf("dialog line %d: unknown op %q", i+1, op)
		}
	}
}

// LogBuffer collects log output from servers under test.
type LogBuffer struct {
	mu sync.Mutex
	sb strings.Builder
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sb.Write(p)
}

func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sb.String()
}

// WaitFor polls until the log matches re or the timeout passes.
func (b *LogBuffer) WaitFor(re string, timeout time.Duration) bool {
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if rx.MatchString(b.String()) {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return rx.MatchString(b.String())
}

// Send delivers one message over SMTP with go-smtp's client, as a plain
// client would, and returns the final reply's text.
func Send(addr, from string, to []string, body string) (string, error) {
	c, err := smtp.Dial(addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	// A server that stops answering fails the test in a minute with the
	// stage it stopped at, not after go-smtp's 5 and 12 minute defaults.
	c.CommandTimeout = 30 * time.Second
	c.SubmissionTimeout = 60 * time.Second
	if err := c.Hello("client.example"); err != nil {
		return "", fmt.Errorf("EHLO: %w", err)
	}
	if err := c.Mail(from, nil); err != nil {
		return "", fmt.Errorf("MAIL: %w", err)
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return "", fmt.Errorf("RCPT %s: %w", r, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write([]byte(body)); err != nil {
		return "", fmt.Errorf("message: %w", err)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", fmt.Errorf("end of data: %w", err)
	}
	c.Quit()
	return resp.StatusText, nil
}
