package rules

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"go.starlark.net/starlark"

	"github.com/larkpost/larkpost/rules/postfix"
)

// Settings holds every value a config script may set with config(...).
// Names follow Postfix's main.cf where one exists, and so do the defaults,
// except where a Go server on a development machine needs another (noted).
type Settings struct {
	Hostname       string            // myhostname
	Domain         string            // mydomain
	Origin         string            // myorigin
	Destinations   []string          // mydestination
	Networks       []netip.Prefix    // mynetworks
	RelayDomains   []string          // relay_domains
	Relayhost      string            // relayhost
	Listen         map[string]string // listener name -> host:port
	ListenOpts     map[string]ListenOptions
	TLS            TLSSettings
	SASLAuthEnable bool // smtpd_sasl_auth_enable
	SASL           SASLSettings
	// SenderLoginMaps: sender address -> logins (smtpd_sender_login_maps).
	SenderLoginMaps           []string
	RejectSenderLoginMismatch bool           // reject_sender_login_mismatch
	ProxyNetworks             []netip.Prefix // upstream_proxy_networks
	SMTPMTASTS                bool           // smtp_mta_sts
	SMTPTLSCAFile             string         // smtp_tls_CAfile
	DataDir                   string
	MessageSizeLimit          int64  // message_size_limit
	RecipientDelimiter        string // recipient_delimiter
	Resolvers                 []string
	SoftBounce                bool
	// AlwaysAddMissingHeaders: cleanup adds Message-ID and Date to
	// every message lacking them, not only to local ones.
	AlwaysAddMissingHeaders bool

	Banner                string // smtpd_banner, "{hostname}" is replaced
	RecipientLimit        int    // smtpd_recipient_limit
	LineLengthLimit       int
	ConnectionLimit       int // total concurrent SMTP sessions
	ClientConnectionLimit int // smtpd_client_connection_count_limit
	Timeout               time.Duration
	DataTimeout           time.Duration
	SessionTimeout        time.Duration
	ForbidBareNewline     string // "reject" or "normalize"
	HeaderSizeLimit       int64  // header_size_limit: one header field
	HeaderTotalLimit      int64  // the whole header block
	BodyChecksSizeLimit   int64  // body_checks_size_limit: what msg.body shows
	InflightBytes         int64  // smtpd_inflight_bytes: message memory of all sessions
	QueueMinfree          int64  // queue_minfree
	MinDataRate           int64  // smtpd_min_data_rate, bytes/s
	StressTimeout         time.Duration
	StressThreshold       int // sessions per listener from which timeouts shrink
	NetworksReserve       int // sessions per listener kept for networks clients
	AllowMinUser          bool
	PeernameLookup        bool
	HookMaxSteps          uint64
	HookTimeout           time.Duration
	DNSTimeout            time.Duration // one lookup from a script
	DNSMaxQueries         int           // per hook call
	DKIM                  DKIMSettings
	Milter                MilterSettings
	RateDelays            RateDelays      // *_destination_rate_delay
	State                 StateSettings   // state_store and the greylist/ratelimit failure modes
	Observe               ObserveSettings // logs, metrics and the web page
	HookMaxMemory         int64           // bytes of bulk allocations one hook call may make

	MailboxPath      string   // template: {data_dir}, {user}, {domain}; "/" at the end means Maildir
	LocalRecipients  []string // known local users; empty accepts any local part
	MailboxSizeLimit int64
	MinBackoff       time.Duration
	MaxBackoff       time.Duration
	MaxQueueLifetime time.Duration
	BounceLifetime   time.Duration
	DelayWarning     time.Duration
	DeliveryWorkers  int
	ActiveLimit      int
	LocalConcurrency int

	ControlGroup           string // group that may use the control socket
	MailOwner              string // mail_owner: the account the daemon runs as when started as root
	AllowRoot              bool   // allow_root: run everything as root (not recommended)
	NotifyClasses          []string
	NotifyRecipient        string
	FilterPath             string // per-user filter script template
	FilterMaxSteps         uint64
	FilterTimeout          time.Duration
	FilterMaxMemory        int64 // bytes of bulk allocations a user filter may make per message
	TransportMaps          []string
	SMTPTLSLevel           string   // smtp_tls_security_level: none, may, encrypt
	SMTPTLSPolicyMaps      []string // nexthop -> none|may|encrypt
	SMTPSASLPasswordMaps   []string // nexthop -> user:password
	DestConcurrency        int      // default_destination_concurrency_limit
	VirtualMailboxDomains  []string
	VirtualMailboxMaps     []string // address -> mailbox path under VirtualMailboxBase
	VirtualMailboxBase     string
	VirtualUIDMaps         []string // virtual_uid_maps: address or @domain -> uid
	VirtualGIDMaps         []string // virtual_gid_maps: address or @domain -> gid
	VirtualMinimumUID      int      // virtual_minimum_uid
	VirtualMailboxOwner    string   // account name or "UID:GID", when the maps are empty; "" = the server's user
	AliasMaps              []string // aliases(5) files
	VirtualAliasMaps       []string // table specs
	VirtualAliasDomains    []string
	CanonicalMaps          []string
	SenderCanonicalMaps    []string
	RecipientCanonicalMaps []string
	RelocatedMaps          []string
	MasqueradeDomains      []string
	ForwardPath            string
	ExpansionLimit         int
	RecursionLimit         int
	DefaultPrivs           string
	CommandTimeLimit       time.Duration

	explicit map[string]bool   // names set by the script
	raw      map[string]string // what the script set them to, for reload's comparison
}

// IsSet reports whether the config script set name explicitly.
func (s *Settings) IsSet(name string) bool { return s.explicit[name] }

// setting describes one config(...) keyword: its type for error messages
// and how to store a Starlark value.
type setting struct {
	kind string
	set  func(s *Settings, v starlark.Value) error
	doc  string
}

