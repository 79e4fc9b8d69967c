package addr

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarktest"
	"go.starlark.net/syntax"
)

func TestStarlark(t *testing.T) {
	thread := &starlark.Thread{
		Name: t.Name(),
		Load: func(_ *starlark.Thread, module string) (starlark.StringDict, error) {
			if module == "assert.star" {
				return starlarktest.LoadAssertModule()
			}
			return nil, fmt.Errorf("no module %q", module)
		},
	}
	starlarktest.SetReporter(thread, t)
	predeclared := starlark.StringDict{
		"addr":   Module("+-"),
		"sender": NewValue(Address{}, "+-"),
		"rcpt":   NewValue(Address{"Joe+lists-go", "example.com"}, "+-"),
	}
	_, err := starlark.ExecFileOptions(&syntax.FileOptions{}, thread, "testdata/addr_test.star", nil, predeclared)
	if err != nil {
		if evalErr, ok := errors.AsType[*starlark.EvalError](err); ok {
			t.Fatal(evalErr.Backtrace())
		}
		t.Fatal(err)
	}
}

func TestValueAttrNamesSorted(t *testing.T) {
	v := NewValue(Address{"a", "x"}, "+")
	names := v.AttrNames()
	if !slices.IsSorted(names) {
		t.Errorf("AttrNames() = %v, not sorted", names)
	}
	for _, name := range names {
		if got, err := v.Attr(name); got == nil || err != nil {
			t.Errorf("Attr(%q) = %v, %v", name, got, err)
		}
	}
	if got, err := v.Attr("nope"); got != nil || err != nil {
		t.Errorf("Attr(%q) = %v, %v; want nil, nil", "nope", got, err)
	}
}

func TestValueAttr(t *testing.T) {
	none := starlark.None
	tests := []struct {
		a       Address
		delims  string
		attr    string
		want    starlark.Value
		wantStr string
	}{
		{Address{"joe+ext", "example.com"}, "+", "local", starlark.String("joe+ext"), ""},
		{Address{"joe+ext", "example.com"}, "+", "domain", starlark.String("example.com"), ""},
		{Address{"joe+ext", "example.com"}, "+", "user", starlark.String("joe"), ""},
		{Address{"joe+ext", "example.com"}, "+", "extension", starlark.String("ext"), ""},
		{Address{"joe+ext", "example.com"}, "", "user", starlark.String("joe+ext"), ""},
		{Address{"joe+ext", "example.com"}, "", "extension", none, ""},
		{Address{"joe+", "example.com"}, "+", "extension", starlark.String(""), ""},
		{Address{"joe+ext", "example.com"}, "+", "is_null", starlark.False, ""},
		{Address{"a b", "example.com"}, "+", "address", starlark.String(`"a b"@example.com`), `"a b"@example.com`},
		{Address{}, "+", "is_null", starlark.True, ""},
		{Address{}, "+", "address", starlark.String(""), ""},
		{Address{}, "+", "extension", none, ""},
	}
	for _, tt := range tests {
		v := NewValue(tt.a, tt.delims)
		got, err := v.Attr(tt.attr)
		if err != nil {
			t.Fatal(err)
		}
		if got != tt.want {
			t.Errorf("NewValue(%#v, %q).%s = %v, want %v", tt.a, tt.delims, tt.attr, got, tt.want)
		}
		if tt.wantStr != "" && v.String() != tt.wantStr {
			t.Errorf("NewValue(%#v, %q).String() = %v, want %v", tt.a, tt.delims, v.String(), tt.wantStr)
		}
	}
}

func TestValueBasics(t *testing.T) {
	a := Address{"joe", "example.com"}
	v := NewValue(a, "+")
	if v.Address() != a {
		t.Errorf("Address() = %#v, want %#v", v.Address(), a)
	}
	if v.Type() != "address" {
		t.Errorf("Type() = %q", v.Type())
	}
	if !v.Truth() {
		t.Error("Truth() of joe@example.com is false")
	}
	if NewValue(Address{}, "+").Truth() {
		t.Error("Truth() of the null address is true")
	}
	v.Freeze()
}

func TestValueHashConsistentWithEqual(t *testing.T) {
	pairs := [][2]Address{
		{{"Joe", "Example.COM"}, {"joe", "example.com"}},
		{{"JÖRAN", "x"}, {"jöran", "x"}},
		{{"\u212a", "x"}, {"k", "x"}}, // Kelvin sign
		{{"ſ", "x"}, {"S", "x"}},      // long s
		{{"Σ", "x"}, {"ς", "x"}},
		{{}, {}},
	}
	for _, p := range pairs {
		if !p[0].Equal(p[1]) {
			t.Errorf("%#v and %#v are not Equal", p[0], p[1])
			continue
		}
		if h0, h1 := mustHash(t, NewValue(p[0], "")), mustHash(t, NewValue(p[1], "")); h0 != h1 {
			t.Errorf("Equal addresses %#v and %#v hash to %#x and %#x", p[0], p[1], h0, h1)
		}
	}
	distinct := []Address{{"a", "x"}, {"b", "x"}, {"a", "y"}, {"ax", ""}, {"a", "@x"}, {}}
	seen := map[uint32]Address{}
	for _, a := range distinct {
		h := mustHash(t, NewValue(a, ""))
		if b, ok := seen[h]; ok {
			t.Errorf("%#v and %#v share hash %#x", a, b, h)
		}
		seen[h] = a
	}
}

func mustHash(t *testing.T, v starlark.Value) uint32 {
	t.Helper()
	h, err := v.Hash()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestValueCompare(t *testing.T) {
	x := NewValue(Address{"Joe", "example.com"}, "+")
	y := NewValue(Address{"joe", "EXAMPLE.com"}, "+")
	z := NewValue(Address{"jim", "example.com"}, "+")
	tests := []struct {
		op      syntax.Token
		x, y    starlark.Value
		want    bool
		wantErr bool
	}{
		{syntax.EQL, x, y, true, false},
		{syntax.NEQ, x, y, false, false},
		{syntax.EQL, x, z, false, false},
		{syntax.NEQ, x, z, true, false},
		{syntax.EQL, x, starlark.String("joe@example.com"), false, false},
		{syntax.LT, x, z, false, true},
		{syntax.GE, x, z, false, true},
	}
	for _, tt := range tests {
		got, err := starlark.Compare(tt.op, tt.x, tt.y)
		if (err != nil) != tt.wantErr {
			t.Errorf("%v %v %v: error %v, want error %v", tt.x, tt.op, tt.y, err, tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("%v %v %v = %v, want %v", tt.x, tt.op, tt.y, got, tt.want)
		}
	}
}

func TestValueAttrAllocs(t *testing.T) {
	v := NewValue(Address{"joe+ext", "example.com"}, "+")
	for _, name := range v.AttrNames() {
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := v.Attr(name); err != nil {
				t.Fatal(err)
			}
		})
		// At most the box holding the returned string.
		if allocs > 1 {
			t.Errorf("Attr(%q) allocates %v times", name, allocs)
		}
	}
}

func BenchmarkValueAttr(b *testing.B) {
	v := NewValue(Address{"joe+ext", "example.com"}, "+")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Attr("user"); err != nil {
			b.Fatal(err)
		}
	}
}
