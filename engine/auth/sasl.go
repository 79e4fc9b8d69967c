package auth

import (
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-sasl"
)

// Mechanism names, as the client gives them after AUTH.
const (
	Plain = "PLAIN"
	Login = "LOGIN"
)

// Bounds on what a client may send. A user name longer than an address
// (RFC 5321 allows 64+1+255) is not a user name; 1024 bytes of password is
// more than any password manager produces and keeps a hash of it cheap.
const (
	MaxUserLen = 256
	MaxPassLen = 1024
)

// CheckFunc decides whether user and pass are valid credentials. It is the
// one place where a mechanism hands over what the client sent.
type CheckFunc func(user, pass string) error

// Errors of the mechanisms themselves. They never quote what the client
// sent: go-smtp copies an error's text into its reply.
var (
	// ErrMalformed means the client's response could not be read as
	// credentials: wrong shape, too long, or a user name with control
	// characters.
	ErrMalformed = errors.New("auth: malformed credentials")
	// ErrAuthzid means PLAIN asked to act as someone other than the
	// authenticated user, which is not offered.
	ErrAuthzid = errors.New("auth: authorization identity not permitted")
)

// checkUser refuses user names that cannot be an account and would be
// dangerous to log or to hand to another protocol (Dovecot's lines are
// tab-separated; a NUL ends a PLAIN field).
func checkUser(user string) error {
	if user == "" {
		return fmt.Errorf("%w: empty user name", ErrMalformed)
	}
	if len(user) > MaxUserLen {
		return fmt.Errorf("%w: user name longer than %d bytes", ErrMalformed, MaxUserLen)
	}
	if !utf8.ValidString(user) {
		return fmt.Errorf("%w: user name is not UTF-8", ErrMalformed)
	}
	for _, r := range user {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: control character in user name", ErrMalformed)
		}
	}
	return nil
}

// checkPass bounds the password. A NUL is refused because PLAIN cannot carry
// it, so a password with one could be used over LOGIN only and would break
// when relayed to Dovecot as PLAIN.
func checkPass(pass []byte) error {
	if len(pass) > MaxPassLen {
		return fmt.Errorf("%w: password longer than %d bytes", ErrMalformed, MaxPassLen)
	}
	for _, c := range pass {
		if c == 0 {
			return fmt.Errorf("%w: NUL in password", ErrMalformed)
		}
	}
	return nil
}

// NewPlainServer returns a PLAIN (RFC 4616) server calling check with the
// authentication identity. go-sasl parses the message; this adds the
// checks go-sasl leaves to its caller.
func NewPlainServer(check CheckFunc) sasl.Server {
	return sasl.NewPlainServer(func(authzid, user, pass string) error {
		if err := checkUser(user); err != nil {
			return err
		}
		if err := checkPass([]byte(pass)); err != nil {
			return err
		}
		// An empty authzid means "the same as user"; anything else
		// would be a proxy login, which nothing here can authorize.
		if authzid != "" && authzid != user {
			return ErrAuthzid
		}
		return check(user, pass)
	})
}

// loginServer is the LOGIN mechanism (draft-murchison-sasl-login): two
// prompts, each answered with one value. go-sasl has a client only.
type loginServer struct {
	check CheckFunc
	state int
	user  string
}

const (
	loginStart = iota
	loginWantUser
	loginWantPass
	loginDone
)

// NewLoginServer returns a LOGIN server. An initial response (AUTH LOGIN
// <base64 user>) is taken as the user name, as Postfix and Dovecot do.
func NewLoginServer(check CheckFunc) sasl.Server {
	return &loginServer{check: check}
}

func (s *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch s.state {
	case loginStart:
		// go-smtp gives nil without an initial response and an empty
		// slice for "=". Neither names a user, so both get the prompt.
		if len(response) == 0 {
			s.state = loginWantUser
			return []byte("Username:"), false, nil
		}
		return s.takeUser(response)
	case loginWantUser:
		return s.takeUser(response)
	case loginWantPass:
		s.state = loginDone
		if err := checkPass(response); err != nil {
			return nil, true, err
		}
		return nil, true, s.check(s.user, string(response))
	default:
		return nil, true, sasl.ErrUnexpectedClientResponse
	}
}

func (s *loginServer) takeUser(response []byte) ([]byte, bool, error) {
	user := string(response)
	if err := checkUser(user); err != nil {
		s.state = loginDone
		return nil, true, err
	}
	s.user = user
	s.state = loginWantPass
	return []byte("Password:"), false, nil
}
