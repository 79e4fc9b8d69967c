package rules

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.starlark.net/starlark"

	"github.com/larkpost/larkpost/stdlib/addr"
	"github.com/larkpost/larkpost/stdlib/re"
)

// memoryAttacks are scripts that, unguarded, take gigabytes or kill the
// process. body is a function body; the line marked "# here" is where it
// must fail, with an error containing want.
var memoryAttacks = []struct {
	name, body, want string
}{
	{"list(range)", `
x = list(range(100000000))  # here`, "memory budget exceeded"},
	{"join of a repeated list", `
x = ",".join(["x" * 1000] * 1000000)  # here`, "memory budget exceeded"},
	{"list repeat", `
x = [0] * 1000000000  # here`, "memory budget exceeded"},
	{"string doubling", `
s = "x" * 1000
for i in range(40):
    s = s + s  # here`, "memory budget exceeded"},
	{"int squaring", `
n = 3
for i in range(40):
    n = n * n  # here`, "int too large"},
	{"body repeat", `
x = [msg.body] * 1000000000  # here`, "memory budget exceeded"},
	{"re.sub amplification", `
x = re.sub("x", "y" * 1000000, "x" * 3000)  # here`, "memory budget exceeded"},
	{"str of a shared string", `
s = "x" * 1000000
l = [s] * 100000
x = str(l)  # here`, "memory budget exceeded"},
	{"percent of a shared string", `
s = "x" * 1000000
x = "%s" % ([s] * 100000,)  # here`, "memory budget exceeded"},
	{"list += itself", `
l = [0] * 1000
for i in range(40):
    l += l  # here`, "memory budget exceeded"},
	{"getattr join", `
j = getattr(",", "join")
x = j(["x" * 1000] * 1000000)  # here`, "memory budget exceeded"},
	{"format of a shared string", `
s = "x" * 1000000
x = "{}".format([s] * 100000)  # here`, "memory budget exceeded"},
	{"replace amplification", `
x = ("x" * 3000).replace("x", "y" * 1000000)  # here`, "memory budget exceeded"},
	{"split of a big string", `
s = " x" * 10000000
x = s.split()  # here`, "memory budget exceeded"},
	{"complex += target", `
d = {"k": [0] * 1000}
def key():
    return "k"
for i in range(40):
    d[key()] += d["k"]  # here`, "memory budget exceeded"},
}

// attackLine is the line of "# here" in a script whose body starts at
// line first.
func attackLine(body string, first int) int {
	for i, l := range strings.Split(strings.TrimPrefix(body, "\n"), "\n") {
		if strings.Contains(l, "# here") {
			return first + i
		}
	}
	return 0
}

func indent(body string) string {
	return strings.ReplaceAll(strings.TrimPrefix(body, "\n"), "\n", "\n    ")
}

// peakRSS reads VmHWM, the process's peak resident set, in bytes, after
// resetting it to the current RSS when reset is set.
func peakRSS(t *testing.T, reset bool) int64 {
	if reset {
		runtime.GC()
		debug.FreeOSMemory()
		if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
			t.Logf("cannot reset VmHWM: %v", err)
		}
	}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Skip("no VmHWM")
	return 0
}

// maxGrowth is how much the process's peak memory may grow during one
// attack.
const maxGrowth = 300 << 20