// settingTable is the single list of config(...) keywords; check, serve and
// docs/reference/settings.md (cmd/docgen) are derived from it.
var settingTable = map[string]setting{
	"hostname": {"string", func(s *Settings, v starlark.Value) error {
		return setHost(&s.Hostname, v)
	}, "this host's fully qualified name (Postfix myhostname); default: the OS hostname"},
	"domain": {"string", func(s *Settings, v starlark.Value) error {
		return setHost(&s.Domain, v)
	}, "the local domain (mydomain); default: hostname minus its first label, or localdomain"},
	"origin": {"string", func(s *Settings, v starlark.Value) error {
		return setHost(&s.Origin, v)
	}, "domain appended to bare local parts (myorigin); default: hostname"},
	"destinations": {"list of domains", func(s *Settings, v starlark.Value) error {
		return setDomains(&s.Destinations, v)
	}, "domains delivered locally (mydestination); default: hostname, localhost.domain, localhost"},
	"networks": {"list of CIDR", func(s *Settings, v starlark.Value) error {
		return setNetworks(&s.Networks, v)
	}, "trusted clients that may relay (mynetworks); default: 127.0.0.0/8, ::1/128"},
	"relay_domains": {"list of domains", func(s *Settings, v starlark.Value) error {
		return setDomains(&s.RelayDomains, v)
	}, "domains accepted from anyone and relayed (relay_domains); default: none"},
	"relayhost": {"string", func(s *Settings, v starlark.Value) error {
		if err := setString(&s.Relayhost, v); err != nil {
			return err
		}
		if s.Relayhost == "" {
			return nil
		}
		return postfix.CheckNexthop(s.Relayhost)
	}, "smarthost for non-local mail, e.g. \"[smtp.example.net]:587\"; default: none (deliver by MX)"},
	"listen": {"dict of name to host:port or options", setListen,
		"SMTP listeners by name, each \"host:port\" or a dict of options as master.cf's -o: addr, tls_security_level, tls_wrappermode (implicit TLS, port 465), sasl_auth_enable, tls_auth_only, require_auth (MAIL FROM only after AUTH: a submission port); default: {\"smtp\": \"127.0.0.1:2525\"}"},
	"data_dir": {"string", func(s *Settings, v starlark.Value) error {
		return setString(&s.DataDir, v)
	}, "where mail, queue and state live; default: ./larkpost-data"},
	"message_size_limit": {"size", func(s *Settings, v starlark.Value) error {
		return setSize(&s.MessageSizeLimit, v)
	}, "largest message accepted, in bytes or \"10MB\"; default 10240000 as Postfix"},
	"recipient_delimiter": {"string", func(s *Settings, v starlark.Value) error {
		return setString(&s.RecipientDelimiter, v)
	}, "characters separating user from extension (user+ext); default: none"},
	"resolvers": {"list of host:port", func(s *Settings, v starlark.Value) error {
		if err := setList(&s.Resolvers, v, func(x string) error {
			if _, err := netip.ParseAddrPort(withPort(x, "53")); err != nil {
				return fmt.Errorf("bad resolver address %q", x)
			}
			return nil
		}); err != nil {
			return err
		}
		for i, r := range s.Resolvers {
			s.Resolvers[i] = withPort(r, "53")
		}
		return nil
	}, "DNS servers; default: from /etc/resolv.conf"},
	"always_add_missing_headers": {"bool", func(s *Settings, v starlark.Value) error {
		return setBool(&s.AlwaysAddMissingHeaders, v)
	}, "add Message-ID and Date to messages that lack them from every client; without it they are added only for sendmail and clients in networks (Postfix's local_header_rewrite_clients); default False"},
	"soft_bounce": {"bool", func(s *Settings, v starlark.Value) error {
		return setBool(&s.SoftBounce, v)
	}, "turn policy rejects (5xx) into deferrals (4xx) at SMTP time and permanent delivery failures into retries, as Postfix's safety net; syntax and size errors stay 5xx; default False"},
	"smtpd_banner": {"string", func(s *Settings, v starlark.Value) error {
		return setString(&s.Banner, v)
	}, "text after 220 in the greeting; {hostname} is replaced; default \"{hostname} ESMTP larkpost\""},
	"smtpd_recipient_limit": {"int", func(s *Settings, v starlark.Value) error {
		return setInt(&s.RecipientLimit, v, 1)
	}, "recipients per message (452 4.5.3 beyond); default 1000"},
	"smtpd_line_length_limit": {"size", func(s *Settings, v starlark.Value) error {
		var n int64
		if err := setSize(&n, v); err != nil {
			return err
		}
		if n < 1000 {
			return fmt.Errorf("must be at least 1000 (RFC 5321)")
		}
		s.LineLengthLimit = int(n)
		return nil
	}, "longest line accepted in commands and DATA; default 64KB"},
	"smtpd_connection_limit": {"int", func(s *Settings, v starlark.Value) error {
		return setInt(&s.ConnectionLimit, v, 1)
	}, "concurrent SMTP sessions per listener; default 1000"},
	"smtpd_client_connection_count_limit": {"int", func(s *Settings, v starlark.Value) error {
		return setInt(&s.ClientConnectionLimit, v, 0)
	}, "concurrent sessions per client IP, 0 = no limit; default 50 as Postfix"},
	"smtpd_timeout": {"duration", func(s *Settings, v starlark.Value) error {
		return setDuration(&s.Timeout, v)
	}, "idle time allowed for each read from the client; default 300s"},
	"smtpd_data_timeout": {"duration", func(s *Settings, v starlark.Value) error {
		return setDuration(&s.DataTimeout, v)
	}, "total time allowed for one message's DATA or BDAT transfer; default 10m"},
	"smtpd_session_timeout": {"duration", func(s *Settings, v starlark.Value) error {
		return setDuration(&s.SessionTimeout, v)
	}, "longest SMTP session; default 1h"},
	"smtpd_forbid_bare_newline": {"\"reject\" or \"normalize\"", func(s *Settings, v starlark.Value) error {
		if err := setString(&s.ForbidBareNewline, v); err != nil {
			return err
		}
		if s.ForbidBareNewline != "reject" && s.ForbidBareNewline != "normalize" {
			return fmt.Errorf("must be \"reject\" or \"normalize\", got %q", s.ForbidBareNewline)
		}
		return nil
	}, "bare LF or CR in message data from clients outside networks: reject with 550 5.5.2, or normalize to CRLF; default \"reject\""},
	"header_size_limit": {"size", func(s *Settings, v starlark.Value) error {
		return setSizeMin(&s.HeaderSizeLimit, v, 1000)
	}, "longest header field, continuation lines included; a message with a longer one is refused with 552 5.3.4 (Postfix truncates instead); default 102400 as Postfix"},
	"header_total_limit": {"size", func(s *Settings, v starlark.Value) error {
		return setSizeMin(&s.HeaderTotalLimit, v, 10000)
	}, "largest header block a message may have (it is held in memory for the hooks); beyond it 552 5.3.4; default 1MB"},
	"body_checks_size_limit": {"size", func(s *Settings, v starlark.Value) error {
		return setSizeMin(&s.BodyChecksSizeLimit, v, 0)
	}, "how much of a message body msg.body shows the hooks and filters (the rest stays on disk); default 64KB"},
	"smtpd_inflight_bytes": {"size", func(s *Settings, v starlark.Value) error {
		return setSizeMin(&s.InflightBytes, v, 1<<20)
	}, "memory all SMTP sessions together may hold for messages being received; past it MAIL and DATA get 452 4.3.1 and messages in progress go to disk at once; default 128MB"},
	"queue_minfree": {"size", func(s *Settings, v starlark.Value) error {
		return setSizeMin(&s.QueueMinfree, v, 0)
	}, "free space the queue file system must have to accept mail (452 4.3.1 at MAIL otherwise); the server always asks for 1.5 times message_size_limit (or the SIZE given, if larger) on top of the queue's own reserve; default 0 as Postfix"},
	"smtpd_min_data_rate": {"size", func(s *Settings, v starlark.Value) error {
		return setSizeMin(&s.MinDataRate, v, 0)
	}, "slowest a DATA or BDAT transfer may be, in bytes per second, after a grace of smtpd_timeout; 0 = no minimum; default 500 as Postfix"},
	"smtpd_stress_timeout": {"duration", func(s *Settings, v starlark.Value) error {
		return setDuration(&s.StressTimeout, v)
	}, "smtpd_timeout while the server is under stress (Postfix's ${stress?{10}:{300}}s); default 10s"},
	"smtpd_stress_threshold": {"int", func(s *Settings, v starlark.Value) error {
		return setInt(&s.StressThreshold, v, 1)
	}, "open sessions on a listener from which it is under stress; default three quarters of smtpd_connection_limit"},
	"smtpd_networks_reserve": {"int", func(s *Settings, v starlark.Value) error {
		return setInt(&s.NetworksReserve, v, 0)
	}, "sessions per listener that only clients in networks may use: others get 421 once the listener has smtpd_connection_limit minus this; default a tenth of smtpd_connection_limit"},
	"allow_min_user": {"bool", func(s *Settings, v starlark.Value) error {
		return setBool(&s.AllowMinUser, v)
	}, "allow recipient and sender addresses that start with \"-\" to reach pipe commands as arguments (Postfix's allow_min_user); default False: such recipients bounce with 5.1.3"},
	"smtpd_peername_lookup": {"bool", func(s *Settings, v starlark.Value) error {
		return setBool(&s.PeernameLookup, v)
	}, "look up the client's verified reverse DNS name; default True"},
	"hook_max_steps": {"int", func(s *Settings, v starlark.Value) error {
		var n int
		if err := setInt(&n, v, 1000); err != nil {
			return err
		}
		s.HookMaxSteps = uint64(n)
		return nil
	}, "Starlark steps one hook call may take; default 1000000 (about 6 ms of CPU)"},
	"dns_timeout": {"duration", func(s *Settings, v starlark.Value) error {
		return setDuration(&s.DNSTimeout, v)
	}, "deadline of one DNS lookup a script makes (dns, dnsbl, spf, dkim, dmarc modules), also bounded by hook_timeout; default 5s"},
	"dns_max_queries": {"int", func(s *Settings, v starlark.Value) error {
		return setInt(&s.DNSMaxQueries, v, 1)
	}, "DNS queries one hook call may make, answers from the cache included (an SPF check may need 22); beyond it lookups fail as temperror; default 100"},
	"hook_timeout": {"duration", func(s *Settings, v starlark.Value) error {
		return setDuration(&s.HookTimeout, v)
	}, "wall-clock deadline of one hook call; default 10s"},
	"hook_max_memory": {"size", func(s *Settings, v starlark.Value) error {
		return setMemoryBudget(&s.HookMaxMemory, v)
	}, "bytes one hook call may allocate in bulk (strings, lists, dicts built by operators, methods and built-ins, garbage included); beyond it the call fails like a step overrun; at least 1MB; default 64MB"},
	"mailbox_path": {"string", func(s *Settings, v starlark.Value) error {
		if err := setString(&s.MailboxPath, v); err != nil {
			return err
		}
		if !strings.Contains(s.MailboxPath, "{user}") {
			return fmt.Errorf("must contain {user}")
		}
		return nil
	}, "where local users' mail goes; {data_dir}, {user} and {domain} are replaced; a trailing \"/\" means Maildir, otherwise mbox (Postfix's home_mailbox rule); default \"{data_dir}/mail/{user}/\""},
	"local_recipients": {"list of user names", func(s *Settings, v starlark.Value) error {
		return setList(&s.LocalRecipients, v, func(u string) error {
			if u == "" || strings.ContainsAny(u, "@/ ") {
				return fmt.Errorf("bad user name %q", u)
			}
			return nil
		})
	}, "the local users (local_recipient_maps); others get 550 5.1.1 at RCPT; default: none, which accepts every local part"},
	"mailbox_size_limit": {"size", func(s *Settings, v starlark.Value) error {
		return setSize(&s.MailboxSizeLimit, v)
	}, "largest mbox file, or Maildir message, local delivery writes; 0 = no limit; default 51200000 as Postfix"},
	"minimal_backoff": {"duration", func(s *Settings, v starlark.Value) error {
		return setDuration(&s.MinBackoff, v)
	}, "first retry delay of a deferred message (minimal_backoff_time); default 300s"},
	"maximal_backoff": {"duration", func(s *Settings, v starlark.Value) error {
		return setDuration(&s.MaxBackoff, v)
	}, "longest retry delay (maximal_backoff_time); default 4000s"},
	"maximal_queue_lifetime": {"duration", func(s *Settings, v starlark.Value) error {
		return setDuration(&s.MaxQueueLifetime, v)
	}, "how long a message is retried before it is returned to the sender; default 5d"},
	"bounce_queue_lifetime": {"duration", func(s *Settings, v starlark.Value) error {
		return setDuration(&s.BounceLifetime, v)
	}, "the same for bounces (null sender); default 5d"},
	"delay_warning_time": {"duration", func(s *Settings, v starlark.Value) error {
		return setDuration(&s.DelayWarning, v)
	}, "send the sender a delay notice after this long; 0 = never; default 0"},
	"delivery_workers": {"int", func(s *Settings, v starlark.Value) error {
		return setInt(&s.DeliveryWorkers, v, 1)
	}, "concurrent deliveries (default_process_limit for delivery agents); default 20"},
	"qmgr_message_active_limit": {"int", func(s *Settings, v starlark.Value) error {
		return setInt(&s.ActiveLimit, v, 1)
	}, "messages the scheduler holds in memory at once; default 20000"},
	"mail_owner": {"string", func(s *Settings, v starlark.Value) error {
		return setString(&s.MailOwner, v)
	}, "the unprivileged account the daemon (SMTP, queue, scheduler) runs as when larkpost is started as root; a small root parent keeps only what needs another user's rights (reading .forward, writing home mailboxes, file and command targets); larkpost refuses to start as root when the account does not exist, unless allow_root; default \"larkpost\""},
	"allow_root": {"bool", func(s *Settings, v starlark.Value) error {
		return setBool(&s.AllowRoot, v)
	}, "let larkpost started as root run everything as root, in one process, without mail_owner (logged as a warning at start); default False"},
	"control_group": {"string", func(s *Settings, v starlark.Value) error {
		return setString(&s.ControlGroup, v)
	}, "group allowed to use the control socket (larkpost queue, reload, status); the socket is then mode 0660; default: none (0600, the server's user only)"},
	"notify_classes": {"list of classes", func(s *Settings, v starlark.Value) error {
		return setList(&s.NotifyClasses, v, func(c string) error {
			switch c {
			case "bounce", "2bounce", "delay", "resource", "software", "policy", "protocol":
				return nil
			}
			return fmt.Errorf("unknown class %q (want bounce, 2bounce, delay, resource, software, policy, protocol)", c)
		})
	}, "what the postmaster is told about, as Postfix's notify_classes: bounce (copies of bounces), 2bounce (undeliverable bounces), delay (copies of delay notices), resource (queue write errors), software (failing scripts), policy (policy rejects), protocol (protocol errors); default [\"resource\", \"software\"]"},
	"notify_recipient": {"string", func(s *Settings, v starlark.Value) error {
		return setString(&s.NotifyRecipient, v)
	}, "who gets the notices (local part or address); default \"postmaster\""},
	"filter_path": {"string", func(s *Settings, v starlark.Value) error {
		return setString(&s.FilterPath, v)
	}, "per-user filter script ({data_dir}, {user}, {domain}), e.g. \"/srv/mail/filters/{user}.star\"; default: none"},
	"filter_max_steps": {"int", func(s *Settings, v starlark.Value) error {
		var n int
		if err := setInt(&n, v, 1000); err != nil {
			return err
		}
		s.FilterMaxSteps = uint64(n)
		return nil
	}, "Starlark steps a user filter may take per message; default 100000"},
	"filter_timeout": {"duration", func(s *Settings, v starlark.Value) error {
		return setDuration(&s.FilterTimeout, v)
	}, "wall-clock limit of a user filter per message; default 2s"},
	"filter_max_memory": {"size", func(s *Settings, v starlark.Value) error {
		return setMemoryBudget(&s.FilterMaxMemory, v)
	}, "bytes a user filter may allocate in bulk per message (as hook_max_memory); beyond it the message goes to the inbox; at least 1MB; default 32MB"},
	"transport_maps": {"list of table specs", tableList(func(s *Settings) *[]string { return &s.TransportMaps }),
		"transport(5) tables: address or domain -> transport:nexthop, searched as transport(5) says; default: none"},
	"smtp_tls_security_level": {"\"none\", \"may\", \"encrypt\" or \"dane\"", func(s *Settings, v starlark.Value) error {
		if err := setString(&s.SMTPTLSLevel, v); err != nil {
			return err
		}
		switch s.SMTPTLSLevel {
		case "none", "may", "encrypt", "dane":
			return nil
		}
		return fmt.Errorf("want \"none\", \"may\", \"encrypt\" or \"dane\", got %q", s.SMTPTLSLevel)
	}, "outbound TLS: may = opportunistic STARTTLS (verified if possible; a domain's MTA-STS policy may require more), encrypt = defer unless verified TLS, dane = DNSSEC-validated TLSA records of an MX decide (DANE-EE, DANE-TA; no plaintext fallback), else may; default \"may\""},
	"smtp_tls_policy_maps": {"list of table specs", tableList(func(s *Settings) *[]string { return &s.SMTPTLSPolicyMaps }),
		"per-destination TLS level: nexthop or domain -> none|may|encrypt|dane; default: none"},
	"smtp_sasl_password_maps": {"list of table specs", tableList(func(s *Settings) *[]string { return &s.SMTPSASLPasswordMaps }),
		"smarthost credentials: \"[host]:port\" or host -> user:password; AUTH is used only over TLS; default: none"},
	"default_destination_concurrency_limit": {"int", func(s *Settings, v starlark.Value) error {
		return setInt(&s.DestConcurrency, v, 1)
	}, "concurrent deliveries to one remote destination; default 20 as Postfix"},
	"virtual_mailbox_domains": {"list of domains", func(s *Settings, v starlark.Value) error {
		return setDomains(&s.VirtualMailboxDomains, v)
	}, "domains with their own mailboxes, separate from local users (Postfix's virtual(8)); default: none"},
	"virtual_mailbox_maps": {"list of table specs", tableList(func(s *Settings) *[]string { return &s.VirtualMailboxMaps }),
		"user@domain -> mailbox path under virtual_mailbox_base (\"example.com/bob/\" with the slash is a Maildir); unknown users get 550 5.1.1; default: none"},
	"virtual_mailbox_base": {"string", func(s *Settings, v starlark.Value) error {
		return setString(&s.VirtualMailboxBase, v)
	}, "directory the virtual mailbox paths are relative to; default \"{data_dir}/vmail\""},
	"virtual_uid_maps": {"list of table specs", idTables(func(s *Settings) *[]string { return &s.VirtualUIDMaps }, "uid"),
		"user@domain or @domain -> the decimal uid virtual mailboxes are written as (searched as virtual(8): the address, then @domain), e.g. [\"static:5000\"]; needs virtual_gid_maps; a recipient without an entry, or with a uid below virtual_minimum_uid, is deferred with 4.3.0; a uid other than larkpost's own needs larkpost started as root; default: none (the server's user, or virtual_mailbox_owner)"},
	"virtual_gid_maps": {"list of table specs", idTables(func(s *Settings) *[]string { return &s.VirtualGIDMaps }, "gid"),
		"user@domain or @domain -> the decimal gid virtual mailboxes are written as, looked up as virtual_uid_maps; gid 0 is refused; default: none"},
	"virtual_minimum_uid": {"int", func(s *Settings, v starlark.Value) error {
		return setInt(&s.VirtualMinimumUID, v, 1)
	}, "the smallest uid virtual_uid_maps and virtual_mailbox_owner may give; a smaller one defers the delivery with 4.3.0; default 100 as Postfix"},
	"virtual_mailbox_owner": {"string", setVirtualOwner,
		"who owns every virtual mailbox when virtual_uid_maps and virtual_gid_maps are not set: an account name (its uid and primary group) or \"UID:GID\", like static: uid and gid maps; not root; default: none (the user larkpost runs as)"},
	"alias_maps": {"list of aliases(5) files", tableList(func(s *Settings) *[]string { return &s.AliasMaps }),
		"local aliases, in aliases(5) format, read directly (no newaliases); relative to the config file; default: none"},
	"virtual_alias_maps": {"list of table specs", tableList(func(s *Settings) *[]string { return &s.VirtualAliasMaps }),
		"virtual(5) tables: address -> addresses, for any domain; default: none"},
	"virtual_alias_domains": {"list of domains", func(s *Settings, v starlark.Value) error {
		return setDomains(&s.VirtualAliasDomains, v)
	}, "domains whose every address must be in virtual_alias_maps (550 5.1.1 otherwise); default: none"},
	"canonical_maps": {"list of table specs", tableList(func(s *Settings) *[]string { return &s.CanonicalMaps }),
		"canonical(5) tables for sender and recipient addresses, envelope and header; default: none"},
	"sender_canonical_maps": {"list of table specs", tableList(func(s *Settings) *[]string { return &s.SenderCanonicalMaps }),
		"canonical tables for sender addresses only, applied before canonical_maps; default: none"},
	"recipient_canonical_maps": {"list of table specs", tableList(func(s *Settings) *[]string { return &s.RecipientCanonicalMaps }),
		"canonical tables for recipient addresses only, applied before canonical_maps; default: none"},
	"relocated_maps": {"list of table specs", tableList(func(s *Settings) *[]string { return &s.RelocatedMaps }),
		"relocated(5) tables: moved users get 550 5.1.6 at RCPT; default: none"},
	"masquerade_domains": {"list of domains", func(s *Settings, v starlark.Value) error {
		return setDomains(&s.MasqueradeDomains, v)
	}, "strip subdomains of these domains from sender addresses (host.example.com -> example.com); default: none"},
	"forward_path": {"string", func(s *Settings, v starlark.Value) error {
		return setString(&s.ForwardPath, v)
	}, "per-user .forward file template ({data_dir}, {user}); as root a .forward is read with its user's rights and followed only when owned by the user or root and writable by no one else, and its file and command targets run as the user; default: none (no .forward files)"},
	"virtual_alias_expansion_limit": {"int", func(s *Settings, v starlark.Value) error {
		return setInt(&s.ExpansionLimit, v, 1)
	}, "most addresses one recipient may expand to; default 1000"},
	"virtual_alias_recursion_limit": {"int", func(s *Settings, v starlark.Value) error {
		return setInt(&s.RecursionLimit, v, 1)
	}, "deepest alias nesting; default 1000"},
	"default_privs": {"string", func(s *Settings, v starlark.Value) error {
		return setString(&s.DefaultPrivs, v)
	}, "user that pipe commands (from aliases, .forward and pipe: transports) run as when larkpost runs as root; file targets are still written as larkpost's own user; default \"nobody\""},
	"command_time_limit": {"duration", func(s *Settings, v starlark.Value) error {
		return setDuration(&s.CommandTimeLimit, v)
	}, "time limit of an alias pipe command; default 1000s"},
	"local_destination_concurrency_limit": {"int", func(s *Settings, v starlark.Value) error {
		return setInt(&s.LocalConcurrency, v, 1)
	}, "concurrent deliveries to one mbox file (Maildir needs no lock and is bounded only by delivery_workers); default 2"},
}

