package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/larkpost/larkpost/engine"
	"github.com/larkpost/larkpost/engine/cleanup"
	"github.com/larkpost/larkpost/engine/deliver"
	smtpc "github.com/larkpost/larkpost/engine/deliver/smtp"
	"github.com/larkpost/larkpost/engine/milter"
	"github.com/larkpost/larkpost/engine/resolver"
	"github.com/larkpost/larkpost/engine/sched"
	"github.com/larkpost/larkpost/rules"
)

// listFlag collects repeated --to flags.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// traceStep and traceReport are trace's JSON form.
type traceStep struct {
	Stage    string `json:"stage"`
	Arg      string `json:"arg,omitempty"`
	Decision string `json:"decision"`
	Code     int    `json:"code,omitempty"`
	Status   string `json:"status,omitempty"`
	Text     string `json:"text,omitempty"`
	Hook     string `json:"hook,omitempty"`
	Source   string `json:"source"`
	Error    string `json:"error,omitempty"`
}

type traceRcpt struct {
	Address   string   `json:"address"`
	Transport string   `json:"transport"`
	Dest      string   `json:"destination"`
	Reason    string   `json:"reason,omitempty"`
	Source    string   `json:"source,omitempty"` // what chose the transport
	Hosts     []string `json:"hosts,omitempty"`  // with --resolve: the servers it would try, in order
}

type traceReport struct {
	Config     string      `json:"config"`
	Client     string      `json:"client"`
	Helo       string      `json:"helo"`
	InNetworks bool        `json:"in_networks"`
	Steps      []traceStep `json:"steps"`
	Queued     bool        `json:"queued"`
	StoppedAt  string      `json:"stopped_at,omitempty"`
	Discarded  bool        `json:"discarded,omitempty"`
	Held       bool        `json:"held,omitempty"`
	HoldReason string      `json:"hold_reason,omitempty"`
	Recipients []traceRcpt `json:"recipients"`
	// AuthResults is the Authentication-Results field the server would
	// add, unfolded; "" when the hooks checked nothing.
	AuthResults string `json:"auth_results,omitempty"`
}

func runTrace(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("trace", stderr)
	file := configFlag(fs)
	from := fs.String("from", "", "envelope sender `ADDRESS` (empty: the null sender <>)")
	var to listFlag
	fs.Var(&to, "to", "envelope recipient `ADDRESS` (repeat for more)")
	clientIP := fs.String("client-ip", "192.0.2.1", "client `IP` address")
	rdns := fs.String("rdns", "", "client's verified host `NAME` (default unknown)")
	helo := fs.String("helo", "client.example", "HELO/EHLO `NAME`")
	auth := fs.String("auth", "", "authenticated `USER`")
	listener := fs.String("listener", "smtp", "listener `NAME`")
	asJSON := fs.Bool("json", false, "print JSON")
	resolve := fs.Bool("resolve", false, "look up the MX hosts remote recipients would go to (asks DNS)")
	dnsFile := fs.String("dns", "", "answer the hooks' DNS lookups from `FILE` (a dict of names, as testing.run's dns=) instead of asking DNS")
	milters := fs.Bool("milters", false, "also ask the smtpd_milters (or, with --listener sendmail, the non_smtpd_milters) about the message, applying nothing")
	if code, ok := parseFlags(fs, interleaved(args, fs.Lookup), stdout, stderr); !ok {
		return code
	}
	// Only a FILE.star is taken for the config: any other file is the message.
	msgArgs := configArg(fs, file, fs.Args(), nil)
	if len(to) == 0 {
		fmt.Fprintln(stderr, "larkpost trace: at least one --to is needed")
		return 2
	}
	ip, err := netip.ParseAddr(*clientIP)
	if err != nil {
		fmt.Fprintf(stderr, "larkpost trace: bad --client-ip %q\n", *clientIP)
		return 2
	}
	var raw []byte
	switch len(msgArgs) {
	case 0:
	case 1:
		if msgArgs[0] == "-" {
			raw, err = io.ReadAll(os.Stdin)
		} else {
			raw, err = os.ReadFile(msgArgs[0])
		}
		if err != nil {
			fmt.Fprintf(stderr, "larkpost trace: %v\n", err)
			return 1
		}
	default:
		fmt.Fprintf(stderr, "larkpost trace: at most one message file, not %q\n", msgArgs)
		return 2
	}
	p, ok := loadPolicy(*file, stderr, nil)
	if !ok {
		return 1
	}
	if *dnsFile != "" {
		table, err := rules.DNSTableFile(*dnsFile)
		if err != nil {
			fmt.Fprintf(stderr, "larkpost trace: --dns: %v\n", err)
			return 1
		}
		p = p.WithResolver(rules.FakeResolver(table))
	}
	env := &rules.Envelope{
		Conn: rules.Conn{IP: ip, RDNS: *rdns, Helo: *helo, User: *auth, Listener: *listener},
		From: *from, To: to, Message: raw, UTF8: !isASCII(*from + strings.Join(to, "")),
	}
	rep := trace(p, env, *resolve, *milters)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
		return 0
	}
	printTrace(stdout, rep)
	return 0
}