func TestMemoryBudgetHook(t *testing.T) {
	body := strings.Repeat("b", 1<<20)
	for _, tt := range memoryAttacks {
		t.Run(tt.name, func(t *testing.T) {
			src := "def on_data(tx, msg):\n    " + indent(tt.body) + "\n    return reject(\"not reached\")\n"
			p := mustLoad(t, src)
			line := attackLine(tt.body, 2)
			before := peakRSS(t, true)
			start := time.Now()
			d := p.Data(context.Background(), &Tx{Conn: &Conn{}}, &Message{Body: []byte(body), Size: int64(len(body))})
			elapsed := time.Since(start)
			growth := peakRSS(t, false) - before
			t.Logf("%s: %v in %v, peak memory +%d MB", tt.name, d.Err, elapsed.Round(time.Millisecond), growth>>20)
			if !d.Failed() || d.Code != 451 || d.Status != "4.3.5" || d.Kind != Defer {
				t.Fatalf("got %v (err %v), want a 451 4.3.5 hook failure", d, d.Err)
			}
			if want := fmt.Sprintf("p.star:%d", line); d.Source != want {
				t.Errorf("failure at %s, want %s (%v)", d.Source, want, d.Err)
			}
			if !strings.Contains(d.Err.Error(), tt.want) {
				t.Errorf("error %q, want %q", d.Err, tt.want)
			}
			if tt.want == "memory budget exceeded" && !strings.Contains(d.Err.Error(), "64MB per hook call (hook_max_memory)") {
				t.Errorf("error %q does not name the budget", d.Err)
			}
			if elapsed > 5*time.Second {
				t.Errorf("took %v", elapsed)
			}
			if growth > maxGrowth {
				t.Errorf("peak memory grew by %d MB", growth>>20)
			}
		})
	}
}

func TestMemoryBudgetFilter(t *testing.T) {
	dir := t.TempDir()
	p := mustLoad(t, fmt.Sprintf("config(hostname = \"mx.example.com\", filter_path = %q)\n", filepath.Join(dir, "{user}.star")))
	raw := "Subject: x\r\n\r\n" + strings.Repeat("b", 1<<20)
	for i, tt := range memoryAttacks {
		t.Run(tt.name, func(t *testing.T) {
			user := fmt.Sprintf("user%d", i)
			src := "def file(msg):\n    " + indent(tt.body) + "\n    return \"Junk\"\n"
			os.WriteFile(filepath.Join(dir, user+".star"), []byte(src), 0o600)
			line := attackLine(tt.body, 2)
			before := peakRSS(t, true)
			start := time.Now()
			f := fileFor(t, p, user, raw)
			elapsed := time.Since(start)
			growth := peakRSS(t, false) - before
			t.Logf("%s: %v in %v, peak memory +%d MB", tt.name, f.Err, elapsed.Round(time.Millisecond), growth>>20)
			if f.Err == nil || f.Folder != "" || f.Forward != "" || f.Discard {
				t.Fatalf("got %+v, want the INBOX with an error", f)
			}
			if want := fmt.Sprintf("%s.star:%d:", user, line); !strings.Contains(f.Err.Error(), want) {
				t.Errorf("error %q, want it at %s", f.Err, want)
			}
			if !strings.Contains(f.Err.Error(), tt.want) {
				t.Errorf("error %q, want %q", f.Err, tt.want)
			}
			if tt.want == "memory budget exceeded" && !strings.Contains(f.Err.Error(), "32MB per filter run (filter_max_memory)") {
				t.Errorf("error %q does not name the budget", f.Err)
			}
			if elapsed > 5*time.Second {
				t.Errorf("took %v", elapsed)
			}
			if growth > maxGrowth {
				t.Errorf("peak memory grew by %d MB", growth>>20)
			}
		})
	}
}

// A bomb at a config's top level fails check at its line and column.
func TestMemoryBudgetLoad(t *testing.T) {
	for _, tt := range []struct{ src, want string }{
		{"x = [0] * 1000000000\n", "p.star:1:9: memory budget exceeded: 256MB while loading the config"},
		{"s = \"x\" * 1000\nfor i in range(40):\n    s = s + s\n", "p.star:3:11: memory budget exceeded: 256MB while loading the config"},
		{"_lp_add = 1\n", "p.star:1:1: _lp_add: names starting with _lp_ are reserved"},
		{"def f(x):\n    return x._lp_y\nd = {}\nd.update(_lp_z = 1)\n", "p.star:4:10: _lp_z: names starting with _lp_ are reserved"},
	} {
		_, err := Load("p.star", []byte(tt.src))
		if err == nil || err.Error() != tt.want {
			t.Errorf("%q: got %v, want %s", tt.src, err, tt.want)
		}
	}
}

