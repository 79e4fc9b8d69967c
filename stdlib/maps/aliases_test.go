package maps

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
	"go.starlark.net/starlarktest"
	"go.starlark.net/syntax"
)

func addrT(v string) Target { return Target{TargetAddress, v} }
func fileT(v string) Target { return Target{TargetFile, v} }
func pipeT(v string) Target { return Target{TargetPipe, v} }

// staffList is what testdata/aliases_staff.txt expands to.
var staffList = []Target{addrT("alice"), addrT("bob"), addrT("carol@example.com"), addrT("dave smith@example.com")}

func concat(lists ...[]Target) []Target { return slices.Concat(lists...) }

// aliasesDump returns every entry of a, looked up through the public API.
func aliasesDump(t *testing.T, a *Aliases) map[string][]Target {
	t.Helper()
	got := map[string][]Target{}
	for _, n := range a.Names() {
		targets, ok := a.Lookup(n)
		if !ok {
			t.Errorf("Names() lists %q but Lookup(%q) finds nothing", n, n)
		}
		got[n] = targets
	}
	return got
}

func aliasesWarnings(a *Aliases) []string {
	var w []string
	for _, d := range a.table().warnings {
		w = append(w, d.String())
	}
	return w
}

func TestAliasesParse(t *testing.T) {
	t.Parallel()
	testdata, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   string
		dir  string // includeDir
		want map[string][]Target
		warn []string
	}{
		{
			name: "aliases(5): name: value1, value2",
			in:   "root: alice, bob\n",
			want: map[string][]Target{"root": {addrT("alice"), addrT("bob")}},
		},
		{
			name: "aliases(5): the usual /etc/aliases entries from the seeds",
			in: "postmaster: root\n" +
				"root: alice\n" +
				"mailer-daemon: postmaster\n" +
				"abuse: root\n" +
				"owner-staff: alice\n" +
				"staff: :include:" + testdata + "/aliases_staff.txt\n" +
				"archive: /var/mail/archive\n" +
				"tickets: \"|/usr/local/bin/ticket --queue support\"\n",
			want: map[string][]Target{
				"postmaster":    {addrT("root")},
				"root":          {addrT("alice")},
				"mailer-daemon": {addrT("postmaster")},
				"abuse":         {addrT("root")},
				"owner-staff":   {addrT("alice")},
				"staff":         staffList,
				"archive":       {fileT("/var/mail/archive")},
				"tickets":       {pipeT("/usr/local/bin/ticket --queue support")},
			},
		},
		{
			name: "aliases(5): the name is folded to lowercase, values are not",
			in:   "Root: Alice@Example.COM\n",
			want: map[string][]Target{"root": {addrT("Alice@Example.COM")}},
		},
		{
			name: "aliases(5): quote names with whitespace, '#', ':' or '@'",
			in:   "\"a b\": w\n\"c:d\": x\n\"e@f\": y\n\"#g\": z\n",
			want: map[string][]Target{"a b": {addrT("w")}, "c:d": {addrT("x")}, "e@f": {addrT("y")}, "#g": {addrT("z")}},
		},
		{
			name: "aliases(5): whitespace around the name and the colon is not part of it",
			in:   "root :alice\nabuse\t:\troot\n",
			want: map[string][]Target{"root": {addrT("alice")}, "abuse": {addrT("root")}},
		},
		{
			name: "aliases(5): a line that starts with whitespace continues the logical line",
			in:   "staff: alice,\n  bob,\n\tcarol\nroot: dan\n",
			want: map[string][]Target{"staff": {addrT("alice"), addrT("bob"), addrT("carol")}, "root": {addrT("dan")}},
		},
		{
			name: "aliases(5): blank and # lines are ignored, even inside a logical line",
			in:   "# the list\n\nstaff: alice,\n# bob,\n   \n  carol\n  # dan\nroot: erin\n",
			want: map[string][]Target{"staff": {addrT("alice"), addrT("carol")}, "root": {addrT("erin")}},
		},
		{
			name: "aliases(5): # after the start of a line is not a comment",
			in:   "a#b: c#d\n",
			want: map[string][]Target{"a#b": {addrT("c#d")}},
		},
		{
			name: "aliases(5): |command runs up to an unquoted comma",
			in:   "tickets: |/usr/local/bin/ticket --queue support, alice\n",
			want: map[string][]Target{"tickets": {pipeT("/usr/local/bin/ticket --queue support"), addrT("alice")}},
		},
		{
			name: "aliases(5): \"|command with, comma\" quoted as a whole",
			in:   "tickets: \"|/bin/ticket --queue a,b\", alice\n",
			want: map[string][]Target{"tickets": {pipeT("/bin/ticket --queue a,b"), addrT("alice")}},
		},
		{
			name: "aliases(5): |command keeps its inner quotes for the shell",
			in:   "log: |/bin/sh -c \"logger -t mail, x\"\n",
			want: map[string][]Target{"log": {pipeT(`/bin/sh -c "logger -t mail, x"`)}},
		},
		{
			name: "aliases(5): /file/name",
			in:   "archive: /var/mail/archive, alice\n",
			want: map[string][]Target{"archive": {fileT("/var/mail/archive"), addrT("alice")}},
		},
		{
			name: "aliases(5): \"/file name\" with whitespace quoted",
			in:   "archive: \"/var/mail/old archive\"\n",
			want: map[string][]Target{"archive": {fileT("/var/mail/old archive")}},
		},
		{
			name: "aliases(5): user@domain and a \"quoted local\"@domain, unquoted as local(8) does",
			in:   "ext: user@example.com, \"quoted local\"@example.com\n",
			want: map[string][]Target{"ext": {addrT("user@example.com"), addrT("quoted local@example.com")}},
		},
		{
			name: "local(8): \\user is the user's own mailbox, unquoted like tok822",
			in:   "root: \\root, franck\n",
			want: map[string][]Target{"root": {addrT("root"), addrT("franck")}},
		},
		{
			name: "RFC 5322: an address in angle brackets",
			in:   "x: <user@example.com>\n",
			want: map[string][]Target{"x": {addrT("user@example.com")}},
		},
		{
			name: "tok822: empty values between commas are skipped",
			in:   "a: b,, c,\n",
			want: map[string][]Target{"a": {addrT("b"), addrT("c")}},
		},
		{
			name: "aliases(5): :include: relative to the include directory",
			in:   "staff: :include:aliases_staff.txt, erin\n",
			dir:  "testdata",
			want: map[string][]Target{"staff": concat(staffList, []Target{addrT("erin")})},
		},
		{
			name: "sendmail aliases(5): \":include: /path\" with a space, and upper case",
			in:   "staff: :include: aliases_staff.txt\nstaff2: :INCLUDE:aliases_staff.txt\n",
			dir:  "testdata",
			want: map[string][]Target{"staff": staffList, "staff2": staffList},
		},
		{
			name: "aliases(5): \":include:/path\" quoted as a whole",
			in:   "staff: \":include:aliases_staff.txt\"\n",
			dir:  "testdata",
			want: map[string][]Target{"staff": staffList},
		},
		{
			name: "aliases(5): :include: files may include others",
			in:   "nested: :include:aliases_nested_a.txt\n",
			dir:  "testdata",
			want: map[string][]Target{"nested": {addrT("anna"), addrT("ben"), addrT("cleo"), addrT("dora")}},
		},
		{
			name: "aliases(5): a list included twice is expanded once",
			in:   "two: :include:aliases_nested_b.txt, :include:aliases_nested_c.txt, :include:aliases_nested_b.txt\n",
			dir:  "testdata",
			want: map[string][]Target{"two": {addrT("ben"), addrT("cleo"), addrT("dora")}},
		},
		{
			name: "aliases(5): CRLF line endings",
			in:   "root: alice,\r\n  bob\r\nabuse: root\r\n",
			want: map[string][]Target{"root": {addrT("alice"), addrT("bob")}, "abuse": {addrT("root")}},
		},
		{
			name: "aliases(5): no newline at the end of the file",
			in:   "root: alice",
			want: map[string][]Target{"root": {addrT("alice")}},
		},
		{
			name: "aliases(5): an empty file",
			in:   "# nothing yet\n",
			want: map[string][]Target{},
		},
		{
			name: "postalias(1): duplicate entry is a warning and the first one wins",
			in:   "root: alice\nabuse: root\nroot: bob\n",
			want: map[string][]Target{"root": {addrT("alice")}, "abuse": {addrT("root")}},
			warn: []string{`/etc/aliases:3: warning: duplicate entry "root" ignored, first defined on line 1`},
		},
		{
			name: "local(8): duplicates are found after case folding",
			in:   "root: alice\nROOT: bob\n",
			want: map[string][]Target{"root": {addrT("alice")}},
			warn: []string{`/etc/aliases:2: warning: duplicate entry "root" ignored, first defined on line 1`},
		},
		{
			name: "aliases(5): a list whose :include: file is empty is left out with a warning",
			in:   "root: alice\nnew-list: :include:aliases_empty_include.txt\n",
			dir:  "testdata",
			want: map[string][]Target{"root": {addrT("alice")}},
			warn: []string{`/etc/aliases:2: warning: alias "new-list" ignored: its :include: files list no values`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := ParseAliases(strings.NewReader(tt.in), "/etc/aliases", tt.dir)
			if err != nil {
				t.Fatalf("ParseAliases: %v", err)
			}
			if got := aliasesDump(t, a); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("entries:\n got %v\nwant %v", got, tt.want)
			}
			for name, want := range tt.want {
				if got, _ := a.Lookup(strings.ToUpper(name)); !reflect.DeepEqual(got, want) {
					t.Errorf("Lookup(%q) = %v, want %v", strings.ToUpper(name), got, want)
				}
			}
			if got := aliasesWarnings(a); !slices.Equal(got, tt.warn) {
				t.Errorf("warnings:\n got %q\nwant %q", got, tt.warn)
			}
			if a.Path() != "" {
				t.Errorf("Path() = %q, want \"\"", a.Path())
			}
		})
	}
}

func TestAliasesParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		in    string
		dir   string
		want  string   // the error, every problem on a line
		names []string // the good entries still returned
	}{
		{
			name:  "aliases(5): name: value needs the colon",
			in:    "postmaster: root\nroot alice\nabuse: root\n",
			want:  `/etc/aliases:2: missing ":" after alias name`,
			names: []string{"abuse", "postmaster"},
		},
		{
			name: "aliases(5): empty name",
			in:   ": alice\n\"\": bob\n",
			want: "/etc/aliases:1: empty alias name\n/etc/aliases:2: empty alias name",
		},
		{
			name: "aliases(5): empty value list",
			in:   "root:\nabuse: , ,\n",
			want: "/etc/aliases:1: empty value list for \"root\"\n/etc/aliases:2: empty value list for \"abuse\"",
		},
		{
			name:  "aliases(5): unterminated quote in a value",
			in:    "tickets: \"|/usr/local/bin/ticket --queue support\nroot: alice\n",
			want:  "/etc/aliases:1: unterminated quote",
			names: []string{"root"},
		},
		{
			name: "aliases(5): unterminated quote in the name",
			in:   "\"root: alice\n",
			want: "/etc/aliases:1: unterminated quote",
		},
		{
			name: "aliases(5): unterminated quote reported on its continuation line",
			in:   "staff: alice,\n  \"bob,\n  carol\n",
			want: "/etc/aliases:2: unterminated quote",
		},
		{
			name: "aliases(5): /file/name must be absolute",
			in:   "archive: var/mail/archive\nmbox: ~/mbox\ndot: \"./mbox\"\n",
			want: "/etc/aliases:1: file name \"var/mail/archive\" is not an absolute path\n" +
				"/etc/aliases:2: file name \"~/mbox\" is not an absolute path\n" +
				"/etc/aliases:3: file name \"./mbox\" is not an absolute path",
		},
		{
			name:  "aliases(5): :include: of a missing file",
			in:    "staff: :include:aliases_missing.txt\nroot: alice\n",
			dir:   "testdata",
			want:  `/etc/aliases:1: :include: file "testdata/aliases_missing.txt": no such file or directory`,
			names: []string{"root"},
		},
		{
			name: "aliases(5): :include: of something not a regular file",
			in:   "staff: :include:.\n",
			dir:  "testdata",
			want: `/etc/aliases:1: :include: file "testdata": not a regular file`,
		},
		{
			name: "aliases(5): relative :include: with no include directory",
			in:   "staff: :include:staff.txt\n",
			want: `/etc/aliases:1: :include: file "staff.txt" is relative and there is no include directory`,
		},
		{
			name: "aliases(5): :include: cycle",
			in:   "cyc: :include:aliases_cycle_a.txt\n",
			dir:  "testdata",
			want: "testdata/aliases_cycle_b.txt:2: :include: cycle: testdata/aliases_cycle_a.txt -> testdata/aliases_cycle_b.txt -> testdata/aliases_cycle_a.txt",
		},
		{
			name: "aliases(5): :include: of itself, twice, is one problem",
			in:   "a: :include:aliases_cycle_a.txt\nb: :include:aliases_cycle_b.txt\n",
			dir:  "testdata",
			want: "testdata/aliases_cycle_b.txt:2: :include: cycle: testdata/aliases_cycle_a.txt -> testdata/aliases_cycle_b.txt -> testdata/aliases_cycle_a.txt\n" +
				"testdata/aliases_cycle_a.txt:2: :include: cycle: testdata/aliases_cycle_b.txt -> testdata/aliases_cycle_a.txt -> testdata/aliases_cycle_b.txt",
		},
		{
			name:  "aliases(5): problems inside an :include: file carry its name and line",
			in:    "list: :include:aliases_bad_include.txt\nroot: alice\n",
			dir:   "testdata",
			want:  "testdata/aliases_bad_include.txt:3: unterminated quote",
			names: []string{"root"},
		},
		{
			name: "aliases(5): empty :include: name and empty |command",
			in:   "a: :include:\nb: |\nc: \"| \"\n",
			want: "/etc/aliases:1: empty :include: file name\n/etc/aliases:2: empty command after \"|\"\n/etc/aliases:3: empty command after \"|\"",
		},
		{
			name:  "aliases(5): one bad value drops the whole entry",
			in:    "staff: alice, bob@\nroot: alice\n",
			want:  `/etc/aliases:1: bad address "bob@": empty domain`,
			names: []string{"root"},
		},
		{
			name: "aliases(5): whitespace inside an address must be quoted (missing comma)",
			in:   "staff: alice bob\n",
			want: `/etc/aliases:1: unquoted space in address "alice bob"; missing comma?`,
		},
		{
			name: "aliases(5): a continued line joins without a comma",
			in:   "staff: alice\n  bob\n",
			want: `/etc/aliases:1: unquoted space in address "alice  bob"; missing comma?`,
		},
		{
			name: "aliases(5): the name is a local address (no domain part)",
			in:   "root@example.com: alice\n",
			want: `/etc/aliases:1: alias name "root@example.com" has a domain part; quote it or use the local part only`,
		},
		{
			name: "aliases(5): whitespace in a name must be quoted",
			in:   "foo bar: alice\n",
			want: `/etc/aliases:1: unquoted space in alias name "foo bar"`,
		},
		{
			name:  "aliases(5): a logical line starts with non-whitespace text",
			in:    "  alice\nroot: bob\n",
			want:  "/etc/aliases:1: continuation line without an alias before it",
			names: []string{"root"},
		},
		{
			name:  "addr: control characters and invalid UTF-8",
			in:    "a: x\x01y\nb: \xff\nc: ok\n  \x7f\nd: fine\n",
			want:  "/etc/aliases:1: control character\n/etc/aliases:2: invalid UTF-8\n/etc/aliases:4: control character",
			names: []string{"d"},
		},
		{
			name:  "addr: an angle bracket inside a local part",
			in:    "a: x<y\nb: <>\n",
			want:  "/etc/aliases:1: bad address \"x<y\": angle bracket in local part\n/etc/aliases:2: empty address",
			names: nil,
		},
		{
			name: "postalias(1): every problem is listed in line order, warnings too",
			in:   "root: alice\nbad\nroot: bob\nx: y@\n",
			want: "/etc/aliases:2: missing \":\" after alias name\n" +
				"/etc/aliases:3: warning: duplicate entry \"root\" ignored, first defined on line 1\n" +
				"/etc/aliases:4: bad address \"y@\": empty domain",
			names: []string{"root"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := ParseAliases(strings.NewReader(tt.in), "/etc/aliases", tt.dir)
			if err == nil {
				t.Fatalf("ParseAliases: no error, want\n%s", tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("error:\n got %s\nwant %s", err, tt.want)
			}
			if a == nil {
				t.Fatal("ParseAliases returned no aliases with its error")
			}
			if got := a.Names(); !slices.Equal(got, tt.names) {
				t.Errorf("good entries: got %q, want %q", got, tt.names)
			}
		})
	}
}

