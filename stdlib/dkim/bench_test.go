package dkim_test

import (
	"strings"
	"testing"

	"github.com/larkpost/larkpost/engine/resolver"
	"github.com/larkpost/larkpost/stdlib/dkim"
	"github.com/larkpost/larkpost/stdlib/dns"
)

// BenchmarkVerify20KB verifies a 20 KB message with one RSA-2048
// signature, its key in the DNS cache: the cost of dkim.verify on
// ordinary mail.
func BenchmarkVerify20KB(b *testing.B) {
	body := strings.Repeat(line, 20<<10/len(line))
	msg := msgOf(b, sign(b, strings.TrimSuffix(plain, "Noon at the usual place?\r\n")+body, "example.com", "rsa", keys().rsa))
	env := &dns.Env{Resolver: &resolver.Resolver{Table: table(b), Cache: resolver.NewCache()}}
	b.SetBytes(msg.size)
	b.ReportAllocs()
	for b.Loop() {
		// A thread per message, as per hook call: the DNS budget is
		// per call.
		s, err := dns.SessionOf(env.Thread(b.Context(), "bench"))
		if err != nil {
			b.Fatal(err)
		}
		res := dkim.Verify(s, msg.r, msg.size, msg.h)
		if len(res) != 1 || res[0].Result != dkim.Pass {
			b.Fatalf("results %+v", res)
		}
	}
}
