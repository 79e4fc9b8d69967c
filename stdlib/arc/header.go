package arc

// Header field helpers. parseHeaderField, parseHeaderParams and
// headerPicker are copied, with changes noted, from
// github.com/emersion/go-msgauth v0.7.0, dkim/header.go (MIT License,
// Copyright (c) 2017 emersion; see canonical.go for the notice), which
// keeps them internal. readHeader is rewritten to bound the header's
// size and to accept a header that ends the message.

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
)

const crlf = "\r\n"

// maxHeader bounds the header read from a message: the fields are held
// in memory. Far above any real header (Postfix's default limit is 100 KiB).
const maxHeader = 1 << 20

// header is a message header, one element per field in the message's
// order, each "Name: value\r\n" with its continuation lines, every line
// ending in CRLF.
type header []string

var errHeaderTooBig = fmt.Errorf("message header longer than %d bytes", maxHeader)

// readHeader reads the header from br, leaving br at the start of the
// body. A message that ends without an empty line after its header has
// an empty body.
func readHeader(br *bufio.Reader) (header, error) {
	var h header
	var field strings.Builder // the field being read: a builder, as
	// appending to a string would copy it for each continuation line
	flush := func() {
		if field.Len() > 0 {
			h = append(h, field.String())
			field.Reset()
		}
	}
	size := 0
	for {
		line, err := readLine(br, maxHeader-size)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("reading the header: %w", err)
		}
		if line == "" {
			break // the empty line, or the end of the message
		}
		size += len(line) + len(crlf)
		if line[0] != ' ' && line[0] != '\t' {
			flush() // not a continuation line: a new field
		}
		field.WriteString(line)
		field.WriteString(crlf)
		if err != nil {
			break // the message ends with its header
		}
	}
	flush()
	return h, nil
}

// readLine returns the next line without its end (CRLF or a bare LF), of
// at most max bytes; io.EOF with the last line when it has no end.
func readLine(br *bufio.Reader, max int) (string, error) {
	var b strings.Builder
	for {
		frag, err := br.ReadSlice('\n')
		if b.Len()+len(frag) > max+2 {
			return "", errHeaderTooBig
		}
		b.Write(frag)
		switch {
		case err == nil:
			s := strings.TrimSuffix(b.String(), "\n")
			return strings.TrimSuffix(s, "\r"), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return strings.TrimSuffix(b.String(), "\r"), io.EOF
		default:
			return "", err
		}
	}
}

func parseHeaderField(s string) (string, string) {
	key, value, _ := strings.Cut(s, ":")
	return strings.TrimSpace(key), strings.TrimSpace(value)
}

// parseHeaderParams parses a tag list ("k=v; k=v", RFC 6376 section
// 3.2): values have surrounding white space removed, a duplicated tag
// or a part without "=" is an error.
func parseHeaderParams(s string) (map[string]string, error) {
	pairs := strings.Split(s, ";")
	params := make(map[string]string)
	for _, s := range pairs {
		key, value, ok := strings.Cut(s, "=")
		if !ok {
			if strings.TrimSpace(s) == "" {
				continue
			}
			return params, errors.New("malformed tag list")
		}

		trimmedKey := strings.TrimSpace(key)
		if _, present := params[trimmedKey]; present {
			return params, fmt.Errorf("duplicate tag %q", trimmedKey)
		}
		params[trimmedKey] = strings.TrimSpace(value)
	}
	return params, nil
}

// headerPicker picks the fields that h= names, the last occurrence of a
// name first (RFC 6376 section 5.4.2). Changed from go-msgauth, which
// scans the header for each name: the fields are indexed by name once,
// so a long h= costs no more than the header.
type headerPicker struct {
	byName map[string][]string // lower-case name: fields, bottom first
	picked map[string]int
}

func newHeaderPicker(h header) *headerPicker {
	p := &headerPicker{byName: map[string][]string{}, picked: map[string]int{}}
	for i := len(h) - 1; i >= 0; i-- {
		k, _ := parseHeaderField(h[i])
		k = strings.ToLower(k)
		p.byName[k] = append(p.byName[k], h[i])
	}
	return p
}

// Pick returns the next field named key not picked yet, "" when there
// is none (a name signed to prevent its addition).
func (p *headerPicker) Pick(key string) string {
	key = strings.ToLower(key)
	fields, at := p.byName[key], p.picked[key]
	if at >= len(fields) {
		return ""
	}
	p.picked[key]++
	return fields[at]
}

// removeSignature returns the field with the value of its b= tag
// emptied, white space around it included (RFC 6376 section 3.7), as
// the signer hashed it. Unlike go-msgauth's regular expression, it
// finds the tag by name, not "b=" anywhere in the field.
func removeSignature(field string) string {
	name, value, ok := strings.Cut(field, ":")
	if !ok {
		return field
	}
	parts := strings.Split(value, ";")
	for i, part := range parts {
		k, _, ok := strings.Cut(part, "=")
		if ok && strings.TrimSpace(k) == "b" {
			parts[i] = part[:len(k)+1]
		}
	}
	return name + ":" + strings.Join(parts, ";")
}

func parseTagList(s string) []string {
	tags := strings.Split(s, ":")
	for i, t := range tags {
		tags[i] = stripWhitespace(t)
	}
	return tags
}

func stripWhitespace(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return r
	}, s)
}

func decodeBase64(s string) ([]byte, error) {
	return base64.StdEncoding.DecodeString(stripWhitespace(s))
}