// SettingNames returns the config(...) keywords in order.
func SettingNames() []string {
	names := make([]string, 0, len(settingTable))
	for n := range settingTable {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// DefaultSettings returns Postfix's defaults, with the host name taken from the OS.
func DefaultSettings() *Settings {
	s := &Settings{
		Listen:                map[string]string{"smtp": "127.0.0.1:2525"},
		DataDir:               "./larkpost-data",
		MailOwner:             "larkpost",
		MessageSizeLimit:      10240000,
		Networks:              []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
		Banner:                "{hostname} ESMTP larkpost",
		RecipientLimit:        1000,
		LineLengthLimit:       64 << 10,
		ConnectionLimit:       1000,
		ClientConnectionLimit: 50,
		Timeout:               300 * time.Second,
		DataTimeout:           10 * time.Minute,
		SessionTimeout:        time.Hour,
		ForbidBareNewline:     "reject",
		HeaderSizeLimit:       102400,
		HeaderTotalLimit:      1 << 20,
		BodyChecksSizeLimit:   64 << 10,
		InflightBytes:         128 << 20,
		MinDataRate:           500,
		StressTimeout:         10 * time.Second,
		PeernameLookup:        true,
		HookMaxSteps:          1_000_000,
		HookTimeout:           10 * time.Second,
		DNSTimeout:            5 * time.Second,
		Milter:                MilterSettings{DefaultAction: "tempfail", ConnectTimeout: 30 * time.Second, CommandTimeout: 30 * time.Second, ContentTimeout: 300 * time.Second, Protocol: 6},
		State:                 StateSettings{Timeout: time.Second, GreylistFailOpen: true, RatelimitFailOpen: true},
		Observe:               ObserveSettings{LogTarget: "stderr", LogFormat: "text", SyslogName: "larkpost", SyslogFacility: "mail", SyslogSocket: "/dev/log"},
		DNSMaxQueries:         100,
		HookMaxMemory:         64 << 20,
		MailboxPath:           "{data_dir}/mail/{user}/",
		MailboxSizeLimit:      51200000,
		MinBackoff:            300 * time.Second,
		MaxBackoff:            4000 * time.Second,
		MaxQueueLifetime:      5 * 24 * time.Hour,
		BounceLifetime:        5 * 24 * time.Hour,
		DeliveryWorkers:       20,
		ActiveLimit:           20000,
		LocalConcurrency:      2,
		VirtualMailboxBase:    "{data_dir}/vmail",
		VirtualMinimumUID:     100,
		SMTPTLSLevel:          "may",
		NotifyClasses:         []string{"resource", "software"},
		NotifyRecipient:       "postmaster",
		FilterMaxSteps:        100_000,
		FilterTimeout:         2 * time.Second,
		FilterMaxMemory:       32 << 20,
		DestConcurrency:       20,
		ExpansionLimit:        1000,
		RecursionLimit:        1000,
		DefaultPrivs:          "nobody",
		CommandTimeLimit:      1000 * time.Second,
		TLS: TLSSettings{Protocols: ">=TLSv1", MandatoryProtocols: ">=TLSv1.2", MandatoryCiphers: "medium",
			ReceivedHeader: true, AuthOnly: true},
		SASL:          SASLSettings{Type: "passwd-file", FailureLimit: 5, FailureBackoff: time.Minute},
		ProxyNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
		SMTPMTASTS:    true,
		explicit:      map[string]bool{},
	}
	return s
}

// finish derives the defaults that depend on other settings (domain from
// hostname, destinations from both), the way Postfix expands $myhostname.
func (s *Settings) finish() {
	// An absolute data_dir, fixed at load: mailbox paths, filter paths and
	// the CLI then agree whatever the working directory later is.
	if abs, err := filepath.Abs(s.DataDir); err == nil {
		s.DataDir = abs
	}
	if s.Hostname == "" {
		s.Hostname = osHostname()
	}
	if s.Domain == "" {
		if _, rest, ok := strings.Cut(s.Hostname, "."); ok && rest != "" {
			s.Domain = rest
		} else {
			s.Domain = "localdomain"
		}
	}
	if s.Origin == "" {
		s.Origin = s.Hostname
	}
	if !s.explicit["destinations"] {
		s.Destinations = []string{s.Hostname, "localhost." + s.Domain, "localhost"}
	}
	if s.Resolvers == nil {
		s.Resolvers = resolvConfServers("/etc/resolv.conf")
	}
	s.Banner = strings.ReplaceAll(s.Banner, "{hostname}", s.Hostname)
	if !s.explicit["smtpd_stress_threshold"] {
		s.StressThreshold = max(1, s.ConnectionLimit*3/4)
	}
	if !s.explicit["smtpd_networks_reserve"] {
		s.NetworksReserve = s.ConnectionLimit / 10
	}
	if s.TLS.Level == "" {
		s.TLS.Level = "none"
		if s.TLS.HasCertificates() {
			s.TLS.Level = "may"
		}
	}
}

// IsLocalDomain reports whether mail for domain is delivered on this host.
func (s *Settings) IsLocalDomain(domain string) bool { return containsFold(s.Destinations, domain) }

// IsRelayDomain reports whether domain is in relay_domains, including
// subdomains written as ".example.com" (Postfix's parent_domain_matches_subdomains).
func (s *Settings) IsRelayDomain(domain string) bool {
	for _, d := range s.RelayDomains {
		if strings.EqualFold(d, domain) {
			return true
		}
		if strings.HasPrefix(d, ".") && len(domain) > len(d) && strings.EqualFold(domain[len(domain)-len(d):], d) {
			return true
		}
	}
	return false
}

// InNetworks reports whether ip is one of the trusted networks.
func (s *Settings) InNetworks(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range s.Networks {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

func osHostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

func resolvConfServers(path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			if a, err := netip.ParseAddr(f[1]); err == nil {
				out = append(out, netip.AddrPortFrom(a, 53).String())
			}
		}
	}
	return out
}

func withPort(hostport, port string) string {
	if _, err := netip.ParseAddrPort(hostport); err == nil {
		return hostport
	}
	if a, err := netip.ParseAddr(hostport); err == nil {
		return netip.AddrPortFrom(a, mustPort(port)).String()
	}
	return hostport
}

func mustPort(p string) uint16 {
	n, _ := strconv.Atoi(p)
	return uint16(n)
}

func typeErr(want string, v starlark.Value) error {
	return fmt.Errorf("want %s, got %s", want, v.Type())
}

func setString(dst *string, v starlark.Value) error {
	s, ok := starlark.AsString(v)
	if !ok {
		return typeErr("string", v)
	}
	*dst = s
	return nil
}

func setHost(dst *string, v starlark.Value) error {
	var s string
	if err := setString(&s, v); err != nil {
		return err
	}
	s = strings.ToLower(strings.TrimSuffix(s, "."))
	if !validHostname(s) {
		return fmt.Errorf("bad host name %q", s)
	}
	*dst = s
	return nil
}

// validHostname accepts letters, digits, hyphens and dots in labels of 1-63
// characters (non-ASCII letters too, for internationalised names).
func validHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if r != '-' && r != '_' && !unicode.IsLetter(r) && !unicode.IsDigit(r) {
				return false
			}
		}
	}
	return true
}