// A user's filter may not use the guards' names either.
func TestReservedNamesInFilter(t *testing.T) {
	dir := t.TempDir()
	p := mustLoad(t, fmt.Sprintf("config(filter_path = %q)\n", filepath.Join(dir, "{user}.star")))
	os.WriteFile(filepath.Join(dir, "eve.star"), []byte("def file(msg):\n    _lp_add = None\n    return \"x\" + \"y\"\n"), 0o600)
	f := fileFor(t, p, "eve", "Subject: x\r\n\r\n")
	if f.Err == nil || !strings.Contains(f.Err.Error(), "eve.star:2:5: _lp_add: names starting with _lp_ are reserved") || f.Folder != "" {
		t.Errorf("got %+v (%v)", f, f.Err)
	}
}

func TestMemorySettings(t *testing.T) {
	p := mustLoad(t, "config(hook_max_memory = \"1MB\", filter_max_memory = 2097152)\n"+
		"def on_mail(tx, sender):\n    x = \"x\" * 600000\n    y = x + x\n    return accept()\n")
	if p.Settings.HookMaxMemory != 1<<20 || p.Settings.FilterMaxMemory != 2<<20 {
		t.Errorf("settings %d, %d", p.Settings.HookMaxMemory, p.Settings.FilterMaxMemory)
	}
	d := p.Mail(context.Background(), &Tx{Conn: &Conn{}}, addrFor(t, "a@b.example"))
	if !d.Failed() || d.Source != "p.star:4" || d.Err.Error() != "memory budget exceeded: 1MB per hook call (hook_max_memory)" {
		t.Errorf("got %v from %s (%v)", d, d.Source, d.Err)
	}
	if d := DefaultSettings(); d.HookMaxMemory != 64<<20 || d.FilterMaxMemory != 32<<20 {
		t.Errorf("defaults %d, %d", d.HookMaxMemory, d.FilterMaxMemory)
	}
	_, err := Load("p.star", []byte("config(hook_max_memory = \"100KB\")\n"))
	if err == nil || !strings.Contains(err.Error(), "hook_max_memory: must be at least 1MB") {
		t.Errorf("100KB budget: %v", err)
	}
	// Each call has its own budget: the same hook passes again and again.
	p = mustLoad(t, "config(hook_max_memory = \"1MB\")\ndef on_mail(tx, sender):\n    x = \"x\" * 600000\n    return accept()\n")
	for i := 0; i < 3; i++ {
		if d := p.Mail(context.Background(), &Tx{Conn: &Conn{}}, addrFor(t, "a@b.example")); d.Failed() {
			t.Fatalf("call %d: %v", i, d.Err)
		}
	}
}

