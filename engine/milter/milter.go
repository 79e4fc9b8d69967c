package milter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	gomilter "github.com/emersion/go-milter"
)

// Postfix's defaults for milter_connect_timeout, milter_command_timeout,
// milter_content_timeout and milter_protocol.
const (
	DefaultConnectTimeout = 30 * time.Second
	DefaultCommandTimeout = 30 * time.Second
	DefaultContentTimeout = 300 * time.Second
	DefaultProtocol       = 6
)

// Config describes one milter, like one entry of Postfix's smtpd_milters
// with its per-milter settings.
type Config struct {
	// Name labels the milter in errors; it defaults to Addr.
	Name string
	// Addr is "inet:host:port" or "unix:/path/to/socket" ("local:" is
	// accepted as Sendmail's spelling of "unix:").
	Addr string
	// DefaultAction is what to do when the milter cannot be reached, times
	// out or breaks the protocol: "tempfail" (the default), "reject" or
	// "accept". See the package documentation.
	DefaultAction string
	// ConnectTimeout bounds connecting and negotiating options.
	// CommandTimeout bounds each SMTP command's exchange (connect, HELO,
	// MAIL, RCPT, DATA, RSET, QUIT). ContentTimeout bounds each exchange
	// while the message is sent: each header, each body chunk, and each
	// packet of the end-of-message answer (so a milter sending "progress"
	// may take longer). Zero means the Postfix default: 30s, 30s, 300s.
	ConnectTimeout, CommandTimeout, ContentTimeout time.Duration
	// Protocol is the highest milter protocol version whose features are
	// offered (2, 3, 4 or 6; 0 means 6), as milter_protocol.
	Protocol int
	// Macros overrides the macro names sent at each stage; nil, or a nil
	// list in it, means the default for that stage (see DefaultMacros).
	Macros *Macros
	// TempDir is where a replaced body is spooled ("" = os.TempDir()).
	TempDir string
	// MaxBody bounds a replaced body in bytes (message_size_limit; 0:
	// unbounded). A larger one is a local failure (451), not a message.
	MaxBody int64
}

// Macros lists the macro names sent to the milter at each stage, as
// Postfix's milter_*_macros parameters. A value is sent only if the
// session has one (from Info, SetMacro, Mail or Rcpt).
type Macros struct {
	Connect, Helo, Mail, Rcpt, Data, EndOfHeader, EndOfMessage []string
}

// DefaultMacros returns the macro lists used when Config.Macros leaves a
// stage unset: Postfix's defaults, plus the client and interface macros
// that Sendmail sends at connect time and many milters read.
func DefaultMacros() Macros {
	return Macros{
		Connect: []string{"j", "{daemon_name}", "{daemon_addr}", "v", "_",
			"{if_name}", "{if_addr}", "{client_addr}", "{client_port}", "{client_name}"},
		Helo:         []string{"{tls_version}", "{cipher}", "{cipher_bits}", "{cert_subject}", "{cert_issuer}"},
		Mail:         []string{"i", "{auth_type}", "{auth_authen}", "{auth_author}", "{mail_addr}", "{mail_host}", "{mail_mailer}"},
		Rcpt:         []string{"i", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}"},
		Data:         []string{"i"},
		EndOfHeader:  []string{"i"},
		EndOfMessage: []string{"i"},
	}
}

// Milter is one configured milter. It is safe for concurrent use; each
// SMTP connection opens its own Session.
type Milter struct {
	cfg            Config
	network, addr  string
	macros         Macros
	defaultVerdict Verdict
	// olderPeer is set once the milter turned out to speak a protocol
	// version below 6, so later sessions negotiate the v2 feature set
	// directly instead of paying for a refused first attempt.
	olderPeer atomic.Bool
}

// New checks cfg, fills in the defaults and returns the milter.
func New(cfg Config) (*Milter, error) {
	m := &Milter{cfg: cfg}
	var err error
	if m.network, m.addr, err = parseAddr(cfg.Addr); err != nil {
		return nil, err
	}
	if m.cfg.Name == "" {
		m.cfg.Name = cfg.Addr
	}
	switch strings.ToLower(cfg.DefaultAction) {
	case "", Tempfail:
		m.defaultVerdict = tempfailVerdict
	case Reject:
		m.defaultVerdict = rejectVerdict
	case Accept:
		m.defaultVerdict = Verdict{Action: Accept}
	default:
		return nil, fmt.Errorf("milter %s: unknown default action %q (want tempfail, reject or accept)", m.cfg.Name, cfg.DefaultAction)
	}
	for _, t := range []struct {
		d   *time.Duration
		def time.Duration
	}{
		{&m.cfg.ConnectTimeout, DefaultConnectTimeout},
		{&m.cfg.CommandTimeout, DefaultCommandTimeout},
		{&m.cfg.ContentTimeout, DefaultContentTimeout},
	} {
		if *t.d < 0 {
			return nil, fmt.Errorf("milter %s: negative timeout", m.cfg.Name)
		}
		if *t.d == 0 {
			*t.d = t.def
		}
	}
	switch m.cfg.Protocol {
	case 0:
		m.cfg.Protocol = DefaultProtocol
	case 2, 3, 4, 6:
	default:
		return nil, fmt.Errorf("milter %s: unsupported protocol version %d (want 2, 3, 4 or 6)", m.cfg.Name, cfg.Protocol)
	}
	m.macros = DefaultMacros()
	if o := cfg.Macros; o != nil {
		for _, p := range []struct{ dst, src *[]string }{
			{&m.macros.Connect, &o.Connect}, {&m.macros.Helo, &o.Helo},
			{&m.macros.Mail, &o.Mail}, {&m.macros.Rcpt, &o.Rcpt},
			{&m.macros.Data, &o.Data}, {&m.macros.EndOfHeader, &o.EndOfHeader},
			{&m.macros.EndOfMessage, &o.EndOfMessage},
		} {
			if *p.src != nil {
				*p.dst = *p.src
			}
		}
	}
	return m, nil
}

