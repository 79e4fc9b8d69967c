package arc

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/emersion/go-message/textproto"

	"github.com/larkpost/larkpost/stdlib/dns"
)

// FuzzVerify: no header, however malformed, makes verification panic.
func FuzzVerify(f *testing.F) {
	for _, seed := range []string{
		"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=example.org; s=s; b=AAAA\r\n" +
			"ARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/simple; d=example.org; s=s; h=from:to; bh=AAAA; b=AAAA\r\n" +
			"ARC-Authentication-Results: i=1; example.org; spf=pass\r\nFrom: a@example.org\r\n\r\nbody\r\n",
		"ARC-Seal: i=2; cv=pass\r\nARC-Seal: i=1; b=;; ;=\r\n\r\n",
		"ARC-Authentication-Results: i=\r\n\r\n",
		"ARC-Message-Signature: i=1; h=:::; c=/; bh=; b=; a=-; d=.; s=.\r\n\r\n\r\n\r\n",
		"arc-seal:i=01;b=x\n\tb\n\n",
	} {
		f.Add([]byte(seed))
	}
	lookup := func(name string) dns.Result {
		return dns.Result{Status: dns.OK, Values: []string{"k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="}}
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			h = textproto.Header{}
			h.Add("ARC-Seal", "x") // read the raw header anyway
		}
		res := verify(t.Context(), lookup, bytes.NewReader(raw), int64(len(raw)), h)
		switch res.Result {
		case None, Pass, Fail:
		default:
			t.Fatalf("result %q", res.Result)
		}
	})
}
