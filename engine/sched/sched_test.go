package sched

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	s := &Scheduler{}
	s.cfg.Store(&Config{MinBackoff: 300 * time.Second, MaxBackoff: 4000 * time.Second})
	want := []time.Duration{300, 600, 1200, 2400, 4000, 4000, 4000}
	for i, w := range want {
		w *= time.Second
		for n := 0; n < 50; n++ {
			got := s.backoff(i + 1)
			if got < w || got > w+w/10 {
				t.Fatalf("backoff(%d) = %v, want %v plus at most 10%% jitter", i+1, got, w)
			}
		}
	}
}

// TestSetConfigKeepsStartBound: a reload changes the delivery settings,
// not the worker count or the active set's size, which size goroutines
// and channels.
func TestSetConfigKeepsStartBound(t *testing.T) {
	s := New(nil, Config{Workers: 3, ActiveLimit: 10, MinBackoff: time.Second}, nil, nil)
	s.SetConfig(Config{Workers: 50, ActiveLimit: 99, MinBackoff: time.Minute, SoftBounce: true})
	c := s.config()
	if c.Workers != 3 || c.ActiveLimit != 10 || c.MinBackoff != time.Minute || !c.SoftBounce || c.DestConcurrency != 2 {
		t.Errorf("after SetConfig: %+v", c)
	}
}
