// Command smtpload is an SMTP load generator: like Postfix's smtp-source
// it sends many messages over concurrent sessions, but it can speak TLS
// (STARTTLS or implicit), pipeline, send BDAT chunks instead of DATA and
// offer a fixed rate, and it reports latency percentiles as well as
// throughput; -latency-log writes every message's reply time and latency
// to a file, to see when the slow ones came.
//
// Usage:
//
//	go run ./cmd/smtpload [flags] HOST:PORT
//
// The last line of output is machine-readable, in the key=value style of
// the bench scripts:
//
//	RESULT n=1000 conc=10 size=2048 tls=none ok=1000 failed=0 secs=1.204 msgs_per_sec=830.6 ...
//
// It only dials, and refuses a HOST that is not loopback without
// -allow-remote. Exit status: 0 all messages accepted, 1 any not accepted,
// 2 bad usage or a latency log that could not be written.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = "usage: smtpload [flags] HOST:PORT"

// run is main without the process: tests call it for the exit status and
// output. Ctrl-C ends the run early and still reports what was done.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "smtpload:", err)
		fmt.Fprintln(stderr, usage)
		return 2
	}
	res, err := Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "smtpload:", err)
		return 2
	}
	report(stdout, cfg, res)
	if cfg.LatencyLog != "" {
		if err := writeLatencyLog(cfg.LatencyLog, res.Timeline); err != nil {
			fmt.Fprintln(stderr, "smtpload:", err)
			return 2
		}
	}
	if res.OK < cfg.Messages {
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (Config, error) {
	fs := flag.NewFlagSet("smtpload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, usage)
		fs.PrintDefaults()
	}
	var cfg Config
	fs.IntVar(&cfg.Messages, "n", 1000, "messages to send in all")
	fs.IntVar(&cfg.Conc, "c", 10, "concurrent sessions")
	fs.IntVar(&cfg.Size, "s", 2048, "payload `bytes` per message (headers not included)")
	fs.StringVar(&cfg.From, "from", "benchuser@bench.test", "envelope sender and From header")
	to := fs.String("to", "benchuser@bench.test", "recipients, a comma list sends several RCPTs")
	fs.BoolVar(&cfg.Persist, "persist", false, "send several messages per connection, with RSET between them")
	fs.BoolVar(&cfg.Pipelining, "pipelining", false, "send MAIL, RCPT and DATA in one write and read their replies after (RFC 2920), as MTAs do")
	fs.BoolVar(&cfg.BDAT, "bdat", false, "send each message as one BDAT LAST chunk (RFC 3030 CHUNKING) instead of DATA: no dot-stuffing for either side")
	starttls := fs.Bool("starttls", false, "EHLO, STARTTLS, TLS handshake, EHLO again")
	implicit := fs.Bool("tls", false, "TLS from the first byte (port 465)")
	fs.BoolVar(&cfg.Insecure, "insecure", true, "skip certificate verification (benchmarks use self-signed certs); -insecure=false verifies")
	fs.StringVar(&cfg.ServerName, "servername", "", "TLS server `name` (default: HOST)")
	fs.DurationVar(&cfg.Timeout, "timeout", 30*time.Second, "timeout per command")
	fs.DurationVar(&cfg.Duration, "duration", 110*time.Second, "upper bound for the whole run: stop and report what was done")
	fs.Float64Var(&cfg.Rate, "rate", 0, "offer this many `messages` a second, open loop, with -c bounding the sessions in flight (latency below saturation); 0: each session sends as fast as the server answers")
	fs.BoolVar(&cfg.AllowRemote, "allow-remote", false, "allow a HOST that is not a loopback address")
	fs.StringVar(&cfg.LatencyLog, "latency-log", "", "write each message's final reply to `file`, a line each in the order they came: seconds from the start and the latency in ms (to see when the slow ones happened)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() != 1 {
		return cfg, errors.New("need exactly one HOST:PORT")
	}
	cfg.Addr = fs.Arg(0)
	if cfg.Rate < 0 {
		return cfg, errors.New("-rate must not be negative")
	}
	if *starttls && *implicit {
		return cfg, errors.New("-starttls and -tls exclude each other")
	}
	switch {
	case *starttls:
		cfg.TLS = TLSStartTLS
	case *implicit:
		cfg.TLS = TLSImplicit
	}
	for _, a := range strings.Split(*to, ",") {
		if a = strings.TrimSpace(a); a != "" {
			cfg.To = append(cfg.To, a)
		}
	}
	return cfg, nil
}

// writeLatencyLog writes the timeline as "seconds latency_ms" lines, for
// awk or gnuplot.
func writeLatencyLog(path string, tl []Timed) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("latency log: %w", err)
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "# seconds_from_start latency_ms (final dot to reply), one line per message that succeeded")
	for _, t := range tl {
		fmt.Fprintf(w, "%.6f %.3f\n", t.At.Seconds(), ms(t.Latency))
	}
	err = w.Flush()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("latency log %s: %w", path, err)
	}
	return nil
}

