package auth

import (
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// The test vectors of Ulrich Drepper's SHA-crypt specification
// (https://www.akkadia.org/drepper/SHA-crypt.txt), as stored hashes. The
// last one was made with rounds=10, which the algorithm raises to 1000.
var shaCryptVectors = []struct{ hash, pass string }{
	{"$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5", "Hello world!"},
	{"$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA", "Hello world!"},
	{"$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5", "This is just a test"},
	{"$5$rounds=1400$anotherlongsalts$Rx.j8H.h8HjEDGomFU8bDkXm3XIUnzyxf12oP84Bnq1", "a very much longer text to encrypt.  This one even stretches over morethan one line."},
	{"$5$rounds=77777$short$JiO1O3ZpDAxGJeaDIuqCoEFysAe1mZNJRs3pw0KQRd/", "we have a short salt string but not a short password"},
	{"$5$rounds=123456$asaltof16chars..$gP3VQ/6X7UUEW3HkBn2w1/Ptq2jxPyzV/cZKmF/wJvD", "a short string"},
	{"$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC", "the minimum number is still observed"},
	{"$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1", "Hello world!"},
	{"$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.", "Hello world!"},
	{"$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0", "This is just a test"},
	{"$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1", "a very much longer text to encrypt.  This one even stretches over morethan one line."},
	{"$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOxFmtlcGZelFl5CxtgfiAc0", "we have a short salt string but not a short password"},
	{"$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcelCjmw2kSYu.Ec6ycULevoBK25fs2xXgMNrCzIMVcgEJAstJeonj1", "a short string"},
	{"$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX.", "the minimum number is still observed"},
}

func TestShaCryptSpecVectors(t *testing.T) {
	for _, v := range shaCryptVectors {
		scheme := map[byte]string{'5': "{SHA256-CRYPT}", '6': "{sha512-crypt}"}[v.hash[1]]
		h, err := parseHash(v.hash)
		if err != nil {
			t.Errorf("parseHash(%q): %v", v.hash, err)
			continue
		}
		for _, field := range []string{"{CRYPT}" + v.hash, scheme + v.hash} {
			if h2, err := parseHash(field); err != nil || h2.cost() != h.cost() {
				t.Errorf("parseHash(%q) = %v, %v", field, h2, err)
			}
		}
		if !h.verify([]byte(v.pass)) {
			t.Errorf("%s: right password refused", v.hash)
		}
		if h.verify([]byte(v.pass + "x")) {
			t.Errorf("%s: wrong password accepted", v.hash)
		}
	}
}

func TestOtherSchemes(t *testing.T) {
	gen, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ field, pass string }{
		// The example of PHP's password_verify manual page.
		{"{BLF-CRYPT}$2y$10$.vGA1O9wmRjrwAVXD98HNOgsNpDczlqm3Jq7KnEd1rVAGv3Fykk1a", "rasmuslerdorf"},
		{"{BLF-CRYPT}" + string(gen), "pw"},
		{"$2y$05$1aaXjNTNIYbR8M9h6avQjOz4.i5FgY/xQMmgxDSTbpSIIvMWXt7tu", "correct horse"},
		{"{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$osUzRuwpAa186RBxgWbDvw$7JiOlCzdKRV19GUulf8uRs2v9CB2Z9mOKKRhQxsgH68", "correct horse"},
		{"{PLAIN}correct horse", "correct horse"},
		{"{CLEARTEXT}", ""},
	}
	for _, tt := range tests {
		h, err := parseHash(tt.field)
		if err != nil {
			t.Errorf("parseHash(%q): %v", tt.field, err)
			continue
		}
		if !h.verify([]byte(tt.pass)) {
			t.Errorf("%s: right password refused", tt.field)
		}
		if h.verify([]byte(tt.pass + "x")) {
			t.Errorf("%s: wrong password accepted", tt.field)
		}
	}
}

