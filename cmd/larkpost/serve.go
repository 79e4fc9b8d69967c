package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/larkpost/larkpost/engine"
	"github.com/larkpost/larkpost/engine/maillog"
)

// shutdownGrace is how long SIGTERM waits for sessions in progress.
const shutdownGrace = 30 * time.Second

func runServe(args []string, _, stderr io.Writer) int {
	fs := newFlagSet("serve", stderr)
	file := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if f := os.Getenv("LARKPOST_CPUPROFILE"); f != "" {
		// For developers measuring the hot path under a real load.
		if out, err := os.Create(f); err == nil {
			pprof.StartCPUProfile(out)
			defer pprof.StopCPUProfile()
		}
	}
	log := slog.New(maillog.New(stderr, slog.LevelInfo))
	slog.SetDefault(log)
	opts, err := daemonOptions()
	if err != nil {
		log.Error("fatal: " + err.Error())
		return 1
	}
	p, ok := loadPolicy(*file, stderr, log)
	if !ok {
		log.Error("fatal: config " + configName(*file) + " has errors; not starting")
		return 1
	}
	acct, split, err := splitNeeded(p.Settings)
	switch {
	case err != nil:
		log.Error("fatal: " + err.Error())
		return 1
	case split:
		return runParent(p.Settings, acct, serveParent(p.Settings, log), log)
	case os.Geteuid() == 0:
		log.Warn("warning: running as root in one process (allow_root = True): the SMTP server, hooks and users' filters have root's rights")
	}
	// Signals are ours before the first connection can be accepted, so a
	// SIGTERM right after start drains instead of killing the process.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	e, err := engine.NewWith(p, log, opts)
	if err != nil {
		log.Error("fatal: " + err.Error())
		return 1
	}
	log.Info("daemon started -- config " + p.File + ", hostname " + p.Settings.Hostname + ", data_dir " + e.DataDir())
	// The control socket first: if it cannot start, nothing has been
	// accepted yet and stopping is simple.
	if err := e.ServeControl(func() (string, error) { return reload(e, *file, log, stderr) }); err != nil {
		log.Error("fatal: " + err.Error())
		e.Close()
		return 1
	}
	e.Start()

	for sig := range sigs {
		if sig == syscall.SIGHUP {
			reload(e, *file, log, stderr)
			continue
		}
		log.Info("terminating on signal " + sig.String())
		ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		err := e.Shutdown(ctx)
		cancel()
		if err != nil {
			log.Warn("shutdown: " + err.Error())
		}
		break
	}
	return 0
}

// reload loads the config again; a broken one is refused with its
// diagnostics and the running policy stays.
func reload(e *engine.Engine, file string, log *slog.Logger, stderr io.Writer) (string, error) {
	var diag strings.Builder
	p, ok := loadPolicy(file, io.MultiWriter(stderr, &diag), log)
	if !ok {
		log.Error("reload refused: config " + configName(file) + " has errors; keeping the running one")
		return "", fmt.Errorf("reload refused, the running config stays:\n%s", strings.TrimSpace(diag.String()))
	}
	restart := e.Reload(p)
	log.Info("reloaded config " + p.File)
	msg := "reloaded " + p.File
	if len(restart) > 0 {
		line := "restart needed for: " + strings.Join(restart, ", ")
		log.Warn("warning: reload: " + line)
		msg += "\n" + line
	}
	return msg, nil
}

func configName(file string) string {
	if file == "" {
		return "embedded default"
	}
	return file
}