// stepOrder is the order of a session's steps in the report.
var stepOrder = []string{"banner", "EHLO", "STARTTLS", "MAIL", "RCPT", "DATA", "envelope", "RSET", "QUIT"}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// report prints the human summary, then the RESULT line.
func report(w io.Writer, cfg Config, r Result) {
	mode := "one message per connection"
	if cfg.Persist {
		mode = "persistent connections"
	}
	if cfg.Pipelining {
		mode += ", pipelining"
	}
	if cfg.BDAT {
		mode += ", BDAT"
	}
	fmt.Fprintf(w, "target:     %s tls=%s, %s, %d sessions, %d-byte payload, %d rcpt(s)\n",
		cfg.Addr, cfg.TLS, mode, cfg.Conc, cfg.Size, len(cfg.To))
	fmt.Fprintf(w, "messages:   %d ok, %d failed, %d unfinished of %d in %.3fs over %d connections\n",
		r.OK, r.Failed, r.Unfinished, r.Messages, r.Elapsed.Seconds(), r.Connections)
	if r.Stopped {
		fmt.Fprintf(w, "stopped:    the run was cut short (-duration %s or interrupt)\n", cfg.Duration)
	}
	fmt.Fprintf(w, "throughput: %.1f msgs/s, %.0f bytes/s (%.2f MiB/s)\n",
		r.MsgsPerSec(), r.BytesPerSec(), r.BytesPerSec()/(1<<20))
	l := r.Latency
	fmt.Fprintf(w, "latency:    p50=%.3fms p90=%.3fms p99=%.3fms max=%.3fms (final \".\" to 250)\n",
		ms(l.P50), ms(l.P90), ms(l.P99), ms(l.Max))
	fmt.Fprintf(w, "connect:    p50=%.3fms\n", ms(r.Connect.P50))
	if cfg.Rate > 0 {
		lt := r.Lateness
		fmt.Fprintf(w, "offered:    %.1f msgs/s; %d started more than %s after their due time (late p50=%.3fms p99=%.3fms max=%.3fms)\n",
			cfg.Rate, r.Late, lateSlack, ms(lt.P50), ms(lt.P99), ms(lt.Max))
	}
	var steps []string
	for _, k := range stepOrder {
		if p, ok := r.Steps[k]; ok {
			steps = append(steps, fmt.Sprintf("%s %.3f/%.3f", k, ms(p.P50), ms(p.P99)))
		}
	}
	if len(steps) > 0 {
		fmt.Fprintf(w, "steps:      %s (p50/p99 ms, write to reply)\n", strings.Join(steps, ", "))
	}
	if cfg.TLS != TLSNone {
		fmt.Fprintf(w, "tls:        %d handshakes, %.1f/s, p50=%.3fms p99=%.3fms\n",
			r.Handshakes, r.HandshakesPerSec(), ms(r.Handshake.P50), ms(r.Handshake.P99))
	}
	if r.Failed > 0 {
		var codes []string
		for _, k := range slices.Sorted(maps.Keys(r.FailCodes)) {
			codes = append(codes, fmt.Sprintf("%s=%d", k, r.FailCodes[k]))
		}
		fmt.Fprintf(w, "failures:   %s\n", strings.Join(codes, " "))
		for _, s := range r.Samples {
			fmt.Fprintf(w, "  sample:   %s\n", strings.ReplaceAll(s, "\n", " / "))
		}
	}
	fmt.Fprintf(w, "RESULT n=%d conc=%d size=%d tls=%s ok=%d failed=%d secs=%.3f msgs_per_sec=%.1f "+
		"p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f handshakes=%d handshakes_per_sec=%.1f hs_p50_ms=%.3f hs_p99_ms=%.3f rate=%.1f late=%d\n",
		cfg.Messages, cfg.Conc, cfg.Size, cfg.TLS, r.OK, r.Failed, r.Elapsed.Seconds(), r.MsgsPerSec(),
		ms(l.P50), ms(l.P90), ms(l.P99), ms(l.Max), r.Handshakes, r.HandshakesPerSec(),
		ms(r.Handshake.P50), ms(r.Handshake.P99), cfg.Rate, r.Late)
}
