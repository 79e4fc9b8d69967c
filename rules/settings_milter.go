package rules

import (
	"fmt"
	"strings"
	"time"

	"go.starlark.net/starlark"

	"github.com/larkpost/larkpost/engine/milter"
)

// MilterSettings are Postfix's milter_* settings.
type MilterSettings struct {
	Smtpd          []string // smtpd_milters: "inet:host:port" or "unix:/path"
	NonSmtpd       []string // non_smtpd_milters: for mail from sendmail/pickup
	DefaultAction  string   // milter_default_action
	ConnectTimeout time.Duration
	CommandTimeout time.Duration
	ContentTimeout time.Duration
	Protocol       int
	// Macros are milter_*_macros: the macro names sent at each stage;
	// nil keeps Postfix's default for a stage.
	Macros milter.Macros
}

// MilterConfig is the client configuration of the milter at addr, from
// the milter_* settings.
func (s *Settings) MilterConfig(addr string) milter.Config {
	m := s.Milter
	macros := m.Macros
	return milter.Config{Addr: addr, DefaultAction: m.DefaultAction, ConnectTimeout: m.ConnectTimeout,
		CommandTimeout: m.CommandTimeout, ContentTimeout: m.ContentTimeout, Protocol: m.Protocol,
		MaxBody: s.MessageSizeLimit, Macros: &macros}
}

// newMilter is the client for a milter a script asks (milter.check),
// with the milter_* settings.
func (p *Policy) newMilter(addr string) (*milter.Milter, error) {
	return milter.New(p.Settings.MilterConfig(addr))
}

func init() {
	milterSettings := map[string]setting{
		"smtpd_milters": {"list of milter addresses", func(s *Settings, v starlark.Value) error {
			return setList(&s.Milter.Smtpd, v, func(a string) error {
				if !strings.HasPrefix(a, "inet:") && !strings.HasPrefix(a, "unix:") {
					return fmt.Errorf("bad milter address %q (want inet:host:port or unix:/path)", a)
				}
				return nil
			})
		}, "milters (rspamd, OpenDKIM, OpenDMARC, ClamAV) asked at each SMTP stage after the matching hook, in order, as Postfix's; default: none"},
		"non_smtpd_milters": {"list of milter addresses", func(s *Settings, v starlark.Value) error {
			return setList(&s.Milter.NonSmtpd, v, func(a string) error {
				if !strings.HasPrefix(a, "inet:") && !strings.HasPrefix(a, "unix:") {
					return fmt.Errorf("bad milter address %q (want inet:host:port or unix:/path)", a)
				}
				return nil
			})
		}, "milters asked about mail that did not come by SMTP (sendmail, pickup), once per message after the hooks, as Postfix's; default: none"},
		"milter_default_action": {"\"tempfail\", \"accept\" or \"reject\"", func(s *Settings, v starlark.Value) error {
			var a string
			if err := setString(&a, v); err != nil {
				return err
			}
			if a != "tempfail" && a != "accept" && a != "reject" {
				return fmt.Errorf("want tempfail, accept or reject, got %q", a)
			}
			s.Milter.DefaultAction = a
			return nil
		}, "what a milter that is down, slow or broken means for the message: tempfail (451 4.7.1), accept (skip it) or reject (550 5.7.1); default tempfail"},
		"milter_connect_timeout": {"duration", func(s *Settings, v starlark.Value) error { return setDuration(&s.Milter.ConnectTimeout, v) },
			"time to connect to a milter and agree on options; default 30s"},
		"milter_command_timeout": {"duration", func(s *Settings, v starlark.Value) error { return setDuration(&s.Milter.CommandTimeout, v) },
			"time a milter may take over one SMTP command; default 30s"},
		"milter_content_timeout": {"duration", func(s *Settings, v starlark.Value) error { return setDuration(&s.Milter.ContentTimeout, v) },
			"time a milter may take over each piece of the message (header, body chunk, end of message); default 300s"},
		"milter_protocol": {"int", func(s *Settings, v starlark.Value) error {
			if err := setInt(&s.Milter.Protocol, v, 2); err != nil {
				return err
			}
			if p := s.Milter.Protocol; p != 2 && p != 3 && p != 4 && p != 6 {
				return fmt.Errorf("want 2, 3, 4 or 6, got %d", p)
			}
			return nil
		}, "the highest milter protocol version offered; default 6"},
	}
	defaults := milter.DefaultMacros()
	for _, mm := range []struct {
		name  string
		field func(*milter.Macros) *[]string
		def   []string
		when  string
	}{
		{"milter_connect_macros", func(m *milter.Macros) *[]string { return &m.Connect }, defaults.Connect, "at connect"},
		{"milter_helo_macros", func(m *milter.Macros) *[]string { return &m.Helo }, defaults.Helo, "at HELO/EHLO"},
		{"milter_mail_macros", func(m *milter.Macros) *[]string { return &m.Mail }, defaults.Mail, "at MAIL FROM"},
		{"milter_rcpt_macros", func(m *milter.Macros) *[]string { return &m.Rcpt }, defaults.Rcpt, "at RCPT TO"},
		{"milter_data_macros", func(m *milter.Macros) *[]string { return &m.Data }, defaults.Data, "at DATA"},
		{"milter_end_of_header_macros", func(m *milter.Macros) *[]string { return &m.EndOfHeader }, defaults.EndOfHeader, "at the end of the header"},
		{"milter_end_of_data_macros", func(m *milter.Macros) *[]string { return &m.EndOfMessage }, defaults.EndOfMessage, "at the end of the message"},
	} {
		milterSettings[mm.name] = setting{"list of macro names", func(s *Settings, v starlark.Value) error {
			return setList(mm.field(&s.Milter.Macros), v, func(name string) error {
				if name == "" || strings.ContainsAny(name, " \t\x00") {
					return fmt.Errorf("bad macro name %q", name)
				}
				return nil
			})
		}, "the macros sent to milters " + mm.when + "; default: " + strings.Join(mm.def, " ")}
		settingExamples[mm.name] = `["i", "{auth_authen}"]`
	}
	for name, st := range milterSettings {
		settingTable[name] = st
		bindings[name] = BindRestart
		postfixEquivalents[name] = name
	}
	settingExamples["smtpd_milters"] = `["inet:127.0.0.1:11332", "unix:/run/opendkim/opendkim.sock"]`
	settingExamples["non_smtpd_milters"] = `["inet:127.0.0.1:8891"]`
	settingExamples["milter_default_action"] = `"accept"`
	settingExamples["milter_connect_timeout"] = `"10s"`
	settingExamples["milter_command_timeout"] = `"10s"`
	settingExamples["milter_content_timeout"] = `"60s"`
	settingExamples["milter_protocol"] = `2`
}
