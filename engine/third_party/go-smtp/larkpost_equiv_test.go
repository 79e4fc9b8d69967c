package smtp

// larkpost's patch (see LARKPOST.md) must not change what the readers
// return or how much of the stream they consume: each fast reader is run
// beside go-smtp v0.26.0's byte-at-a-time original on the same input, cut
// into the same network reads, and every byte, error and the bytes left
// unread after the end of data (which go-smtp goes on to parse as
// commands) must be the same.

import (
	"bufio"
	"bytes"
	"io"
	"net/textproto"
	"testing"
)

// refDataRead is go-smtp v0.26.0's dataReader.Read, a byte at a time.
func refDataRead(r *dataReader, b []byte) (n int, err error) {
	if r.limited {
		if r.n <= 0 {
			return 0, ErrDataTooLarge
		}
		if int64(len(b)) > r.n {
			b = b[0:r.n]
		}
	}
	const (
		stateBeginLine = iota
		stateDot
		stateDotCR
		stateCR
		stateData
		stateEOF
	)
	for n < len(b) && r.state != stateEOF {
		var c byte
		c, err = r.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			break
		}
		switch r.state {
		case stateBeginLine:
			if c == '.' {
				r.state = stateDot
				continue
			}
			if c == '\r' {
				r.state = stateCR
				break
			}
			r.state = stateData
		case stateDot:
			if c == '\r' {
				r.state = stateDotCR
				continue
			}
			r.state = stateData
		case stateDotCR:
			if c == '\n' {
				r.state = stateEOF
				continue
			}
			r.state = stateData
		case stateCR:
			if c == '\n' {
				r.state = stateBeginLine
				break
			}
			r.state = stateData
		case stateData:
			if c == '\r' {
				r.state = stateCR
			}
		}
		b[n] = c
		n++
	}
	if err == nil && r.state == stateEOF {
		err = io.EOF
	}
	if r.limited {
		r.n -= int64(n)
	}
	return
}

// chunky hands out its bytes in reads of the given sizes, as a network would.
type chunky struct {
	p     []byte
	sizes []byte
	i     int
}

func (c *chunky) Read(b []byte) (int, error) {
	if len(c.p) == 0 {
		return 0, io.EOF
	}
	k := 1
	if len(c.sizes) > 0 {
		k = int(c.sizes[c.i%len(c.sizes)])%97 + 1
		c.i++
	}
	if k > len(b) {
		k = len(b)
	}
	if k > len(c.p) {
		k = len(c.p)
	}
	copy(b, c.p[:k])
	c.p = c.p[k:]
	return k, nil
}

type readFn func(*dataReader, []byte) (int, error)

func runData(in, sizes []byte, bufSize, readSize int, limit int64, read readFn) (out []byte, errs []string, rest []byte) {
	br := bufio.NewReaderSize(&chunky{p: in, sizes: sizes}, bufSize)
	dr := &dataReader{r: br}
	if limit > 0 {
		dr.limited, dr.n = true, limit
	}
	buf := make([]byte, readSize)
	for i := 0; i < 10000; i++ {
		n, err := read(dr, buf)
		out = append(out, buf[:n]...)
		if err != nil {
			errs = append(errs, err.Error())
			break
		}
	}
	rest, _ = io.ReadAll(br)
	return out, errs, rest
}

func FuzzDataReaderSameAsByteWise(f *testing.F) {
	f.Add([]byte("hello\r\n..dot\r\n.\r\nMAIL FROM:<x>\r\n"), []byte{3, 7}, uint8(16), uint8(5), uint16(0))
	f.Add([]byte("a\r\r\n.\r\nb\r\n.\r\n"), []byte{1}, uint8(16), uint8(64), uint16(0))
	f.Add([]byte(".\r.\r\n\n.\n\r\n.\r\nrest"), []byte{}, uint8(20), uint8(1), uint16(3))
	f.Fuzz(func(t *testing.T, in, sizes []byte, bufSize, readSize uint8, limit uint16) {
		// Mostly the bytes that matter to the state machine.
		p := make([]byte, len(in))
		for i, c := range in {
			p[i] = "\r\n.x\r\n.\r"[c%8]
			if c >= 128 {
				p[i] = c
			}
		}
		bs, rs := int(bufSize)+16, int(readSize)%70+1
		o1, e1, r1 := runData(p, sizes, bs, rs, int64(limit), refDataRead)
		o2, e2, r2 := runData(p, sizes, bs, rs, int64(limit), (*dataReader).Read)
		if !bytes.Equal(o1, o2) || len(e1) != len(e2) || len(e1) > 0 && e1[0] != e2[0] || !bytes.Equal(r1, r2) {
			t.Fatalf("in %q:\nbyte-wise %q %v rest %q\nfast      %q %v rest %q", p, o1, e1, r1, o2, e2, r2)
		}
	})
}

func refLineLimit(r *lineLimitReader, b []byte) (int, error) {
	if r.curLineLength > r.LineLimit && r.LineLimit > 0 {
		return 0, ErrTooLongLine
	}
	n, err := r.R.Read(b)
	if err != nil {
		return n, err
	}
	if r.LineLimit == 0 {
		return n, nil
	}
	for _, chr := range b[:n] {
		if chr == '\n' {
			r.curLineLength = 0
		}
		r.curLineLength++
		if r.curLineLength > r.LineLimit {
			return 0, ErrTooLongLine
		}
	}
	return n, nil
}

