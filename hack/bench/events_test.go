package main

import (
	"encoding/json"
	"testing"

	"github.com/wablast/webhook-operator/internal/catalog"
)

// TestBenchEventsAreDistinctValidAndSized holds the bench's events to what
// events.go says of them: every event's data differs, each passes the
// catalog's fast schema check (no allocation: the full validator allocates),
// and their sizes are those payloadText gives, close to the 158 bytes every
// event carried before, so the figures stay comparable.
func TestBenchEventsAreDistinctValidAndSized(t *testing.T) {
	const n = 20000
	seen := make(map[string]int, n)
	minLen, maxLen, total := 1<<30, 0, 0
	withTS, withText := 0, 0
	for i, ev := range benchEvents(0, n) {
		if j, ok := seen[string(ev.Data)]; ok {
			t.Fatalf("events %d and %d carry the same data %s", j, i, ev.Data)
		}
		seen[string(ev.Data)] = i
		var m map[string]any
		if err := json.Unmarshal(ev.Data, &m); err != nil {
			t.Fatalf("event %d: %v: %s", i, err, ev.Data)
		}
		if m["seq"] != float64(i) {
			t.Fatalf("event %d: seq %v", i, m["seq"])
		}
		if _, ok := m["text"]; ok {
			withText++
		}
		if ev.Timestamp != "" {
			withTS++
		}
		if i < 200 {
			typ, ok := catalog.Lookup(ev.Type)
			if !ok {
				t.Fatalf("event %d: type %s is not in the catalog", i, ev.Type)
			}
			if err := typ.Validate(ev.Data); err != nil {
				t.Fatalf("event %d: %v: %s", i, err, ev.Data)
			}
			// Allocations tell the fast check from the full validator; not
			// under the race detector (see raceEnabled).
			if a := testing.AllocsPerRun(3, func() { _ = typ.Validate(ev.Data) }); a != 0 && !raceEnabled {
				t.Fatalf("event %d took the full validator (%v allocations), not the fast check: %s", i, a, ev.Data)
			}
			var back map[string]any
			if err := json.Unmarshal(ev.JSON(false), &back); err != nil {
				t.Fatalf("event %d: the posted body is not JSON: %v: %s", i, err, ev.JSON(false))
			}
		}
		minLen, maxLen, total = min(minLen, len(ev.Data)), max(maxLen, len(ev.Data)), total+len(ev.Data)
	}
	mean := total / n
	t.Logf("data %d-%d bytes, mean %d; %d with a text, %d with a timestamp", minLen, maxLen, mean, withText, withTS)
	if minLen < 120 || maxLen > 263 || mean < 157 || mean > 167 {
		t.Errorf("data %d-%d bytes, mean %d: not what payloadText says (120-263, 162 on average)", minLen, maxLen, mean)
	}
}
