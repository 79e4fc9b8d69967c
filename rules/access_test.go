package rules

import "testing"

func TestAccessAction(t *testing.T) {
	tests := []struct {
		action string
		want   Decision
		err    bool
	}{
		{"OK", Decision{Kind: Accept}, false},
		{"DUNNO", Decision{Kind: Continue}, false},
		{"REJECT", Decision{Kind: Reject, Code: 554, Status: "5.7.1", Text: "Access denied"}, false},
		{"REJECT go away", Decision{Kind: Reject, Code: 554, Status: "5.7.1", Text: "go away"}, false},
		{"REJECT 5.7.26 DMARC policy", Decision{Kind: Reject, Code: 554, Status: "5.7.26", Text: "DMARC policy"}, false},
		{"REJECT 4.7.1 wrong class", Decision{Kind: Reject, Code: 554, Status: "5.7.1", Text: "wrong class"}, false},
		{"DEFER_IF_PERMIT 4.2.0 Greylisted, see http://x/", Decision{Kind: Defer, Code: 450, Status: "4.2.0", Text: "Greylisted, see http://x/"}, false},
		{"DEFER 5.7.1 made temporary", Decision{Kind: Defer, Code: 450, Status: "4.7.1", Text: "made temporary"}, false},
		{"DEFER 4.2 not a status", Decision{Kind: Defer, Code: 450, Status: "4.7.1", Text: "4.2 not a status"}, false},
		{"DEFER 4.2.0000 too long", Decision{Kind: Defer, Code: 450, Status: "4.7.1", Text: "4.2.0000 too long"}, false},
		{"DEFER 3.2.0 bad class", Decision{Kind: Defer, Code: 450, Status: "4.7.1", Text: "3.2.0 bad class"}, false},
		{"550 5.1.1 No such user", Decision{Kind: Reject, Code: 550, Status: "5.1.1", Text: "No such user"}, false},
		{"450 try later", Decision{Kind: Defer, Code: 450, Status: "4.7.1", Text: "try later"}, false},
		{"FROB", Decision{}, true},
	}
	for _, tt := range tests {
		got, err := AccessAction(tt.action)
		if (err != nil) != tt.err {
			t.Errorf("%q: err %v", tt.action, err)
			continue
		}
		if got.Kind != tt.want.Kind || got.Code != tt.want.Code || got.Status != tt.want.Status || got.Text != tt.want.Text {
			t.Errorf("%q = %s %d %s %q, want %s %d %s %q", tt.action, got.Kind, got.Code, got.Status, got.Text, tt.want.Kind, tt.want.Code, tt.want.Status, tt.want.Text)
		}
	}
}
