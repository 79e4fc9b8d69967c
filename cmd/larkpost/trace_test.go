package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	gomilter "github.com/emersion/go-milter"
	"github.com/emersion/go-smtp"

	"github.com/larkpost/larkpost/engine/cleanup"
	"github.com/larkpost/larkpost/engine/smtpd"
	"github.com/larkpost/larkpost/rules"
)

const tracePolicy = "testdata/trace/policy.star"

// traceCases are shared by the golden test and the trace-vs-server test.
var traceCases = []struct {
	name string
	args []string
}{
	{"accepted", []string{"--client-ip", "198.51.100.7", "--helo", "mx.partner.example", "--from", "ann@partner.example",
		"--to", "bob+lists@example.com", "--to", "full@example.com", "--to", "victim@elsewhere.example", "--to", "postmaster@example.com"}},
	{"relay-from-lan", []string{"--client-ip", "192.168.1.20", "--helo", "localhost", "--from", "bob@example.com", "--to", "friend@elsewhere.example"}},
	{"helo-rejected", []string{"--client-ip", "198.51.100.7", "--helo", "localhost", "--from", "ann@partner.example", "--to", "bob@example.com"}},
	{"sender-rejected", []string{"--client-ip", "198.51.100.7", "--from", "bulk@spam.example", "--to", "bob@example.com"}},
	{"held", []string{"--client-ip", "198.51.100.7", "--from", "ann@partner.example", "--to", "bob@example.com", "testdata/trace/flagged.eml"}},
	{"content-rejected", []string{"--client-ip", "198.51.100.7", "--from", "ann@partner.example", "--to", "bob@example.com", "testdata/trace/lottery.eml"}},
	{"no-valid-recipient", []string{"--client-ip", "198.51.100.7", "--from", "", "--to", "victim@elsewhere.example", "--to", "x@bad..example"}},
}

// TestTraceGolden compares trace's text and JSON output with golden
// files (-update rewrites them).
func TestTraceGolden(t *testing.T) {
	for _, tc := range traceCases {
		for _, format := range []string{"txt", "json"} {
			t.Run(tc.name+"."+format, func(t *testing.T) {
				args := append([]string{"-c", tracePolicy}, tc.args...)
				if format == "json" {
					args = append([]string{"--json"}, args...)
				}
				var out, errb bytes.Buffer
				if code := run(append([]string{"trace"}, args...), &out, &errb); code != 0 {
					t.Fatalf("exit %d: %s", code, errb.String())
				}
				golden := filepath.Join("testdata/trace", tc.name+"."+format)
				if *update {
					os.WriteFile(golden, out.Bytes(), 0o644)
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run with -update)", err)
				}
				if out.String() != string(want) {
					t.Errorf("trace output differs:\n--- got\n%s--- want\n%s", out.String(), want)
				}
			})
		}
	}
}

func TestTraceWritesNothing(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "larkpost.star")
	os.WriteFile(cfg, []byte(fmt.Sprintf("config(data_dir = %q)\n", filepath.Join(dir, "data"))), 0o600)
	var out bytes.Buffer
	if code := run([]string{"trace", "-c", cfg, "--from", "a@example.org", "--to", "root@localhost"}, &out, &out); code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("trace created the data directory")
	}
}

// captureSink records what the server would queue.
type captureSink struct {
	mu   sync.Mutex
	envs []*cleanup.Submission
}

func (c *captureSink) Inject(_ context.Context, sub *cleanup.Submission) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.envs = append(c.envs, sub)
	return sub.ID, nil
}

