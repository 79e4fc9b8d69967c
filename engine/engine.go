// Package engine wires larkpost's parts together, as Postfix's master does:
// the SMTP listeners, the policy, and the stage that takes accepted mail.
package engine

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/larkpost/larkpost/engine/activity"
	"github.com/larkpost/larkpost/engine/auth"
	"github.com/larkpost/larkpost/engine/bounce"
	"github.com/larkpost/larkpost/engine/cleanup"
	"github.com/larkpost/larkpost/engine/deliver"
	"github.com/larkpost/larkpost/engine/deliver/local"
	smtpc "github.com/larkpost/larkpost/engine/deliver/smtp"
	"github.com/larkpost/larkpost/engine/maillog"
	"github.com/larkpost/larkpost/engine/metrics"
	"github.com/larkpost/larkpost/engine/milter"
	"github.com/larkpost/larkpost/engine/resolver"
	"github.com/larkpost/larkpost/engine/sched"
	"github.com/larkpost/larkpost/engine/smtpd"
	"github.com/larkpost/larkpost/engine/state"
	"github.com/larkpost/larkpost/engine/tlspolicy"
	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
	"github.com/larkpost/larkpost/rules/certs"
)

// Engine is a running (or ready to run) larkpost instance.
type Engine struct {
	log   *slog.Logger
	smtpd *smtpd.Server
	state state.Store // greylist, ratelimit and vacation records
	// nonSMTPMilters are asked about mail from sendmail (pickup).
	nonSMTPMilters []*milter.Milter
	queue          *queue.Queue
	sched          *sched.Scheduler
	listeners      map[string]net.Listener
	dataDir        string
	wg             sync.WaitGroup
	policy         atomic.Pointer[rules.Policy] // what delivery routes with
	cleanup        *cleanup.Cleanup             // the one way into the queue
	done           chan struct{}                // closed by Shutdown, for background loops
	started        time.Time
	notices        *bounce.Notifier
	startSet       *rules.Settings  // what the server started with: restart-bound settings keep these
	privileged     local.Privileged // a split server's root parent, or nil
	openDrop       func(path string) (*os.File, error)
	events         *events // the post-queue hooks' queue
	stopEvents     context.CancelFunc
	feed           *activity.Feed          // the web page's recent deliveries and rejects
	metrics        *metrics.Metrics        // what /metrics serves
	httpListeners  map[string]net.Listener // metrics_listen and web_listen, by configured address
}

// Options are the less common settings of NewWith.
type Options struct {
	// Statfs reports the queue file system's free space; nil is the real
	// statfs(2). Tests use it to simulate a full disk.
	Statfs queue.Statfs
	// Listeners are already bound, by name (a split server's root parent
	// binds them and hands them over); a name in listen that is missing
	// here is bound by New.
	Listeners map[string]net.Listener
	// Privileged does what needs another user's rights (a split server's
	// root parent); nil does it in this process.
	Privileged local.Privileged
	// OpenDrop opens a maildrop file this process may not read (a split
	// server's root parent does); nil: only what this process can open.
	OpenDrop func(path string) (*os.File, error)
	// Beat, when set, is the write end of a pipe the queue's beat is
	// mirrored to (queue.Beat.Mirror): a split server's root parent
	// writes users' Maildirs and syncs them in the queue's commits.
	Beat *os.File
}

// New prepares an engine for policy p: it creates the data directory and
// binds every listener, so a port already in use fails here, before any
// mail is accepted.
func New(p *rules.Policy, log *slog.Logger) (*Engine, error) { return NewWith(p, log, Options{}) }

