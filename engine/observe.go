package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// bindHTTP binds metrics_listen and web_listen (one listener when they
// are the same address), so a port in use fails at start as the SMTP
// listeners do.
func (e *Engine) bindHTTP() error {
	o := e.startSet.Observe
	for i, addr := range []string{o.MetricsListen, o.WebListen} {
		if addr == "" || e.httpListeners[addr] != nil {
			continue
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range e.httpListeners {
				l.Close()
			}
			return fmt.Errorf("%s: %w", []string{"metrics_listen", "web_listen"}[i], err)
		}
		e.httpListeners[addr] = l
	}
	return nil
}

// serveHTTP serves the metrics and the web page until Shutdown.
func (e *Engine) serveHTTP() {
	o := e.startSet.Observe
	for addr, l := range e.httpListeners {
		mux := http.NewServeMux()
		var what []string
		if addr == o.MetricsListen {
			mux.Handle("GET /metrics", e.metricsHandler())
			what = append(what, "metrics")
		}
		if addr == o.WebListen {
			h, err := e.webHandler()
			if err != nil {
				e.log.Error("web page: " + err.Error())
				continue
			}
			mux.Handle("/", h)
			what = append(what, "web page")
		}
		// Connections that have not sent a request yet: Shutdown counts
		// them busy for five seconds (a browser opens one ahead of need),
		// so they are closed first.
		var unused sync.Map
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute,
			MaxHeaderBytes: 64 << 10, ErrorLog: nil,
			ConnState: func(c net.Conn, st http.ConnState) {
				if st == http.StateNew {
					unused.Store(c, nil)
				} else {
					unused.Delete(c)
				}
			}}
		e.log.Info("listening on " + joinAnd(what) + " http://" + l.Addr().String() + "/")
		e.wg.Add(2)
		go func() {
			defer e.wg.Done()
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				e.log.Error("http " + addr + ": " + err.Error())
			}
		}()
		go func() {
			defer e.wg.Done()
			<-e.done
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			unused.Range(func(c, _ any) bool { c.(net.Conn).Close(); return true })
			// Live event streams never end by themselves: close them.
			if srv.Shutdown(ctx) != nil {
				srv.Close()
			}
		}()
	}
}

// HTTPAddr is the bound address of metrics_listen or web_listen (given
// as configured), e.g. to learn the port chosen for "127.0.0.1:0".
func (e *Engine) HTTPAddr(configured string) net.Addr {
	if l := e.httpListeners[configured]; l != nil {
		return l.Addr()
	}
	return nil
}

func joinAnd(s []string) string {
	if len(s) == 2 {
		return s[0] + " and " + s[1]
	}
	if len(s) == 1 {
		return s[0]
	}
	return ""
}