func setBool(dst *bool, v starlark.Value) error {
	b, ok := v.(starlark.Bool)
	if !ok {
		return typeErr("bool", v)
	}
	*dst = bool(b)
	return nil
}

func setInt(dst *int, v starlark.Value, min int) error {
	i, ok := v.(starlark.Int)
	if !ok {
		return typeErr("int", v)
	}
	n, ok := i.Int64()
	if !ok || n < int64(min) || n > 1<<31 {
		return fmt.Errorf("out of range: %s (minimum %d)", i, min)
	}
	*dst = int(n)
	return nil
}

// setList accepts a list or tuple of strings, or one string of
// comma/space-separated items as main.cf writes them.
func setList(dst *[]string, v starlark.Value, check func(string) error) error {
	var items []string
	switch v := v.(type) {
	case starlark.String:
		items = strings.FieldsFunc(string(v), func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
	case starlark.Indexable:
		for i := 0; i < v.Len(); i++ {
			s, ok := starlark.AsString(v.Index(i))
			if !ok {
				return fmt.Errorf("item %d: want string, got %s", i, v.Index(i).Type())
			}
			items = append(items, s)
		}
	default:
		return typeErr("list of strings", v)
	}
	out := make([]string, 0, len(items))
	var bad itemErrors
	for i, it := range items {
		it = strings.TrimSpace(it)
		if err := check(it); err != nil {
			bad = append(bad, itemError{i, err})
			continue
		}
		out = append(out, it)
	}
	if len(bad) > 0 {
		return bad
	}
	*dst = out
	return nil
}

// itemErrors are every bad item of a list setting, so that check reports
// each one, at its own position when the list is written out.
type itemErrors []itemError

type itemError struct {
	i   int
	err error
}

func (e itemErrors) Error() string {
	msgs := make([]string, len(e))
	for i, ie := range e {
		msgs[i] = ie.err.Error()
	}
	return strings.Join(msgs, "; ")
}

// tableList accepts one table spec or a list of them ("hash:/etc/postfix/virtual").
func tableList(field func(*Settings) *[]string) func(*Settings, starlark.Value) error {
	return func(s *Settings, v starlark.Value) error {
		return setList(field(s), v, func(spec string) error {
			if spec == "" {
				return fmt.Errorf("empty table name")
			}
			return nil
		})
	}
}

// idTables is tableList for virtual_uid_maps and virtual_gid_maps: a
// static: table's value is checked here, since it is the whole table.
func idTables(field func(*Settings) *[]string, what string) func(*Settings, starlark.Value) error {
	return func(s *Settings, v starlark.Value) error {
		return setList(field(s), v, func(spec string) error {
			if spec == "" {
				return fmt.Errorf("empty table name")
			}
			if typ, rest, ok := strings.Cut(spec, ":"); ok && strings.EqualFold(typ, "static") {
				rest = strings.TrimSpace(rest)
				if len(rest) >= 2 && rest[0] == '{' && rest[len(rest)-1] == '}' {
					rest = strings.TrimSpace(rest[1 : len(rest)-1])
				}
				if _, err := parseID(rest, what); err != nil {
					return fmt.Errorf("%s: %v", spec, err)
				}
			}
			return nil
		})
	}
}

// parseID reads a uid or gid (what) as virtual_uid_maps,
// virtual_gid_maps and virtual_mailbox_owner write it: a decimal number
// below 2^31.
func parseID(s, what string) (int, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 31)
	if err != nil {
		return 0, fmt.Errorf("bad %s %q (want a decimal number)", what, s)
	}
	return int(n), nil
}

