package main

import (
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/larkpost/larkpost/engine/privsep"
	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
	"github.com/larkpost/larkpost/rules/postfix"
)

// daemonEnv tells a `larkpost serve` process that it is the daemon of a
// split server, and names the listeners it inherits, in the order of
// their file descriptors (after the parent's socket, fd 3).
const daemonEnv = "LARKPOST_DAEMON_LISTENERS"

// firstInherited is the first descriptor a daemon inherits (ExtraFiles).
const firstInherited = 3

// splitNeeded reports how serve runs: split into a root parent and a
// daemon as mail_owner when started as root, in one process otherwise
// (as an ordinary user, or as root with allow_root). A root start without
// the mail_owner account is an error.
func splitNeeded(set *rules.Settings) (postfix.Account, bool, error) {
	if os.Geteuid() != 0 || os.Getenv(daemonEnv) != "" || set.AllowRoot {
		return postfix.Account{}, false, nil
	}
	acct, ok := postfix.LookupAccount(set.MailOwner)
	switch {
	case set.MailOwner == "" || !ok:
		return acct, false, fmt.Errorf("started as root, and mail_owner %q has no account: create it (useradd --system %s) or set allow_root = True to run everything as root",
			set.MailOwner, orDefaultStr(set.MailOwner, "larkpost"))
	case acct.UID == 0:
		return acct, false, fmt.Errorf("mail_owner %q is root: name an unprivileged account", set.MailOwner)
	}
	return acct, true, nil
}

func orDefaultStr(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// runParent is the root parent of a split server: it binds the
// listeners, gives data_dir to mail_owner, starts the daemon as
// mail_owner with one end of a socket pair (fd 3), the listeners, its
// own binary and the write end of the pipe for the queue's beat (in that
// order, see inherited), and then does nothing but answer the daemon's
// privileged requests and pass signals on. It exits when the daemon
// does.
func runParent(set *rules.Settings, acct postfix.Account, serve func(conn *net.UnixConn, commits *queue.Beat), log *slog.Logger) int {
	dataDir, err := filepath.Abs(set.DataDir)
	if err == nil {
		err = ownTree(dataDir, acct)
	}
	if err != nil {
		log.Error("fatal: data_dir: " + err.Error())
		return 1
	}
	names := make([]string, 0, len(set.Listen))
	for n := range set.Listen {
		names = append(names, n)
	}
	sort.Strings(names)
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		log.Error("fatal: socketpair: " + err.Error())
		return 1
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "privsep"), os.NewFile(uintptr(fds[1]), "privsep-daemon")
	files = append(files, theirs)
	for _, n := range names {
		l, err := net.Listen("tcp", set.Listen[n])
		if err != nil {
			log.Error("fatal: listener " + n + ": " + startError(err, set.DataDir, 0))
			return 1
		}
		f, err := l.(*net.TCPListener).File()
		l.Close() // the daemon's copy is the one that serves
		if err != nil {
			log.Error("fatal: listener " + n + ": " + err.Error())
			return 1
		}
		files = append(files, f)
	}
	exe, err := os.Executable()
	if err != nil {
		log.Error("fatal: " + err.Error())
		return 1
	}
	// The daemon is started from this very binary, opened here as root:
	// mail_owner may not be able to reach its path (a build directory),
	// and an upgrade that replaces the file must not change what runs.
	self, err := os.Open(exe)
	if err != nil {
		log.Error("fatal: " + err.Error())
		return 1
	}
	files = append(files, self)
	// The queue's beat (queue.Beat.Mirror), so that the Maildir
	// deliveries made here sync in the daemon's queue commits.
	beatR, beatW, err := os.Pipe()
	if err != nil {
		log.Error("fatal: " + err.Error())
		return 1
	}
	defer beatR.Close()
	files = append(files, beatW)
	beat := queue.Follow(beatR, dataDir)
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Path = fmt.Sprintf("/proc/self/fd/%d", firstInherited+len(files)-2)
	cmd.Env = append(os.Environ(), daemonEnv+"="+strings.Join(names, ","))
	cmd.Stdout, cmd.Stderr, cmd.ExtraFiles = os.Stdout, os.Stderr, files
	cred := &syscall.Credential{Uid: uint32(acct.UID), Gid: uint32(acct.GID)}
	for _, g := range acct.Groups {
		cred.Groups = append(cred.Groups, uint32(g))
	}
	// The daemon must not outlive its parent: without it, no delivery
	// needing a user's rights could be made.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGTERM}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	if err := privsep.StartPinned(cmd); err != nil { // see StartPinned: Pdeathsig
		log.Error("fatal: start the daemon: " + err.Error())
		return 1
	}
	for _, f := range files {
		f.Close()
	}
	files = nil
	log.Info(fmt.Sprintf("privileged parent %d started the daemon %d as %s (uid %d)", os.Getpid(), cmd.Process.Pid, acct.Name, acct.UID))
	conn, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		log.Error("fatal: " + err.Error())
		cmd.Process.Kill()
		return 1
	}
	served := make(chan struct{})
	go func() {
		serve(conn.(*net.UnixConn), beat)
		close(served)
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case sig := <-sigs:
			cmd.Process.Signal(sig)
		case err := <-done:
			// The daemon is gone: the end of the stream makes Serve kill
			// the commands it still runs for it. Wait for that (a little),
			// or they would outlive the server as orphans.
			conn.Close()
			select {
			case <-served:
			case <-time.After(10 * time.Second):
				log.Warn("privileged parent: commands still running after 10 s; exiting anyway")
			}
			if err != nil {
				log.Error("daemon: " + err.Error())
				return 1
			}
			return 0
		}
	}
}

// ownTree makes data_dir and everything in it mail_owner's, as Postfix's
// set-permissions does for its queue: the daemon runs as that account.
func ownTree(dir string, acct postfix.Account) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		return os.Lchown(p, acct.UID, acct.GID)
	})
}

// inherited returns the listeners, the parent's socket and the pipe for
// the queue's beat a daemon was started with (see runParent); ok is false
// in a process that is no daemon.
func inherited() (conn *net.UnixConn, listeners map[string]net.Listener, beat *os.File, ok bool, err error) {
	spec, isDaemon := os.LookupEnv(daemonEnv)
	if !isDaemon {
		return nil, nil, nil, false, nil
	}
	os.Unsetenv(daemonEnv) // not for commands the daemon runs
	f := os.NewFile(firstInherited, "privsep")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, nil, nil, true, fmt.Errorf("the parent's socket: %w", err)
	}
	conn = c.(*net.UnixConn)
	listeners = map[string]net.Listener{}
	n := 0
	if spec != "" {
		n = len(strings.Split(spec, ","))
	}
	// The binary the parent started this process from (see runParent).
	os.NewFile(uintptr(firstInherited+1+n), "self").Close()
	beat = os.NewFile(uintptr(firstInherited+2+n), "queue beat")
	if spec != "" {
		for i, name := range strings.Split(spec, ",") {
			lf := os.NewFile(uintptr(firstInherited+1+i), "listener "+name)
			l, err := net.FileListener(lf)
			lf.Close()
			if err != nil {
				beat.Close()
				return nil, nil, nil, true, fmt.Errorf("listener %s: %w", name, err)
			}
			listeners[name] = l
		}
	}
	return conn, listeners, beat, true, nil
}
