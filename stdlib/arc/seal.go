package arc

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// signedFields are the fields an ARC-Message-Signature made by Seal
// covers, each as many times as the message has it: those a reader
// sees and DKIM-Signature (RFC 8617 section 4.1.2 says it SHOULD be),
// never the ARC fields or Authentication-Results, which forwarders add
// and remove.
var signedFields = []string{
	"from", "to", "cc", "subject", "date", "message-id", "reply-to",
	"in-reply-to", "references", "mime-version", "content-type",
	"content-transfer-encoding", "list-id", "list-unsubscribe",
	"dkim-signature",
}

// Seal returns the fields of the next ARC set of a message (RFC 8617
// section 5.1), to be prepended to its header as they are:
// "ARC-Seal: ...\r\nARC-Message-Signature: ...\r\nARC-Authentication-Results: ...\r\n".
//
// header is the message's header (the empty line after it may be
// there or not), body its body. instanceAuthResults is what this hop
// found, the Authentication-Results text without the field name
// ("mx.example.org; spf=pass smtp.mailfrom=example.com"); cv is the
// result of verifying the chain the message came with: "none" when it
// had none, else "pass" or "fail". The signatures use relaxed
// canonicalization and SHA-256 with key, an RSA or Ed25519 key
// published at selector._domainkey.domain.
func Seal(header []byte, body io.Reader, instanceAuthResults string, cv string, domain, selector string, key crypto.Signer, now time.Time) (arcSetFields string, err error) {
	hdr, err := readHeader(bufio.NewReader(bytes.NewReader(header)))
	if err != nil {
		return "", fmt.Errorf("arc seal: %w", err)
	}
	c := collect(hdr)
	if why := c.complete(); why != "" {
		return "", fmt.Errorf("arc seal: the message's ARC sets: %s", why)
	}
	i := c.highest + 1
	if i > MaxInstances {
		return "", fmt.Errorf("arc seal: the message has %d ARC sets already", MaxInstances)
	}
	switch {
	case i == 1 && cv != None:
		return "", fmt.Errorf("arc seal: cv=%q for the first ARC set, want none", cv)
	case i > 1 && cv != Pass && cv != Fail:
		return "", fmt.Errorf("arc seal: cv=%q, want pass or fail", cv)
	}
	if _, ok := keyName(domain, selector); !ok {
		return "", fmt.Errorf("arc seal: invalid domain %q or selector %q", domain, selector)
	}
	if strings.TrimSpace(instanceAuthResults) == "" || !validFieldText(instanceAuthResults) {
		return "", errors.New("arc seal: authentication results empty or with a line break that is not folding")
	}
	var algo string
	switch key.Public().(type) {
	case *rsa.PublicKey:
		algo = "rsa-sha256"
	case ed25519.PublicKey:
		algo = "ed25519-sha256"
	default:
		return "", fmt.Errorf("arc seal: unsupported key type %T", key.Public())
	}

	bh := sha256.New()
	wc := canonicalizers[relaxed].CanonicalizeBody(bh)
	if _, err := io.Copy(wc, body); err != nil {
		return "", fmt.Errorf("arc seal: reading the body: %w", err)
	}
	if err := wc.Close(); err != nil {
		return "", fmt.Errorf("arc seal: reading the body: %w", err)
	}

	inst := strconv.Itoa(i)
	aar := fieldAAR + ": i=" + inst + "; " + instanceAuthResults + crlf

	var names []string
	for _, name := range signedFields {
		n := 0
		for _, f := range hdr {
			if k, _ := parseHeaderField(f); strings.EqualFold(k, name) {
				n++
			}
		}
		if name == "from" {
			n = max(n, 1) // as DKIM, From is always signed
		}
		for range n {
			names = append(names, name)
		}
	}
	w := &fieldWriter{}
	w.write(fieldAMS + ":")
	w.tags("i", inst, "a", algo, "c", "relaxed/relaxed", "d", domain, "s", selector,
		"t", strconv.FormatInt(now.Unix(), 10))
	w.list("h", names)
	w.tags("bh", base64.StdEncoding.EncodeToString(bh.Sum(nil)))
	w.token(" b=")
	amsUnsigned := w.b.String()
	sig, err := sign(key, amsDigest(hdr, names, canonicalizers[relaxed], amsUnsigned))
	if err != nil {
		return "", fmt.Errorf("arc seal: signing the message: %w", err)
	}
	w.signature(sig)
	ams := w.b.String()

	w = &fieldWriter{}
	w.write(fieldSeal + ":")
	w.tags("i", inst, "a", algo, "t", strconv.FormatInt(now.Unix(), 10), "cv", cv, "d", domain, "s", selector)
	w.token(" b=")
	sealUnsigned := w.b.String()
	sets := append(c.ordered(), &arcSet{instance: i, aar: aar, ams: ams, seal: sealUnsigned})
	digests := sealDigests(sets)
	sig, err = sign(key, digests[len(digests)-1])
	if err != nil {
		return "", fmt.Errorf("arc seal: signing the seal: %w", err)
	}
	w.signature(sig)
	return w.b.String() + ams + aar, nil
}

// sign signs a SHA-256 digest: RSA PKCS #1 v1.5, or Ed25519 over the
// digest (RFC 8463), which takes no hash option.
func sign(key crypto.Signer, digest []byte) ([]byte, error) {
	var opts crypto.SignerOpts = crypto.SHA256
	if _, ok := key.Public().(ed25519.PublicKey); ok {
		opts = crypto.Hash(0)
	}
	return key.Sign(rand.Reader, digest, opts)
}

// validFieldText reports whether s has no line break but folding (CRLF
// then white space).
func validFieldText(s string) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\n':
			return false
		case '\r':
			if i+2 >= len(s) || s[i+1] != '\n' || (s[i+2] != ' ' && s[i+2] != '\t') {
				return false
			}
			i++
		}
	}
	return true
}

// fieldWriter writes a header field folded to lines of 78 characters at
// most (RFC 5322 section 2.1.1), between tags and within long values.
type fieldWriter struct {
	b   strings.Builder
	col int
}

func (w *fieldWriter) write(s string) {
	w.b.WriteString(s)
	w.col += len(s)
}

// token writes s, on a new line if it does not fit on this one.
func (w *fieldWriter) token(s string) {
	if w.col+len(s) > 76 && w.col > 1 {
		w.b.WriteString("\r\n\t")
		w.col = 1
		s = strings.TrimPrefix(s, " ")
	}
	w.write(s)
}

// tags writes "k=v;" pairs given as k, v, k, v...
func (w *fieldWriter) tags(kv ...string) {
	for i := 0; i+1 < len(kv); i += 2 {
		w.token(" " + kv[i] + "=" + kv[i+1] + ";")
	}
}

// list writes "k=a:b:c;", folding after a colon.
func (w *fieldWriter) list(k string, values []string) {
	for i, v := range values {
		switch {
		case i == 0:
			w.token(" " + k + "=" + v)
		default:
			w.token(":" + v)
		}
	}
	w.write(";")
}

// signature writes the base64 of sig, the value of the last tag b=, and
// ends the field.
func (w *fieldWriter) signature(sig []byte) {
	s := base64.StdEncoding.EncodeToString(sig)
	for len(s) > 0 {
		n := min(len(s), 64)
		w.token(s[:n])
		s = s[n:]
	}
	w.b.WriteString(crlf)
}