// setVirtualOwner reads virtual_mailbox_owner: "", an account name, or
// "UID:GID"; never root.
func setVirtualOwner(s *Settings, v starlark.Value) error {
	var o string
	if err := setString(&o, v); err != nil {
		return err
	}
	o = strings.TrimSpace(o)
	switch u, g, numeric := strings.Cut(o, ":"); {
	case o == "":
	case numeric:
		uid, err := parseID(u, "uid")
		if err != nil {
			return err
		}
		gid, err := parseID(g, "gid")
		if err != nil {
			return err
		}
		if uid == 0 || gid == 0 {
			return fmt.Errorf("%q: root (uid 0 or gid 0) may not own virtual mailboxes", o)
		}
		o = strconv.Itoa(uid) + ":" + strconv.Itoa(gid)
	case o == "root":
		return fmt.Errorf("root may not own virtual mailboxes")
	case strings.Trim(o, "0123456789") == "":
		return fmt.Errorf("%q: want an account name or \"UID:GID\" (e.g. \"%s:%s\")", o, o, o)
	case strings.ContainsAny(o, " \t/@#") || o[0] == '-':
		return fmt.Errorf("bad account name %q", o)
	}
	s.VirtualMailboxOwner = o
	return nil
}

func setDomains(dst *[]string, v starlark.Value) error {
	return setList(dst, v, func(d string) error {
		if !validHostname(strings.TrimPrefix(strings.ToLower(d), ".")) {
			return fmt.Errorf("bad domain %q", d)
		}
		return nil
	})
}

