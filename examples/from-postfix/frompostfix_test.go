// Package frompostfix keeps examples/from-postfix honest: the committed
// imported/ folder is what `larkpost import postfix` makes of postfix/
// today, and it passes its own tests.
package frompostfix

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/larkpost/larkpost/rules"
	"github.com/larkpost/larkpost/rules/postfix/importer"
	"github.com/larkpost/larkpost/rules/startest"
)

var update = flag.Bool("update", false, "rewrite imported/ from postfix/")

// stamp is the version and date in the header lines, which change with
// every build and day.
var stamp = regexp.MustCompile(`\(larkpost .*?\) on \d{4}-\d{2}-\d{2}`)

func normalize(b []byte) []byte { return stamp.ReplaceAll(b, []byte("(larkpost VERSION) on DATE")) }

// TestImportedIsCurrent re-runs the import (as `larkpost import postfix
// postfix -o imported`, from this folder) and compares.
func TestImportedIsCurrent(t *testing.T) {
	res, err := importer.Import(importer.Options{Dir: "postfix", OutDir: "imported", Version: "(devel)", Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if res.NeedsHandWork() {
		t.Errorf("the example needs hand work:\n%s", res.Report)
	}
	if *update {
		if err := res.Write("imported", true); err != nil {
			t.Fatal(err)
		}
		return
	}
	for i, got := range [][]byte{res.Star, res.Test, res.Report} {
		name := importer.Files[i]
		want, err := os.ReadFile(filepath.Join("imported", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(normalize(got), normalize(want)) {
			t.Errorf("imported/%s is out of date: run `go test ./examples/from-postfix -update` (or larkpost import postfix postfix -o imported --force here)\n--- got:\n%s", name, got)
		}
	}
}

// TestImportedPasses: the imported config loads and its generated tests pass.
func TestImportedPasses(t *testing.T) {
	p, err := rules.LoadFile(filepath.Join("imported", "larkpost.star"))
	if err != nil {
		t.Fatalf("imported/larkpost.star does not load:\n%v", err)
	}
	var out bytes.Buffer
	sum, err := startest.Run(p, startest.Options{Out: &out, Paths: []string{"imported"}})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Failed > 0 || sum.Passed < 10 {
		t.Errorf("rule tests: %d passed, %d failed:\n%s", sum.Passed, sum.Failed, out.String())
	}
}
