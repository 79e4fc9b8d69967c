package rules

import (
	"strings"
	"testing"
	"time"
)

func TestRateDelay(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, config string
		want         map[string]time.Duration // by transport
		wantErr      string
	}{
		{name: "off by default", config: `config(hostname = "mx.test")`,
			want: map[string]time.Duration{"smtp": 0, "relay": 0, "lmtp": 0, "local": 0, "pipe": 0}},
		{name: "default for every transport", config: `config(default_destination_rate_delay = "2s")`,
			want: map[string]time.Duration{"smtp": 2 * time.Second, "relay": 2 * time.Second, "lmtp": 2 * time.Second, "local": 2 * time.Second, "pipe": 2 * time.Second}},
		{name: "an explicit 0 overrides the default", config: `config(default_destination_rate_delay = "2s", smtp_destination_rate_delay = 0)`,
			want: map[string]time.Duration{"smtp": 0, "relay": 0, "lmtp": 2 * time.Second, "local": 2 * time.Second}},
		{name: "per transport", config: `config(smtp_destination_rate_delay = "1s", lmtp_destination_rate_delay = "250ms", local_destination_rate_delay = 3)`,
			want: map[string]time.Duration{"smtp": time.Second, "lmtp": 250 * time.Millisecond, "local": 3 * time.Second, "pipe": 0}},
		{name: "Postfix's day suffix", config: `config(default_destination_rate_delay = "1d")`,
			want: map[string]time.Duration{"smtp": 24 * time.Hour}},
		{name: "negative", config: `config(smtp_destination_rate_delay = "-1s")`, wantErr: "smtp_destination_rate_delay: bad duration"},
		{name: "not a duration", config: `config(default_destination_rate_delay = True)`, wantErr: "default_destination_rate_delay"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := Load("rate.star", []byte(tt.config))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Load: %v, want an error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for kind, want := range tt.want {
				if got := p.Settings.RateDelay(kind); got != want {
					t.Errorf("RateDelay(%q) = %v, want %v", kind, got, want)
				}
			}
		})
	}
}

// TestRateDelayBinding: a reload changes the delays for the next
// deliveries, without a restart.
func TestRateDelayBinding(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"", "smtp", "lmtp", "local"} {
		if b := SettingBinding(rateDelayName(kind)); b != BindDelivery {
			t.Errorf("%s binds at %q, want %q", rateDelayName(kind), b, BindDelivery)
		}
	}
}
