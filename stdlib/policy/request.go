package policy

import (
	"fmt"
	"hash/fnv"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"go.starlark.net/starlark"
)

// request is the query Postfix's check_policy_service sends, in its
// order, for a hook at protocol_state stage. tx may be a conn (on_connect,
// on_helo). Attributes larkpost does not know (stress, sasl_sender,
// ccert_pubkey_fingerprint, and sasl_method, which conn does not show)
// are sent empty, as Postfix sends what it does not know: servers written
// for Postfix may expect every name.
//
// etrn_domain is sent empty (larkpost has no ETRN), as Postfix sends it
// outside ETRN: postgrey takes its presence for "Postfix 2.3 or later"
// and puts an enhanced status code before its text
// ("DEFER_IF_PERMIT 4.2.0 Greylisted"), which access() takes as the
// status.
func request(stage string, tx, rcpt starlark.Value) []byte {
	conn := attr(tx, "conn")
	if conn == starlark.None { // no transaction yet: tx is the conn
		conn, tx = tx, starlark.None
	}
	tls := attr(conn, "tls")
	sender := str(attr(tx, "sender"))

	recipient, count := str(rcpt), 0
	if stage == "DATA" || stage == "END-OF-MESSAGE" {
		// As Postfix: the count only once the recipients are known, and
		// the recipient then only when there is one.
		rcpts := attr(tx, "rcpts")
		count = starlark.Len(rcpts)
		if idx, ok := rcpts.(starlark.Indexable); ok && count == 1 && rcpt == starlark.None {
			recipient = str(idx.Index(0))
		}
		count = max(count, 0)
	}
	name := str(attr(conn, "rdns"))
	if name == "" {
		name = "unknown"
	}
	keysize := str(attr(tls, "bits"))
	if keysize == "" {
		keysize = "0"
	}
	// Postfix sends the certificate's names only when it is trusted,
	// xtext-encoded, and its fingerprint whenever there is one.
	var subject, issuer string
	if attr(tls, "peer_verified") == starlark.True {
		subject, issuer = xtext(str(attr(tls, "peer_subject"))), xtext(str(attr(tls, "peer_issuer")))
	}
	size := str(attr(tx, "size"))
	if size == "" {
		size = "0"
	}

	b := make([]byte, 0, 640)
	add := func(name, value string) {
		b = append(b, name...)
		b = append(b, '=')
		b = appendClean(b, value)
		b = append(b, '\n')
	}
	add("request", "smtpd_access_policy")
	add("protocol_state", stage)
	add("protocol_name", "ESMTP")
	add("client_address", str(attr(conn, "ip")))
	add("client_name", name)
	// larkpost keeps only the forward-confirmed name; it is also the
	// reverse name whenever there is one.
	add("reverse_client_name", name)
	add("client_port", str(attr(conn, "port")))
	add("helo_name", str(attr(conn, "helo")))
	add("sender", sender)
	add("recipient", recipient)
	add("recipient_count", strconv.Itoa(count))
	add("queue_id", str(attr(tx, "id")))
	add("instance", instanceOf(tx, conn, sender))
	add("size", size)
	add("stress", "")
	add("sasl_method", str(attr(conn, "sasl_method")))
	add("sasl_username", str(attr(conn, "user")))
	add("sasl_sender", "")
	add("ccert_subject", subject)
	add("ccert_issuer", issuer)
	add("ccert_fingerprint", str(attr(tls, "peer_fingerprint")))
	add("ccert_pubkey_fingerprint", "")
	add("encryption_protocol", str(attr(tls, "version")))
	add("encryption_cipher", str(attr(tls, "cipher")))
	add("encryption_keysize", keysize)
	add("etrn_domain", "")
	return append(b, '\n')
}

// attr is v.name, or None when v has no such attribute (or is None).
func attr(v starlark.Value, name string) starlark.Value {
	if h, ok := v.(starlark.HasAttrs); ok {
		if a, err := h.Attr(name); err == nil && a != nil {
			return a
		}
	}
	return starlark.None
}

// str is what str(v) gives a script, "" for None.
func str(v starlark.Value) string {
	if v == nil || v == starlark.None {
		return ""
	}
	if s, ok := starlark.AsString(v); ok {
		return s
	}
	return v.String()
}

// appendClean appends s with every control character, invalid byte and
// Unicode line separator made '?': values come from the SMTP client, and
// a line break in one would add attributes to the request (or, for a
// server that splits lines as Python's splitlines does, U+2028).
func appendClean(b []byte, s string) []byte {
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			r = '?'
		}
		b = utf8.AppendRune(b, r)
	}
	return b
}

// xtext encodes s as Postfix's xtext_quote does (RFC 3461): '+', '='
// and bytes outside '!'..'~' become +XX.
func xtext(s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < '!' || c > '~' || c == '+' || c == '=' {
			b = fmt.Appendf(b, "+%02X", c)
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

// Instances. Postfix's instance attribute is the same for every query of
// one transaction and differs between transactions, so a server can
// keep per-message state (policyd-spf caches its SPF result by it).
// larkpost's queue id cannot be it: it is given at the first accepted
// recipient, after on_mail and the first on_rcpt ran. So the instance of
// a transaction is fixed at its first query, and remembered by the
// identity of the tx value (the server hands each hook of a transaction
// an equal value and a new transaction a different one): tx.id when it
// is already set, otherwise a hash of the client and sender, the process
// start and a per-process counter. Before MAIL the conn value plays the
// part of tx. The last instanceMemo transactions are remembered.
const instanceMemo = 4096

var instances = struct {
	sync.Mutex
	ids  map[any]string
	ring [instanceMemo]any // the keys of ids, oldest at next
	next int
}{ids: map[any]string{}}

var (
	counter   atomic.Uint64
	startTime = time.Now().Unix()
)

func instanceOf(tx, conn starlark.Value, sender string) string {
	key := tx
	if key == starlark.None {
		key = conn
	}
	if !reflect.ValueOf(key).Comparable() { // no identity to remember it by
		return newInstance(tx, conn, sender)
	}
	instances.Lock()
	defer instances.Unlock()
	if id, ok := instances.ids[key]; ok {
		return id
	}
	id := newInstance(tx, conn, sender)
	if old := instances.ring[instances.next]; old != nil {
		delete(instances.ids, old)
	}
	instances.ring[instances.next] = key
	instances.next = (instances.next + 1) % instanceMemo
	instances.ids[key] = id
	return id
}

func newInstance(tx, conn starlark.Value, sender string) string {
	if id := str(attr(tx, "id")); id != "" {
		return id
	}
	h := fnv.New32a()
	fmt.Fprintf(h, "%s\x00%s\x00%s", str(attr(conn, "ip")), str(attr(conn, "port")), sender)
	return fmt.Sprintf("%08x.%x.%x", h.Sum32(), startTime, counter.Add(1))
}
