package engine

import (
	"context"
	"net"
	"testing"
	"time"
)

// TestHTTPShutdownUnusedConn: a connection that never sent a request (a
// browser opens one ahead of need) does not hold the shutdown up: Go's
// http.Server counts it busy for five seconds, so without closing it the
// shutdown waited out its whole second of grace.
func TestHTTPShutdownUnusedConn(t *testing.T) {
	h := start(t, `config(metrics_listen = "127.0.0.1:0")`)
	addr := h.e.HTTPAddr("127.0.0.1:0")
	if addr == nil {
		t.Fatal("metrics_listen is not bound")
	}
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(50 * time.Millisecond) // the server has accepted it
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	h.e.Shutdown(ctx)
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("shutdown took %v with an unused HTTP connection open", took)
	}
	// The server closed it.
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("the unused connection is still open")
	}
}
