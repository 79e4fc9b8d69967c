package arc

// The canonicalizations of RFC 6376 section 3.4, as ARC imports them.
//
// Copied, with small changes (unexported names, no body length limit,
// a bound on held-back line ends),
// from github.com/emersion/go-msgauth v0.7.0, dkim/canonical.go:
//
//	MIT License, Copyright (c) 2017 emersion
//
//	Permission is hereby granted, free of charge, to any person obtaining
//	a copy of this software and associated documentation files (the
//	"Software"), to deal in the Software without restriction, including
//	without limitation the rights to use, copy, modify, merge, publish,
//	distribute, sublicense, and/or sell copies of the Software, and to
//	permit persons to whom the Software is furnished to do so, subject to
//	the following conditions: The above copyright notice and this
//	permission notice shall be included in all copies or substantial
//	portions of the Software. THE SOFTWARE IS PROVIDED "AS IS", WITHOUT
//	WARRANTY OF ANY KIND.
//
// go-msgauth keeps them internal, and ARC needs them over other header
// fields than DKIM-Signature.

import (
	"errors"
	"io"
	"strings"
)

// maxPending bounds the line ends a body canonicalizer holds back (both
// drop empty lines at the end of the body, so they wait to see whether
// text follows). Changed from go-msgauth, which holds any number: a
// message of nothing but empty lines would otherwise be kept whole in
// memory. No real message has a megabyte of consecutive empty lines.
const maxPending = 1 << 20

var errPending = errors.New("body has too many consecutive empty lines")

// canonicalization is a canonicalization algorithm (c=).
type canonicalization string

const (
	simple  canonicalization = "simple"
	relaxed canonicalization = "relaxed"
)

type canonicalizer interface {
	// CanonicalizeHeader canonicalizes one header field, "Name: value\r\n"
	// with its continuation lines.
	CanonicalizeHeader(s string) string
	// CanonicalizeBody returns a writer that writes the canonical form
	// of what it is given to w; Close ends the body.
	CanonicalizeBody(w io.Writer) io.WriteCloser
}

var canonicalizers = map[canonicalization]canonicalizer{
	simple:  simpleCanonicalizer{},
	relaxed: relaxedCanonicalizer{},
}

// crlfFixer fixes any lone LF without a preceding CR.
type crlfFixer struct {
	cr bool
}

func (cf *crlfFixer) Fix(b []byte) []byte {
	res := make([]byte, 0, len(b))
	for _, ch := range b {
		prevCR := cf.cr
		cf.cr = false
		switch ch {
		case '\r':
			cf.cr = true
		case '\n':
			if !prevCR {
				res = append(res, '\r')
			}
		}
		res = append(res, ch)
	}
	return res
}

type simpleCanonicalizer struct{}

func (simpleCanonicalizer) CanonicalizeHeader(s string) string {
	return s
}

type simpleBodyCanonicalizer struct {
	w         io.Writer
	crlfBuf   []byte
	crlfFixer crlfFixer
}

func (c *simpleBodyCanonicalizer) Write(b []byte) (int, error) {
	written := len(b)
	b = append(c.crlfBuf, b...)

	b = c.crlfFixer.Fix(b)

	end := len(b)
	// If it ends with \r, maybe the next write will begin with \n
	if end > 0 && b[end-1] == '\r' {
		end--
	}
	// Keep all \r\n sequences
	for end >= 2 {
		prev := b[end-2]
		cur := b[end-1]
		if prev != '\r' || cur != '\n' {
			break
		}
		end -= 2
	}

	c.crlfBuf = b[end:]
	if len(c.crlfBuf) > maxPending {
		return 0, errPending
	}

	var err error
	if end > 0 {
		_, err = c.w.Write(b[:end])
	}
	return written, err
}

func (c *simpleBodyCanonicalizer) Close() error {
	// Flush crlfBuf if it ends with a single \r (without a matching \n)
	if len(c.crlfBuf) > 0 && c.crlfBuf[len(c.crlfBuf)-1] == '\r' {
		if _, err := c.w.Write(c.crlfBuf); err != nil {
			return err
		}
	}
	c.crlfBuf = nil

	if _, err := c.w.Write([]byte(crlf)); err != nil {
		return err
	}
	return nil
}

func (simpleCanonicalizer) CanonicalizeBody(w io.Writer) io.WriteCloser {
	return &simpleBodyCanonicalizer{w: w}
}

type relaxedCanonicalizer struct{}

func (relaxedCanonicalizer) CanonicalizeHeader(s string) string {
	k, v, ok := strings.Cut(s, ":")
	if !ok {
		return strings.TrimSpace(strings.ToLower(s)) + ":" + crlf
	}

	k = strings.TrimSpace(strings.ToLower(k))
	v = strings.Join(strings.FieldsFunc(v, func(r rune) bool {
		return r == ' ' || r == '\t' || r == '\n' || r == '\r'
	}), " ")
	return k + ":" + v + crlf
}

type relaxedBodyCanonicalizer struct {
	w         io.Writer
	crlfBuf   []byte
	wsp       bool
	written   bool
	crlfFixer crlfFixer
}

func (c *relaxedBodyCanonicalizer) Write(b []byte) (int, error) {
	written := len(b)

	b = c.crlfFixer.Fix(b)

	canonical := make([]byte, 0, len(b))
	for _, ch := range b {
		if ch == ' ' || ch == '\t' {
			c.wsp = true
		} else if ch == '\r' || ch == '\n' {
			c.wsp = false
			if len(c.crlfBuf) >= maxPending {
				return 0, errPending
			}
			c.crlfBuf = append(c.crlfBuf, ch)
		} else {
			if len(c.crlfBuf) > 0 {
				canonical = append(canonical, c.crlfBuf...)
				c.crlfBuf = c.crlfBuf[:0]
			}
			if c.wsp {
				canonical = append(canonical, ' ')
				c.wsp = false
			}

			canonical = append(canonical, ch)
		}
	}

	if !c.written && len(canonical) > 0 {
		c.written = true
	}

	_, err := c.w.Write(canonical)
	return written, err
}

func (c *relaxedBodyCanonicalizer) Close() error {
	if c.written {
		if _, err := c.w.Write([]byte(crlf)); err != nil {
			return err
		}
	}
	return nil
}

func (relaxedCanonicalizer) CanonicalizeBody(w io.Writer) io.WriteCloser {
	return &relaxedBodyCanonicalizer{w: w}
}
