package rules

import (
	"io"
	"net/netip"
	"strings"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
	"go.starlark.net/starlark"

	"github.com/larkpost/larkpost/stdlib/addr"
)

// Conn is what the core knows about an SMTP client. Scripts see it
// read-only as `conn`.
type Conn struct {
	IP         netip.Addr
	Port       int
	RDNS       string // forward-confirmed reverse DNS name, or "unknown"
	Helo       string
	TLS        bool
	TLSInfo    *TLSInfo // what was negotiated, when TLS
	User       string   // SASL-authenticated user, "" when not authenticated
	Listener   string   // name from the listen setting, or "sendmail"
	InNetworks bool     // client IP is in networks
}

// TLSInfo is a client's TLS session as scripts see it: `conn.tls`.
type TLSInfo struct {
	Version string // "TLSv1.3", as Postfix writes it
	Cipher  string // "TLS_AES_128_GCM_SHA256"
	Bits    int    // the cipher's key size
	SNI     string // the server name the client asked for, "" without SNI
	// The client's certificate, when smtpd_tls_ask_ccert asked for one.
	PeerSubject     string // its subject's CN, or the whole subject
	PeerIssuer      string
	PeerFingerprint string // SHA-256 of the certificate, hex with colons, as Postfix's
	PeerVerified    bool   // it chains to smtpd_tls_CAfile
	CertAsked       bool   // smtpd_tls_ask_ccert asked for one
}

// Tx is one mail transaction as scripts see it: `tx`.
type Tx struct {
	Conn      *Conn
	ID        string // queue id once the first recipient is accepted
	Sender    addr.Address
	HasSender bool // MAIL FROM was given (Sender may still be the null sender)
	Rcpts     []addr.Address
	Size      int64 // SIZE= declared by the client, 0 if not given
	UTF8      bool  // SMTPUTF8 requested
}

// Message is the received message at end of DATA: `msg`.
type Message struct {
	Header textproto.Header
	Size   int64
	Body   []byte // the body after the header, when known (delivery time); at most bodyLimit bytes are shown
	// Raw is the whole message as received, header and body, Size
	// bytes (in memory or its body file), for checks that read it all
	// without a copy (dkim.verify); nil when not at hand.
	Raw io.ReaderAt
}

// RawMessage returns the message's stream for stdlib/dkim.
func (v msgValue) RawMessage() (io.ReaderAt, int64, textproto.Header) {
	return v.m.Raw, v.m.Size, v.m.Header
}

// bodyLimit is how much of a body msg.body shows scripts: enough for
// content rules, bounded so a huge message costs nothing extra.
const bodyLimit = 1 << 20

type connValue struct{ c *Conn }

var _ starlark.HasAttrs = connValue{}

func (v connValue) String() string        { return "<conn " + v.c.RDNS + "[" + v.c.IP.String() + "]>" }
func (v connValue) Type() string          { return "conn" }
func (v connValue) Freeze()               {}
func (v connValue) Truth() starlark.Bool  { return true }
func (v connValue) Hash() (uint32, error) { return starlark.String(v.String()).Hash() }
func (v connValue) AttrNames() []string {
	return []string{"helo", "in_networks", "ip", "listener", "port", "rdns", "tls", "user"}
}
func (v connValue) Attr(name string) (starlark.Value, error) {
	c := v.c
	switch name {
	case "ip":
		return starlark.String(c.IP.Unmap().String()), nil
	case "port":
		return starlark.MakeInt(c.Port), nil
	case "rdns":
		return starlark.String(c.RDNS), nil
	case "helo":
		return optString(c.Helo), nil
	case "tls":
		if !c.TLS {
			return starlark.None, nil
		}
		info := c.TLSInfo
		if info == nil {
			info = &TLSInfo{}
		}
		return tlsValue{info}, nil
	case "user":
		return optString(c.User), nil
	case "listener":
		return starlark.String(c.Listener), nil
	case "in_networks":
		return starlark.Bool(c.InNetworks), nil
	}
	return nil, nil
}

func optString(s string) starlark.Value {
	if s == "" {
		return starlark.None
	}
	return starlark.String(s)
}

// tlsValue is conn.tls: None without TLS, else this (true in a
// condition, so `if conn.tls:` reads naturally).
type tlsValue struct{ t *TLSInfo }

var _ starlark.HasAttrs = tlsValue{}

