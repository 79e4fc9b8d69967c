// Like attack_test.go, this measures the server's memory and timing,
// which the race detector multiplies: plain test run only.

//go:build !race

package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/dkimsign"
	"github.com/larkpost/larkpost/engine/resolver/dnstest"
)

// repeatReader yields block n times, as a body too large to build.
type repeatReader struct {
	block string
	n     int
	off   int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	k := copy(p, r.block[r.off:])
	if r.off += k; r.off == len(r.block) {
		r.off, r.n = 0, r.n-1
	}
	return k, nil
}

// TestSignedFloodBoundedMemory: 20 concurrent 9.5 MB messages, each with
// a valid DKIM signature, 7 more whose keys do not exist, and a 50-set
// ARC chain of junk, into a policy that runs SPF, DKIM, DMARC and ARC on
// every one. The checks read the stored message as a stream: every
// message is verified, acknowledged and delivered, and the server's peak
// RSS stays under 300 MB.
func TestSignedFloodBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 190 MB")
	}
	key, txt, err := dkimsign.Keygen("rsa", 2048)
	if err != nil {
		t.Fatal(err)
	}
	kf := filepath.Join(t.TempDir(), "k.key")
	os.WriteFile(kf, key, 0o600)
	signer, err := dkimsign.New([]dkimsign.KeyConfig{{Domain: "partner.example", Selector: "s1", File: kf}}, dkimsign.Options{})
	if err != nil {
		t.Fatal(err)
	}
	const n, blocks = 20, 150
	header := "From: Ann <ann@partner.example>\r\nTo: alice@mx.test\r\nSubject: big signed\r\n"
	sig, err := signer.Sign("partner.example", []byte(header), &repeatReader{block: floodBlock, n: blocks})
	if err != nil {
		t.Fatal(err)
	}
	var junk strings.Builder
	for i := 2; i <= 8; i++ {
		junk.WriteString(strings.Replace(sig, "s=s1", fmt.Sprintf("s=gone%d", i), 1))
	}
	for i := 50; i >= 1; i-- {
		fmt.Fprintf(&junk, "ARC-Seal: i=%d; a=rsa-sha256; cv=pass; d=lists.example; s=arc; b=AAAA\r\n", i)
		fmt.Fprintf(&junk, "ARC-Message-Signature: i=%d; a=rsa-sha256; c=relaxed/relaxed; d=lists.example; s=arc; h=from; bh=AAAA; b=AAAA\r\n", i)
		fmt.Fprintf(&junk, "ARC-Authentication-Results: i=%d; lists.example; spf=pass\r\n", i)
	}
	head := sig + junk.String() + header + "\r\n"
	dns := dnstest.NewServer(t,
		`partner.example. 300 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"`,
		`_dmarc.partner.example. 300 IN TXT "v=DMARC1; p=reject"`,
		`s1._domainkey.partner.example. 300 IN TXT "`+txt[:200]+`" "`+txt[200:]+`"`,
	)
	s := startServer(t, fmt.Sprintf(`config(networks = ["192.0.2.0/24"], destinations = ["mx.test"], local_recipients = ["alice"],
    resolvers = [%q], header_total_limit = "1MB")
def on_data(tx, msg):
    sigs = dkim.verify(msg)
    d = dmarc.check(msg, spf = spf.check(tx.conn.ip, tx.conn.helo, tx.sender), dkim = sigs)
    a = arc.verify(msg)
    if d.result != "pass" or len([x for x in sigs if x.result == "pass"]) != 1 or a.result != "fail":
        return reject("checks: dmarc %%s arc %%s" %% (d.result, a.result))
`, dns.Addr))
	pid := s.cmd.Process.Pid
	base := peakRSS(t, pid)
	acked, took := floodBig(t, s.addr, "ann@partner.example", head, n, blocks)
	delivered := waitCount(t, filepath.Join(s.data, "mail", "alice"), int(acked))
	peak := peakRSS(t, pid)
	t.Logf("%d of %d signed messages of 9.5 MB (8 signatures, 50 ARC sets each) checked and acknowledged in %v, %d delivered; server RSS %d MB at start, peak %d MB",
		acked, n, took.Round(time.Millisecond), delivered, base/mb, peak/mb)
	if acked != n || delivered != n {
		t.Errorf("%d acknowledged and %d delivered, want %d", acked, delivered, n)
	}
	if peak > 300*mb {
		t.Errorf("peak RSS %d MB, want under 300 MB", peak/mb)
	}
}

// floodBlock is 63 KB of body lines; 150 of them make a 9.5 MB message.
var floodBlock = strings.Repeat(strings.Repeat("0123456789", 99)+"\r\n", 64)

// floodBig sends n messages at once from 127.0.0.2, each head followed
// by blocks of floodBlock, and returns how many were acknowledged 250 and
// how long that took; other replies fail the test.
func floodBig(t *testing.T, addr, from, head string, n, blocks int) (int64, time.Duration) {
	t.Helper()
	var wg sync.WaitGroup
	var acked atomic.Int64
	errs := make(chan error, n)
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			c, r, err := smtpPrelude(addr, "127.0.0.2", "MAIL FROM:<"+from+">")
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			w := bufio.NewWriterSize(c, 64<<10)
			w.WriteString(head)
			io.Copy(w, &repeatReader{block: floodBlock, n: blocks})
			w.WriteString(".\r\n")
			if err := w.Flush(); err != nil {
				errs <- err
				return
			}
			l, err := r.ReadString('\n')
			if err != nil || !strings.HasPrefix(l, "250 2.0.0 Ok: queued as") {
				errs <- fmt.Errorf("message %d: %q %v", i, l, err)
				return
			}
			acked.Add(1)
		})
	}
	wg.Wait()
	took := time.Since(start)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	return acked.Load(), took
}