func setNetworks(dst *[]netip.Prefix, v starlark.Value) error {
	var items []string
	err := setList(&items, v, func(x string) error {
		_, err := parseNetwork(x)
		return err
	})
	if err != nil {
		return err
	}
	out := make([]netip.Prefix, 0, len(items))
	for _, it := range items {
		p, _ := parseNetwork(it)
		out = append(out, p)
	}
	*dst = out
	return nil
}

// parseNetwork takes CIDR or a single address, with Postfix's optional
// brackets around IPv6 ("[::1]/128").
func parseNetwork(s string) (netip.Prefix, error) {
	t := strings.Replace(strings.Replace(s, "[", "", 1), "]", "", 1)
	if p, err := netip.ParsePrefix(t); err == nil {
		if p.Masked() != p {
			return p, fmt.Errorf("bad CIDR %q: host bits set (did you mean %s?)", s, p.Masked())
		}
		return p, nil
	}
	if a, err := netip.ParseAddr(t); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.Prefix{}, fmt.Errorf("bad CIDR %q", s)
}

func setListen(s *Settings, v starlark.Value) error {
	d, ok := v.(*starlark.Dict)
	if !ok {
		return typeErr("dict of listener name to \"host:port\"", v)
	}
	m := map[string]string{}
	opts := map[string]ListenOptions{}
	for k, val := range starlark.Entries(d) {
		name, ok := starlark.AsString(k)
		if !ok {
			return fmt.Errorf("want string keys, got %s", k.Type())
		}
		if name == "" || strings.ContainsAny(name, " \t/,") {
			return fmt.Errorf("bad listener name %q", name)
		}
		var o ListenOptions
		switch val := val.(type) {
		case starlark.String:
			o.Addr = string(val)
		case *starlark.Dict:
			for ok, ov := range starlark.Entries(val) {
				key, isStr := starlark.AsString(ok)
				if !isStr {
					return fmt.Errorf("listener %q: want string keys, got %s", name, ok.Type())
				}
				if err := listenOption(&o, key, ov); err != nil {
					return fmt.Errorf("listener %q: %s: %w", name, key, err)
				}
			}
		default:
			return fmt.Errorf("listener %q: want \"host:port\" or a dict of options, got %s", name, val.Type())
		}
		if _, port, err := splitHostPort(o.Addr); err != nil || port == "" {
			return fmt.Errorf("listener %q: bad address %q (want host:port)", name, o.Addr)
		}
		m[name] = o.Addr
		opts[name] = o
	}
	if len(m) == 0 {
		return fmt.Errorf("at least one listener is needed")
	}
	s.Listen, s.ListenOpts = m, opts
	return nil
}