// TestTraceMatchesServer is the one-code-path promise: the same scenario
// through trace and through a real SMTP session gives the same decisions,
// reply for reply, and the queued message carries the same decision log.
func TestTraceMatchesServer(t *testing.T) {
	p, err := rules.LoadFileWith(tracePolicy, rules.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range traceCases {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFlagSet("trace", &bytes.Buffer{})
			from := fs.String("from", "", "")
			var to listFlag
			fs.Var(&to, "to", "")
			clientIP := fs.String("client-ip", "", "")
			helo := fs.String("helo", "client.example", "")
			fs.Parse(interleaved(tc.args, fs.Lookup))
			var raw []byte
			if fs.NArg() == 1 {
				raw, _ = os.ReadFile(fs.Arg(0))
			} else {
				raw = []byte("From: <" + *from + ">\r\nSubject: dry run\r\n\r\n")
			}
			raw = bytes.ReplaceAll(bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))

			// The server sees every client as 127.0.0.1; give the policy
			// the scenario's trust level by putting loopback in or out of
			// networks, and dry-run with the same address.
			pp := *p
			set := *p.Settings
			pp.Settings = &set
			if p.Settings.InNetworks(netip.MustParseAddr(*clientIP)) {
				set.Networks = append(set.Networks, netip.MustParsePrefix("127.0.0.0/8"))
			}
			res := pp.DryRun(context.Background(), &rules.Envelope{
				Conn: rules.Conn{IP: netip.MustParseAddr("127.0.0.1"), RDNS: "localhost", Helo: *helo, Listener: "smtp"},
				From: *from, To: to, Message: raw,
			})

			sink := &captureSink{}
			srv := smtpd.New(&pp, sink, nil, pp.Logger())
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go srv.Serve("smtp", l)
			defer srv.Close()
			replies := smtpDialog(t, l.Addr().String(), *helo, *from, to, raw)

			// Every refused step of the dry run is the reply the server gave.
			var want []string
			for _, s := range res.Steps {
				if s.Stage == rules.StageConnect {
					continue
				}
				if s.Refused() {
					want = append(want, fmt.Sprintf("%s %d %s %s", s.Stage, s.Code, s.Status, s.Text))
				} else {
					want = append(want, string(s.Stage)+" ok")
				}
			}
			if strings.Join(replies, "\n") != strings.Join(want, "\n") {
				t.Errorf("server replies:\n%s\ndry run:\n%s", strings.Join(replies, "\n"), strings.Join(want, "\n"))
			}
			sink.mu.Lock()
			defer sink.mu.Unlock()
			if res.Queued != (len(sink.envs) == 1) {
				t.Fatalf("dry run queued=%v, server queued %d messages", res.Queued, len(sink.envs))
			}
			if res.Queued {
				got := stepsString(sink.envs[0].Decisions)
				if got != stepsString(res.Steps) {
					t.Errorf("decision logs differ:\nserver:\n%s\ndry run:\n%s", got, stepsString(res.Steps))
				}
				if sink.envs[0].Hold != res.Hold {
					t.Errorf("hold: server %v, dry run %v", sink.envs[0].Hold, res.Hold)
				}
			}
		})
	}
}

func stepsString(steps []rules.Step) string {
	var b strings.Builder
	for _, s := range steps {
		fmt.Fprintf(&b, "%s <%s> %s [%s]\n", s.Stage, s.Arg, s.Decision, s.Source)
	}
	return b.String()
}

// smtpDialog runs HELO, MAIL, RCPT... and DATA, and returns one line per
// stage in the dry run's terms: "stage ok" or "stage CODE STATUS TEXT".
func smtpDialog(t *testing.T, addr, helo, from string, to []string, msg []byte) []string {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out []string
	res := func(stage string, err error) bool {
		var se *smtp.SMTPError
		switch {
		case err == nil:
			out = append(out, stage+" ok")
			return true
		case errors.As(err, &se):
			out = append(out, fmt.Sprintf("%s %d %d.%d.%d %s", stage, se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message))
			return false
		}
		t.Fatalf("%s: %v", stage, err)
		return false
	}
	if !res("helo", c.Hello(helo)) {
		return out
	}
	if !res("mail", c.Mail(from, nil)) {
		return out
	}
	accepted := 0
	for _, r := range to {
		if res("rcpt", c.Rcpt(r, nil)) {
			accepted++
		}
	}
	if accepted == 0 {
		return out
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write(msg)
	res("data", w.Close())
	return out
}

// TestTraceDNS: --dns answers the hooks' lookups from a file, the
// server's Authentication-Results field is shown, and a bad file is an
// error naming it.
func TestTraceDNS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "larkpost.star")
	os.WriteFile(cfg, []byte(`config(hostname = "mx.example.com", destinations = ["example.com"], resolvers = ["192.0.2.53"])
def on_connect(conn):
    if dns.lookup_a(".".join(reversed(conn.ip.split("."))) + ".bl.example"):
        return reject("listed")
    dns.fcrdns(conn.ip)
`), 0o600)
	table := filepath.Join(dir, "dns.json")
	os.WriteFile(table, []byte(`{"7.100.51.198.bl.example": {"A": ["127.0.0.2"]},
 "8.100.51.198.in-addr.arpa": {"PTR": "mail.partner.example."}, "mail.partner.example": {"A": "198.51.100.8"}}`), 0o600)
	tests := []struct {
		ip, want string
	}{
		{"198.51.100.7", "connect  reject 554 5.7.1 listed"},
		{"198.51.100.8", "adds     Authentication-Results: mx.example.com; iprev=pass reason=mail.partner.example policy.iprev=198.51.100.8"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		if code := run([]string{"trace", "-c", cfg, "--dns", table, "--client-ip", tt.ip, "--from", "a@partner.example", "--to", "bob@example.com"}, &out, &out); code != 0 {
			t.Fatalf("exit %d: %s", code, out.String())
		}
		if !strings.Contains(out.String(), tt.want) {
			t.Errorf("trace from %s:\n%s\nwant a line %q", tt.ip, out.String(), tt.want)
		}
	}
	os.WriteFile(table, []byte(`{"x": {"MX": ["not a record"]}}`), 0o600)
	var out bytes.Buffer
	if code := run([]string{"trace", "-c", cfg, "--dns", table, "--to", "bob@example.com"}, &out, &out); code != 1 || !strings.Contains(out.String(), "dns.json") {
		t.Errorf("bad table: exit %d, %q; want 1 and the file named", code, out.String())
	}
}

