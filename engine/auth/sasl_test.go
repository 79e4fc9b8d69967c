package auth

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-sasl"
)

var errNo = errors.New("no")

// recorder is a CheckFunc accepting ann/secret and remembering its calls.
type recorder struct {
	calls      int
	user, pass string
}

func (r *recorder) check(user, pass string) error {
	r.calls++
	r.user, r.pass = user, pass
	if user == "ann" && pass == "secret" {
		return nil
	}
	return errNo
}

func TestPlain(t *testing.T) {
	long := strings.Repeat("u", MaxUserLen+1)
	tests := []struct {
		name    string
		resp    string
		wantErr error // nil: accepted
		called  bool
	}{
		{"ok", "\x00ann\x00secret", nil, true},
		{"authzid same as user", "ann\x00ann\x00secret", nil, true},
		{"authzid of another user", "root\x00ann\x00secret", ErrAuthzid, false},
		{"wrong password", "\x00ann\x00guess", errNo, true},
		{"empty user", "\x00\x00secret", ErrMalformed, false},
		{"user too long", "\x00" + long + "\x00secret", ErrMalformed, false},
		{"control character in user", "\x00an\tn\x00secret", ErrMalformed, false},
		{"DEL in user", "\x00ann\x7f\x00secret", ErrMalformed, false},
		{"C1 control in user", "\x00ann\u0085\x00secret", ErrMalformed, false},
		{"user not UTF-8", "\x00ann\xff\x00secret", ErrMalformed, false},
		{"password too long", "\x00ann\x00" + strings.Repeat("p", MaxPassLen+1), ErrMalformed, false},
		{"two fields", "ann\x00secret", nil, false}, // go-sasl's own error
		{"four fields", "\x00ann\x00sec\x00ret", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r recorder
			s := NewPlainServer(r.check)
			ch, done, err := s.Next(nil)
			if err != nil || done || len(ch) != 0 {
				t.Fatalf("Next(nil) = %q, %v, %v; want empty challenge", ch, done, err)
			}
			_, done, err = s.Next([]byte(tt.resp))
			if !done && err == nil {
				t.Errorf("neither done nor an error")
			}
			accept := tt.wantErr == nil && tt.called
			switch {
			case accept && err != nil:
				t.Errorf("err = %v, want accepted", err)
			case !accept && err == nil:
				t.Errorf("accepted, want error")
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if (r.calls > 0) != tt.called {
				t.Errorf("check called %d times, want called=%v", r.calls, tt.called)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q quotes the password", err)
			}
		})
	}
}

// loginRun feeds steps to a LOGIN server and returns the challenges and
// the final error.
func loginRun(t *testing.T, check CheckFunc, steps ...[]byte) (challenges []string, done bool, err error) {
	t.Helper()
	s := NewLoginServer(check)
	for _, st := range steps {
		var ch []byte
		ch, done, err = s.Next(st)
		if err != nil || done {
			return challenges, done, err
		}
		challenges = append(challenges, string(ch))
	}
	return challenges, done, err
}

