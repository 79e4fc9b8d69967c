package deliver

import (
	"strings"
	"testing"
)

func TestStatus(t *testing.T) {
	tests := []struct {
		st                 Status
		ok, temp, perm     bool
		softened, hardened string
	}{
		{Sent("ok"), true, false, false, "2.0.0", "5.4.7"},
		{Temp("4.4.1", "no answer"), false, true, false, "4.4.1", "5.4.1"},
		{Status{Code: 550, Enhanced: "5.1.1", Text: "no such user"}, false, false, true, "4.1.1", "5.1.1"},
		{Status{Text: "an agent forgot the code"}, false, true, false, "", "5.4.7"},
	}
	for _, tt := range tests {
		if tt.st.OK() != tt.ok || tt.st.Temporary() != tt.temp || tt.st.Permanent() != tt.perm {
			t.Errorf("%+v: ok/temp/perm = %v/%v/%v", tt.st, tt.st.OK(), tt.st.Temporary(), tt.st.Permanent())
		}
		if got := tt.st.Soften().Enhanced; got != tt.softened {
			t.Errorf("%+v softened to %s, want %s", tt.st, got, tt.softened)
		}
		if got := tt.st.Harden("expired").Enhanced; tt.temp && got != tt.hardened {
			t.Errorf("%+v hardened to %s, want %s", tt.st, got, tt.hardened)
		}
	}
	s := Status{Code: 550, Enhanced: "5.1.1", Text: "no such user"}.Soften()
	if s.Code != 450 || !strings.HasSuffix(s.Text, "(soft_bounce)") {
		t.Errorf("soft_bounce gives %+v", s)
	}
}

func TestParseKind(t *testing.T) {
	for k := Local; k <= Discard; k++ {
		if got, ok := ParseKind(k.String()); !ok || got != k {
			t.Errorf("ParseKind(%q) = %v, %v", k.String(), got, ok)
		}
	}
	if _, ok := ParseKind("uucp"); ok {
		t.Errorf("uucp parsed")
	}
}

func TestCommand(t *testing.T) {
	tests := []struct {
		name   string
		rt     Route
		sender string
		want   string // "" with bad set: refused
		bad    string
	}{
		{"macros filled once", Route{Argv: []string{"deliver", "-f", "${sender}", "--", "${recipient}"}, Vars: map[string]string{"recipient": "${sender}@x.test"}},
			"ann@x.test", "deliver -f ann@x.test -- ${sender}@x.test", ""},
		{"null sender", Route{Argv: []string{"${sender}"}}, "", "MAILER-DAEMON", ""},
		{"unknown macro kept", Route{Argv: []string{"${nope}"}}, "a@x", "${nope}", ""},
		{"leading dash refused", Route{Argv: []string{"${recipient}"}, Vars: map[string]string{"recipient": "-oProxyCommand=x"}}, "a@x", "", "recipient"},
		{"leading dash allowed", Route{Argv: []string{"${recipient}"}, Vars: map[string]string{"recipient": "-x"}, AllowMinUser: true}, "a@x", "-x", ""},
	}
	for _, tt := range tests {
		argv, bad, ok := tt.rt.Command(tt.sender)
		if tt.bad != "" {
			if ok || bad != tt.bad {
				t.Errorf("%s: got %q, %q, %v; want refused for %s", tt.name, argv, bad, ok, tt.bad)
			}
			continue
		}
		if !ok || strings.Join(argv, " ") != tt.want {
			t.Errorf("%s: got %q (%v), want %q", tt.name, argv, ok, tt.want)
		}
	}
}
