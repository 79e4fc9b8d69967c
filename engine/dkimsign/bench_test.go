package dkimsign

import (
	"strings"
	"testing"
)

// BenchmarkSign20KB signs a typical message: a 20 KB body, the test
// header, one key.
func BenchmarkSign20KB(b *testing.B) {
	body := strings.Repeat(strings.Repeat("x", 70)+"\r\n", 20<<10/72)
	for _, bc := range []struct {
		name string
		kp   func() keyPair
	}{
		{"rsa-2048", rsaA},
		{"ed25519", edA},
	} {
		b.Run(bc.name, func(b *testing.B) {
			dir := b.TempDir()
			path := writeKey(b, dir, "key.pem", bc.kp().pem, 0o600)
			s, err := New([]KeyConfig{{Domain: "example.com", Selector: "sel", File: path}}, Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(testHeader) + len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Sign("example.com", []byte(testHeader), strings.NewReader(body)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
