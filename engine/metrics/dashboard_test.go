package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

type fakeQueue struct{}

func (fakeQueue) Census(time.Time) (map[QueueKey]int, error) { return nil, nil }
func (fakeQueue) Sizes() (int64, int64)                      { return 0, 0 }

// TestDashboardNamesRealMetrics: every metric the sample Grafana
// dashboard queries exists, so renaming one breaks this test and not the
// admins' graphs.
func TestDashboardNamesRealMetrics(t *testing.T) {
	raw, err := os.ReadFile("../../examples/deploy/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	names := New(fakeQueue{}).Names()
	used := map[string]bool{}
	re := regexp.MustCompile(`\blarkpost_[a-z_]+`)
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, n := range re.FindAllString(tg.Expr, -1) {
				base := n
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(n, suf); ok && slices.Contains(names, b) {
						base = b
					}
				}
				if !slices.Contains(names, base) {
					t.Errorf("panel %q queries %s, which is not a metric (have %v)", p.Title, n, names)
				}
				used[base] = true
			}
		}
	}
	for _, n := range names {
		if !used[n] {
			t.Errorf("metric %s is on no dashboard panel", n)
		}
	}
}

// TestMetricsReference: docs/reference/metrics.md is what the code says.
func TestMetricsReference(t *testing.T) {
	m := New(fakeQueue{})
	want := Reference(m.Docs())
	if len(m.Docs()) != len(m.Names()) {
		t.Errorf("%d docs for %d metrics", len(m.Docs()), len(m.Names()))
	}
	got, err := os.ReadFile("../../docs/reference/metrics.md")
	if os.Getenv("UPDATE_DOCS") != "" {
		if err := os.WriteFile("../../docs/reference/metrics.md", want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err != nil || string(got) != string(want) {
		t.Errorf("docs/reference/metrics.md is stale: run go generate ./... (or UPDATE_DOCS=1 go test ./engine/metrics)")
	}
}