// TestAliasesIncludeDepth checks the nesting limit of :include: at its edge.
func TestAliasesIncludeDepth(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		depth int
		want  string
	}{
		{"aliases(5): :include: nested 10 deep is allowed", 10, ""},
		{"aliases(5): :include: nested 11 deep is refused", 11, "f10.txt:2: :include: nested more than 10 deep at DIR/f11.txt"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			var want []Target
			for i := 1; i <= tt.depth; i++ {
				text := fmt.Sprintf("u%d\n", i)
				if i < tt.depth {
					text += fmt.Sprintf(":include:f%d.txt\n", i+1)
				}
				writeFile(t, filepath.Join(dir, fmt.Sprintf("f%d.txt", i)), text, time.Time{})
				want = append(want, addrT(fmt.Sprintf("u%d", i)))
			}
			a, err := ParseAliases(strings.NewReader("deep: :include:f1.txt\n"), "aliases", dir)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got, _ := a.Lookup("deep"); !reflect.DeepEqual(got, want) {
					t.Errorf("Lookup(deep) = %v, want %v", got, want)
				}
				return
			}
			wantErr := filepath.Join(dir, strings.ReplaceAll(tt.want, "DIR", dir))
			if err == nil || err.Error() != wantErr {
				t.Errorf("error = %v, want %s", err, wantErr)
			}
		})
	}
}

