package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/GehirnInc/crypt"
	"github.com/GehirnInc/crypt/sha256_crypt"
	"github.com/GehirnInc/crypt/sha512_crypt"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// A verifier is one stored password hash, parsed when the file is loaded
// so that a bad hash is reported with its line instead of failing logins.
type verifier interface {
	// verify reports whether pass hashes to the stored value. It takes
	// as long for a wrong password as for the right one.
	verify(pass []byte) bool
	// cost names the scheme and its parameters. Two hashes with the same
	// cost take the same time to check, which is what the dummy hash for
	// unknown users must match.
	cost() string
}

// Upper bounds on the work factors a file may ask for. Each login attempt,
// including an attacker's, costs one hash; past these one attempt would take
// seconds of CPU or gigabytes of memory, so such a line is refused at load.
const (
	maxShaRounds   = 10_000_000
	maxBcryptCost  = 16
	maxArgonMemory = 1 << 20 // KiB, 1 GiB
	maxArgonTime   = 64
)

// parseHash reads the password field of a passwd-file line. Without a
// {SCHEME} prefix the hash must identify itself by its $id$, as for
// Dovecot's CRYPT scheme.
func parseHash(field string) (verifier, error) {
	scheme, hash := "CRYPT", field
	if strings.HasPrefix(field, "{") {
		end := strings.IndexByte(field, '}')
		if end < 0 {
			return nil, errors.New("unterminated {SCHEME}")
		}
		scheme, hash = strings.ToUpper(field[1:end]), field[end+1:]
	}
	switch scheme {
	case "CRYPT":
		switch {
		case strings.HasPrefix(hash, "$6$"):
			return parseShaCrypt(hash, "$6$", 86, sha512_crypt.New())
		case strings.HasPrefix(hash, "$5$"):
			return parseShaCrypt(hash, "$5$", 43, sha256_crypt.New())
		case strings.HasPrefix(hash, "$2"):
			return parseBcrypt(hash)
		case strings.HasPrefix(hash, "$argon2id$"):
			return parseArgon2id(hash)
		}
		return nil, errors.New("unsupported crypt(3) hash: only $6$, $5$, $2a$/$2b$/$2y$ and $argon2id$ are known")
	case "SHA512-CRYPT":
		return parseShaCrypt(hash, "$6$", 86, sha512_crypt.New())
	case "SHA256-CRYPT":
		return parseShaCrypt(hash, "$5$", 43, sha256_crypt.New())
	case "BLF-CRYPT":
		return parseBcrypt(hash)
	case "ARGON2ID":
		return parseArgon2id(hash)
	case "PLAIN", "CLEARTEXT":
		return plainHash(hash), nil
	}
	return nil, fmt.Errorf("unsupported password scheme {%s}", scheme)
}

const cryptAlphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func isCrypt64(s string) bool {
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(cryptAlphabet, s[i]) < 0 {
			return false
		}
	}
	return true
}

// shaCrypt is Drepper's SHA-crypt ($5$, $6$), computed by GehirnInc/crypt.
// Its Verify is not used: with rounds= it takes the salt as the rest of the
// string cut to 16 characters, so a shorter salt (the spec's own
// "rounds=77777$short" vector) absorbs part of the hash and never matches.
// Generate is given just the setting (prefix, rounds, salt) parsed here,
// and the result compared in constant time. The stored string must be
// exactly what Generate produces, which parseShaCrypt checks, or a hash
// with, say, rounds=100 (raised to 1000 by the algorithm) would never
// match.
type shaCrypt struct {
	c       crypt.Crypter
	setting string // $6$rounds=N$salt
	hash    string
	prefix  string
	rounds  int
}

func parseShaCrypt(hash, prefix string, sumLen int, c crypt.Crypter) (verifier, error) {
	name := strings.Trim(prefix, "$")
	if !strings.HasPrefix(hash, prefix) {
		return nil, fmt.Errorf("$%s$ hash expected", name)
	}
	parts := strings.Split(hash[len(prefix):], "$")
	rounds := 5000
	if len(parts) == 3 && strings.HasPrefix(parts[0], "rounds=") {
		n, err := strconv.Atoi(parts[0][len("rounds="):])
		if err != nil || strconv.Itoa(n) != parts[0][len("rounds="):] {
			return nil, fmt.Errorf("bad rounds= in $%s$ hash", name)
		}
		if n < 1000 || n > maxShaRounds {
			return nil, fmt.Errorf("rounds=%d out of range 1000..%d", n, maxShaRounds)
		}
		rounds = n
		parts = parts[1:]
	}
	if len(parts) != 2 {
		return nil, fmt.Errorf("malformed $%s$ hash", name)
	}
	salt, sum := parts[0], parts[1]
	if salt == "" || len(salt) > 16 {
		return nil, fmt.Errorf("$%s$ salt must have 1 to 16 characters", name)
	}
	if len(sum) != sumLen || !isCrypt64(sum) {
		return nil, fmt.Errorf("$%s$ hash must have %d characters of [./0-9A-Za-z]", name, sumLen)
	}
	setting := hash[:len(hash)-len(sum)-1]
	return &shaCrypt{c: c, setting: setting, hash: hash, prefix: prefix, rounds: rounds}, nil
}