func (v tlsValue) String() string        { return "<tls " + v.t.Version + " " + v.t.Cipher + ">" }
func (v tlsValue) Type() string          { return "tls" }
func (v tlsValue) Freeze()               {}
func (v tlsValue) Truth() starlark.Bool  { return true }
func (v tlsValue) Hash() (uint32, error) { return starlark.String(v.String()).Hash() }
func (v tlsValue) AttrNames() []string {
	return []string{"bits", "cipher", "peer_fingerprint", "peer_issuer", "peer_subject", "peer_verified", "sni", "version"}
}
func (v tlsValue) Attr(name string) (starlark.Value, error) {
	t := v.t
	switch name {
	case "version":
		return starlark.String(t.Version), nil
	case "cipher":
		return starlark.String(t.Cipher), nil
	case "bits":
		return starlark.MakeInt(t.Bits), nil
	case "sni":
		return optString(t.SNI), nil
	case "peer_subject":
		return optString(t.PeerSubject), nil
	case "peer_issuer":
		return optString(t.PeerIssuer), nil
	case "peer_fingerprint":
		return optString(t.PeerFingerprint), nil
	case "peer_verified":
		return starlark.Bool(t.PeerVerified), nil
	}
	return nil, nil
}

type txValue struct {
	t      *Tx
	delims string
}

var _ starlark.HasAttrs = txValue{}

func (v txValue) String() string        { return "<tx " + v.t.ID + ">" }
func (v txValue) Type() string          { return "tx" }
func (v txValue) Freeze()               {}
func (v txValue) Truth() starlark.Bool  { return true }
func (v txValue) Hash() (uint32, error) { return starlark.String(v.String()).Hash() }
func (v txValue) AttrNames() []string {
	return []string{"conn", "id", "rcpts", "sender", "size", "smtputf8"}
}
func (v txValue) Attr(name string) (starlark.Value, error) {
	t := v.t
	switch name {
	case "conn":
		return connValue{t.Conn}, nil
	case "id":
		return optString(t.ID), nil
	case "sender":
		if !t.HasSender {
			return starlark.None, nil
		}
		return addr.NewValue(t.Sender, v.delims), nil
	case "rcpts":
		out := make([]starlark.Value, len(t.Rcpts))
		for i, r := range t.Rcpts {
			out[i] = addr.NewValue(r, v.delims)
		}
		return starlark.Tuple(out), nil
	case "size":
		return starlark.MakeInt64(t.Size), nil
	case "smtputf8":
		return starlark.Bool(t.UTF8), nil
	}
	return nil, nil
}

type msgValue struct{ m *Message }

var _ starlark.HasAttrs = msgValue{}

func (v msgValue) String() string        { return "<msg>" }
func (v msgValue) Type() string          { return "msg" }
func (v msgValue) Freeze()               {}
func (v msgValue) Truth() starlark.Bool  { return true }
func (v msgValue) Hash() (uint32, error) { return 0, nil }
func (v msgValue) AttrNames() []string {
	return []string{"body", "header", "header_names", "headers", "size", "subject"}
}
func (v msgValue) Attr(name string) (starlark.Value, error) {
	switch name {
	case "size":
		return starlark.MakeInt64(v.m.Size), nil
	case "body":
		b := v.m.Body
		if len(b) > bodyLimit {
			b = b[:bodyLimit]
		}
		return starlark.String(b), nil
	case "subject":
		h := mail.Header{Header: message.Header{Header: v.m.Header}}
		s, err := h.Subject()
		if err != nil {
			s = v.m.Header.Get("Subject")
		}
		return starlark.String(s), nil
	case "header_names":
		var names []starlark.Value
		seen := map[string]bool{}
		for f := v.m.Header.Fields(); f.Next(); {
			k := canonicalKey(f.Key())
			if !seen[k] {
				seen[k] = true
				names = append(names, starlark.String(k))
			}
		}
		return starlark.Tuple(names), nil
	case "header":
		return starlark.NewBuiltin("msg.header", v.header), nil
	case "headers":
		return starlark.NewBuiltin("msg.headers", v.headers), nil
	}
	return nil, nil
}

// header returns the first field's raw value (unfolded, whitespace-trimmed),
// or default when the message has no such field.
func (v msgValue) header(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var name string
	var def starlark.Value = starlark.None
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "name", &name, "default?", &def); err != nil {
		return nil, err
	}
	if !v.m.Header.Has(name) {
		return def, nil
	}
	return starlark.String(unfold(v.m.Header.Get(name))), nil
}

// headers returns every value of the field in message order.
func (v msgValue) headers(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var name string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "name", &name); err != nil {
		return nil, err
	}
	var out []starlark.Value
	for _, s := range v.m.Header.Values(name) {
		out = append(out, starlark.String(unfold(s)))
	}
	return starlark.NewList(out), nil
}

func unfold(s string) string {
	if strings.ContainsAny(s, "\r\n") {
		s = strings.NewReplacer("\r\n", "", "\n", "").Replace(s)
	}
	return strings.TrimSpace(s)
}

// canonicalKey writes header names the way mail programs print them
// ("Message-Id", "X-Spam-Flag") so scripts can compare them.
func canonicalKey(k string) string {
	b := []byte(strings.ToLower(k))
	upper := true
	for i, c := range b {
		if upper && c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
		upper = c == '-'
	}
	return string(b)
}