// guardedCases run the same as before the guards: same result, or the
// same error at the same position.
var guardedCases = []string{
	`result = "a" + "b" + "c"`,
	`x = "ab"
result = x + "c" + x + str(1 + 2) + str(2 * 3.5)`,
	`result = "%s@%s" % ("ann", "example.org")`,
	`result = "%(a)s-%(a)r" % {"a": "x"}`,
	`result = "%d %x %o %c %r %s %%" % (42, 255, 8, 65, [1, "a\n"], None)`,
	`result = [1, 2] + [3] * 2 + 2 * [4]`,
	`result = (1,) + (2, 3) * 2`,
	`a = []
b = a
a += [1]
a += (2, 3)
a += range(2)
c = [9]
a += c
result = (a, b, a == b)`,
	`d = {"k": [1]}
e = d["k"]
k = "k"
d[k] += [2]
x = [3]
d[k] += x
result = (d, e)`,
	`calls = []
def key():
    calls.append(1)
    return "k"
d = {"k": [1]}
alias = d["k"]
x = [2]
d[key()] += x
d[key()] *= 2
result = (d, alias, len(calls))`,
	`s = "x"
for i in range(5):
    s += s
result = s`,
	`n = 3
for i in range(4):
    n = n * n
n2 = 5
n2 *= n2
result = (n, n2)`,
	`n = 1 << 100
m = 3
m <<= 4
m |= 64
result = (n | 5, n + n, n * n, 7 % 3, 7 | 1, m, -n % 7)`,
	`d = {"a": 1}
d2 = d
d |= {"c": 3}
result = ({"a": 1} | {"b": 2}, d, d2)`,
	`s = set([1])
s.update([2, 3])
t = s
s |= set([7])
result = (set([1, 2]) | set([3]), s, t, s.union([4], [5]), s.symmetric_difference([1, 9]))`,
	`result = ",".join(["a", "b"]) + "|".join([]) + "-".join(("x",))`,
	`result = "a,b,,c".split(",") + "  a b  c ".split() + "a b c".split(None, 1) + "a,b,c".rsplit(",", 1) + "l1\nl2\n".splitlines()`,
	`result = "aXbXc".replace("X", "--") + "abc".replace("", "-") + "aaaa".replace("a", "b", 2)`,
	`result = ["{} {!r}".format(1, "x"), "{0}{1}{0}".format("a", "b"), "{name}".format(name = [1]), "{{}}".format()]`,
	`l = []
l.extend([1, 2])
l.extend(range(3))
d = {}
d.update([("a", 1)], b = 2)
result = (l, d)`,
	`result = (list(range(3)), tuple([1]), dict(a = 1), sorted([3, 1, 2], reverse = True), list(reversed([1, 2])),
    list(enumerate("ab".elems())), zip([1, 2], "ab".elems()), str([1, "a"]), repr("a\n"), bytes("abc"), set([1, 1]),
    str(1.5), str(None), repr(b"\x00"), tuple((1, 2)), list(), dict({"a": 1}, b = 2), sorted(["b", "a"], key = len))`,
	`result = (getattr("a,b", "split")(","), getattr([], "append"), getattr("x", "nosuch", 7))`,
	`result = [str(",".join), str(getattr(",", "join")), type(list), str(list), dir("")[:3], type(",".join), hasattr("", "join")]`,
	`l = [1]
l.append(l)
d = {"a": 1}
d["self"] = d
result = (str(l), repr(l), str(d), "%s" % (l,), "{}".format(d))`,
	`result = re.sub("(\\w+)@", "${1}+x@", "bob@example.com") + str(re.split(",\\s*", "a, b,c")) + str(re.findall("[0-9]+", "a1b22"))`,
	`s = "x"
s %= ()
t = "%s!"
t %= "a"
result = (s, t)`,
	`def f(a, b = "x" + "y" * 2, *args, **kwargs):
    return [a + b] + list(args) + sorted(kwargs.items())
result = (f("a"), f("a", "b", "c", k = "v" * 2), (lambda x = [1] * 2: x + x)(), [x * 2 for x in range(3) if x % 2 == 0],
    {k + "!": v * 2 for k, v in {"a": 1}.items()}, [1, 2, 3][1:] + [0], "abc"[::-1] * 2)`,
	// errors
	`result = [1] + "a"`,
	`result = "%d" % "x"`,
	`result = "a" * "b"`,
	`x = {}
y = [1]
x["k"] += y`,
	`def g():
    return "abc"
y = 1
g().x += y`,
	`def g():
    return {}
y = [1]
g()["k"] += y`,
	`result = ",".join([1])`,
	`result = 1 << 600`,
	`result = "a".nosuch`,
	`result = getattr("a", "nosuch")`,
	`x = undefined_name + 1`,
	`result = {} | []`,
	`result = "abc".join(1)`,
	`result = "%s %s" % ("a",)`,
	`result = list(1)`,
	`result = "x".replace("a")`,
	`fail("boom", [1, 2])`,
	`result = [].join(",")`,
	`result = None.split`,
	`x = 5
x.update({})`,
	`def f():
    x += [1]
    return x
f()`,
	`s = "abc"
s += 1`,
	`l = [1]
l *= 3
l2 = l
l += l2
result = (l, l2)`,
}

