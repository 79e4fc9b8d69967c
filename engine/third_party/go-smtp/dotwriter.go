package smtp

// larkpost's addition (see LARKPOST.md): the DATA writer of net/textproto,
// which Client.Data used, with runs of plain bytes written at once.

import (
	"bufio"
	"bytes"
)

const (
	wstateBegin     = iota // initial state; must be zero
	wstateBeginLine        // beginning of line
	wstateCR               // wrote \r (possibly at end of line)
	wstateData             // writing data in middle of line
)

// dotWriter dot-stuffs a message as net/textproto's DotWriter does, byte
// for byte the same output (a leading dot doubled, a bare LF sent as
// CRLF, the end of data added by Close), but in the middle of a line
// the bytes up to the next CR or LF go to the buffer in one write
// instead of one WriteByte each. Unlike textproto's, it is not closed
// for the caller when another command is sent: a caller that gives up
// on a message must drop the connection, not end the data.
type dotWriter struct {
	w     *bufio.Writer
	state int
}

func (d *dotWriter) Write(b []byte) (n int, err error) {
	bw := d.w
	for n < len(b) {
		if d.state == wstateData {
			rest := b[n:]
			// The run ends at the first CR or LF; the LF bounds the
			// search for a CR so no line is scanned twice.
			k := bytes.IndexByte(rest, '\n')
			if k < 0 {
				k = len(rest)
			}
			if i := bytes.IndexByte(rest[:k], '\r'); i >= 0 {
				k = i
			}
			if k > 0 {
				m, err := bw.Write(rest[:k])
				n += m
				if err != nil {
					return n, err
				}
				continue
			}
		}
		c := b[n]
		switch d.state {
		case wstateBegin, wstateBeginLine:
			d.state = wstateData
			if c == '.' {
				// escape leading dot
				bw.WriteByte('.')
			}
			fallthrough

		case wstateData:
			if c == '\r' {
				d.state = wstateCR
			}
			if c == '\n' {
				bw.WriteByte('\r')
				d.state = wstateBeginLine
			}

		case wstateCR:
			d.state = wstateData
			if c == '\n' {
				d.state = wstateBeginLine
			}
		}
		if err = bw.WriteByte(c); err != nil {
			break
		}
		n++
	}
	return
}

func (d *dotWriter) Close() error {
	bw := d.w
	switch d.state {
	default:
		bw.WriteByte('\r')
		fallthrough
	case wstateCR:
		bw.WriteByte('\n')
		fallthrough
	case wstateBeginLine:
		bw.Write([]byte(".\r\n"))
	}
	return bw.Flush()
}
