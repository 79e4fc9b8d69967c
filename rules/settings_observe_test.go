package rules

import (
	"strings"
	"testing"
)

// TestCheckObserve: check warns when the metrics or the web page listen
// beyond loopback, and not otherwise; bad values are errors.
func TestCheckObserve(t *testing.T) {
	tests := []struct {
		config string
		warn   []string // settings warned about
		err    string
	}{
		{`config()`, nil, ""},
		{`config(metrics_listen = "127.0.0.1:9025", web_listen = "[::1]:9026")`, nil, ""},
		{`config(metrics_listen = "localhost:9025")`, nil, ""},
		{`config(metrics_listen = "0.0.0.0:9025")`, []string{"metrics_listen"}, ""},
		{`config(metrics_listen = "10.0.0.5:9025", web_listen = ":9026")`, []string{"metrics_listen", "web_listen"}, ""},
		{`config(metrics_listen = "9025")`, nil, "want HOST:PORT"},
		{`config(log_target = "file")`, nil, `want one of ["stderr" "syslog" "journald"]`},
		{`config(syslog_facility = "mial")`, nil, "want a syslog facility"},
		{`config(syslog_name = "lark post")`, nil, "want a program name"},
	}
	for _, tt := range tests {
		t.Run(tt.config, func(t *testing.T) {
			p, err := Load("t.star", []byte(tt.config))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, w := range p.Warnings {
				if strings.Contains(w.Msg, "beyond loopback") {
					got = append(got, strings.Fields(w.Msg)[0])
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.warn, ",") {
				t.Errorf("warned about %v, want %v", got, tt.warn)
			}
		})
	}
}
