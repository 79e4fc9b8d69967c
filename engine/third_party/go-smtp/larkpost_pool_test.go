package smtp

// larkpost's fourth change (see LARKPOST.md): a goroutine that served a
// connection serves the next one, and none outlives the server.

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"runtime"
	"strconv"
	"testing"
	"time"
)

type goroutineBackend struct{ ids chan int }

func (b goroutineBackend) NewSession(*Conn) (Session, error) {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)] // "goroutine 42 [running]:..."
	f := bytes.Fields(buf)
	id, _ := strconv.Atoi(string(f[1]))
	b.ids <- id
	return nil, errors.New("no session here")
}

// greet connects, says EHLO (which makes the session, refused), QUIT,
// and waits for the server to hang up.
func greet(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("EHLO client.test\r\nQUIT\r\n"))
	r := bufio.NewReader(c)
	for {
		if _, err := r.ReadString('\n'); err != nil {
			return
		}
	}
}

// waitIdlers waits (less than a goroutine waits for a connection) until
// n goroutines wait for one.
func waitIdlers(t *testing.T, s *Server, n int32) {
	t.Helper()
	for deadline := time.Now().Add(idleConnGoroutineTime / 2); s.idlers.Load() != n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines waiting for a connection, want %d", s.idlers.Load(), n)
		}
	}
}

func TestConnGoroutineReused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	be := goroutineBackend{ids: make(chan int, 10)}
	s := NewServer(be)
	s.ErrorLog = nopLogger{}
	go s.Serve(l)

	greet(t, l.Addr().String())
	first := <-be.ids
	waitIdlers(t, s, 1)
	greet(t, l.Addr().String())
	if second := <-be.ids; second != first {
		t.Errorf("second connection served on goroutine %d, want %d (the first one's)", second, first)
	}
	waitIdlers(t, s, 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	waitIdlers(t, s, 0) // Close ends the waiting goroutine
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...interface{}) {}
func (nopLogger) Println(...interface{})        {}
