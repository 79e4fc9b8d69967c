package milter

import (
	"context"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"

	gomilter "github.com/emersion/go-milter"
)

// go-milter's server speaks protocol version 2 only; these tests use a
// scripted version 6 peer for what only version 6 has.

type packet struct {
	code byte
	data []byte
}

// continueReply is how a plain milter answers each command.
func continueReply(code byte) []packet {
	switch code {
	case 'C', 'H', 'M', 'R', 'T', 'L', 'N', 'B':
		return []packet{{'c', nil}}
	case 'E':
		return []packet{{'a', nil}}
	}
	return nil // macros, abort: no answer
}

// scripted runs a version 6 milter asking for proto that answers each
// command with respond's packets (none: it keeps silent).
func scripted(t testing.TB, proto gomilter.OptProtocol, respond func(code byte, data []byte) []packet) string {
	return rawServer(t, func(c net.Conn) {
		if negotiateV6(c, proto) != nil {
			return
		}
		for {
			code, n, err := readHeader(c)
			if err != nil {
				return
			}
			data, err := readData(c, n, nil)
			if err != nil || code == 'Q' {
				return
			}
			for _, p := range respond(code, data) {
				if writePacket(c, p.code, p.data) != nil {
					return
				}
			}
		}
	})
}

func TestVersion6(t *testing.T) {
	var (
		mu         sync.Mutex
		cmds       []byte
		subject    string
		chunks     int
		refuseData bool
	)
	proto := gomilter.OptHeaderLeadingSpace | gomilter.OptNoHeloReply
	addr := scripted(t, proto, func(code byte, data []byte) []packet {
		mu.Lock()
		defer mu.Unlock()
		if code != 'D' {
			cmds = append(cmds, code)
		}
		switch code {
		case 'H':
			return nil // SMFIP_NR_HELO: no reply
		case 'L':
			if f := cstrings(data); f[0] == "Subject" {
				subject = f[1]
			}
		case 'B':
			chunks++
			return []packet{{'s', nil}} // enough body
		case 'R':
			if strings.HasPrefix(string(data), "<nobody@") {
				return []packet{{'y', []byte("550-5.1.1 No such user\r\n550 5.1.1 Really\x00")}}
			}
		case 'T':
			if refuseData {
				return []packet{{'y', []byte("554 5.7.1 No thanks\x00")}}
			}
		case 'E':
			return []packet{{'p', nil}, {'h', []byte("X-V6\x00 yes\x00")}, {'p', nil}, {'a', nil}}
		}
		return continueReply(code)
	})
	m := newMilter(t, Config{Addr: addr})
	s := open(t, m)
	ctx := context.Background()
	v, err := s.Helo(ctx, "client.example.org")
	must(t, "Helo", v, err, Continue)
	v, err = s.Mail(ctx, "a@example.org", nil)
	must(t, "Mail", v, err, Continue)
	v, err = s.Rcpt(ctx, "b@example.net", nil)
	must(t, "Rcpt", v, err, Continue)
	v, err = s.Rcpt(ctx, "nobody@example.net", nil)
	want := Verdict{Action: Reject, Code: 550, Status: "5.1.1", Text: "No such user\nReally"}
	if err != nil || v != want {
		t.Errorf("Rcpt = %#v, %v; want %#v", v, err, want)
	}
	v, err = s.Data(ctx)
	must(t, "Data", v, err, Continue)
	v, mods, err := s.EndOfMessage(ctx, []byte(testHeader), &genReader{n: 200 << 10})
	must(t, "EndOfMessage", v, err, Accept)
	if want := []Modification{{Kind: ModAddHeader, Name: "X-V6", Value: " yes"}}; !reflect.DeepEqual(mods, want) {
		t.Errorf("modifications = %+v, want %+v", mods, want)
	}

	mu.Lock()
	if subject != " hello" {
		t.Errorf("Subject sent as %q, want the leading space the milter asked for", subject)
	}
	if chunks != 1 {
		t.Errorf("milter got %d body chunks after asking to skip the rest", chunks)
	}
	if got, want := string(cmds), "CHMRRTLLLLNBE"; got != want {
		t.Errorf("commands %q, want %q", got, want)
	}
	refuseData = true
	mu.Unlock()

	v, err = s.Mail(ctx, "a@example.org", nil)
	must(t, "Mail", v, err, Continue)
	v, err = s.Rcpt(ctx, "b@example.net", nil)
	must(t, "Rcpt", v, err, Continue)
	v, err = s.Data(ctx)
	if want := (Verdict{Action: Reject, Code: 554, Status: "5.7.1", Text: "No thanks"}); err != nil || v != want {
		t.Fatalf("Data = %#v, %v; want %#v", v, err, want)
	}
	// The client goes on with another message without RSET: the milter
	// is told to abort the refused one first.
	v, err = s.Mail(ctx, "a@example.org", nil)
	must(t, "Mail", v, err, Continue)
	mu.Lock()
	if got := string(cmds[len(cmds)-2:]); got != "AM" {
		t.Errorf("commands end with %q, want abort then MAIL", got)
	}
	mu.Unlock()
}

func TestDecisionAtConnectIsFinal(t *testing.T) {
	for _, c := range []struct {
		reply packet
		want  Verdict
	}{
		{packet{'r', nil}, rejectVerdict},
		{packet{'t', nil}, tempfailVerdict},
		{packet{'y', []byte("421 4.7.0 Go away\x00")}, Verdict{Action: Tempfail, Code: 421, Status: "4.7.0", Text: "Go away"}},
		{packet{'a', nil}, Verdict{Action: Accept}},
	} {
		var mu sync.Mutex
		var cmds []byte
		addr := scripted(t, 0, func(code byte, data []byte) []packet {
			mu.Lock()
			cmds = append(cmds, code)
			mu.Unlock()
			if code == 'C' {
				return []packet{c.reply}
			}
			return continueReply(code)
		})
		m := newMilter(t, Config{Addr: addr})
		ctx := context.Background()
		s, v, err := m.Open(ctx, testInfo)
		if err != nil || v != c.want {
			t.Fatalf("Open = %v, %v; want %v", v, err, c.want)
		}
		for range 2 {
			if v, err := s.Mail(ctx, "a@example.org", nil); err != nil || v != c.want {
				t.Errorf("Mail after %q at connect = %v, %v", c.reply.code, v, err)
			}
		}
		s.Close()
		mu.Lock()
		if got := strings.ReplaceAll(string(cmds), "D", ""); got != "C" && got != "CQ" {
			t.Errorf("after %q at connect the milter got %q", c.reply.code, got)
		}
		mu.Unlock()
	}
}
