package re

import (
	"errors"
	"strings"
	"testing"

	"go.starlark.net/starlark"
	"go.starlark.net/syntax"
)

func TestModule(t *testing.T) {
	tests := []struct{ expr, want string }{
		{`re.search("(?i)viagra", "Cheap VIAGRA now")`, `["VIAGRA"]`},
		{`re.search("b(o+)b", "a boob b")`, `["boob", "oo"]`},
		{`re.search("x", "abc")`, `None`},
		{`re.match("abc", "xabc")`, `None`},
		{`re.match("a|x", "xabc")`, `["x"]`},
		{`re.findall("[0-9]+", "a1b22c333")`, `["1", "22", "333"]`},
		{`re.findall("<(.*?)>", "<a@b>, <c@d>")`, `["a@b", "c@d"]`},
		{`re.sub("(\\w+)@", "${1}+x@", "bob@example.com")`, `"bob+x@example.com"`},
		{`re.split(",\\s*", "a, b,c")`, `["a", "b", "c"]`},
	}
	pre := starlark.StringDict{"re": Module()}
	for _, tt := range tests {
		v, err := starlark.EvalOptions(&syntax.FileOptions{}, &starlark.Thread{}, "t", tt.expr, pre)
		if err != nil {
			t.Errorf("%s: %v", tt.expr, err)
			continue
		}
		if v.String() != tt.want {
			t.Errorf("%s = %s, want %s", tt.expr, v, tt.want)
		}
	}
	if _, err := starlark.EvalOptions(&syntax.FileOptions{}, &starlark.Thread{}, "t", `re.search("(a", "a")`, pre); err == nil {
		t.Error("bad pattern accepted")
	}
}

// testBudget is a Budget of max bytes.
type testBudget struct{ max, used int64 }

func (b *testBudget) Remaining() int64 { return b.max - b.used }
func (b *testBudget) Charge(n int64) error {
	if n > b.max-b.used {
		return errors.New("over budget")
	}
	b.used += n
	return nil
}

func TestBudget(t *testing.T) {
	pre := starlark.StringDict{"re": Module()}
	tests := []struct {
		expr, want string // want: the result, or "error"
		max        int64
	}{
		{`re.sub("x", "y" * 1000000, "x" * 3000)`, "error", 64 << 20},
		{`re.sub("(x+)", "$1$1$1$1", "x" * 1000000)`, "error", 2 << 20},
		{`len(re.sub("(x+)", "$1$1$1$1", "x" * 1000000))`, "4000000", 64 << 20},
		{`len(re.sub("\\s+", " ", "a  " * 100000))`, "200000", 64 << 20},
		{`len(re.split("", "x" * 1000000))`, "error", 32 << 20},
		{`len(re.split("\n", "line\n" * 20000))`, "20001", 32 << 20},
		{`len(re.findall("x", "x" * 1000000))`, "10000", 32 << 20},
		{`len(re.findall("(x)(y)", "xy" * 500000))`, "error", 1 << 20},
		{`len(re.findall("(x)(y)", "xy" * 500000))`, "10000", 2 << 20},
		{`re.search("\\pL" * 10000, "a")`, "error", 64 << 20},
		{`re.sub("(\\w+)@", "${1}+x@", "bob@example.com")`, `"bob+x@example.com"`, 1 << 20},
	}
	for _, tt := range tests {
		b := &testBudget{max: tt.max}
		th := &starlark.Thread{}
		th.SetLocal(BudgetKey, Budget(b))
		v, err := starlark.EvalOptions(&syntax.FileOptions{}, th, "t", tt.expr, pre)
		switch {
		case tt.want == "error":
			if err == nil || !strings.Contains(err.Error(), "over budget") {
				t.Errorf("%s: got %v, %v; want the budget error", tt.expr, v, err)
			}
		case err != nil:
			t.Errorf("%s: %v", tt.expr, err)
		case v.String() != tt.want:
			t.Errorf("%s = %s, want %s", tt.expr, v, tt.want)
		case b.used == 0:
			t.Errorf("%s: nothing charged", tt.expr)
		}
		if b.used > b.max {
			t.Errorf("%s: charged %d of %d", tt.expr, b.used, b.max)
		}
	}
	// Without a budget nothing is counted.
	v, err := starlark.EvalOptions(&syntax.FileOptions{}, &starlark.Thread{}, "t", `len(re.sub("x", "yy", "x" * 3000))`, pre)
	if err != nil || v.String() != "6000" {
		t.Errorf("without a budget: %v, %v", v, err)
	}
}
