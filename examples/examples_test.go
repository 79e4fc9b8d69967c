// Package examples holds runnable larkpost configurations, one folder per
// setup. This test keeps every one of them honest: its config loads,
// its *_test.star rule tests pass, and it serves SMTP.
package examples

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine"
	"github.com/larkpost/larkpost/engine/enginetest"
	"github.com/larkpost/larkpost/rules"
	"github.com/larkpost/larkpost/rules/startest"
)

func exampleDirs(t *testing.T) []string {
	dirs, _ := filepath.Glob("*/larkpost.star")
	if len(dirs) < 2 {
		t.Fatalf("found %d examples", len(dirs))
	}
	for i := range dirs {
		dirs[i] = filepath.Dir(dirs[i])
	}
	return dirs
}

func TestExamples(t *testing.T) {
	for _, dir := range exampleDirs(t) {
		t.Run(dir, func(t *testing.T) {
			if _, err := os.Stat(filepath.Join(dir, "README.md")); err != nil {
				t.Errorf("example has no README.md")
			}
			p, err := rules.LoadFile(filepath.Join(dir, "larkpost.star"))
			if err != nil {
				t.Fatalf("config does not load:\n%v", err)
			}
			// The example's own tests, and those in subfolders (users'
			// filter tests beside their scripts).
			subs, _ := filepath.Glob(filepath.Join(dir, "*", "*_test.star"))
			paths := append([]string{dir}, subs...)
			var out bytes.Buffer
			sum, err := startest.Run(p, startest.Options{Out: &out, Paths: paths})
			if err != nil {
				t.Fatal(err)
			}
			if sum.Failed > 0 || sum.Passed == 0 {
				t.Errorf("rule tests: %d passed, %d failed:\n%s", sum.Passed, sum.Failed, out.String())
			}
			serveOnce(t, p)
		})
	}
}

// serveOnce runs the example on a loopback port with a temporary data
// directory and sends one message to a postmaster address the example
// accepts (asking the dry run which), then waits for it in a mailbox.
func serveOnce(t *testing.T, p *rules.Policy) {
	// A Policy is frozen once loaded: serve one with changed settings.
	s := *p.Settings
	s.Listen = map[string]string{"smtp": "127.0.0.1:0"}
	s.DataDir = t.TempDir()
	p.Settings = &s
	from := "root@" + p.Settings.Hostname
	var to string
	for _, d := range append(append([]string{p.Settings.Hostname}, p.Settings.Destinations...), p.Settings.VirtualAliasDomains...) {
		res := p.DryRun(context.Background(), &rules.Envelope{Conn: rules.Conn{IP: netip.MustParseAddr("127.0.0.1"), Helo: "localhost"},
			From: from, To: []string{"postmaster@" + d}})
		if !res.Queued || len(res.Cleaned.Rcpts) == 0 {
			continue
		}
		if t, err := p.Route(context.Background(), res.Cleaned.Rcpts[0].Value, nil); err == nil && t.Kind == "local" {
			to = "postmaster@" + d
			break
		}
	}
	if to == "" {
		t.Fatal("the example delivers no postmaster address locally")
	}
	log := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	e, err := engine.New(p, log)
	if err != nil {
		t.Fatal(err)
	}
	e.Start()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.Shutdown(ctx)
	}()
	if err := send(e.Addr("smtp").String(), from, to); err != nil {
		t.Fatalf("send to %s: %v", to, err)
	}
	var got []string
	for deadline := time.Now().Add(5 * time.Second); len(got) == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		got, _ = filepath.Glob(filepath.Join(p.Settings.DataDir, "mail", "*", "new", "*"))
	}
	if len(got) != 1 {
		t.Errorf("%d messages delivered for %s, want 1", len(got), to)
	}
}

func send(addr, from, to string) error {
	_, err := enginetest.Send(addr, from, []string{to}, "Subject: example smoke test\r\n\r\nhello\r\n")
	return err
}
