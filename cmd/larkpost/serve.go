package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	rtrace "runtime/trace"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/larkpost/larkpost/engine"
	"github.com/larkpost/larkpost/engine/maillog"
	"github.com/larkpost/larkpost/rules"
)

// shutdownGrace is how long SIGTERM waits for sessions in progress.
const shutdownGrace = 30 * time.Second

// serveGCPercent is the server's GOGC unless the environment sets one.
const serveGCPercent = 50

func runServe(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("serve", stderr)
	file := configFlag(fs)
	if code, ok := parseFlags(fs, interleaved(args, fs.Lookup), stdout, stderr); !ok {
		return code
	}
	if extraArgs("serve", configArg(fs, file, fs.Args(), nil), 0, stderr) {
		return 2
	}
	if os.Getenv("GOGC") == "" {
		// The server's live heap is small (Badger's memtables and table
		// builders, ~25 MB under load); Go's default lets the heap grow
		// to twice that between collections, which was most of the
		// process's footprint. Half the headroom cut peak PSS at 50
		// sessions from 82 to 69 MiB for about 1% more CPU. $GOGC, when
		// set, still decides.
		debug.SetGCPercent(serveGCPercent)
	}
	if f := os.Getenv("LARKPOST_CPUPROFILE"); f != "" {
		// For developers measuring the hot path under a real load.
		if out, err := os.Create(f); err == nil {
			pprof.StartCPUProfile(out)
			defer pprof.StopCPUProfile()
		}
	}
	if f := os.Getenv("LARKPOST_TRACE"); f != "" {
		// Go's execution trace: what a CPU profile cannot show, such as
		// how long a goroutine that could run waited for a processor
		// (go tool trace -pprof=sched). It grows by about a megabyte a
		// second under load, so it is for short runs.
		if out, err := os.Create(f); err == nil {
			if err := rtrace.Start(out); err == nil {
				defer func() { rtrace.Stop(); out.Close() }()
			}
		}
	}
	if f := os.Getenv("LARKPOST_MEMPROFILE"); f != "" {
		// The heap as the server stops: what stays live, and (as
		// alloc_space) what each message allocated on the way.
		defer func() {
			if out, err := os.Create(f); err == nil {
				pprof.Lookup("heap").WriteTo(out, 0)
				out.Close()
			}
		}()
	}
	logh := maillog.New(stderr, slog.LevelInfo)
	log := slog.New(logh)
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
	// From here on the log goes where log_target says (stderr until the
	// config could say it, so that its errors are seen), the policy's
	// logger included.
	logc, err := logh.Switch(logConfig(p.Settings), stderr)
	if err != nil {
		log.Error("fatal: " + err.Error())
		return 1
	}
	defer logc.Close()
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
	defer signal.Stop(sigs)
	e, err := engine.NewWith(p, log, opts)
	if err != nil {
		log.Error("fatal: " + startError(err, p.Settings.DataDir, os.Geteuid()))
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

// startError says what a failure to start means to an admin: another
// server on the same data_dir or the same port, or a port only root may
// bind (euid is the process's effective uid). Other errors are returned
// as they are.
func startError(err error, dataDir string, euid int) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "listen" {
		addr := "that address"
		if op.Addr != nil {
			addr = op.Addr.String()
		}
		switch {
		case errors.Is(err, syscall.EADDRINUSE):
			return fmt.Sprintf("address in use: is another server listening on %s? (%v)", addr, err)
		case errors.Is(err, syscall.EACCES) && euid != 0 && privilegedPort(op.Addr):
			return fmt.Sprintf("%v: ports below 1024 need root (start larkpost serve as root) or CAP_NET_BIND_SERVICE "+
				"(setcap cap_net_bind_service=+ep on the larkpost binary)", err)
		}
		return err.Error()
	}
	dir, _ := filepath.Abs(dataDir)
	if pid, held := queueLocked(dir); held {
		who := "another larkpost"
		if pid > 0 {
			who += fmt.Sprintf(" (pid %d)", pid)
		}
		return fmt.Sprintf("%s is using %s", who, dir)
	}
	return err.Error()
}

func privilegedPort(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.Port > 0 && ta.Port < 1024
}

// queueLocked reports whether another process holds the lock Badger
// takes on data_dir/queue, and that process's pid, which Badger writes in
// the directory's LOCK file (0 when it cannot be read).
func queueLocked(dataDir string) (int, bool) {
	dir := filepath.Join(dataDir, "queue")
	f, err := os.Open(dir)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	// The probe takes the lock (shared, never waiting) and, having it,
	// lets it go when f is closed.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); !errors.Is(err, syscall.EWOULDBLOCK) {
		return 0, false
	}
	b, _ := os.ReadFile(filepath.Join(dir, "LOCK"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid == os.Getpid() {
		return 0, false
	}
	return pid, true
}

func configName(file string) string {
	if file == "" {
		return "embedded default"
	}
	return file
}

// logConfig is the log of log_target, log_format and the syslog_
// settings. The journal's socket is systemd's; syslog_socket is syslog's.
func logConfig(set *rules.Settings) maillog.Config {
	o := set.Observe
	cfg := maillog.Config{Target: o.LogTarget, Format: o.LogFormat, Name: o.SyslogName,
		Facility: rules.SyslogFacility(o.SyslogFacility), Level: slog.LevelInfo}
	if o.LogTarget == "syslog" {
		cfg.Socket = o.SyslogSocket
	}
	return cfg
}
