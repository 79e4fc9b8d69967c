package webui

import (
	"fmt"

	"github.com/larkpost/larkpost/engine/activity"
)

// The traffic chart is drawn on the server as SVG: one stacked bar per
// minute, no chart library.
const (
	chartW    = 600
	chartH    = 120
	chartBarW = chartW / 60
)

type chart struct {
	W, H   int
	VH     int // H and room for the label
	Max    int
	Total  int
	Bars   []bar
	First  string // the first and last minute, for the axis
	Last   string
	Legend []string
}

type bar struct {
	X     int
	Title string
	Segs  []seg
}

type seg struct {
	Kind string // CSS class
	Y, H int
}

// chartKinds are stacked bottom up.
var chartKinds = []string{"delivered", "deferred", "bounced", "rejected", "accepted"}

func counts(m activity.Minute) []int {
	return []int{m.Delivered, m.Deferred, m.Bounced, m.Rejected, m.Accepted}
}

func makeChart(ms []activity.Minute) chart {
	c := chart{W: chartW, H: chartH, VH: chartH + 14, Legend: chartKinds}
	for _, m := range ms {
		t := 0
		for _, n := range counts(m) {
			t += n
		}
		c.Max = max(c.Max, t)
		c.Total += t
	}
	if len(ms) > 0 {
		c.First, c.Last = ms[0].Start.UTC().Format("15:04"), ms[len(ms)-1].Start.UTC().Format("15:04")
	}
	for i, m := range ms {
		b := bar{X: i * chartBarW}
		y := chartH
		title := m.Start.UTC().Format("15:04")
		for k, n := range counts(m) {
			title += fmt.Sprintf(", %d %s", n, chartKinds[k])
			if n == 0 || c.Max == 0 {
				continue
			}
			hgt := max(1, n*chartH/c.Max)
			y -= hgt
			b.Segs = append(b.Segs, seg{Kind: "k-" + chartKinds[k], Y: y, H: hgt})
		}
		b.Title = title
		c.Bars = append(c.Bars, b)
	}
	return c
}
