package activity

import (
	"testing"
	"time"
)

func TestRecentIsNewestFirstAndBounded(t *testing.T) {
	f := New(3)
	for _, id := range []string{"a", "b", "c", "d"} {
		f.Add(Event{Kind: Delivered, ID: id})
	}
	got := f.Recent(10)
	if len(got) != 3 || got[0].ID != "d" || got[2].ID != "b" {
		t.Fatalf("Recent = %+v, want d c b", got)
	}
	if got := f.Recent(1); len(got) != 1 || got[0].ID != "d" {
		t.Fatalf("Recent(1) = %+v", got)
	}
}

func TestMinutesCountByKind(t *testing.T) {
	f := New(10)
	now := time.Date(2026, 12, 4, 10, 30, 20, 0, time.UTC)
	f.Add(Event{Time: now.Add(-2 * time.Minute), Kind: Rejected})
	f.Add(Event{Time: now, Kind: Delivered})
	f.Add(Event{Time: now, Kind: Delivered})
	f.Add(Event{Time: now, Kind: Bounced})
	f.Add(Event{Time: now.Add(-61 * time.Minute), Kind: Accepted}) // an hour ago: overwritten slot, not counted now
	got := f.Minutes(now, 3)
	if len(got) != 3 {
		t.Fatalf("len = %d", len(got))
	}
	if got[0].Rejected != 1 || got[1] != (Minute{Start: now.Truncate(time.Minute).Add(-time.Minute)}) || got[2].Delivered != 2 || got[2].Bounced != 1 || got[2].Accepted != 0 {
		t.Fatalf("Minutes = %+v", got)
	}
}

func TestSlowSubscriberNeverBlocks(t *testing.T) {
	f := New(10)
	ch, cancel := f.Subscribe(1)
	defer cancel()
	done := make(chan struct{})
	go func() {
		for i := 0; i < 100; i++ {
			f.Add(Event{Kind: Delivered})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Add blocked on a subscriber that does not read")
	}
	if ev := <-ch; ev.Kind != Delivered {
		t.Fatalf("got %+v", ev)
	}
}
