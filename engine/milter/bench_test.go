package milter

import (
	"bytes"
	"context"
	"testing"
)

// benchMessage runs one message through s: MAIL, RCPT, DATA, and a
// message with the test header and a 2 KB body.
func benchMessage(b *testing.B, s *Session, body []byte) {
	ctx := context.Background()
	s.SetMacro("i", "4XyZ1a2B3c")
	if v, err := s.Mail(ctx, "a@example.org", []string{"SIZE=2100"}); err != nil || v.Action != Continue {
		b.Fatal(v, err)
	}
	if v, err := s.Rcpt(ctx, "b@example.net", nil); err != nil || v.Action != Continue {
		b.Fatal(v, err)
	}
	if v, err := s.Data(ctx); err != nil || v.Action != Continue {
		b.Fatal(v, err)
	}
	if v, _, err := s.EndOfMessage(ctx, []byte(testHeader), bytes.NewReader(body)); err != nil || v.Action != Accept {
		b.Fatal(v, err)
	}
}

// BenchmarkRoundTrip is the per-message cost of one milter: an SMTP
// connection with one message (connect, HELO, MAIL, RCPT, DATA, a 2 KB
// body, end of message, QUIT) through an in-process go-milter server over
// TCP on 127.0.0.1 that accepts it. Both ends run in this process, so the
// milter's side of the work is included.
func BenchmarkRoundTrip(b *testing.B) {
	addr, _ := serve(b, "tcp", &fake{})
	m := newMilter(b, Config{Addr: addr})
	body := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n"), 32)
	ctx := context.Background()
	// Learn the server's protocol version outside the measurement.
	open(b, m).Close()

	b.ReportAllocs()
	for b.Loop() {
		s, v, err := m.Open(ctx, testInfo)
		if err != nil || v.Action != Continue {
			b.Fatal(v, err)
		}
		if v, err := s.Helo(ctx, "client.example.org"); err != nil || v.Action != Continue {
			b.Fatal(v, err)
		}
		benchMessage(b, s, body)
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMessage is the same message on an open milter connection: the
// cost of each further message of an SMTP connection.
func BenchmarkMessage(b *testing.B) {
	addr, _ := serve(b, "tcp", &fake{})
	m := newMilter(b, Config{Addr: addr})
	body := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n"), 32)
	s := open(b, m)

	b.ReportAllocs()
	for b.Loop() {
		benchMessage(b, s, body)
	}
}
