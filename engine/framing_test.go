package engine

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// forgedTail is what a smuggler hides in a BDAT chunk: RCPT TO:<postmaster>
// lines (which the old wire layer rewrote into longer lines, so go-smtp's
// byte count ended early) followed by a whole forged transaction.
func forgedTail(postmasters int) string {
	return strings.Repeat("RCPT TO:<postmaster>\r\n", postmasters) +
		"MAIL FROM:<forged@evil.example>\r\nRCPT TO:<alice@mx.test>\r\nDATA\r\n" +
		"From: forged@evil.example\r\nSubject: forged\r\n\r\nforged\r\n.\r\n"
}

// TestBDATSmuggling sends issue 11's three framing attacks byte for byte.
// One parser (go-smtp's) frames the stream now, so a chunk's bytes are
// message content whatever they look like: the forged transaction is
// never queued, and the chunk arrives whole.
func TestBDATSmuggling(t *testing.T) {
	t.Parallel()
	h := start(t, "")
	chunk := "Subject: chunk\r\n\r\n" + forgedTail(40)
	tests := []struct {
		name   string
		writes []string // each one write on the socket
	}{
		{"chunk split after a pipelined DATA terminator", func() []string {
			first := "Subject: one\r\n\r\nbody\r\n.\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<alice@mx.test>\r\n" +
				fmt.Sprintf("BDAT %d LAST\r\n", len(chunk)) + chunk[:30]
			return []string{first, chunk[30:]}
		}()},
		{"BDAT line over 1 KiB in pieces", func() []string {
			line := "MAIL FROM:<a@example.org>\r\nRCPT TO:<alice@mx.test>\r\nBDAT" + strings.Repeat(" ", 1500) + fmt.Sprintf("%d LAST\r\n", len(chunk))
			return []string{"Subject: one\r\n\r\nbody\r\n.\r\n", line[:1200], line[1200:], chunk}
		}()},
		{"BDAT line of 4 KiB in one write", func() []string {
			return []string{"Subject: one\r\n\r\nbody\r\n.\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<alice@mx.test>\r\nBDAT" +
				strings.Repeat(" ", 4096) + fmt.Sprintf("%d LAST\r\n", len(chunk)) + chunk}
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(h.mailbox("alice"))
			c := dialReady(t, h.addr)
			defer c.Close()
			c.cmd("MAIL FROM:<a@example.org>", "250 2.1.0")
			c.cmd("RCPT TO:<alice@mx.test>", "250 2.1.5")
			c.cmd("DATA", "354 ")
			for _, w := range tt.writes {
				c.write(w)
				time.Sleep(20 * time.Millisecond) // separate TCP segments
			}
			// The DATA message, then the BDAT transaction's replies, then
			// the chunk's reply: the chunk was read as one chunk.
			for _, want := range []string{"250 2.0.0 Ok: queued as", "250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.0.0 Ok: queued as"} {
				if got := c.readLine(); !strings.HasPrefix(got, want) {
					t.Fatalf("got %q, want %q", got, want)
				}
			}
			c.cmd("QUIT", "221 ")
			h.waitMailbox("alice", before+2)
			h.settle()
			got := h.mailbox("alice")[before:]
			if len(got) != 2 {
				t.Fatalf("alice got %d messages, want 2 (the DATA one and the BDAT one)", len(got))
			}
			for _, m := range got {
				if bytes.Contains(m, []byte("Return-Path: <forged@evil.example>")) {
					t.Errorf("the forged transaction was queued:\n%s", m)
				}
			}
			// The two are delivered concurrently: either may be first.
			bdat := got[1]
			if bytes.Contains(got[0], []byte("Subject: chunk")) {
				bdat = got[0]
			}
			want := strings.ReplaceAll(chunk[len("Subject: chunk\r\n\r\n"):], "\r\n", "\n")
			if !bytes.HasSuffix(bdat, []byte(want)) {
				t.Errorf("the chunk was altered: got\n%q\nwant it to end with\n%q", bdat, want)
			}
		})
	}
}