// NewWith is New with options.
func NewWith(p *rules.Policy, log *slog.Logger, o Options) (*Engine, error) {
	set := p.Settings
	dataDir, err := filepath.Abs(set.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data_dir: %w", err)
	}
	e := &Engine{log: log, listeners: map[string]net.Listener{}, httpListeners: map[string]net.Listener{}, feed: activity.New(1000), dataDir: dataDir, done: make(chan struct{}), privileged: o.Privileged, openDrop: o.OpenDrop}
	var res smtpd.NameResolver
	if len(set.Resolvers) > 0 {
		// One resolver and cache for the scripts, the SMTP server's
		// client lookups and delivery.
		res = p.Resolver()
	}
	e.metrics = metrics.New(e)
	e.queue, err = queue.OpenWith(filepath.Join(dataDir, "queue"), queue.Options{Log: log.With(maillog.Program("qmgr")), Statfs: o.Statfs, ObserveCommit: e.metrics.Commit})
	if err != nil {
		return nil, err
	}
	if o.Beat != nil {
		if err := e.queue.Beat().Mirror(o.Beat); err != nil {
			log.Warn("warning: the queue's beat cannot reach the privileged parent: " + err.Error())
		}
	}
	// Greylist triplets, rate limits and vacation records: the queue's
	// database, or a Redis the MX nodes share. A Redis that is down now
	// is not fatal: each call fails by its module's failure mode until
	// it is back.
	if e.state, err = state.Open(set.State.Store, e.queue, state.Options{Redis: state.RedisOptions{Timeout: set.State.Timeout}}); err != nil {
		e.queue.Close()
		return nil, fmt.Errorf("state_store: %w", err)
	}
	p.UseState(e.state)
	e.policy.Store(p)
	e.startSet = set
	cfg := schedConfig(set)
	cfg.QueueDir = filepath.Join(dataDir, "queue")
	// Cleanup hands what it queues to the scheduler, and delivery queues
	// bounces, forwards and vacation replies through cleanup.
	e.cleanup = cleanup.New(e.policy.Load, e.queue, func(r *queue.Record) { e.sched.Submit(r) }, log.With(maillog.Program("cleanup")))
	e.cleanup.Claim = func(id string) { e.sched.Claim(id) }
	e.cleanup.Unclaim = func(id string) { e.sched.Unreserve(id) }
	cfg.Cleanup = e.cleanup
	cfg.Agents = e.agents(set, log)
	e.events = newEvents(e.policy.Load, log)
	cfg.Events = e.events.push
	cfg.Observe = e.deliveryObserver
	e.sched = sched.New(e.queue, cfg, func(r *queue.Rcpt, m *sched.Message) deliver.Route { return Route(e.policy.Load(), r, m) }, log.With(maillog.Program("qmgr")))
	e.notices = &bounce.Notifier{Config: func() *bounce.Config { return bounceConfig(e.policy.Load().Settings) }, Cleanup: e.cleanup, Log: log.With(maillog.Program("bounce"))}
	e.smtpd = smtpd.New(p, e.cleanup, res, log.With(maillog.Program("smtpd")))
	if e.smtpd.Milters, err = milters(set, "smtpd_milters", set.Milter.Smtpd, dataDir); err != nil {
		e.queue.Close()
		return nil, err
	}
	if e.nonSMTPMilters, err = milters(set, "non_smtpd_milters", set.Milter.NonSmtpd, dataDir); err != nil {
		e.queue.Close()
		return nil, err
	}
	e.smtpd.Bodies, e.smtpd.Space = e.queue, e.queue
	e.smtpd.Notify = e.notify
	e.observe()
	if srcs := p.TLSSources(); len(srcs) > 0 {
		store, err := certs.NewStore(srcs)
		if err != nil {
			e.queue.Close()
			return nil, fmt.Errorf("TLS: %w", err)
		}
		store.Log = func(msg string) { log.Info(msg) }
		e.smtpd.Certs = store
		if set.TLS.CAFile != "" {
			if e.smtpd.ClientCAs, err = rules.ClientCAs(p); err != nil {
				e.queue.Close()
				return nil, fmt.Errorf("smtpd_tls_CAfile: %w", err)
			}
		}
	}
	if a, err := authenticator(p, log.With(maillog.Program("smtpd"))); err != nil {
		e.queue.Close()
		return nil, err
	} else {
		e.smtpd.Auth = a
	}
	for _, name := range sortedKeys(set.Listen) {
		if l, ok := o.Listeners[name]; ok {
			e.listeners[name] = l
			continue
		}
		l, err := net.Listen("tcp", set.Listen[name])
		if err != nil {
			e.closeListeners()
			e.queue.Close()
			return nil, fmt.Errorf("listener %s: %w", name, err)
		}
		e.listeners[name] = l
	}
	if err := e.bindHTTP(); err != nil {
		e.closeListeners()
		e.queue.Close()
		return nil, err
	}
	return e, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (e *Engine) closeListeners() {
	for _, l := range e.listeners {
		l.Close()
	}
	for _, l := range e.httpListeners {
		l.Close()
	}
}

// Addr returns the bound address of a listener, e.g. to learn the port
// chosen for "127.0.0.1:0".
func (e *Engine) Addr(name string) net.Addr {
	if l, ok := e.listeners[name]; ok {
		return l.Addr()
	}
	return nil
}

// Queue is the engine's message queue.
func (e *Engine) Queue() *queue.Queue { return e.queue }

// DataDir is the absolute data directory.
func (e *Engine) DataDir() string { return e.dataDir }

// Start serves every listener in the background and starts delivering
// what is queued, including what a crash left behind.
func (e *Engine) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	e.stopEvents = cancel
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.events.run(ctx)
	}()
	e.sched.Start()
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.trimMemory()
	}()
	for _, name := range sortedKeys(listenerNames(e.listeners)) {
		l := e.listeners[name]
		e.log.Info("listening on " + name + " " + l.Addr().String())
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			if err := e.smtpd.Serve(name, l); err != nil {
				e.log.Error("listener " + name + ": " + err.Error())
			}
		}()
	}
	e.serveHTTP()
	e.startPickup()
}

