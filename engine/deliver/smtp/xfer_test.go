package smtp

import (
	"slices"
	"strings"
	"testing"
)

// TestTransactionSteps pins down, for each step of send, the results and the
// decision whether the session is reused, including the paths the go-smtp
// test server cannot produce (421, a broken reply).
func TestTransactionSteps(t *testing.T) {
	t.Parallel()
	const host = "host mx1.test[192.0.2.1]"
	type want struct{ status, text string }
	tests := []struct {
		name    string
		answers [][2]string // command prefix and reply; the first match wins
		rcpts   []string
		sender  string
		want    []want
		reused  bool
		check   string // how a reused session begins: MAIL after a finished transaction (its check is a peek), RSET after an open one
		notSent string // a command that must not reach the server when commands go one by one
		body    bool   // the body reached the server
		// pipeCheck is check when the commands were pipelined, if it differs.
		pipeCheck string
	}{
		{
			name:    "MAIL FROM 421",
			answers: [][2]string{{"MAIL", "421 4.3.2 closing"}},
			rcpts:   []string{"x@example.com", "y@example.com"},
			want: []want{
				{"4.3.2", host + " said: 421 4.3.2 closing (in reply to MAIL FROM command)"},
				{"4.3.2", host + " said: 421 4.3.2 closing (in reply to MAIL FROM command)"},
			},
			notSent: "RCPT",
		},
		{
			name:    "MAIL FROM 550",
			answers: [][2]string{{"MAIL", "550 5.7.1 go away"}},
			rcpts:   []string{"x@example.com"},
			want:    []want{{"5.7.1", host + " said: 550 5.7.1 go away (in reply to MAIL FROM command)"}},
			reused:  true,
			check:   "MAIL",
			notSent: "RCPT",
		},
		{
			name:    "MAIL FROM broken reply",
			answers: [][2]string{{"MAIL", ""}},
			rcpts:   []string{"x@example.com"},
			want:    []want{{"4.4.2", "lost connection with mx1.test[192.0.2.1] while sending MAIL FROM"}},
			notSent: "RCPT",
		},
		{
			name:    "bad sender syntax",
			sender:  "a\r\nb@example.org",
			rcpts:   []string{"x@example.com"},
			want:    []want{{"5.1.7", "bad sender address syntax"}},
			reused:  true,
			check:   "MAIL",
			notSent: "MAIL",
		},
		{
			name:    "bad recipient syntax",
			rcpts:   []string{"x\r\ny@example.com", "z@example.com"},
			want:    []want{{"5.1.3", "bad recipient address syntax"}, {"2.0.0", "250 2.0.0 queued"}},
			reused:  true,
			check:   "MAIL",
			notSent: "RCPT TO:<X",
			body:    true,
		},
		{
			name:    "RCPT TO 421 takes back the accepted",
			answers: [][2]string{{"RCPT TO:<Y@", "421 4.3.2 closing"}},
			rcpts:   []string{"x@example.com", "y@example.com", "z@example.com"},
			want: []want{
				{"4.3.2", host + " said: 421 4.3.2 closing (in reply to RCPT TO command)"},
				{"4.3.2", host + " said: 421 4.3.2 closing (in reply to RCPT TO command)"},
				{"4.3.2", host + " said: 421 4.3.2 closing (in reply to RCPT TO command)"},
			},
			notSent: "DATA",
		},
		{
			name:    "RCPT TO broken reply",
			answers: [][2]string{{"RCPT TO:<Y@", ""}},
			rcpts:   []string{"x@example.com", "y@example.com", "z@example.com"},
			want: []want{
				{"4.4.2", "lost connection with mx1.test[192.0.2.1] while sending RCPT TO"},
				{"4.4.2", "lost connection with mx1.test[192.0.2.1] while sending RCPT TO"},
				{"4.4.2", "lost connection with mx1.test[192.0.2.1] while sending RCPT TO"},
			},
			notSent: "DATA",
		},
		{
			name:    "no recipient accepted",
			answers: [][2]string{{"RCPT", "550 5.1.1 no such user"}},
			rcpts:   []string{"x@example.com", "y@example.com"},
			want: []want{
				{"5.1.1", host + " said: 550 5.1.1 no such user (in reply to RCPT TO command)"},
				{"5.1.1", host + " said: 550 5.1.1 no such user (in reply to RCPT TO command)"},
			},
			reused:  true,
			check:   "RSET",
			notSent: "DATA",
		},
		{
			name:    "DATA 421",
			answers: [][2]string{{"DATA", "421 4.3.2 closing"}},
			rcpts:   []string{"x@example.com", "y@example.com"},
			want: []want{
				{"4.3.2", host + " said: 421 4.3.2 closing (in reply to DATA command)"},
				{"4.3.2", host + " said: 421 4.3.2 closing (in reply to DATA command)"},
			},
		},
		{
			name:    "DATA 451",
			answers: [][2]string{{"DATA", "451 4.3.0 try later"}},
			rcpts:   []string{"x@example.com", "bad@example.com"},
			want: []want{
				{"4.3.0", host + " said: 451 4.3.0 try later (in reply to DATA command)"},
				{"4.3.0", host + " said: 451 4.3.0 try later (in reply to DATA command)"},
			},
			reused: true,
			check:  "RSET",
		},
		{
			name:    "DATA broken reply",
			answers: [][2]string{{"DATA", ""}},
			rcpts:   []string{"x@example.com"},
			want:    []want{{"4.4.2", "lost connection with mx1.test[192.0.2.1] while sending DATA"}},
		},
		{
			name:    "end of DATA 421",
			answers: [][2]string{{".", "421 4.3.2 closing"}},
			rcpts:   []string{"x@example.com"},
			want:    []want{{"4.3.2", host + " said: 421 4.3.2 closing (in reply to end of DATA command)"}},
			body:    true,
		},
		{
			name:    "end of DATA 554",
			answers: [][2]string{{".", "554 5.7.1 spam"}},
			rcpts:   []string{"x@example.com"},
			want:    []want{{"5.7.1", host + " said: 554 5.7.1 spam (in reply to end of DATA command)"}},
			reused:  true,
			check:   "MAIL",
			body:    true,
		},
		{
			name:    "end of DATA broken reply",
			answers: [][2]string{{".", ""}},
			rcpts:   []string{"x@example.com"},
			want: []want{{"4.4.2", "lost connection with mx1.test[192.0.2.1] while sending end of data -- " +
				"message may be sent more than once"}},
			body: true,
		},
		{
			// A broken server: RFC 2920 3.1 has the client end the DATA it
			// should not have taken with a lone dot, which ends the
			// transaction.
			name:      "DATA taken without recipients",
			answers:   [][2]string{{"RCPT", "550 5.1.1 no such user"}, {"DATA", "!354 go ahead"}},
			rcpts:     []string{"x@example.com"},
			want:      []want{{"5.1.1", host + " said: 550 5.1.1 no such user (in reply to RCPT TO command)"}},
			reused:    true,
			check:     "RSET",
			pipeCheck: "MAIL",
			notSent:   "DATA",
		},
		{
			name:   "delivered",
			rcpts:  []string{"x@example.com", "y@example.com"},
			want:   []want{{"2.0.0", "250 2.0.0 queued"}, {"2.0.0", "250 2.0.0 queued"}},
			reused: true,
			check:  "MAIL",
			body:   true,
		},
	}
	for _, pipelining := range []bool{false, true} {
		for _, tt := range tests {
			name := tt.name
			if pipelining {
				name += " pipelined"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				e := newEnv(t)
				e.client.MaxIdle = 1
				addr, rec := scriptServer(t, "220 mx1.test ready", func(line string) string {
					for _, a := range tt.answers {
						if strings.HasPrefix(strings.ToUpper(line), a[0]) {
							return a[1]
						}
					}
					return plainAnswer(line, pipelining)
				})
				e.dns.Add("mx1.test. 300 IN A 192.0.2.1")
				e.route("192.0.2.1:25", addr)
				dest := Destination{Host: "mx1.test", NoMX: true}
				req := request(tt.rcpts...)
				if tt.sender != "" {
					req.Sender = tt.sender
				}
				res := e.deliver(dest, req)
				for i, w := range tt.want {
					if res[i].Enhanced != w.status || res[i].Text != w.text || res[i].Relay != "mx1.test[192.0.2.1]:25" {
						t.Errorf("result %d = %+v, want %s %q", i, res[i], w.status, w.text)
					}
				}
				first := rec.all()
				if !pipelining && tt.notSent != "" && slices.ContainsFunc(first, func(l string) bool {
					return strings.HasPrefix(strings.ToUpper(l), tt.notSent)
				}) {
					t.Errorf("%s sent:\n%s", tt.notSent, strings.Join(first, "\n"))
				}
				if body := slices.Contains(first, "Subject: hi"); body != tt.body {
					t.Errorf("body sent = %v, want %v:\n%s", body, tt.body, strings.Join(first, "\n"))
				}
				// A reused session starts the next transaction with MAIL
				// (or RSET); a dropped one has said QUIT, and the next
				// starts anew with EHLO.
				e.deliver(dest, request("next@example.com"))
				all := rec.all()
				check := ""
				if len(all) > len(first) && !slices.Contains(first, "QUIT") {
					check, _, _ = strings.Cut(all[len(first)], " ")
				}
				want := tt.check
				if pipelining && tt.pipeCheck != "" {
					want = tt.pipeCheck
				}
				if reused := check == "MAIL" || check == "RSET"; reused != tt.reused || reused && check != want {
					t.Errorf("next transaction began with %q, want reused = %v (with %s); server received:\n%s", check, tt.reused, want, strings.Join(all, "\n"))
				}
			})
		}
	}
}