// Name returns the milter's name as used in errors.
func (m *Milter) Name() string { return m.cfg.Name }

func parseAddr(a string) (network, addr string, err error) {
	kind, rest, _ := strings.Cut(a, ":")
	switch kind {
	case "inet":
		if _, _, err := net.SplitHostPort(rest); err != nil {
			return "", "", fmt.Errorf("milter address %q: %v", a, err)
		}
		return "tcp", rest, nil
	case "unix", "local":
		if rest == "" {
			return "", "", fmt.Errorf("milter address %q: empty socket path", a)
		}
		return "unix", rest, nil
	}
	return "", "", fmt.Errorf("milter address %q: want inet:host:port or unix:/path", a)
}

// masks returns the actions and protocol features we offer for a
// protocol version, as Postfix's MILTER8_V*_PROTO_MASK tables. Version 6
// omits SMFIP_RCPT_REJ (we never send rejected recipients) and
// SMFIF_SETSYMLIST (go-milter does not pass on the milter's macro list).
func masks(version int) (gomilter.OptAction, gomilter.OptProtocol) {
	act := gomilter.OptAddHeader | gomilter.OptChangeBody | gomilter.OptAddRcpt |
		gomilter.OptRemoveRcpt | gomilter.OptChangeHeader | gomilter.OptQuarantine
	proto := gomilter.OptNoConnect | gomilter.OptNoHelo | gomilter.OptNoMailFrom |
		gomilter.OptNoRcptTo | gomilter.OptNoBody | gomilter.OptNoHeaders | gomilter.OptNoEOH
	if version >= 3 {
		proto |= gomilter.OptNoUnknown
	}
	if version >= 4 {
		proto |= gomilter.OptNoData
	}
	if version >= 6 {
		act |= gomilter.OptChangeFrom | gomilter.OptAddRcptWithArgs
		proto |= gomilter.OptSkip | gomilter.OptHeaderLeadingSpace |
			gomilter.OptNoHeaderReply | gomilter.OptNoConnReply | gomilter.OptNoHeloReply |
			gomilter.OptNoMailReply | gomilter.OptNoRcptReply | gomilter.OptNoDataReply |
			gomilter.OptNoUnknownReply | gomilter.OptNoEOHReply | gomilter.OptNoBodyReply
	}
	return act, proto
}

// dialer hands go-milter a connection that already carries the
// ConnectTimeout deadline and is interrupted when ctx ends, so the option
// negotiation inside gomilter.Client.Session is bounded too. (We give
// go-milter no timeouts of its own: it would clear our deadlines after
// every packet.)
type dialer struct {
	ctx      context.Context
	deadline time.Time
	conn     net.Conn
	unwatch  func()
}

func (d *dialer) Dial(network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithDeadline(d.ctx, d.deadline)
	defer cancel()
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(d.deadline)
	d.conn, d.unwatch = c, watch(d.ctx, c)
	return c, nil
}

// negotiate connects and exchanges options. go-milter always announces
// version 6 and refuses a milter that answers with an older version
// unless we offered only version 2 features; Postfix instead talks to such
// milters with the older feature set. We do the same by reconnecting once
// with the version 2 masks, and remember that for later sessions. It
// returns the protocol version whose features were offered.
func (m *Milter) negotiate(ctx context.Context) (net.Conn, *gomilter.ClientSession, int, error) {
	deadline := time.Now().Add(m.cfg.ConnectTimeout)
	version := m.cfg.Protocol
	if m.olderPeer.Load() {
		version = 2
	}
	for {
		d := &dialer{ctx: ctx, deadline: deadline}
		act, proto := masks(version)
		c := gomilter.NewClientWithOptions(m.network, m.addr, gomilter.ClientOptions{
			Dialer: d, ActionMask: act, ProtocolMask: proto,
		})
		cs, err := c.Session()
		if d.unwatch != nil {
			d.unwatch()
		}
		if err == nil {
			return d.conn, cs, version, nil
		}
		if d.conn != nil {
			// go-milter leaves the connection open when negotiation fails.
			d.conn.Close()
		}
		if errors.Is(err, gomilter.ErrUnsupportedMilterVersion) && version > 2 {
			m.olderPeer.Store(true)
			version = 2
			continue
		}
		return nil, nil, 0, err
	}
}