func (h *shaCrypt) verify(pass []byte) bool {
	got, err := h.c.Generate(pass, []byte(h.setting))
	return err == nil && subtle.ConstantTimeCompare([]byte(got), []byte(h.hash)) == 1
}

func (h *shaCrypt) cost() string { return h.prefix + strconv.Itoa(h.rounds) }

// bcryptHash is {BLF-CRYPT}. Dovecot writes $2y$ (crypt_blowfish's name for
// the fixed algorithm); x/crypto computes $2a$, $2b$ and $2y$ alike.
type bcryptHash struct {
	hash []byte
	c    int
}

func parseBcrypt(hash string) (verifier, error) {
	if len(hash) < 4 || !(strings.HasPrefix(hash, "$2a$") || strings.HasPrefix(hash, "$2b$") || strings.HasPrefix(hash, "$2y$")) {
		return nil, errors.New("$2a$, $2b$ or $2y$ hash expected")
	}
	if len(hash) != 60 {
		return nil, errors.New("bcrypt hash must have 60 characters")
	}
	c, err := bcrypt.Cost([]byte(hash))
	if err != nil {
		return nil, fmt.Errorf("bad bcrypt hash: %v", err)
	}
	if c > maxBcryptCost {
		return nil, fmt.Errorf("bcrypt cost %d above %d", c, maxBcryptCost)
	}
	return &bcryptHash{hash: []byte(hash), c: c}, nil
}

func (h *bcryptHash) verify(pass []byte) bool {
	return bcrypt.CompareHashAndPassword(h.hash, pass) == nil
}
func (h *bcryptHash) cost() string { return "bcrypt" + strconv.Itoa(h.c) }

// argon2idHash is the PHC string libsodium and Dovecot write:
// $argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash>, both in
// unpadded standard base64.
type argon2idHash struct {
	m, t uint32
	p    uint8
	salt []byte
	sum  []byte
}

func parseArgon2id(hash string) (verifier, error) {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return nil, errors.New("$argon2id$v=19$m=..,t=..,p=..$salt$hash expected")
	}
	if parts[2] != "v=19" {
		return nil, errors.New("argon2id version must be v=19")
	}
	h := &argon2idHash{}
	seen := map[string]bool{}
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if !ok || err != nil || seen[k] {
			return nil, fmt.Errorf("bad argon2id parameter %q", kv)
		}
		seen[k] = true
		switch k {
		case "m":
			h.m = uint32(n)
		case "t":
			h.t = uint32(n)
		case "p":
			if n > 255 {
				return nil, errors.New("argon2id p above 255")
			}
			h.p = uint8(n)
		default:
			return nil, fmt.Errorf("unsupported argon2id parameter %q", k)
		}
	}
	switch {
	case len(seen) != 3:
		return nil, errors.New("argon2id needs m, t and p")
	case h.p == 0 || h.t == 0 || h.m < 8*uint32(h.p):
		return nil, errors.New("argon2id parameters too small")
	case h.m > maxArgonMemory || h.t > maxArgonTime:
		return nil, fmt.Errorf("argon2id m above %d or t above %d", maxArgonMemory, maxArgonTime)
	}
	var err error
	if h.salt, err = decodeB64(parts[4]); err != nil || len(h.salt) < 8 || len(h.salt) > 64 {
		return nil, errors.New("argon2id salt must be 8 to 64 bytes of base64")
	}
	if h.sum, err = decodeB64(parts[5]); err != nil || len(h.sum) < 16 || len(h.sum) > 256 {
		return nil, errors.New("argon2id hash must be 16 to 256 bytes of base64")
	}
	return h, nil
}

// decodeB64 takes PHC's unpadded base64 and, leniently, padded base64.
func decodeB64(s string) ([]byte, error) {
	return base64.RawStdEncoding.Strict().DecodeString(strings.TrimRight(s, "="))
}

func (h *argon2idHash) verify(pass []byte) bool {
	sum := argon2.IDKey(pass, h.salt, h.t, h.m, h.p, uint32(len(h.sum)))
	return subtle.ConstantTimeCompare(sum, h.sum) == 1
}

func (h *argon2idHash) cost() string {
	return fmt.Sprintf("argon2id m=%d,t=%d,p=%d,len=%d", h.m, h.t, h.p, len(h.sum))
}

// plainHash is {PLAIN}: the password itself, for tests and examples only.
// Comparing digests keeps the comparison from ending early on a length
// mismatch.
type plainHash string

func (h plainHash) verify(pass []byte) bool {
	a, b := sha256.Sum256([]byte(h)), sha256.Sum256(pass)
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}
func (h plainHash) cost() string { return "plain" }

// dummyHash stands in for unknown users when the file has no hash to copy
// the cost from. Its sum is all zero bits, which no password will produce;
// the result is thrown away in any case.
var dummyHash verifier = &shaCrypt{
	c:       sha512_crypt.New(),
	setting: "$6$larkpostdummy",
	hash:    "$6$larkpostdummy$" + strings.Repeat(".", 86),
	prefix:  "$6$",
	rounds:  5000,
}
