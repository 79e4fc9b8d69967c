package engine

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/larkpost/larkpost/queue"
)

// TestFilterMaybeNeverDropsAMatch: the look at a record's bytes before
// decoding it must keep every record the filter matches, whatever the
// case, escapes or Unicode in the addresses; and it must skip most
// records that do not match, or it saves nothing.
func TestFilterMaybeNeverDropsAMatch(t *testing.T) {
	addrs := []string{
		"ann@mx.test", "Bob.Smith@Example.ORG", "carol+tag@sub.example.org",
		"\u212Aelvin@kelvin.test", // KELVIN SIGN lowers to ASCII "k"
		"dave<x>&y@amp.test", `q"uo\te@esc.test`, "émile@é.example", "ümlaut@EXAMPLE.de",
		"", // the null sender
	}
	needles := []string{
		"", "ann", "ANN", "example.org", "EXAMPLE.ORG", "sub.example.org", "kelvin", "k", "KELVIN@",
		"<x>", "&y", `"uo`, `\te`, "é", "É", "ümlaut", "ÜMLAUT", "nobody", "example", "test", "@",
	}
	now := time.Now()
	var records []*queue.Record
	for i, from := range addrs {
		for j, to := range addrs {
			if to == "" {
				continue
			}
			records = append(records, &queue.Record{ID: "ID" + strings.Repeat("X", i) + strings.Repeat("Y", j),
				Sender: from, Arrival: now, State: queue.Deferred, Rcpts: []queue.Rcpt{{Addr: to}}})
		}
	}
	var filters []Filter
	for _, n := range needles {
		filters = append(filters, Filter{From: n}, Filter{To: n}, Filter{Domain: n}, Filter{From: n, To: "example"}, Filter{To: n, Domain: "test"})
	}
	for _, f := range filters {
		maybe := f.maybe()
		for _, r := range records {
			raw, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			if f.matches(r, now) && maybe != nil && !maybe(raw) {
				t.Errorf("filter %+v matches sender %q rcpt %q, but its byte test skipped the record", f, r.Sender, r.Rcpts[0].Addr)
			}
		}
	}

	// A plain queue: one sender's mail to a thousand recipients. Looking
	// for one of them decodes only the records that name it.
	decoded := 0
	f := Filter{To: "User7@Domain7.test"}
	for i := range 1000 {
		r := &queue.Record{ID: "ID" + strings.Repeat("0", i%7), Sender: "bulk@sender.test", Arrival: now, State: queue.Deferred,
			Rcpts: []queue.Rcpt{{Addr: "user" + strconv.Itoa(i) + "@domain" + strconv.Itoa(i%10) + ".test"}}}
		raw, _ := json.Marshal(r)
		if f.maybe()(raw) {
			decoded++
			if !f.matches(r, now) {
				t.Errorf("the byte test kept %s, which the filter does not match", r.Rcpts[0].Addr)
			}
		}
	}
	if decoded != 1 {
		t.Errorf("decoded %d records, want 1 (user7@domain7.test)", decoded)
	}
}