func splitHostPort(a string) (host, port string, err error) {
	i := strings.LastIndexByte(a, ':')
	if i < 0 {
		return "", "", fmt.Errorf("missing port")
	}
	host, port = strings.Trim(a[:i], "[]"), a[i+1:]
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "", "", fmt.Errorf("bad port")
	}
	return host, port, nil
}

// ParseSize reads a byte count: an int, or a string such as "10MB", "512k",
// "1GiB" (K, M, G are powers of 1024 as mail admins use them).
func ParseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, suf := range []struct {
		s string
		m int64
	}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(t, suf.s) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, suf.s)), suf.m
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

func setSizeMin(dst *int64, v starlark.Value, min int64) error {
	var n int64
	if err := setSize(&n, v); err != nil {
		return err
	}
	if n < min {
		return fmt.Errorf("must be at least %d", min)
	}
	*dst = n
	return nil
}

func setSize(dst *int64, v starlark.Value) error {
	switch v := v.(type) {
	case starlark.Int:
		n, ok := v.Int64()
		if !ok || n < 0 {
			return fmt.Errorf("bad size %s", v)
		}
		*dst = n
	case starlark.String:
		n, err := ParseSize(string(v))
		if err != nil {
			return err
		}
		*dst = n
	default:
		return typeErr("size (int or string like \"10MB\")", v)
	}
	return nil
}

