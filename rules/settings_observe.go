package rules

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"

	"go.starlark.net/starlark"
)

// ObserveSettings say where an admin sees what the server does: its log,
// the Prometheus metrics and the web page.
type ObserveSettings struct {
	MetricsListen  string // metrics_listen: "" is off
	WebListen      string // web_listen: "" is off; may equal metrics_listen
	WebTokenFile   string // web_admin_token_file: "" leaves the page read-only
	LogTarget      string // log_target: stderr, syslog or journald
	LogFormat      string // log_format: text (Postfix's lines) or json
	SyslogName     string // syslog_name: the program name's first part
	SyslogFacility string // syslog_facility
	SyslogSocket   string // syslog_socket: the local syslog daemon's socket
}

// syslogFacilities are the facility names syslog(3) knows, as Postfix's
// syslog_facility takes them.
var syslogFacilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
	"uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// SyslogFacility is the number of a syslog_facility name.
func SyslogFacility(name string) int { return syslogFacilities[name] }

var syslogNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$`)

func init() {
	listenAddr := func(dst *string) func(*Settings, starlark.Value) error {
		return func(s *Settings, v starlark.Value) error {
			var a string
			if err := setString(&a, v); err != nil {
				return err
			}
			if a != "" {
				if _, _, err := net.SplitHostPort(a); err != nil {
					return fmt.Errorf("want HOST:PORT (e.g. \"127.0.0.1:9025\") or \"\" for off, got %q", a)
				}
			}
			*dst = a
			return nil
		}
	}
	oneOf := func(dst *string, names ...string) func(*Settings, starlark.Value) error {
		return func(s *Settings, v starlark.Value) error {
			var a string
			if err := setString(&a, v); err != nil {
				return err
			}
			for _, n := range names {
				if a == n {
					*dst = a
					return nil
				}
			}
			return fmt.Errorf("want one of %q, got %q", names, a)
		}
	}
	observe := map[string]setting{
		"metrics_listen": {"\"HOST:PORT\" or \"\"", func(s *Settings, v starlark.Value) error { return listenAddr(&s.Observe.MetricsListen)(s, v) },
			"where Prometheus metrics are served over HTTP at /metrics; off by default; bind it to loopback or a management network and firewall it: the metrics name listeners, transports and hooks; default \"\""},
		"web_listen": {"\"HOST:PORT\" or \"\"", func(s *Settings, v starlark.Value) error { return listenAddr(&s.Observe.WebListen)(s, v) },
			"where the status web page (queue, live deliveries and rejects, traffic, hook latency) is served over HTTP; the same address as metrics_listen serves both on one port; read-only unless web_admin_token_file is set; off by default; default \"\""},
		"web_admin_token_file": {"path", func(s *Settings, v starlark.Value) error { return setString(&s.Observe.WebTokenFile, v) },
			"a file holding the token that unlocks the web page's queue actions (flush, hold, release, delete); read at each action, so a new token applies at once; \"\" leaves the page read-only; default \"\""},
		"log_target": {"\"stderr\", \"syslog\" or \"journald\"", func(s *Settings, v starlark.Value) error {
			return oneOf(&s.Observe.LogTarget, "stderr", "syslog", "journald")(s, v)
		}, "where serve logs: stderr, the local syslog daemon (syslog_socket, facility syslog_facility, program names syslog_name/smtpd etc. as Postfix's) or the systemd journal's native socket; default \"stderr\""},
		"log_format": {"\"text\" or \"json\"", func(s *Settings, v starlark.Value) error { return oneOf(&s.Observe.LogFormat, "text", "json")(s, v) },
			"text is Postfix's one line per event; json writes each event as one JSON object (time, level, program, pid, msg and the attributes); default \"text\""},
		"syslog_name": {"string", func(s *Settings, v starlark.Value) error {
			var n string
			if err := setString(&n, v); err != nil {
				return err
			}
			if !syslogNameRE.MatchString(n) {
				return fmt.Errorf("want a program name such as \"larkpost\" or \"postfix\" (letters, digits, _ . - and /), got %q", n)
			}
			s.Observe.SyslogName = n
			return nil
		}, "the first part of each log line's program name, as Postfix's syslog_name: lines are NAME/smtpd, NAME/cleanup, NAME/qmgr, NAME/local, NAME/smtp, ...; default \"larkpost\""},
		"syslog_facility": {"string", func(s *Settings, v starlark.Value) error {
			var n string
			if err := setString(&n, v); err != nil {
				return err
			}
			if _, ok := syslogFacilities[n]; !ok {
				return fmt.Errorf("want a syslog facility such as \"mail\" or \"local0\", got %q", n)
			}
			s.Observe.SyslogFacility = n
			return nil
		}, "the syslog facility of log_target = \"syslog\" and \"journald\"; default \"mail\""},
		"syslog_socket": {"path", func(s *Settings, v starlark.Value) error { return setString(&s.Observe.SyslogSocket, v) },
			"the local syslog daemon's datagram socket for log_target = \"syslog\"; default \"/dev/log\""},
	}
	for name, st := range observe {
		settingTable[name] = st
		bindings[name] = BindRestart
	}
	settingExamples["metrics_listen"] = `"127.0.0.1:9025"`
	settingExamples["web_listen"] = `"127.0.0.1:9025"`
	settingExamples["web_admin_token_file"] = `"/etc/larkpost/web.token"`
	settingExamples["log_target"] = `"syslog"`
	settingExamples["log_format"] = `"json"`
	settingExamples["syslog_name"] = `"postfix"`
	settingExamples["syslog_facility"] = `"local0"`
	settingExamples["syslog_socket"] = `"/run/systemd/journal/dev-log"`
}

// checkObserve warns when the metrics or the web page listen beyond
// loopback: neither has TLS, and the page shows envelopes and reject
// texts to whoever can reach it.
func (l *loader) checkObserve(p *Policy) {
	o := p.Settings.Observe
	for _, c := range []struct{ setting, addr, what string }{
		{"metrics_listen", o.MetricsListen, "the metrics (traffic, listeners, hooks)"},
		{"web_listen", o.WebListen, "the status page (envelopes, reject texts, queue)"},
	} {
		if c.addr == "" {
			continue
		}
		host, _, _ := net.SplitHostPort(c.addr)
		if ip, err := netip.ParseAddr(host); err == nil && ip.IsLoopback() || host == "localhost" {
			continue
		}
		p.Warnings = append(p.Warnings, Diagnostic{Pos: l.settingPos(p, c.setting), Msg: c.setting + " = " + strconv.Quote(c.addr) +
			" serves " + c.what + " over plain HTTP beyond loopback: firewall it to a management network or put a reverse proxy with TLS in front"})
	}
}
