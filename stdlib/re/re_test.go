package re

import (
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