func TestAliasesOwner(t *testing.T) {
	t.Parallel()
	a, err := ParseAliases(strings.NewReader(
		"staff: alice, bob\nowner-staff: alice\n"+
			"list: x\nowner-list: alice, bob\n"+
			"pipe: y\nowner-pipe: |/bin/owner\n"+
			"ext: z\nowner-ext: Carol@Example.com\n"), "aliases", "")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		alias string
		want  string
		ok    bool
	}{
		{"local(8): owner-name with one address is the owner", "staff", "alice", true},
		{"local(8): lookup of owner-name folds case", "STAFF", "alice", true},
		{"local(8): owner-name with a full address", "ext", "Carol@Example.com", true},
		{"local(8) expand_owner_alias=no: a list owner is owner-name itself", "list", "owner-list", true},
		{"local(8) expand_owner_alias=no: a command owner is owner-name itself", "pipe", "owner-pipe", true},
		{"local(8): no owner-name alias", "root", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := a.Owner(tt.alias)
			if got != tt.want || ok != tt.ok {
				t.Errorf("Owner(%q) = %q, %v; want %q, %v", tt.alias, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestAliasesLookupReturnsCopy(t *testing.T) {
	t.Parallel()
	a, err := ParseAliases(strings.NewReader("root: alice, bob\n"), "aliases", "")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := a.Lookup("root")
	got[0] = addrT("mallory")
	names := a.Names()
	names[0] = "mallory"
	if again, _ := a.Lookup("root"); again[0] != addrT("alice") {
		t.Errorf("Lookup result shares storage: now %v", again)
	}
	if a.Names()[0] != "root" {
		t.Errorf("Names result shares storage: now %v", a.Names())
	}
	if _, ok := a.Lookup("root@example.com"); ok {
		t.Error("Lookup matched a name with a domain")
	}
}

// writeFile writes text to path and, unless mtime is zero, sets its mtime,
// because two writes within the file system's timestamp granularity would
// otherwise look like one version.
func writeFile(t *testing.T, path, text string, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if !mtime.IsZero() {
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
}

// logRecorder collects logf calls from any goroutine.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) logf(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, s)
}

// take returns the lines logged since the last take.
func (r *logRecorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.lines
	r.lines = nil
	return l
}

func TestAliasesReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "aliases")
	staff := filepath.Join(dir, "staff.txt")
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	version := 0
	write := func(file, text string) {
		version++
		writeFile(t, file, text, base.Add(time.Duration(version)*time.Second))
	}
	var log logRecorder
	var a *Aliases
	expect := func(step, name string, want []Target, logged ...string) {
		t.Helper()
		got, ok := a.Lookup(name)
		if want == nil && ok {
			t.Errorf("%s: Lookup(%q) = %v, want no alias", step, name, got)
		} else if want != nil && !reflect.DeepEqual(got, want) {
			t.Errorf("%s: Lookup(%q) = %v, want %v", step, name, got, want)
		}
		if l := log.take(); !slices.Equal(l, logged) {
			t.Errorf("%s: logged %q, want %q", step, l, logged)
		}
	}

	write(path, "root: alice\nstaff: :include:staff.txt\n")
	write(staff, "bob\n")
	a, err := openAliases(path, log.logf, everyGet)
	if err != nil {
		t.Fatal(err)
	}
	if a.Path() != path {
		t.Errorf("Path() = %q, want %q", a.Path(), path)
	}
	expect("open", "root", []Target{addrT("alice")})
	expect("open", "staff", []Target{addrT("bob")})

	write(path, "root: carol\nstaff: :include:staff.txt\n")
	expect("file changed", "root", []Target{addrT("carol")})

	write(staff, "bob, dan\n")
	expect("include changed", "staff", []Target{addrT("bob"), addrT("dan")})

	write(path, "root dave\nstaff: :include:staff.txt\nnew: erin\n")
	expect("file broken", "root", []Target{addrT("carol")}, path+`:1: missing ":" after alias name`)
	expect("file broken, logged once", "new", nil)

	write(path, "root: dave\nstaff: :include:staff.txt\nnew: erin\n")
	expect("file fixed", "new", []Target{addrT("erin")})
	expect("file fixed", "root", []Target{addrT("dave")})

	write(staff, "bob, \"dan\n")
	expect("include broken", "staff", []Target{addrT("bob"), addrT("dan")}, staff+":1: unterminated quote")

	if err := os.Remove(staff); err != nil {
		t.Fatal(err)
	}
	expect("include removed", "staff", []Target{addrT("bob"), addrT("dan")},
		path+`:2: :include: file "`+staff+`": no such file or directory`)
	expect("include removed, logged once", "staff", []Target{addrT("bob"), addrT("dan")})

	write(staff, "frank\n")
	expect("include back", "staff", []Target{addrT("frank")})

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	expect("file removed", "root", []Target{addrT("dave")}, path+": no such file or directory")
	expect("file removed, logged once", "root", []Target{addrT("dave")})

	write(path, "root: gina\nroot: hal\n")
	expect("file back with a warning", "root", []Target{addrT("gina")},
		path+`:2: warning: duplicate entry "root" ignored, first defined on line 1`)
	if got := a.Names(); !slices.Equal(got, []string{"root"}) {
		t.Errorf("Names() = %q after reload", got)
	}

	a, err = openAliases(path, log.logf, reloadOptions{interval: time.Hour, coolDown: defaultCoolDown})
	if err != nil {
		t.Fatal(err)
	}
	expect("opened with an hour's interval", "root", []Target{addrT("gina")},
		path+`:2: warning: duplicate entry "root" ignored, first defined on line 1`)
	write(path, "root: ivan\n")
	expect("within the reload interval", "root", []Target{addrT("gina")})
}

// TestAliasesReloadWaitsForWriters checks that aliases get the protection
// of file tables against files caught while they are being written, the
// aliases file and its :include: files alike.
func TestAliasesReloadWaitsForWriters(t *testing.T) {
	t.Parallel()
	// Long enough that a Lookup right after a write comes within it even
	// when parallel tests and -race slow this one down.
	const coolDown = 200 * time.Millisecond
	dir := t.TempDir()
	path := filepath.Join(dir, "aliases")
	staff := filepath.Join(dir, "staff.txt")
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	writeFile(t, path, "root: alice\nstaff: :include:staff.txt\n", old)
	writeFile(t, staff, "bob\n", old)
	var log logRecorder
	a, err := openAliases(path, log.logf, reloadOptions{interval: 0, coolDown: coolDown})
	if err != nil {
		t.Fatal(err)
	}
	expect := func(name string, want []Target, logged ...string) {
		t.Helper()
		got, ok := a.Lookup(name)
		if want == nil && ok {
			t.Errorf("Lookup(%q) = %v, want no alias", name, got)
		} else if want != nil && !reflect.DeepEqual(got, want) {
			t.Errorf("Lookup(%q) = %v, want %v", name, got, want)
		}
		if l := log.take(); !slices.Equal(l, logged) {
			t.Errorf("logged %q, want %q", l, logged)
		}
	}

	t.Run("texthash cool-down: an aliases file modified just now is not loaded yet", func(t *testing.T) {
		writeFile(t, path, "root: carol\nstaff: :include:staff.txt\n", time.Time{})
		expect("root", []Target{addrT("alice")})
		time.Sleep(2 * coolDown)
		expect("root", []Target{addrT("carol")})
	})
	t.Run("texthash cool-down: an :include: file modified just now is not loaded yet", func(t *testing.T) {
		writeFile(t, staff, "dan\n", time.Time{})
		expect("staff", []Target{addrT("bob")})
		time.Sleep(2 * coolDown)
		expect("staff", []Target{addrT("dan")})
	})
	t.Run("larkpost: a truncated :include: file with an old mtime is not loaded at once", func(t *testing.T) {
		writeFile(t, staff, "", old)
		expect("staff", []Target{addrT("dan")})
		time.Sleep(2 * coolDown)
		expect("staff", nil, path+`:2: warning: alias "staff" ignored: its :include: files list no values`)
	})
	t.Run("larkpost: a truncated aliases file with an old mtime is not loaded at once", func(t *testing.T) {
		writeFile(t, path, "", old)
		expect("root", []Target{addrT("carol")})
		time.Sleep(2 * coolDown)
		expect("root", nil)
	})
}

func TestAliasesOpen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	t.Run("local(8): a missing aliases file is an error", func(t *testing.T) {
		a, err := OpenAliases(filepath.Join(dir, "nope"), nil)
		if a != nil || !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("OpenAliases = %v, %v; want nil, not exist", a, err)
		}
	})
	t.Run("postalias(1): problems are returned with the good entries", func(t *testing.T) {
		path := filepath.Join(dir, "bad")
		writeFile(t, path, "root: alice\nbad\n", time.Time{})
		a, err := OpenAliases(path, nil)
		if want := path + `:2: missing ":" after alias name`; err == nil || err.Error() != want {
			t.Errorf("err = %v, want %s", err, want)
		}
		if a == nil || !slices.Equal(a.Names(), []string{"root"}) {
			t.Errorf("good entries not returned: %v", a)
		}
	})
	t.Run("postalias(1): a duplicate entry warning goes to logf", func(t *testing.T) {
		path := filepath.Join(dir, "dup")
		writeFile(t, path, "root: alice\nroot: bob\n", time.Time{})
		var log logRecorder
		if _, err := OpenAliases(path, log.logf); err != nil {
			t.Fatal(err)
		}
		want := []string{path + `:2: warning: duplicate entry "root" ignored, first defined on line 1`}
		if got := log.take(); !slices.Equal(got, want) {
			t.Errorf("logged %q, want %q", got, want)
		}
	})
	t.Run("aliases(5): relative :include: is against the file's directory", func(t *testing.T) {
		sub := filepath.Join(dir, "sub")
		if err := os.Mkdir(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(sub, "list"), "alice\n", time.Time{})
		writeFile(t, filepath.Join(sub, "aliases"), "list: :include:list\n", time.Time{})
		a, err := OpenAliases(filepath.Join(sub, "aliases"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := a.Lookup("list"); !reflect.DeepEqual(got, []Target{addrT("alice")}) {
			t.Errorf("Lookup(list) = %v", got)
		}
	})
}

// TestAliasesConcurrentReload runs lookups while the files change under
// them; -race checks the swap, and every lookup must see a whole version.
func TestAliasesConcurrentReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "aliases")
	members := filepath.Join(dir, "members")
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	n := 0
	// Editors and configuration tools replace files by rename; that is
	// what keeps a reader from seeing half a file.
	replace := func(file, text string) {
		n++
		tmp := file + ".tmp"
		writeFile(t, tmp, text, base.Add(time.Duration(n)*time.Second))
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	replace(members, "m0\n")
	replace(path, "ver: v0\nlist: :include:members\n")
	var log logRecorder
	a, err := openAliases(path, log.logf, everyGet)
	if err != nil {
		t.Fatal(err)
	}

	const rounds = 60
	valid := map[string]bool{}
	for i := range rounds {
		valid[fmt.Sprintf("v%d", i)] = true
		valid[fmt.Sprintf("m%d", i)] = true
	}
	var seenMu sync.Mutex
	seen := map[string]bool{}
	stop := make(chan struct{})
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				for _, name := range []string{"ver", "list"} {
					got, ok := a.Lookup(name)
					if !ok || len(got) != 1 || !valid[got[0].Value] {
						errs <- fmt.Errorf("Lookup(%q) = %v, %v", name, got, ok)
						return
					}
					seenMu.Lock()
					seen[got[0].Value] = true
					seenMu.Unlock()
				}
				a.Names()
				a.Owner("list")
			}
		})
	}
	for i := 1; i < rounds; i++ {
		switch i % 3 {
		case 0:
			replace(path, fmt.Sprintf("ver: v%d\nlist: :include:members\n", i))
		case 1:
			replace(members, fmt.Sprintf("m%d\n", i))
		case 2:
			replace(path, "ver v-broken\nlist: :include:members\n")
		}
		time.Sleep(time.Millisecond)
	}
	replace(path, fmt.Sprintf("ver: v%d\nlist: :include:members\n", rounds-1))
	replace(members, fmt.Sprintf("m%d\n", rounds-1))
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	// Without reloads seen by the readers the test would prove nothing.
	if len(seen) < 4 {
		t.Errorf("readers saw only %v", seen)
	}
	want := map[string][]Target{"ver": {addrT(fmt.Sprintf("v%d", rounds-1))}, "list": {addrT(fmt.Sprintf("m%d", rounds-1))}}
	if got := aliasesDump(t, a); !reflect.DeepEqual(got, want) {
		t.Errorf("final version %v, want %v", got, want)
	}
	for _, l := range log.take() {
		if want := path + `:1: missing ":" after alias name`; l != want {
			t.Errorf("logged %q, want only %q", l, want)
		}
	}
}