func TestParseHashErrors(t *testing.T) {
	six := "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
	sum := six[len("$6$saltstring$"):]
	tests := []struct{ field, want string }{
		{"{SHA512-CRYPT", "unterminated"},
		{"{MD5-CRYPT}$1$abc$def", "unsupported password scheme"},
		{"$1$abc$def", "unsupported crypt(3)"},
		{"plaintext-without-scheme", "unsupported crypt(3)"},
		{"{SHA512-CRYPT}$5$saltstring$" + sum, "$6$ hash expected"},
		{"$6$rounds=10$salt$" + sum, "out of range"},
		{"$6$rounds=99999999$salt$" + sum, "out of range"},
		{"$6$rounds=05000$salt$" + sum, "bad rounds="},
		{"$6$rounds=x$salt$" + sum, "bad rounds="},
		{"$6$toolongsaltstring$" + sum, "1 to 16"},
		{"$6$$" + sum, "1 to 16"},
		{"$6$salt$" + sum[1:], "86 characters"},
		{"$6$salt$" + strings.Replace(sum, "s", "_", 1), "86 characters"},
		{"$6$salt$" + sum + "$", "malformed"},
		{"$6$salt", "malformed"},
		{"{BLF-CRYPT}$2x$05$1aaXjNTNIYbR8M9h6avQjOz4.i5FgY/xQMmgxDSTbpSIIvMWXt7tu", "expected"},
		{"$2y$05$1aaXjNTNIYbR8M9h6avQjOz4.i5FgY/xQMmgxDSTbpSIIvMWXt7t", "60 characters"},
		{"$2y$17$1aaXjNTNIYbR8M9h6avQjOz4.i5FgY/xQMmgxDSTbpSIIvMWXt7tu", "above 16"},
		{"$2y$xx$1aaXjNTNIYbR8M9h6avQjOz4.i5FgY/xQMmgxDSTbpSIIvMWXt7tu", "bad bcrypt"},
		{"{ARGON2ID}$argon2i$v=19$m=65536,t=3,p=1$osUzRuwpAa186RBxgWbDvw$7JiOlCzdKRV19GUulf8uRs2v9CB2Z9mOKKRhQxsgH68", "expected"},
		{"$argon2id$v=16$m=65536,t=3,p=1$osUzRuwpAa186RBxgWbDvw$7JiOlCzdKRV19GUulf8uRs2v9CB2Z9mOKKRhQxsgH68", "v=19"},
		{"$argon2id$v=19$m=65536,t=3$osUzRuwpAa186RBxgWbDvw$7JiOlCzdKRV19GUulf8uRs2v9CB2Z9mOKKRhQxsgH68", "needs m, t and p"},
		{"$argon2id$v=19$m=65536,t=3,p=1,p=1$osUzRuwpAa186RBxgWbDvw$7JiOlCzdKRV19GUulf8uRs2v9CB2Z9mOKKRhQxsgH68", "bad argon2id parameter"},
		{"$argon2id$v=19$m=65536,t=3,p=1,k=1$osUzRuwpAa186RBxgWbDvw$7JiOlCzdKRV19GUulf8uRs2v9CB2Z9mOKKRhQxsgH68", "unsupported argon2id parameter"},
		{"$argon2id$v=19$m=4,t=3,p=1$osUzRuwpAa186RBxgWbDvw$7JiOlCzdKRV19GUulf8uRs2v9CB2Z9mOKKRhQxsgH68", "too small"},
		{"$argon2id$v=19$m=65536,t=0,p=1$osUzRuwpAa186RBxgWbDvw$7JiOlCzdKRV19GUulf8uRs2v9CB2Z9mOKKRhQxsgH68", "too small"},
		{"$argon2id$v=19$m=4194304,t=3,p=1$osUzRuwpAa186RBxgWbDvw$7JiOlCzdKRV19GUulf8uRs2v9CB2Z9mOKKRhQxsgH68", "above"},
		{"$argon2id$v=19$m=65536,t=3,p=256$osUzRuwpAa186RBxgWbDvw$7JiOlCzdKRV19GUulf8uRs2v9CB2Z9mOKKRhQxsgH68", "above 255"},
		{"$argon2id$v=19$m=65536,t=3,p=1$osUz$7JiOlCzdKRV19GUulf8uRs2v9CB2Z9mOKKRhQxsgH68", "salt"},
		{"$argon2id$v=19$m=65536,t=3,p=1$osUzRuwpAa186RBxgWbDvw$7JiOlCzd!RV19GUulf8uRs2v9CB2Z9mOKKRhQxsgH68", "hash must be"},
	}
	for _, tt := range tests {
		_, err := parseHash(tt.field)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("parseHash(%q) = %v, want error with %q", tt.field, err, tt.want)
		}
	}
}