// traceMilter rejects GTUBE and otherwise adds a header and a recipient,
// as rspamd would.
type traceMilter struct {
	gomilter.NoOpMilter
	body bytes.Buffer
}

func (m *traceMilter) BodyChunk(chunk []byte, _ *gomilter.Modifier) (gomilter.Response, error) {
	m.body.Write(chunk)
	return gomilter.RespContinue, nil
}

func (m *traceMilter) Body(mod *gomilter.Modifier) (gomilter.Response, error) {
	if strings.Contains(m.body.String(), "GTUBE") {
		return gomilter.NewResponseStr('y', "554 5.7.1 Gtube pattern"), nil
	}
	mod.AddHeader("X-Spam", "No")
	mod.AddRecipient("<archive@example.com>")
	return gomilter.RespAccept, nil
}

// TestTraceMilters: trace --milters shows what each milter would say and
// change; without the flag no milter is asked.
func TestTraceMilters(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &gomilter.Server{NewMilter: func() gomilter.Milter { return &traceMilter{} },
		Actions: gomilter.OptAddHeader | gomilter.OptAddRcpt}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	dir := t.TempDir()
	cfg := filepath.Join(dir, "larkpost.star")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`config(hostname = "mx.example.com", destinations = ["example.com"], smtpd_milters = ["inet:%s"])`, ln.Addr())), 0o600)
	ham, spam := filepath.Join(dir, "ham.eml"), filepath.Join(dir, "spam.eml")
	os.WriteFile(ham, []byte("Subject: hi\n\nhello\n"), 0o600)
	os.WriteFile(spam, []byte("Subject: hi\n\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\n"), 0o600)
	tests := []struct {
		name string
		args []string
		want []string
		not  []string
	}{
		{"ham", []string{"--milters", ham}, []string{"data     accept  [milter inet:", "data     add header X-Spam: No  [milter inet:", "data     add rcpt <archive@example.com>  [milter inet:", "bob@example.com"}, nil},
		{"spam", []string{"--milters", spam}, []string{"data     reject 554 5.7.1 Gtube pattern  [milter inet:"}, []string{"bob@example.com  "}},
		{"without --milters", []string{spam}, nil, []string{"milter"}},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		args := append([]string{"trace", "-c", cfg, "--client-ip", "198.51.100.7", "--from", "ann@partner.example", "--to", "bob@example.com"}, tt.args...)
		if code := run(args, &out, &out); code != 0 {
			t.Fatalf("%s: exit %d: %s", tt.name, code, out.String())
		}
		for _, w := range tt.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%s: no %q in\n%s", tt.name, w, out.String())
			}
		}
		for _, n := range tt.not {
			if strings.Contains(out.String(), n) {
				t.Errorf("%s: %q in\n%s", tt.name, n, out.String())
			}
		}
	}
}