func listenerNames(m map[string]net.Listener) map[string]string {
	out := map[string]string{}
	for k := range m {
		out[k] = ""
	}
	return out
}

// once records a vacation reply in the state store, so that nodes
// sharing one answer a sender once per period between them.
func (e *Engine) once(key string, ttl time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), e.policy.Load().Settings.State.Timeout)
	defer cancel()
	return e.state.Once(ctx, key, ttl)
}

// agents are the delivery agents by transport. The local agent reads its
// settings at each delivery; the remote one is bound at start.
func (e *Engine) agents(set *rules.Settings, log *slog.Logger) map[deliver.Kind]deliver.Agent {
	la := &local.Agent{Cleanup: e.cleanup, Once: e.once, Log: log.With(maillog.Program("local")), Privileged: e.privileged, Commits: e.queue.Beat(), Settings: func() local.Settings {
		s := e.policy.Load().Settings
		return local.Settings{Hostname: s.Hostname, SizeLimit: s.MailboxSizeLimit, CommandTimeLimit: s.CommandTimeLimit, DefaultPrivs: s.DefaultPrivs}
	}}
	res := e.policy.Load().Resolver()
	client := &smtpc.Client{Hostname: set.Hostname, Resolver: res, MaxIdle: max(4, set.DestConcurrency), Log: log.With(maillog.Program("smtp")), Policy: TLSPolicy(set, res, stsCache{e.queue})}
	if roots, err := rules.ServerCAs(e.policy.Load()); err == nil && roots != nil {
		client.TLSConfig = &tls.Config{RootCAs: roots} // checked at load
	}
	remote := client.Agent()
	return map[deliver.Kind]deliver.Agent{deliver.Local: la, deliver.File: la, deliver.Pipe: la, deliver.SMTP: remote, deliver.LMTP: remote}
}

// schedConfig is the scheduler's part of the settings, built in one place
// for the start and for every reload.
func schedConfig(set *rules.Settings) sched.Config {
	return sched.Config{
		Hostname: set.Hostname, MinBackoff: set.MinBackoff, MaxBackoff: set.MaxBackoff,
		MaxLifetime: set.MaxQueueLifetime, BounceLifetime: set.BounceLifetime, DelayWarning: set.DelayWarning,
		Workers: set.DeliveryWorkers, ActiveLimit: set.ActiveLimit, DestConcurrency: set.LocalConcurrency,
		SoftBounce: set.SoftBounce, RemoteConcurrency: set.DestConcurrency,
		NotifyClasses: set.NotifyClasses, NotifyRecipient: set.NotifyRecipient,
		SMTPRateDelay: set.RateDelay("smtp"), LMTPRateDelay: set.RateDelay("lmtp"), LocalRateDelay: set.RateDelay("local"),
	}
}

