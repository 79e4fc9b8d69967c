// Like attack_test.go, this measures the server's memory, which the race
// detector multiplies: plain test run only.

//go:build !race

package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
)

// floodMilter is a hostile milter: it replaces every body with a 5 MB
// one and tries to grow the header past any sane size.
type floodMilter struct {
	gomilter.NoOpMilter
	body []byte
}

func (m *floodMilter) Body(mod *gomilter.Modifier) (gomilter.Response, error) {
	value := strings.Repeat("x", 8000)
	for i := 0; i < 200; i++ { // 1.6 MB of headers: more than the 1 MB cap
		mod.AddHeader(fmt.Sprintf("X-Flood-%d", i), value)
	}
	mod.ReplaceBody(m.body)
	return gomilter.RespAccept, nil
}

// TestMilterFloodBoundedMemory: 20 concurrent 9.5 MB messages through a
// milter that replaces each body with 5 MB and adds 1.6 MB of header
// fields: the replaced bodies go to disk, the header stops at its cap,
// and the server's memory stays bounded.
func TestMilterFloodBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 190 MB")
	}
	replacement := bytes.Repeat([]byte(strings.Repeat("r", 78)+"\r\n"), 5<<20/80) // 5 MB
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &gomilter.Server{NewMilter: func() gomilter.Milter { return &floodMilter{body: replacement} },
		Actions: gomilter.OptAddHeader | gomilter.OptChangeBody}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	const n, blocks = 20, 150
	s := startServer(t, fmt.Sprintf(`config(networks = ["192.0.2.0/24"], destinations = ["mx.test"], local_recipients = ["alice"],
    smtpd_milters = ["inet:%s"], message_size_limit = "20MB")`, ln.Addr()))
	pid := s.cmd.Process.Pid
	base := peakRSS(t, pid)
	acked, took := floodBig(t, s.addr, "ann@example.org", "From: ann@example.org\r\nTo: alice@mx.test\r\nSubject: flood\r\n\r\n", n, blocks)
	dir := filepath.Join(s.data, "mail", "alice")
	delivered := waitCount(t, dir, int(acked))
	peak := peakRSS(t, pid)
	t.Logf("%d of %d messages of 9.5 MB acknowledged in %v through a milter replacing each body with 5 MB and adding 1.6 MB of header, %d delivered; server RSS %d MB at start, peak %d MB",
		acked, n, took.Round(time.Millisecond), delivered, base/mb, peak/mb)
	if acked != n || delivered != n {
		t.Errorf("%d acknowledged and %d delivered, want %d", acked, delivered, n)
	}
	if peak > 300*mb {
		t.Errorf("peak RSS %d MB, want under 300 MB", peak/mb)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "new", "*"))
	if len(files) > 0 {
		b, err := os.ReadFile(files[0])
		if err != nil {
			t.Fatal(err)
		}
		head, body, _ := bytes.Cut(b, []byte("\n\n"))
		if len(body) != len(bytes.ReplaceAll(replacement, []byte("\r\n"), []byte("\n"))) || bytes.Contains(body, []byte("0123456789")) {
			t.Errorf("delivered body is %d bytes, not the milter's replacement", len(body))
		}
		if len(head) > 1<<20+64<<10 || !bytes.Contains(head, []byte("X-Flood-0:")) {
			t.Errorf("header of %d bytes: want the milter's fields up to the 1 MB cap", len(head))
		}
	}
}