func TestLogin(t *testing.T) {
	tests := []struct {
		name       string
		steps      [][]byte
		challenges []string
		wantErr    error // nil with done: accepted
		done       bool
	}{
		{"prompts", [][]byte{nil, []byte("ann"), []byte("secret")}, []string{"Username:", "Password:"}, nil, true},
		{"initial response", [][]byte{[]byte("ann"), []byte("secret")}, []string{"Password:"}, nil, true},
		{"empty initial response", [][]byte{{}, []byte("ann"), []byte("secret")}, []string{"Username:", "Password:"}, nil, true},
		{"wrong password", [][]byte{nil, []byte("ann"), []byte("guess")}, []string{"Username:", "Password:"}, errNo, true},
		{"empty user", [][]byte{nil, {}}, []string{"Username:"}, ErrMalformed, true},
		{"newline in user", [][]byte{[]byte("ann\r\nMAIL FROM:<x>")}, nil, ErrMalformed, true},
		{"NUL in password", [][]byte{[]byte("ann"), []byte("sec\x00ret")}, []string{"Password:"}, ErrMalformed, true},
		{"password too long", [][]byte{[]byte("ann"), bytes.Repeat([]byte("p"), MaxPassLen+1)}, []string{"Password:"}, ErrMalformed, true},
		{"longest password", [][]byte{[]byte("bob"), bytes.Repeat([]byte("p"), MaxPassLen)}, []string{"Password:"}, errNo, true},
		{"unfinished", [][]byte{nil, []byte("ann")}, []string{"Username:", "Password:"}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r recorder
			ch, done, err := loginRun(t, r.check, tt.steps...)
			if strings.Join(ch, "|") != strings.Join(tt.challenges, "|") {
				t.Errorf("challenges %q, want %q", ch, tt.challenges)
			}
			if done != tt.done {
				t.Errorf("done = %v, want %v", done, tt.done)
			}
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestLoginAfterDone(t *testing.T) {
	var r recorder
	s := NewLoginServer(r.check)
	for _, st := range []string{"ann", "secret"} {
		if _, _, err := s.Next([]byte(st)); err != nil {
			t.Fatal(err)
		}
	}
	if _, done, err := s.Next([]byte("more")); !done || !errors.Is(err, sasl.ErrUnexpectedClientResponse) {
		t.Errorf("Next after done = %v, %v", done, err)
	}
	if r.calls != 1 {
		t.Errorf("check called %d times", r.calls)
	}
}

// FuzzLogin drives a LOGIN server with arbitrary responses. It must not
// panic, must call check at most once and only with a valid user name, and
// must accept only when check said yes to exactly what the client sent.
func FuzzLogin(f *testing.F) {
	f.Add([]byte("\x00ann\x00secret"), true)
	f.Add([]byte("ann\x00secret"), false)
	f.Add([]byte("ann\x00secret\x00more"), false)
	f.Add([]byte("\x00\x00"), false)
	f.Add([]byte("a\tb\x00c"), false)
	f.Add([]byte("ann\x00sec\x00ret"), true)
	f.Fuzz(func(t *testing.T, in []byte, noInitial bool) {
		// Steps are NUL-separated; noInitial puts go-smtp's nil (no
		// initial response) first.
		var steps [][]byte
		if noInitial {
			steps = append(steps, nil)
		}
		steps = append(steps, bytes.Split(in, []byte{0})...)

		var calls int
		var yes bool
		var gotUser, gotPass string
		s := NewLoginServer(func(user, pass string) error {
			calls++
			gotUser, gotPass = user, pass
			if len(user) == 0 || len(user) > MaxUserLen || !utf8.ValidString(user) || strings.ContainsFunc(user, unicode.IsControl) {
				t.Errorf("check got bad user %q", user)
			}
			if len(pass) > MaxPassLen {
				t.Errorf("check got %d-byte password", len(pass))
			}
			yes = len(pass)%2 == 0
			if yes {
				return nil
			}
			return errNo
		})
		var accepted bool
		finished := false
		for i, st := range steps {
			ch, done, err := s.Next(st)
			if finished && err == nil {
				t.Fatalf("step %d: Next after done gave no error", i)
			}
			if err == nil && done {
				accepted = true
			}
			if err == nil && !done && string(ch) != "Username:" && string(ch) != "Password:" {
				t.Fatalf("step %d: challenge %q", i, ch)
			}
			if done || err != nil {
				finished = true
			}
		}
		if calls > 1 {
			t.Fatalf("check called %d times", calls)
		}
		if accepted && !(calls == 1 && yes) {
			t.Fatalf("accepted without check saying yes (calls=%d)", calls)
		}
		if calls == 1 {
			// check must see what was sent, unaltered: the user from
			// the first non-empty step, the password from the next.
			var vals []string
			for _, st := range steps {
				if len(vals) == 0 && len(st) == 0 {
					continue
				}
				vals = append(vals, string(st))
			}
			if len(vals) < 2 || vals[0] != gotUser || vals[1] != gotPass {
				t.Fatalf("check got %q/%q from steps %q", gotUser, gotPass, steps)
			}
		}
	})
}

// FuzzPlain does the same for PLAIN, whose parsing go-sasl does.
func FuzzPlain(f *testing.F) {
	f.Add([]byte("\x00ann\x00secret"))
	f.Add([]byte("ann\x00ann\x00secret"))
	f.Add([]byte("x\x00ann\x00secret"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var calls int
		s := NewPlainServer(func(user, pass string) error {
			calls++
			parts := strings.Split(string(in), "\x00")
			if len(parts) != 3 || parts[1] != user || parts[2] != pass || (parts[0] != "" && parts[0] != user) {
				t.Fatalf("check(%q, %q) from %q", user, pass, in)
			}
			return nil
		})
		_, done, err := s.Next(in)
		if err == nil && done && calls != 1 {
			t.Fatalf("accepted with %d checks", calls)
		}
	})
}