// Reload switches to policy p: new SMTP sessions and messages get it at
// once (sessions in progress keep theirs), the scheduler's settings apply
// from the next delivery. It returns the settings that differ from the
// ones the server started with and need a restart (rules.BindRestart).
func (e *Engine) Reload(p *rules.Policy) []string {
	p.UseState(e.state)
	p.ObserveHooks(e.metrics.Hook)
	e.smtpd.SetPolicy(p)
	e.policy.Store(p)
	e.sched.SetConfig(schedConfig(p.Settings))
	return rules.RestartNeeded(e.startSet, p.Settings)
}

// Close releases an engine that was never started: its listeners and the
// queue.
func (e *Engine) Close() error {
	close(e.done)
	e.closeListeners()
	e.state.Close()
	return e.queue.Close()
}

// Shutdown stops accepting connections and waits for sessions to finish
// until ctx ends; sessions still open then are closed. A message whose DATA
// was not answered 250 was never acknowledged, so closing loses nothing.
func (e *Engine) Shutdown(ctx context.Context) error {
	select {
	case <-e.done:
	default:
		close(e.done)
	}
	err := e.smtpd.Shutdown(ctx)
	e.sched.Stop(ctx)
	if e.stopEvents != nil {
		e.stopEvents()
	}
	e.wg.Wait()
	e.state.Close()
	return errors.Join(err, e.queue.Close())
}

// milters makes the milter clients of one setting.
func milters(set *rules.Settings, setting string, addrs []string, dataDir string) ([]*milter.Milter, error) {
	var out []*milter.Milter
	for _, addr := range addrs {
		cfg := set.MilterConfig(addr)
		cfg.TempDir = filepath.Join(dataDir, "queue")
		m, err := milter.New(cfg)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", setting, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// authenticator is SMTP AUTH's backend and failure limit, when a
// listener offers AUTH.
func authenticator(p *rules.Policy, log *slog.Logger) (*auth.Authenticator, error) {
	set := p.Settings
	offered := false
	for name := range set.Listen {
		offered = offered || set.Listener(name).SASLAuth
	}
	if !offered {
		return nil, nil
	}
	var backend auth.Backend
	switch set.SASL.Type {
	case "dovecot":
		d, err := auth.NewDovecot(set.SASL.Path, auth.DovecotOptions{})
		if err != nil {
			return nil, fmt.Errorf("smtpd_sasl_path: %w", err)
		}
		backend = d
	default:
		f, err := auth.OpenPasswdFile(p.SASLPath(), auth.PasswdFileOptions{Logger: log})
		if err != nil {
			return nil, fmt.Errorf("smtpd_sasl_path: %w", err)
		}
		backend = f
	}
	limiter := auth.NewLimiter(auth.LimiterConfig{MaxFailures: set.SASL.FailureLimit, Backoff: set.SASL.FailureBackoff})
	return &auth.Authenticator{Backend: backend, Limiter: limiter, Logger: log}, nil
}

// TLSPolicy is outbound TLS beyond opportunistic: DANE at level dane
// (TLSA records through a DNSSEC-validating resolver's AD bit), and the
// MTA-STS policies of recipient domains unless smtp_mta_sts is off.
// Policies are cached for their max_age in cache (the queue's store; nil:
// memory).
func TLSPolicy(set *rules.Settings, res *resolver.Resolver, cache tlspolicy.Cache) *tlspolicy.Decider {
	d := &tlspolicy.Decider{DANE: tlspolicy.NewDNSSECResolver(set.Resolvers, 5*time.Second)}
	if cache == nil {
		cache = &tlspolicy.MemoryCache{}
	}
	if set.SMTPMTASTS {
		// The policy host is found through resolvers too: an MX
		// decision should not depend on two different views of DNS.
		dial := tlspolicy.ResolverDial(res.LookupIP, 30*time.Second)
		d.MTASTS = &tlspolicy.MTASTS{DNS: res, Cache: cache, HTTP: tlspolicy.NewHTTPClient(nil, dial, 0)}
	}
	return d
}