// TestPostmasterPipelinedAfterData: RCPT TO:<postmaster> in the same write
// as the DATA terminator is a recipient like any other (it got 501 when
// the wire layer rewrote it only outside "data mode").
func TestPostmasterPipelinedAfterData(t *testing.T) {
	t.Parallel()
	h := start(t, "")
	c := dialReady(t, h.addr)
	defer c.Close()
	c.cmd("MAIL FROM:<a@example.org>", "250 2.1.0")
	c.cmd("RCPT TO:<alice@mx.test>", "250 2.1.5")
	c.cmd("DATA", "354 ")
	c.write("Subject: one\r\n\r\nbody\r\n.\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<postmaster>\r\nRCPT TO:<PostMaster> NOTIFY=NEVER\r\n")
	for _, want := range []string{"250 2.0.0 Ok: queued as", "250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok"} {
		if got := c.readLine(); !strings.HasPrefix(got, want) {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	c.cmd("DATA", "354 ")
	c.cmd("Subject: two\r\n\r\nto the postmaster\r\n.", "250 2.0.0 Ok: queued as")
	if got := h.waitMailbox("postmaster", 1); len(got) != 1 || !bytes.Contains(got[0], []byte("Delivered-To: postmaster@mx.test")) {
		t.Errorf("postmaster got %d messages, want 1 delivered to postmaster@mx.test", len(got))
	}
}

// TestBigMessagePipelinedAfterData: a body read from the socket 64 KB at
// a time (engine/smtpd/readahead.go) with a second transaction pipelined
// after its end in the same write (NOOPs, then MAIL, RCPT and DATA):
// every command is answered, both messages arrive whole, and the second
// starts exactly where the first ended.
func TestBigMessagePipelinedAfterData(t *testing.T) {
	t.Parallel()
	h := start(t, "")
	c := dialReady(t, h.addr)
	defer c.Close()
	line := "0123456789 the quick brown fox jumps over the lazy dog 0123456789\r\n"
	body := strings.Repeat(line, 5000) // 340 KB
	c.cmd("MAIL FROM:<a@example.org>", "250 2.1.0")
	c.cmd("RCPT TO:<big@mx.test>", "250 2.1.5")
	c.cmd("DATA", "354 ")
	// NOOPs enough that more is read ahead than go-smtp's 4 KB buffer
	// holds when the message ends.
	noops := 2000
	c.write("Subject: one\r\n\r\n" + body + ".\r\n" + strings.Repeat("NOOP\r\n", noops) + "MAIL FROM:<a@example.org>\r\nRCPT TO:<big@mx.test>\r\nDATA\r\n")
	want := []string{"250 2.0.0 Ok: queued as"}
	for range noops {
		want = append(want, "250 2.0.0 Ok")
	}
	for _, w := range append(want, "250 2.1.0 Ok", "250 2.1.5 Ok", "354 ") {
		if got := c.readLine(); !strings.HasPrefix(got, w) {
			t.Fatalf("got %q, want %q", got, w)
		}
	}
	c.cmd("Subject: two\r\n\r\n"+body+"..a stuffed dot\r\n.", "250 2.0.0 Ok: queued as")
	got := h.waitMailbox("big", 2)
	if len(got) != 2 {
		t.Fatalf("%d messages delivered, want 2", len(got))
	}
	lf := strings.ReplaceAll(body, "\r\n", "\n")
	for _, m := range got {
		s := string(m)
		switch {
		case strings.Contains(s, "Subject: one\n"):
			if !strings.HasSuffix(s, "\n\n"+lf) && !strings.HasSuffix(s, "\n\n"+lf+"\n") {
				t.Errorf("the first message's body is not what was sent (%d bytes)", len(s))
			}
		case strings.Contains(s, "Subject: two\n"):
			if !strings.Contains(s, "\n\n"+lf+".a stuffed dot\n") {
				t.Errorf("the second message's body is not what was sent (%d bytes)", len(s))
			}
		default:
			t.Errorf("a message with neither subject:\n%.300s", s)
		}
	}
}

// TestBDATCutShort: a client that hangs up in the middle of a BDAT LAST
// chunk leaves nothing queued (go-smtp reads a chunk through a
// LimitReader and took the EOF for the chunk's end).
func TestBDATCutShort(t *testing.T) {
	t.Parallel()
	h := start(t, "")
	c := dialReady(t, h.addr)
	c.cmd("MAIL FROM:<a@example.org>", "250 2.1.0")
	c.cmd("RCPT TO:<cutshort@mx.test>", "250 2.1.5")
	c.write("BDAT 100 LAST\r\nSubject: cut\r\n\r\nonly forty bytes of a hundred\r\n")
	time.Sleep(100 * time.Millisecond)
	c.Close()
	if !h.log.WaitFor(`disconnect from`, 3*time.Second) {
		t.Fatal("no disconnect logged")
	}
	h.settle()
	if got := h.mailbox("cutshort"); len(got) != 0 {
		t.Errorf("a truncated BDAT message was delivered:\n%s", got[0])
	}
}

// TestResetBetweenBDATChunks: RSET between chunks ends the connection, and
// nothing pipelined after it starts a transaction (go-smtp would let the
// aborted transfer's result land in the next transaction).
func TestResetBetweenBDATChunks(t *testing.T) {
	t.Parallel()
	h := start(t, "")
	c := dialReady(t, h.addr)
	defer c.Close()
	c.cmd("MAIL FROM:<a@example.org>", "250 2.1.0")
	c.cmd("RCPT TO:<reset@mx.test>", "250 2.1.5")
	c.write("BDAT 5\r\nabcde")
	c.expect("250 2.0.0 Continue")
	c.write("RSET\r\nMAIL FROM:<b@example.org>\r\nRCPT TO:<reset@mx.test>\r\nBDAT 5 LAST\r\nfghij")
	for _, want := range []string{"250 2.0.0 Ok", "421 4.4.2", "503 5.5.1", "554 5.5.1"} {
		if got := c.readLine(); !strings.HasPrefix(got, want) {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	c.expectClosed()
	h.settle()
	if got := h.mailbox("reset"); len(got) != 0 {
		t.Errorf("%d messages delivered, want none", len(got))
	}
}

// TestPipelinedReplies: a client that pipelines MAIL FROM, two RCPT TO
// (one refused) and DATA gets the four replies in order, the message is
// taken after the 354, and a lone command after it is answered at once.
func TestPipelinedReplies(t *testing.T) {
	t.Parallel()
	h := start(t, "")
	c := dialReady(t, h.addr)
	c.write("MAIL FROM:<ann@mx.test>\r\nRCPT TO:<bob@mx.test>\r\nRCPT TO:<a!b@localhost>\r\nDATA\r\n")
	for i, w := range []string{"250 2.1.0", "250 2.1.5", "550 5.1.1", "354 "} {
		if l := c.readLine(); !strings.HasPrefix(l, w) {
			t.Fatalf("reply %d = %q, want %s...", i+1, l, w)
		}
	}
	c.write("Subject: piped\r\n\r\nhello\r\n.\r\n")
	c.expect("250 2.0.0 Ok: queued as ")
	c.cmd("NOOP", "250 ")
	c.cmd("QUIT", "221 ")
	if msgs := h.waitMailbox("bob", 1); len(msgs) != 1 || !bytes.Contains(msgs[0], []byte("Subject: piped")) {
		t.Errorf("bob's mailbox: %q", msgs)
	}
}
