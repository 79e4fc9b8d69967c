package engine

import (
	"net"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// TestProxyProtocol: behind a load balancer the client is the one the
// PROXY header names (v1 and v2), the header is required, and only
// upstream_proxy_networks may send one.
func TestProxyProtocol(t *testing.T) {
	h := start(t, `config(listen = {"smtp": "127.0.0.1:0", "lb": {"addr": "127.0.0.1:0", "upstream_proxy_protocol": "haproxy"}},
    networks = ["192.0.2.0/24"])
def on_mail(tx, sender):
    if sender.local == "who":
        return reject("you are " + tx.conn.ip + " port " + str(tx.conn.port) + " in_networks=" + str(tx.conn.in_networks))
`)
	lb := h.e.Addr("lb").String()
	dial := func(header []byte) *rawClient {
		c, err := net.Dial("tcp", lb)
		if err != nil {
			t.Fatal(err)
		}
		if header != nil {
			c.Write(header)
		}
		return &rawClient{Conn: c, t: t}
	}
	v1 := dial([]byte("PROXY TCP4 192.0.2.9 127.0.0.1 40000 25\r\n"))
	v1.expect("220 ")
	v1.ehlo()
	v1.cmd("MAIL FROM:<who@example.org>", "550 5.7.1 you are 192.0.2.9 port 40000 in_networks=True")
	v1.cmd("QUIT", "221 ")

	hdr := &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv6,
		SourceAddr: &net.TCPAddr{IP: net.ParseIP("2001:db8::7"), Port: 5555}, DestinationAddr: &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 25}}
	raw, err := hdr.Format()
	if err != nil {
		t.Fatal(err)
	}
	v2 := dial(raw)
	v2.expect("220 ")
	v2.ehlo()
	v2.cmd("MAIL FROM:<who@example.org>", "550 5.7.1 you are 2001:db8::7 port 5555 in_networks=False")
	v2.cmd("QUIT", "221 ")
	if !h.log.WaitFor(`connect from unknown\[2001:db8::7\]`, 2*time.Second) {
		t.Error("the real client is not in the log")
	}

	// No header: closed without a banner.
	none := dial(nil)
	none.write("EHLO c.example\r\n")
	none.expectClosed()
	if !h.log.WaitFor(`warning: lb: no valid PROXY header from 127\.0\.0\.1:\d+`, 2*time.Second) {
		t.Error("missing header not logged")
	}
	// The plain listener takes no header.
	rc := dialRaw(t, h.addr)
	rc.cmd("PROXY TCP4 192.0.2.9 127.0.0.1 40000 25", "50")
}

// TestProxyProtocolUntrusted: a PROXY header from outside
// upstream_proxy_networks is never believed.
func TestProxyProtocolUntrusted(t *testing.T) {
	h := start(t, `config(listen = {"smtp": "127.0.0.1:0", "lb": {"addr": "127.0.0.1:0", "upstream_proxy_protocol": "haproxy"}}, upstream_proxy_networks = ["10.0.0.0/8"])`)
	c, err := net.Dial("tcp", h.e.Addr("lb").String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("PROXY TCP4 192.0.2.9 127.0.0.1 40000 25\r\n"))
	rc := &rawClient{Conn: c, t: t}
	rc.expectClosed()
}