func TestAliasesStarlark(t *testing.T) {
	t.Parallel()
	var log logRecorder
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
		"maps": &starlarkstruct.Module{
			Name:    "maps",
			Members: starlark.StringDict{"aliases": AliasesBuiltin("testdata", log.logf)},
		},
	}
	_, err := starlark.ExecFileOptions(&syntax.FileOptions{}, thread, "testdata/aliases_test.star", nil, predeclared)
	if err != nil {
		if evalErr, ok := errors.AsType[*starlark.EvalError](err); ok {
			t.Fatal(evalErr.Backtrace())
		}
		t.Fatal(err)
	}
	if l := log.take(); len(l) != 0 {
		t.Errorf("logged %q", l)
	}
}

func TestAliasesValueAttrNamesSorted(t *testing.T) {
	t.Parallel()
	v := &aliasesValue{&Aliases{}}
	if names := v.AttrNames(); !slices.IsSorted(names) {
		t.Errorf("AttrNames() = %v, not sorted", names)
	}
	for _, name := range v.AttrNames() {
		if got, err := v.Attr(name); got == nil || err != nil {
			t.Errorf("Attr(%q) = %v, %v", name, got, err)
		}
	}
}

var aliasesQuoter = strings.NewReplacer(`\`, `\\`, `"`, `\"`)

// aliasesFormat writes tab back as aliases(5) text, quoting every name and
// value, for the fuzz test's round trip.
func aliasesFormat(tab *aliasesTable) string {
	quote := func(s string) string {
		return `"` + aliasesQuoter.Replace(s) + `"`
	}
	var b strings.Builder
	for _, name := range tab.names {
		b.WriteString(quote(name) + ":")
		for i, t := range tab.entries[name] {
			if i > 0 {
				b.WriteString(",\n")
			}
			v := t.Value
			if t.Kind == TargetPipe {
				v = "|" + v
			}
			b.WriteString(" " + quote(v))
		}
		b.WriteString("\n")
	}
	return b.String()
}

func aliasesDenyRead(string) ([]byte, fs.FileInfo, error) {
	return nil, nil, fs.ErrPermission
}

func FuzzParseAliases(f *testing.F) {
	for _, s := range []string{
		"root: alice, bob\n",
		"staff: alice,\n  bob\n# c\n\tcarol\n",
		"tickets: \"|/bin/t a, b\", |/bin/u \"x, y\", /var/mail/a\n",
		"\"a b\": \"quoted local\"@example.com, \\root, <u@example.com>\n",
		"x: :include:/etc/mail/staff.txt\n",
		"root: a\nROOT: b\nbad\n\"open: x\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		p := newAliasesParser("/nonexistent", aliasesDenyRead)
		tab := p.parse([]byte(text), "fuzz")
		a := &Aliases{}
		a.cur.Store(tab)
		names := a.Names()
		if !slices.IsSorted(names) {
			t.Errorf("Names() not sorted: %q", names)
		}
		for _, n := range names {
			targets, ok := a.Lookup(n)
			if !ok || len(targets) == 0 {
				t.Errorf("Lookup(%q) = %v, %v", n, targets, ok)
			}
			for _, tg := range targets {
				if tg.Kind == TargetInclude || tg.Value == "" {
					t.Errorf("Lookup(%q) returned %v", n, tg)
				}
			}
		}

		// Re-parsing what was parsed must give the same table, cleanly.
		out := aliasesFormat(tab)
		p2 := newAliasesParser("/nonexistent", aliasesDenyRead)
		tab2 := p2.parse([]byte(out), "again")
		if len(p2.diags) != 0 {
			t.Fatalf("re-parse of\n%s\nreported %v", out, p2.diags)
		}
		if !reflect.DeepEqual(tab.entries, tab2.entries) || !slices.Equal(tab.names, tab2.names) {
			t.Fatalf("re-parse differs:\n%v\n%v", tab.entries, tab2.entries)
		}

		// The public entry point, where no file can be read anyway.
		if !strings.Contains(strings.ToLower(text), "include") {
			b, err := ParseAliases(strings.NewReader(text), "fuzz", "")
			if (err != nil) != p.failed {
				t.Errorf("ParseAliases error %v, parser failed %v", err, p.failed)
			}
			if !reflect.DeepEqual(b.table().entries, tab.entries) {
				t.Errorf("ParseAliases differs from the parser")
			}
		}
	})
}

func TestAliasesIncludeMayNotRunCommands(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "list.txt"), []byte("ann\n|/bin/rm -rf /tmp/x\n/etc/passwd\n"), 0o600)
	_, err := ParseAliases(strings.NewReader("list: :include:list.txt\n"), "aliases", dir)
	if err == nil || !strings.Contains(err.Error(), "list.txt:2: commands and files are not allowed in :include: files") ||
		!strings.Contains(err.Error(), "list.txt:3: commands and files") {
		t.Errorf("err = %v, want both lines refused (Postfix allow_mail_to_commands/files)", err)
	}
}