// interleaved moves flags after the message argument to the front, so
// `larkpost trace msg.eml --to x` works as well as the usual order.
func interleaved(args []string, lookup func(string) *flagT) []string {
	var flags, rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i+1:]...)
			break
		}
		if strings.HasPrefix(a, "-") && a != "-" {
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if f := lookup(name); f != nil && !strings.Contains(name, "=") && !isBoolFlag(f) && i+1 < len(args) {
				flags = append(flags, args[i+1])
				i++
			}
			continue
		}
		rest = append(rest, a)
	}
	return append(flags, rest...)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// trace dry-runs env through the same Intake the server uses and says
// where each accepted recipient would go.
func trace(p *rules.Policy, env *rules.Envelope, resolve, milters bool) *traceReport {
	res := p.DryRun(context.Background(), env)
	raw := env.Message
	if raw == nil {
		raw = []byte("From: <" + env.From + ">\r\nSubject: dry run\r\n\r\n")
	}
	if milters && res.Queued {
		steps, refused := traceMilters(p, env, raw)
		res.Steps = insertBeforeCleanup(res.Steps, steps)
		if refused {
			res.Queued, res.StoppedAt = false, rules.StageData
		}
	}
	rep := &traceReport{
		Config: p.File, Helo: env.Conn.Helo, InNetworks: p.Settings.InNetworks(env.Conn.IP),
		Queued: res.Queued, StoppedAt: string(res.StoppedAt), Discarded: res.Discard,
		Held: res.Hold && res.Queued, HoldReason: res.HoldReason, Steps: []traceStep{}, Recipients: []traceRcpt{},
		AuthResults: strings.TrimSpace(strings.ReplaceAll(res.AuthResults, "\r\n\t", " ")),
	}
	name := env.Conn.RDNS
	if name == "" {
		name = "unknown"
	}
	rep.Client = name + "[" + env.Conn.IP.String() + "]"
	for _, s := range res.Steps {
		ts := traceStep{Stage: string(s.Stage), Arg: s.Arg, Decision: s.Kind.String(), Hook: s.Hook, Source: s.Source}
		if s.Stage == "rewrite" || s.Stage == "expand" {
			ts.Decision = "-> " + s.Text
		} else if s.Hook == "milter" && s.Kind == rules.Warn {
			ts.Decision = s.Text // a change the milter asked for
		} else if s.Refused() {
			ts.Code, ts.Status, ts.Text = s.Code, s.Status, s.Text
		} else if s.Kind == rules.Hold || s.Kind == rules.Discard {
			ts.Text = s.Text
		}
		if s.Err != nil {
			ts.Error = s.Err.Error()
		}
		rep.Steps = append(rep.Steps, ts)
	}
	if res.CleanupErr != nil {
		rep.Steps = append(rep.Steps, traceStep{Stage: "cleanup", Decision: "defer", Code: 451, Status: "4.3.5",
			Text: "Server configuration problem", Source: "cleanup", Error: res.CleanupErr.Error()})
	}
	if res.Queued {
		for _, cr := range res.Cleaned.Rcpts {
			qr := cleanup.QueueRcpt(cr)
			rt := engine.Route(p, &qr, sched.NewMessage(raw))
			addr := cr.Value
			if cr.Kind == rules.TargetPipe {
				addr = "|" + addr
			}
			reason := rt.Text
			if rt.Kind == deliver.Error || rt.Kind == deliver.Defer {
				reason = rt.Status.Text
			}
			tr := traceRcpt{Address: addr, Transport: rt.Kind.String(), Dest: rt.Mailbox, Reason: reason, Source: rt.Source}
			if len(rt.Argv) > 0 {
				argv, bad, ok := rt.Command(res.Cleaned.Sender)
				tr.Dest = strings.Join(argv, " ")
				if !ok {
					tr.Transport, tr.Dest = "error", strings.Join(rt.Argv, " ")
					tr.Reason = "5.1.3 bad address syntax: ${" + bad + "} starts with \"-\" (allow_min_user = False)"
				}
			}
			if f := rt.Filing; f != nil {
				switch {
				case f.Discard:
					tr.Transport, tr.Reason = "discard", "by "+f.Source
				case f.Forward != "":
					tr.Transport, tr.Dest, tr.Reason = "forward", f.Forward, "by "+f.Source
				case f.Folder != "":
					tr.Reason = "folder " + f.Folder + " by " + f.Source
				default:
					tr.Reason = "INBOX by " + f.Source
				}
				if f.Err != nil {
					tr.Reason = "INBOX: filter failed: " + f.Err.Error()
				}
			}
			if rt.Remote != nil {
				tr.Dest = strings.TrimPrefix(rt.Dest, rt.Kind.String()+":")
				if resolve {
					tr.Hosts = resolveHosts(p, rt)
				}
			}
			if res.Hold {
				tr.Transport, tr.Dest, tr.Reason, tr.Source = "hold", "queue", "held by policy: "+res.HoldReason, ""
			}
			rep.Recipients = append(rep.Recipients, tr)
		}
	}
	return rep
}

