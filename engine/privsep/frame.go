package privsep

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
)

// errFrameSize is a frame length out of bounds: the stream is lost.
var errFrameSize = errors.New("privsep: frame length out of bounds")

// maxFDsPerRead is how many descriptors one recvmsg(2) takes in; more
// are cut off by the kernel (MSG_CTRUNC), which closes them.
const maxFDsPerRead = 4

// writeFrame writes payload as one frame. When fd ≥ 0 it goes with the
// frame's first byte (SCM_RIGHTS). It returns how many bytes of the frame
// were written: on an error after the first byte the stream is broken.
func writeFrame(conn *net.UnixConn, payload []byte, fd int) (int, error) {
	buf := make([]byte, 4+len(payload))
	binary.BigEndian.PutUint32(buf, uint32(len(payload)))
	copy(buf[4:], payload)
	var oob []byte
	if fd >= 0 {
		oob = syscall.UnixRights(fd)
	}
	n, _, err := conn.WriteMsgUnix(buf, oob, nil)
	n = max(n, 0)
	if err == nil && n < len(buf) {
		// A stream socket may take part of it; the descriptor went
		// with the first part.
		var m int
		m, err = conn.Write(buf[n:])
		n += max(m, 0)
	}
	return n, err
}

// fds are the descriptors received while reading one frame: the first is
// kept, any other is closed at once and counted.
type fds struct {
	first int // -1: none
	extra int
}

func (f *fds) add(fd int) {
	if f.first < 0 {
		f.first = fd
		return
	}
	syscall.Close(fd)
	f.extra++
}

func (f *fds) close() {
	if f.first >= 0 {
		syscall.Close(f.first)
		f.first = -1
	}
}

// frameReader reads request frames and the descriptors that come with
// them. It never reads past the end of a frame, so a descriptor received
// while reading a frame is that frame's: Linux attaches it to the first
// byte of the sendmsg(2) that carried it and does not let one recvmsg(2)
// read past a message that carried descriptors.
type frameReader struct {
	conn *net.UnixConn
	oob  []byte
}

func newFrameReader(conn *net.UnixConn) *frameReader {
	return &frameReader{conn: conn, oob: make([]byte, syscall.CmsgSpace(maxFDsPerRead*4))}
}

// read reads one frame of at most limit bytes of payload. At a clean end
// of the stream (before a frame's first byte) it returns io.EOF. On an
// error no descriptor is left open.
func (r *frameReader) read(limit int) (payload []byte, got fds, err error) {
	got.first = -1
	var hdr [4]byte
	if err = r.full(hdr[:], &got, true); err != nil {
		got.close()
		return nil, got, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > uint32(limit) {
		got.close()
		return nil, got, fmt.Errorf("%w: %d bytes (1..%d)", errFrameSize, n, limit)
	}
	payload = make([]byte, n)
	if err = r.full(payload, &got, false); err != nil {
		got.close()
		return nil, got, err
	}
	return payload, got, nil
}

// full fills b, collecting descriptors into got.
func (r *frameReader) full(b []byte, got *fds, first bool) error {
	read := 0
	for read < len(b) {
		n, oobn, flags, _, err := r.conn.ReadMsgUnix(b[read:], r.oob)
		if err == nil && oobn > 0 {
			if perr := collect(r.oob[:oobn], got); perr != nil {
				return perr
			}
		}
		if flags&syscall.MSG_CTRUNC != 0 {
			got.extra++
		}
		read += max(n, 0)
		if err != nil {
			if errors.Is(err, io.EOF) {
				if first && read == 0 {
					return io.EOF
				}
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// collect takes the descriptors out of the control messages in oob.
func collect(oob []byte, got *fds) error {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return fmt.Errorf("privsep: control message: %w", err)
	}
	for _, m := range msgs {
		if m.Header.Level != syscall.SOL_SOCKET || m.Header.Type != syscall.SCM_RIGHTS {
			continue
		}
		rights, err := syscall.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range rights {
			got.add(fd)
		}
	}
	return nil
}
