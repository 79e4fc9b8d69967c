// Package milter is the `milter` module: milter.check asks a milter
// about the message a hook is judging and returns its verdict and the
// changes it asked for, without applying any of them.
package milter

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"strconv"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	mc "github.com/larkpost/larkpost/engine/milter"
	"github.com/larkpost/larkpost/stdlib/authres"
	"github.com/larkpost/larkpost/stdlib/dns"
)

// Config makes the client for a milter a script names: its address
// ("inet:host:port" or "unix:/path"), with the server's milter_*
// settings. Hostname gives the j macro.
type Config struct {
	New      func(addr string) (*mc.Milter, error)
	Hostname func() string
}

// Module returns the `milter` module.
func Module(c Config) *starlarkstruct.Module {
	return &starlarkstruct.Module{Name: "milter", Members: starlark.StringDict{
		"check": starlark.NewBuiltin("milter.check", c.check),
	}}
}

func (c Config) check(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var addr string
	var msgv, tx starlark.Value = nil, starlark.None
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "milter", &addr, "msg", &msgv, "tx?", &tx); err != nil {
		return nil, err
	}
	r, size, _, err := authres.MessageArg(b, msgv)
	if err != nil {
		return nil, err
	}
	if c.New == nil {
		return nil, fmt.Errorf("%s: no milters here", b.Name())
	}
	m, err := c.New(addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	hdrLen, bodyStart, err := headerEnd(r, size)
	if err != nil {
		return nil, fmt.Errorf("%s: reading the message: %w", b.Name(), err)
	}
	hdr := make([]byte, hdrLen)
	if _, err := r.ReadAt(hdr, 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("%s: reading the message: %w", b.Name(), err)
	}
	msg := mc.NewMessage(hdr, r, bodyStart, size-bodyStart)
	defer msg.Close()

	info, env := describe(tx)
	info.Version = "larkpost"
	if c.Hostname != nil {
		info.Hostname = c.Hostname()
	}
	ctx, cancel := dns.CallContext(th)
	defer cancel()
	res, err := m.Check(ctx, info, env, msg)
	return result(res, err), nil
}

// describe takes the connection and envelope from tx (or a conn), as
// far as it has them.
func describe(tx starlark.Value) (mc.Info, mc.Envelope) {
	conn := attr(tx, "conn")
	if conn == starlark.None {
		conn, tx = tx, starlark.None
	}
	info := mc.Info{DaemonName: str(attr(conn, "listener")), ClientName: str(attr(conn, "rdns"))}
	if a, err := netip.ParseAddr(str(attr(conn, "ip"))); err == nil {
		info.ClientAddr = a
	}
	if p, err := strconv.Atoi(str(attr(conn, "port"))); err == nil && p > 0 && p < 65536 {
		info.ClientPort = uint16(p)
	}
	env := mc.Envelope{Helo: str(attr(conn, "helo")), From: str(attr(tx, "sender")), ID: str(attr(tx, "id"))}
	if it, ok := attr(tx, "rcpts").(starlark.Iterable); ok {
		iter := it.Iterate()
		defer iter.Done()
		var v starlark.Value
		for iter.Next(&v) {
			env.Rcpts = append(env.Rcpts, str(v))
		}
	}
	return info, env
}

// result is what the milter said, and the changes it asked for as
// strings and header fields; replaced bodies are dropped unread.
func result(res mc.Result, err error) starlark.Value {
	var changes, headers []starlark.Value
	for _, mod := range res.Mods {
		what := mod.Kind.String()
		switch mod.Kind {
		case mc.ModAddHeader, mc.ModInsertHeader, mc.ModChangeHeader:
			what += " " + mod.Name + ":" + mod.Value
			headers = append(headers, starlark.Tuple{starlark.String(mod.Name), starlark.String(trimLeadingSpace(mod.Value))})
		case mc.ModDeleteHeader:
			what += " " + mod.Name
		case mc.ModChangeFrom, mc.ModAddRcpt, mc.ModDeleteRcpt:
			what += " <" + mod.Addr + ">"
		case mc.ModReplaceBody:
			if mod.Body != nil {
				mod.Body.Close()
			}
		case mc.ModQuarantine:
			what += " " + mod.Reason
		}
		changes = append(changes, starlark.String(what))
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	return starlarkstruct.FromStringDict(starlark.String("milter_result"), starlark.StringDict{
		"action":  starlark.String(res.Action),
		"code":    starlark.MakeInt(res.Code),
		"status":  starlark.String(res.Status),
		"text":    starlark.String(res.Text),
		"stage":   starlark.String(res.Stage),
		"changes": starlark.NewList(changes),
		"headers": starlark.NewList(headers),
		"error":   starlark.String(msg),
	})
}

func trimLeadingSpace(v string) string {
	if len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		return v[1:]
	}
	return v
}

// headerEnd finds the end of the header block (its length, the empty
// line excluded) and where the body starts, reading at most
// mc.MaxHeader bytes.
func headerEnd(r io.ReaderAt, size int64) (hdrLen, bodyStart int64, err error) {
	br := bufio.NewReader(io.NewSectionReader(r, 0, min(size, mc.MaxHeader)))
	var off int64
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A line longer than the reader's buffer: go on reading it.
			off += int64(len(line))
			for err == bufio.ErrBufferFull {
				line, err = br.ReadSlice('\n')
				off += int64(len(line))
			}
			if err != nil {
				return off, off, nil
			}
			continue
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 && len(line) > 0 {
			return off, off + int64(len(line)), nil
		}
		off += int64(len(line))
		if err == io.EOF {
			return off, off, nil // a header and no body
		}
		if err != nil {
			return 0, 0, err
		}
	}
}

func attr(v starlark.Value, name string) starlark.Value {
	if h, ok := v.(starlark.HasAttrs); ok {
		if a, err := h.Attr(name); err == nil && a != nil {
			return a
		}
	}
	return starlark.None
}

func str(v starlark.Value) string {
	switch v := v.(type) {
	case starlark.String:
		return string(v)
	case starlark.NoneType:
		return ""
	}
	return v.String()
}
