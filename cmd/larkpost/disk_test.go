package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestFullDisk runs the real server with data_dir on a 96 MB tmpfs
// (mounted by the test: it needs root, which CI has). What it covers:
// the queue's reserve holds while mail is sent until the file system is
// short (452 4.3.1 at MAIL, never a crash: Badger's mmap'd files would
// SIGBUS on a full disk); a file system filled to the last byte by
// something else does not kill the server; the server starts again on it
// (the ballast gives Badger room to open) and answers 452; once space is
// freed, every acknowledged message is delivered. engine's
// TestFullDiskShim covers the same logic without root, with a fake
// statfs, but not the real file system.
func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root; engine's TestFullDiskShim covers the logic")
	}
	dir := t.TempDir()
	fs := filepath.Join(dir, "fs")
	os.Mkdir(fs, 0o700)
	if err := syscall.Mount("tmpfs", fs, "tmpfs", 0, "size=96m"); err != nil {
		t.Fatalf("mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(fs, syscall.MNT_DETACH) })
	data := filepath.Join(fs, "data")
	cfg := filepath.Join(dir, "larkpost.star")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`config(listen = {"smtp": "127.0.0.1:0"}, data_dir = %q, hostname = "mx.test", resolvers = [],
	message_size_limit = "1MB", minimal_backoff = "1s", maximal_backoff = "2s")
`, data)), 0o600)
	inbox := filepath.Join(data, "mail", "alice")
	s := runServer(t, cfg, data)

	// 1. Send 200 KB messages from four clients until the server says 452.
	body := "Subject: fill\r\n\r\n" + strings.Repeat(strings.Repeat("f", 998)+"\r\n", 200)
	var mu sync.Mutex
	acked, refused := 0, 0
	var other []string
	var wg sync.WaitGroup
	for c := 0; c < 4; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 150; i++ {
				err := sendOne(s.addr, "ann@example.org", "alice@mx.test", body)
				mu.Lock()
				switch {
				case err == nil:
					acked++
				case strings.Contains(err.Error(), "452"):
					refused++
				default:
					other = append(other, err.Error())
				}
				stop := refused > 0
				mu.Unlock()
				if stop {
					return
				}
			}
		}()
	}
	wg.Wait()
	if refused == 0 || acked == 0 || len(other) > 0 {
		t.Fatalf("%d acknowledged, %d refused with 452 4.3.1, other errors %v: want some of both and nothing else", acked, refused, other)
	}
	alive(t, s)

	// 2. Something else fills the file system to the last byte.
	f, _ := os.Create(filepath.Join(fs, "filler"))
	chunk := make([]byte, 1<<20)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	f.Close()
	time.Sleep(500 * time.Millisecond)
	alive(t, s)
	mailRefused(t, s.addr)

	// 3. Restart on the full file system.
	s.cmd.Process.Kill()
	s.wait(5 * time.Second)
	s = runServer(t, cfg, data)
	mailRefused(t, s.addr)
	waitLog(t, s, "delivery paused")

	// 4. Space comes back: delivery resumes, every acknowledged message
	// arrives, and mail is accepted again.
	os.Remove(filepath.Join(fs, "filler"))
	deadline := time.Now().Add(60 * time.Second)
	for countMaildir(t, inbox) < acked && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if got := countMaildir(t, inbox); got < acked {
		t.Fatalf("%d messages acknowledged, %d delivered", acked, got)
	}
	// alice reads and deletes her mail: the file system has room again.
	os.RemoveAll(filepath.Join(inbox, "new"))
	time.Sleep(200 * time.Millisecond)
	if err := sendOne(s.addr, "ann@example.org", "alice@mx.test", "Subject: after\r\n\r\nroom again\r\n"); err != nil {
		t.Errorf("mail after space came back: %v", err)
	}
	var st syscall.Statfs_t
	syscall.Statfs(fs, &st)
	t.Logf("%d messages of 200 KB acknowledged before 452 4.3.1 (%d refused), all delivered after a full-disk restart; %d MB free at the end",
		acked, refused, int64(st.Bavail)*int64(st.Bsize)>>20)
}

// alive fails the test if the server process has exited.
func alive(t *testing.T, s *server) {
	t.Helper()
	select {
	case err := <-s.done:
		t.Fatalf("the server died: %v\n%s", err, s.log.String())
	default:
	}
	if err := s.cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the server is gone: %v", err)
	}
}

// mailRefused checks MAIL FROM gets 452 4.3.1.
func mailRefused(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	r.ReadString('\n')
	fmt.Fprintf(c, "EHLO c.example\r\n")
	for {
		l, err := r.ReadString('\n')
		if err != nil || strings.HasPrefix(l, "250 ") {
			break
		}
	}
	fmt.Fprintf(c, "MAIL FROM:<a@example.org>\r\n")
	if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "452 4.3.1") {
		t.Errorf("MAIL on a full disk: got %q, want 452 4.3.1", l)
	}
}