// traceMilters asks each milter about the message, as the server would
// after the hooks, and returns its verdict and changes as steps; nothing
// is applied (a recipient a milter adds is not traced). refused says a
// milter refused or discarded the message.
func traceMilters(p *rules.Policy, env *rules.Envelope, raw []byte) (steps []rules.Step, refused bool) {
	addrs := p.Settings.Milter.Smtpd
	if env.Conn.Listener == "sendmail" {
		addrs = p.Settings.Milter.NonSmtpd
	}
	msg := traceMessage(raw)
	defer msg.Close()
	info := milter.Info{Hostname: p.Settings.Hostname, DaemonName: env.Conn.Listener, Version: "larkpost",
		ClientName: env.Conn.RDNS, ClientAddr: env.Conn.IP}
	menv := milter.Envelope{Helo: env.Conn.Helo, From: env.From, Rcpts: env.To}
	for _, addr := range addrs {
		m, err := milter.New(p.Settings.MilterConfig(addr))
		if err != nil {
			steps = append(steps, rules.Step{Stage: rules.StageData, Decision: rules.Decision{Kind: rules.Defer, Code: 451, Status: "4.3.5",
				Text: "Server configuration problem", Source: "milter " + addr, Hook: "milter", Err: err}})
			return steps, true
		}
		res, err := m.Check(context.Background(), info, menv, msg)
		d := cleanup.MilterDecision(addr, res.Verdict)
		d.Err = err
		if d.Kind == rules.Continue {
			d.Kind = rules.Accept
			if res.Action == milter.Continue {
				d.Kind = rules.Continue
			}
		}
		steps = append(steps, rules.Step{Stage: rules.StageData, Decision: d})
		if d.Refused() || d.Kind == rules.Discard {
			for _, mod := range res.Mods {
				if mod.Body != nil {
					mod.Body.Close()
				}
			}
			return steps, true
		}
		for _, mod := range res.Mods {
			what := mod.Kind.String()
			switch mod.Kind {
			case milter.ModAddHeader, milter.ModInsertHeader, milter.ModChangeHeader:
				what += " " + mod.Name + ":" + mod.Value
			case milter.ModDeleteHeader:
				what += " " + mod.Name
			case milter.ModChangeFrom, milter.ModAddRcpt, milter.ModDeleteRcpt:
				what += " <" + mod.Addr + ">"
			case milter.ModQuarantine:
				what += " " + mod.Reason
			}
			// The next milter is given the message as this one left it.
			if _, err := msg.Apply(mod); err != nil {
				what += " (refused: " + err.Error() + ")"
			}
			steps = append(steps, rules.Step{Stage: rules.StageData, Decision: rules.Decision{Kind: rules.Warn, Text: what, Source: "milter " + addr, Hook: "milter"}})
		}
	}
	return steps, false
}