// runStar runs src as a file, natively or guarded, and returns result or
// the error with its position.
func runStar(t *testing.T, src string, guarded bool) string {
	t.Helper()
	pre := starlark.StringDict{"re": re.Module()}
	th := &starlark.Thread{Name: "t"}
	f, err := fileOptions.Parse("t.star", []byte(src), 0)
	if err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	var prog *starlark.Program
	if guarded {
		withGuards(pre)
		th.SetLocal(callKey, &hookCall{ctx: context.Background(), maxSteps: 1e6, maxMem: 64 << 20})
		prog, err = guardedProgram(f, pre.Has)
	} else {
		prog, err = starlark.FileProgram(f, pre.Has)
	}
	if err != nil {
		return "resolve: " + err.Error()
	}
	g, err := prog.Init(th, pre)
	if err != nil {
		var ee *starlark.EvalError
		if errors.As(err, &ee) {
			return fmt.Sprintf("error at %s: %s", scriptPos(ee.CallStack), ee.Msg)
		}
		return "error: " + err.Error()
	}
	if guarded {
		dropGuardNames(g)
	}
	return fmt.Sprintf("%v (globals %d)", g["result"], len(g))
}

func TestGuardsKeepSemantics(t *testing.T) {
	for _, src := range guardedCases {
		native, guarded := runStar(t, src, false), runStar(t, src, true)
		if native != guarded {
			t.Errorf("%s\nnative:  %s\nguarded: %s", src, native, guarded)
		}
	}
}

// Ordinary hooks behave as before, and the guards leave no trace in the
// policy's globals.
func TestGuardedHook(t *testing.T) {
	p := mustLoad(t, `
DOMAINS = ["example.org"]
COUNTS = {"k": 0}
COUNTS["k"] += 1
L = [1]
L2 = L
L += [2]
def on_rcpt(tx, rcpt):
    parts = rcpt.address.split("@")
    who = "%s at %s" % (parts[0], parts[1])
    seen = []
    seen += [who]
    alias = seen
    seen += parts
    text = ",".join(seen) + "|" + str(len(alias)) + "|" + rcpt.domain.upper() + "|" + "{}".format(L2)
    print("seen:", seen + [], sep = " ")
    if re.search("(?i)ANN", rcpt.user) and addr.parse("x@y.example").domain + "" == "y.example":
        return reject(text)
    return None
`)
	var log strings.Builder
	p.log = slog.New(slog.NewTextHandler(&log, nil))
	d := p.Rcpt(context.Background(), &Tx{Conn: &Conn{}}, addrFor(t, "ann@example.org"))
	want := "ann at example.org,ann,example.org|3|EXAMPLE.ORG|[1, 2]"
	if d.Failed() || d.Text != want || d.Source != "p.star:18" {
		t.Errorf("got %q from %s (%v), want %q", d.Text, d.Source, d.Err, want)
	}
	if !strings.Contains(log.String(), `msg="script: seen: [\"ann at example.org\", \"ann\", \"example.org\"]" hook=on_rcpt source=p.star:16`) {
		t.Errorf("print logged %s", log.String())
	}
	for name := range p.globals {
		if strings.HasPrefix(name, guardPrefix) {
			t.Errorf("global %s left in the policy", name)
		}
	}
	if got := p.globals["COUNTS"].String(); got != `{"k": 1}` {
		t.Errorf("COUNTS = %s", got)
	}
}

func addrFor(t testing.TB, s string) addr.Address {
	t.Helper()
	a, err := addr.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// BenchmarkGuardedOps measures a hook doing the ordinary things the
// guards sit on: concatenation, %, join, split, list +=.
func BenchmarkGuardedOps(b *testing.B) {
	p := mustLoad(b, `
def on_mail(tx, sender):
    s = "<" + sender.address + ">"
    t = "%s from %s" % (s, "x")
    parts = sender.address.split("@")
    l = []
    l += parts
    return reject(",".join(l) + t)
`)
	tx := &Tx{Conn: &Conn{}}
	a := addrFor(b, "ann@example.org")
	b.ReportAllocs()
	for b.Loop() {
		p.Mail(context.Background(), tx, a)
	}
}
