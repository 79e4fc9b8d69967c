package bounce

import (
	"testing"

	"github.com/larkpost/larkpost/queue"
)

func TestNotifying(t *testing.T) {
	rec := &queue.Record{Rcpts: []queue.Rcpt{
		{Addr: "a@x"}, // no NOTIFY: failures and delays only
		{Addr: "b@x", Notify: []string{"SUCCESS"}}, // successes only
		{Addr: "c@x", Notify: []string{"NEVER"}},   // nothing
		{Addr: "d@x", Notify: []string{"failure", "DELAY"}},
	}}
	all := []int{0, 1, 2, 3}
	tests := []struct {
		kind      string
		byDefault bool
		want      []int
	}{
		{"FAILURE", true, []int{0, 3}},
		{"DELAY", true, []int{0, 3}},
		{"SUCCESS", false, []int{1}},
	}
	for _, tt := range tests {
		got := notifying(rec, all, tt.kind, tt.byDefault)
		if len(got) != len(tt.want) {
			t.Errorf("%s: got %v, want %v", tt.kind, got, tt.want)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("%s: got %v, want %v", tt.kind, got, tt.want)
			}
		}
	}
}
