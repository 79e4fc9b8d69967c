package milter

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// go-milter's client covers negotiation and the envelope commands, but it
// cannot send SMFIC_DATA, does not understand SMFIR_SKIP, collects a
// replaced body in memory, and allocates a 4 KB buffer for every packet it
// writes. For those exchanges (DATA, body chunks, end of message, QUIT)
// and for the frequent small packets (macros, header fields) we write and
// read the packets ourselves on the same connection; go-milter keeps no
// buffered state on it, so the two interleave safely.

// maxPacket bounds a reply other than a body replacement chunk (which is
// streamed to disk); it is the bound go-milter uses too.
const maxPacket = 1 << 20

// Reply codes go-milter does not name.
const (
	replyProgress = 'p' // SMFIR_PROGRESS
	replyAddRcptP = '2' // SMFIR_ADDRCPT_PAR
)

var errProtocol = errors.New("protocol violation")

func writePacket(c net.Conn, code byte, data []byte) error {
	var hdr [5]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(len(data)+1))
	hdr[4] = code
	if len(data) == 0 {
		_, err := c.Write(hdr[:])
		return err
	}
	// One writev rather than two writes (and no copy of a 64 KB chunk).
	bufs := net.Buffers{hdr[:], data}
	_, err := bufs.WriteTo(c)
	return err
}

// readHeader reads a packet's length and code, returning the data length.
func readHeader(c net.Conn) (code byte, n int64, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return 0, 0, err
	}
	l := binary.BigEndian.Uint32(hdr[:4])
	if l == 0 {
		return 0, 0, fmt.Errorf("%w: zero-length packet", errProtocol)
	}
	return hdr[4], int64(l) - 1, nil
}

// readData reads n bytes of packet data, reusing buf.
func readData(c net.Conn, n int64, buf []byte) ([]byte, error) {
	if n > maxPacket {
		return nil, fmt.Errorf("%w: %d-byte reply", errProtocol, n)
	}
	if int64(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	_, err := io.ReadFull(c, buf)
	return buf, err
}

// keep retains a reply buffer for reuse, unless a milter's unusually
// large reply made it big.
func (s *Session) keep(buf []byte) {
	if cap(buf) <= 4<<10 {
		s.buf = buf[:0]
	}
}

// past is a deadline that has already expired: setting it interrupts any
// blocked read or write at once.
var past = time.Unix(1, 0)

// limit is the deadline for an exchange: d from now, or ctx's deadline if
// that comes first.
func limit(ctx context.Context, d time.Duration) time.Time {
	t := time.Now().Add(d)
	if dl, ok := ctx.Deadline(); ok && dl.Before(t) {
		t = dl
	}
	return t
}

// watch interrupts I/O on c when ctx ends. The returned function stops
// watching; if the interruption is already running it waits for it, so
// a late interruption cannot spoil the deadline of a later exchange.
func watch(ctx context.Context, c net.Conn) (unwatch func()) {
	if ctx.Done() == nil {
		return func() {}
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		c.SetDeadline(past)
		close(fired)
	})
	return func() {
		if !stop() {
			<-fired
		}
	}
}

// arm bounds the exchanges that follow by d (and ctx) until the returned
// function is called.
func arm(ctx context.Context, c net.Conn, d time.Duration) (disarm func()) {
	c.SetDeadline(limit(ctx, d))
	return watch(ctx, c)
}

// rearm restarts the deadline of an armed connection for the next
// exchange. Checking ctx afterwards closes the race with watch: if ctx
// ended while we set the new deadline, the interruption is redone.
func rearm(ctx context.Context, c net.Conn, d time.Duration) {
	c.SetDeadline(limit(ctx, d))
	if ctx.Err() != nil {
		c.SetDeadline(past)
	}
}

// readReply reads the milter's answer to a command, skipping progress
// packets (each of which restarts the deadline). It returns the reply code
// and its data; buf is reused.
func (s *Session) readReply(ctx context.Context, d time.Duration, buf []byte) (byte, []byte, error) {
	for {
		code, n, err := readHeader(s.conn)
		if err != nil {
			return 0, nil, err
		}
		if code == replyProgress && n == 0 {
			rearm(ctx, s.conn, d)
			continue
		}
		data, err := readData(s.conn, n, buf)
		return code, data, err
	}
}