// traceMessage is raw as the milters see it: CRLF line ends, the header
// block apart from the body.
func traceMessage(raw []byte) *milter.Message {
	if !bytes.Contains(raw, []byte("\r\n")) {
		raw = bytes.ReplaceAll(raw, []byte("\n"), []byte("\r\n"))
	}
	hl := cleanup.HeaderLen(raw)
	start := hl
	if bytes.HasPrefix(raw[hl:], []byte("\r\n")) {
		start += 2
	}
	return milter.NewMessage(raw[:hl], bytes.NewReader(raw), int64(start), int64(len(raw)-start))
}

// insertBeforeCleanup puts the milters' steps after the intake's, before
// the rewrite and expansion steps, where the server asks them.
func insertBeforeCleanup(steps, add []rules.Step) []rules.Step {
	i := len(steps)
	for j, s := range steps {
		if s.Stage == "rewrite" || s.Stage == "expand" {
			i = j
			break
		}
	}
	return append(steps[:i:i], append(add, steps[i:]...)...)
}

func printTrace(w io.Writer, rep *traceReport) {
	nets := "not in networks"
	if rep.InNetworks {
		nets = "in networks"
	}
	fmt.Fprintf(w, "config   %s\n", rep.Config)
	fmt.Fprintf(w, "client   %s helo=%s (%s)\n", rep.Client, rep.Helo, nets)
	for _, s := range rep.Steps {
		what := s.Decision
		if s.Code != 0 {
			what += fmt.Sprintf(" %d %s %s", s.Code, s.Status, s.Text)
		} else if s.Text != "" {
			what += " (" + s.Text + ")"
		}
		arg := ""
		if (s.Arg != "" || s.Stage == "mail") && s.Stage != "connect" {
			arg = "<" + s.Arg + "> "
			if s.Stage == "helo" {
				arg = s.Arg + " "
			}
		}
		fmt.Fprintf(w, "%-8s %s%s  [%s]\n", s.Stage, arg, what, s.Source)
		if s.Error != "" {
			fmt.Fprintf(w, "         error: %s\n", s.Error)
		}
	}
	if rep.AuthResults != "" {
		fmt.Fprintf(w, "adds     %s\n", rep.AuthResults)
	}
	switch {
	case rep.Discarded:
		fmt.Fprintln(w, "result   250, then discarded: nothing is delivered")
	case rep.Queued:
		fmt.Fprintf(w, "result   250 queued for %d recipient(s)\n", len(rep.Recipients))
		for _, r := range rep.Recipients {
			line := fmt.Sprintf("         %s -> %s %s", r.Address, r.Transport, r.Dest)
			if r.Reason != "" {
				line += " (" + r.Reason + ")"
			}
			if r.Source != "" {
				line += "  [" + r.Source + "]"
			}
			fmt.Fprintln(w, line)
			for _, h := range r.Hosts {
				fmt.Fprintln(w, "             "+h)
			}
		}
	default:
		fmt.Fprintf(w, "result   not accepted: stopped at %s\n", rep.StoppedAt)
	}
}

type flagT = flag.Flag

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// resolveHosts lists the servers a remote route would try, as the smtp
// agent orders them.
func resolveHosts(p *rules.Policy, rt deliver.Route) []string {
	res := resolver.New(p.Settings.Resolvers, 5*time.Second)
	c := &smtpc.Client{Hostname: p.Settings.Hostname, Resolver: res, Policy: engine.TLSPolicy(p.Settings, res, nil)}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	hosts, err := c.Hosts(ctx, *rt.Remote)
	if err != nil {
		return []string{"lookup failed: " + err.Error()}
	}
	var out []string
	for _, h := range hosts {
		var addrs []string
		for _, a := range h.Addrs {
			addrs = append(addrs, a.String())
		}
		out = append(out, fmt.Sprintf("%s (preference %d) %s; tls: %s", h.Name, h.Pref, strings.Join(addrs, " "),
			c.TLSPolicy(ctx, *rt.Remote, h.Name)))
	}
	return out
}