func FuzzLineLimitSameAsByteWise(f *testing.F) {
	f.Add([]byte("abc\ndefgh\n\n\nxy"), []byte{2, 5}, uint8(4))
	f.Add([]byte("\n\n\n"), []byte{1}, uint8(1))
	f.Fuzz(func(t *testing.T, in, sizes []byte, limit uint8) {
		p := make([]byte, len(in))
		for i, c := range in {
			p[i] = "ab\nc"[c%4]
		}
		run := func(read func(*lineLimitReader, []byte) (int, error)) (out []byte, errs []string) {
			lr := &lineLimitReader{R: &chunky{p: p, sizes: sizes}, LineLimit: int(limit)}
			buf := make([]byte, 200)
			for i := 0; i < 10000; i++ {
				n, err := read(lr, buf)
				out = append(out, buf[:n]...)
				if err != nil {
					errs = append(errs, err.Error())
					if err == io.EOF || len(errs) > 2 {
						break
					}
				}
			}
			return out, errs
		}
		o1, e1 := run(refLineLimit)
		o2, e2 := run((*lineLimitReader).Read)
		if !bytes.Equal(o1, o2) || len(e1) != len(e2) {
			t.Fatalf("in %q limit %d:\nbyte-wise %q %v\nfast      %q %v", p, limit, o1, e1, o2, e2)
		}
		for i := range e1 {
			if e1[i] != e2[i] {
				t.Fatalf("errors differ: %v vs %v", e1, e2)
			}
		}
	})
}

// BenchmarkDataReader reads a 1 MB message of 76-character lines (every
// 16th dot-stuffed) through both readers: go test -bench DataReader.
func BenchmarkDataReader(b *testing.B) {
	var msg []byte
	for i := 0; len(msg) < 1<<20; i++ {
		if i%16 == 0 {
			msg = append(msg, ".."...)
		}
		msg = append(msg, bytes.Repeat([]byte{'a' + byte(i%26)}, 76)...)
		msg = append(msg, "\r\n"...)
	}
	msg = append(msg, ".\r\n"...)
	for _, bc := range []struct {
		name string
		read readFn
	}{{"bytewise", refDataRead}, {"fast", (*dataReader).Read}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			buf := make([]byte, 32<<10)
			for i := 0; i < b.N; i++ {
				dr := &dataReader{r: bufio.NewReaderSize(bytes.NewReader(msg), 4096)}
				for {
					if _, err := bc.read(dr, buf); err != nil {
						if err != io.EOF {
							b.Fatal(err)
						}
						break
					}
				}
			}
		})
	}
}

// BenchmarkLineLimit: the same 1 MB through both line-length checks.
func BenchmarkLineLimit(b *testing.B) {
	line := append(bytes.Repeat([]byte{'a'}, 76), "\r\n"...)
	msg := bytes.Repeat(line, (1<<20)/len(line))
	for _, bc := range []struct {
		name string
		read func(*lineLimitReader, []byte) (int, error)
	}{{"bytewise", refLineLimit}, {"fast", (*lineLimitReader).Read}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			buf := make([]byte, 4096)
			for i := 0; i < b.N; i++ {
				lr := &lineLimitReader{R: bytes.NewReader(msg), LineLimit: 2000}
				for {
					if _, err := bc.read(lr, buf); err != nil {
						break
					}
				}
			}
		})
	}
}

// FuzzDotWriterSameAsTextproto: what the client's DATA writer sends,
// written in the same pieces, is what net/textproto's DotWriter sends.
func FuzzDotWriterSameAsTextproto(f *testing.F) {
	f.Add([]byte(".lead\r\nbare\nlf\r\r\n.\r\n..x\rcr"), []byte{3, 1, 9})
	f.Add([]byte(""), []byte{})
	f.Add([]byte("no newline at the end"), []byte{5})
	f.Fuzz(func(t *testing.T, in, sizes []byte) {
		p := make([]byte, len(in))
		for i, c := range in {
			p[i] = "\r\n.x\r\n.a"[c%8]
			if c >= 128 {
				p[i] = c
			}
		}
		write := func(w io.WriteCloser) {
			rest := p
			for i := 0; len(rest) > 0; i++ {
				k := len(rest)
				if len(sizes) > 0 {
					k = int(sizes[i%len(sizes)])%61 + 1
				}
				if k > len(rest) {
					k = len(rest)
				}
				if n, err := w.Write(rest[:k]); n != k || err != nil {
					t.Fatalf("wrote %d of %d: %v", n, k, err)
				}
				rest = rest[k:]
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
		}
		var want, got bytes.Buffer
		write(textproto.NewWriter(bufio.NewWriter(&want)).DotWriter())
		write(&dotWriter{w: bufio.NewWriter(&got)})
		if !bytes.Equal(want.Bytes(), got.Bytes()) {
			t.Fatalf("in %q:\ntextproto %q\nours      %q", p, want.Bytes(), got.Bytes())
		}
	})
}

// BenchmarkDotWriter: 1 MB of 76-character lines through both writers.
func BenchmarkDotWriter(b *testing.B) {
	line := append(bytes.Repeat([]byte{'a'}, 76), "\r\n"...)
	msg := bytes.Repeat(line, (1<<20)/len(line))
	for _, bc := range []struct {
		name string
		new  func(*bufio.Writer) io.WriteCloser
	}{
		{"textproto", func(w *bufio.Writer) io.WriteCloser { return textproto.NewWriter(w).DotWriter() }},
		{"fast", func(w *bufio.Writer) io.WriteCloser { return &dotWriter{w: w} }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			bw := bufio.NewWriter(io.Discard)
			for i := 0; i < b.N; i++ {
				w := bc.new(bw)
				for off := 0; off < len(msg); off += 32 << 10 {
					end := off + 32<<10
					if end > len(msg) {
						end = len(msg)
					}
					w.Write(msg[off:end])
				}
				w.Close()
			}
		})
	}
}
