package maps

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarktest"
	"go.starlark.net/syntax"

	"github.com/larkpost/larkpost/stdlib/addr"
)

func TestStarlarkModule(t *testing.T) {
	t.Parallel()
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
	var l logRec
	m := Module("testdata", "+", isLocalTest, l.logf)
	predeclared := starlark.StringDict{
		"maps":   m,
		"sender": addr.NewValue(addr.Address{}, "+"),
		"rcpt":   addr.NewValue(addr.Address{Local: "someone+tag", Domain: "spammers.com"}, "+"),
	}
	_, err := starlark.ExecFileOptions(&syntax.FileOptions{}, thread, "testdata/maps_test.star", nil, predeclared)
	if err != nil {
		if evalErr, ok := errors.AsType[*starlark.EvalError](err); ok {
			t.Fatal(evalErr.Backtrace())
		}
		t.Fatal(err)
	}
	// Opening virtual logged its duplicate-key warning.
	if logs := l.take(); !slices.Contains(logs, `virtual:20: warning: duplicate entry "DUP@example.com" (also on line 19); the later entry wins`) {
		t.Errorf("logf got %q, want the warning for virtual", logs)
	}
}

func TestModuleMembersExtensible(t *testing.T) {
	t.Parallel()
	m := Module(".", "", nil, nil)
	m.Members["aliases"] = starlark.None
	if _, ok := m.Members["aliases"]; !ok || m.Name != "maps" {
		t.Error("Module's Members cannot be extended")
	}
}

func TestTableValueAttrNamesSorted(t *testing.T) {
	t.Parallel()
	v := NewTableValue(FromMap("x", nil), AddrOptions{})
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
		t.Errorf("Attr(nope) = %v, %v; want nil, nil", got, err)
	}
	if v.Table().Name() != "x" {
		t.Error("Table() is not the table")
	}
	if h1, _ := v.Hash(); h1 == 0 {
		t.Error("Hash() is 0")
	}
	if h1, _ := v.Hash(); func() uint32 { h2, _ := NewTableValue(v.Table(), AddrOptions{}).Hash(); return h2 }() == h1 {
		t.Error("two table values hash alike")
	}
}

func TestInlineNameBounded(t *testing.T) {
	t.Parallel()
	m := map[string]string{}
	for i := range 100 {
		m[fmt.Sprintf("key%03d", i)] = "value"
	}
	name := inlineName(m)
	if len(name) > maxInlineName+40 || !strings.HasPrefix(name, "inline:{key000=value, ") || !strings.HasSuffix(name, " more}") {
		t.Errorf("inlineName of 100 entries = %q", name)
	}
}
