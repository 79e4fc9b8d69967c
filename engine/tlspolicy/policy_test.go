package tlspolicy_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/larkpost/larkpost/engine/tlspolicy"
)

func TestParsePolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    *tlspolicy.Policy
		wantErr string
	}{
		{
			name: "rfc example",
			in:   "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmx: backupmx.example.com\nmax_age: 604800\n",
			want: &tlspolicy.Policy{Mode: tlspolicy.ModeEnforce, MX: []string{"mail.example.com", "*.example.net", "backupmx.example.com"}, MaxAge: 604800 * time.Second},
		},
		{
			name: "crlf, spaces, case and trailing dot in mx, unknown field",
			in:   "version: STSv1\r\nmode:testing\r\nmx:  MX.Example.COM. \r\nmax_age: 86400\r\nreport_uri: x\r\n",
			want: &tlspolicy.Policy{Mode: tlspolicy.ModeTesting, MX: []string{"mx.example.com"}, MaxAge: 86400 * time.Second},
		},
		{
			name: "mode none needs no mx",
			in:   "version: STSv1\nmode: none\nmax_age: 0",
			want: &tlspolicy.Policy{Mode: tlspolicy.ModeNone},
		},
		{
			name: "first of a repeated field counts",
			in:   "version: STSv1\nmode: testing\nmode: enforce\nmx: a.example\nmax_age: 10\nmax_age: 99999999999",
			want: &tlspolicy.Policy{Mode: tlspolicy.ModeTesting, MX: []string{"a.example"}, MaxAge: 10 * time.Second},
		},
		{
			name: "largest max_age",
			in:   "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557600",
			want: &tlspolicy.Policy{Mode: tlspolicy.ModeEnforce, MX: []string{"a.example"}, MaxAge: tlspolicy.MaxMaxAge},
		},
		{name: "max_age too large", in: "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601", wantErr: "max_age"},
		{name: "max_age negative", in: "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1", wantErr: "max_age"},
		{name: "max_age missing", in: "version: STSv1\nmode: enforce\nmx: a.example", wantErr: "required"},
		{name: "wrong version", in: "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1", wantErr: "version"},
		{name: "unknown mode", in: "version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 1", wantErr: "mode"},
		{name: "enforce without mx", in: "version: STSv1\nmode: enforce\nmax_age: 1", wantErr: "no mx"},
		{name: "wildcard in the middle", in: "version: STSv1\nmode: enforce\nmx: a.*.example\nmax_age: 1", wantErr: "invalid mx"},
		{name: "bare wildcard", in: "version: STSv1\nmode: enforce\nmx: *\nmax_age: 1", wantErr: "invalid mx"},
		{name: "html page", in: "<html>\n<body>not found</body>\n</html>", wantErr: "not a key"},
		{name: "empty", in: "", wantErr: "required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tlspolicy.ParsePolicy([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParsePolicy error = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParsePolicy = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseRecord(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, id, wantErr string
	}{
		{in: "v=STSv1; id=20160831085700Z;", id: "20160831085700Z"},
		{in: "v=STSv1;id=abc", id: "abc"},
		{in: "v=STSv1 ; ext=1; id=x1 ;", id: "x1"},
		{in: "v=STSv1; id=a; id=b", id: "a"},
		{in: "v=STSv1;", wantErr: "no id"},
		{in: "v=STSv2; id=1", wantErr: "v=STSv1"},
		{in: "id=1; v=STSv1", wantErr: "v=STSv1"},
		{in: "v=STSv1; id=has-dash", wantErr: "invalid id"},
		{in: "v=STSv1; id=" + strings.Repeat("a", 33), wantErr: "invalid id"},
		{in: "v=STSv1; junk", wantErr: "malformed"},
	}
	for _, tt := range tests {
		id, err := tlspolicy.ParseRecord(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseRecord(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || id != tt.id {
			t.Errorf("ParseRecord(%q) = %q, %v, want %q", tt.in, id, err, tt.id)
		}
	}
}

func TestMatchMX(t *testing.T) {
	t.Parallel()
	p := &tlspolicy.Policy{Mode: tlspolicy.ModeEnforce, MX: []string{"mail.example.com", "*.example.net"}}
	tests := []struct {
		host string
		want bool
	}{
		{"mail.example.com", true},
		{"MAIL.Example.Com.", true},
		{"mx.mail.example.com", false},
		{"example.com", false},
		{"mx1.example.net", true},
		{"example.net", false},
		{"a.b.example.net", false},
		{".example.net", false},
		{"mx1.example.net.evil", false},
	}
	for _, tt := range tests {
		if got := p.MatchMX(tt.host); got != tt.want {
			t.Errorf("MatchMX(%q) = %v, want %v", tt.host, got, tt.want)
		}
	}
}

func TestPolicyVerdicts(t *testing.T) {
	t.Parallel()
	enforce := &tlspolicy.Policy{Mode: tlspolicy.ModeEnforce, MX: []string{"mx.example.com"}}
	testing_ := &tlspolicy.Policy{Mode: tlspolicy.ModeTesting, MX: []string{"mx.example.com"}}
	certErr := errBadCert{}
	tests := []struct {
		name    string
		v       tlspolicy.Verdict
		deliver bool
		report  string
	}{
		{"enforce, listed", enforce.CheckMX("example.com", "mx.example.com"), true, ""},
		{"enforce, not listed", enforce.CheckMX("example.com", "mx.evil.example"), false, "mx host mx.evil.example is not listed in the enforce policy of example.com"},
		{"testing, not listed", testing_.CheckMX("example.com", "mx.evil.example"), true, "not listed in the testing policy"},
		{"enforce, verified", enforce.CheckTLS("example.com", "mx.example.com", nil), true, ""},
		{"enforce, bad certificate", enforce.CheckTLS("example.com", "mx.example.com", certErr), false, "requires verified TLS with mx.example.com: bad certificate"},
		{"testing, bad certificate", testing_.CheckTLS("example.com", "mx.example.com", certErr), true, "bad certificate"},
		{"no policy", (*tlspolicy.Policy)(nil).CheckMX("example.com", "x.example"), true, ""},
	}
	for _, tt := range tests {
		if tt.v.Deliver != tt.deliver || !strings.Contains(tt.v.Report, tt.report) || (tt.report == "") != (tt.v.Report == "") {
			t.Errorf("%s: verdict %+v, want deliver=%v report containing %q", tt.name, tt.v, tt.deliver, tt.report)
		}
	}
}

type errBadCert struct{}

func (errBadCert) Error() string { return "bad certificate" }

// FuzzParsePolicy checks that the parser never panics, that what it
// accepts is within the RFC's limits, and that String round-trips.
func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{
		"version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmax_age: 604800\n",
		"version: STSv1\r\nmode: testing\r\nmx: a.example\r\nmax_age: 0\r\n",
		"version: STSv1\nmode: none\nmax_age: 31557600",
		"version:STSv1\nmode:enforce\nmx:*.a.b\nmax_age:1\nx-ext: ::::\n",
		"mode: enforce\n\n\nmx:\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := tlspolicy.ParsePolicy(b)
		if err != nil {
			return
		}
		switch p.Mode {
		case tlspolicy.ModeEnforce, tlspolicy.ModeTesting:
			if len(p.MX) == 0 {
				t.Fatalf("mode %s accepted without mx", p.Mode)
			}
		case tlspolicy.ModeNone:
		default:
			t.Fatalf("mode %q accepted", p.Mode)
		}
		if p.MaxAge < 0 || p.MaxAge > tlspolicy.MaxMaxAge || p.MaxAge%time.Second != 0 {
			t.Fatalf("max_age %v accepted", p.MaxAge)
		}
		for _, mx := range p.MX {
			if mx != strings.ToLower(mx) || strings.Count(mx, "*") > 1 || strings.Contains(mx[1:], "*") {
				t.Fatalf("mx pattern %q accepted", mx)
			}
			if !strings.HasPrefix(mx, "*.") && !p.MatchMX(mx) {
				t.Fatalf("MatchMX(%q) = false for its own pattern", mx)
			}
		}
		q, err := tlspolicy.ParsePolicy([]byte(p.String()))
		if err != nil {
			t.Fatalf("String() = %q does not parse: %v", p.String(), err)
		}
		if q.Mode != p.Mode || q.MaxAge != p.MaxAge || !slices.Equal(q.MX, p.MX) {
			t.Fatalf("round trip: %+v became %+v", p, q)
		}
	})
}