// ParseDuration reads Go durations ("90s", "1h30m") plus Postfix's day
// suffix ("5d"); a bare number is seconds, as in main.cf.
func ParseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if n, err := strconv.ParseInt(t, 10, 64); err == nil && n >= 0 {
		return time.Duration(n) * time.Second, nil
	}
	if strings.HasSuffix(t, "d") {
		n, err := strconv.ParseFloat(strings.TrimSuffix(t, "d"), 64)
		if err == nil && n >= 0 {
			return time.Duration(n * float64(24*time.Hour)), nil
		}
	}
	if strings.HasSuffix(t, "w") {
		n, err := strconv.ParseFloat(strings.TrimSuffix(t, "w"), 64)
		if err == nil && n >= 0 {
			return time.Duration(n * float64(7*24*time.Hour)), nil
		}
	}
	d, err := time.ParseDuration(t)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("bad duration %q (want e.g. \"300s\", \"5m\", \"5d\")", s)
	}
	return d, nil
}

func setDuration(dst *time.Duration, v starlark.Value) error {
	switch v := v.(type) {
	case starlark.Int:
		n, ok := v.Int64()
		if !ok || n < 0 {
			return fmt.Errorf("bad duration %s", v)
		}
		*dst = time.Duration(n) * time.Second
	case starlark.String:
		d, err := ParseDuration(string(v))
		if err != nil {
			return err
		}
		*dst = d
	default:
		return typeErr("duration (seconds or string like \"5m\")", v)
	}
	return nil
}
