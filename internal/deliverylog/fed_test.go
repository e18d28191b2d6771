package deliverylog

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/wablast/webhook-operator/internal/store"
)

// A fed index (the embedded store) is built from what the writer hands
// over, without reading those records back; what was written and not
// handed over (an acknowledgement lost in the middle, the last writes) is
// read back from the stream, exactly those records, and every delivery is
// found.
func TestAFedIndexReadsBackOnlyWhatWasNotHandedOver(t *testing.T) {
	s := openStore(t, 0)
	r := newReaderIn(t, s, Options{Dir: t.TempDir(), Fed: true})
	ctx := context.Background()
	get, err := s.JetStream().Stream(ctx, store.StreamDeliveryLog)
	if err != nil {
		t.Fatal(err)
	}
	writeFed := func(id string, hand bool) uint64 {
		t.Helper()
		seq := write(t, s, "ns", "crm", stored("u1", id, `{"a":1}`))
		if hand {
			m, err := get.GetMsg(ctx, seq)
			if err != nil {
				t.Fatal(err)
			}
			r.Logged(seq, m.Subject, m.Header)
		}
		return seq
	}
	// The first, handed over, and found: the reader runs.
	last := writeFed("e0", true)
	if d, err := r.Get(ctx, "ns", "crm", "e0", last); err != nil || d == nil {
		t.Fatalf("e0: %v, %v", d, err)
	}
	before := r.readBackCount.Load()
	for i := 1; i < 30; i++ {
		// e10-e12 and e28-e29 are not handed over.
		last = writeFed(fmt.Sprintf("e%d", i), (i < 10 || i > 12) && i < 28)
	}
	_, upTo, err := r.Bounds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if upTo != last {
		t.Fatalf("the index got to %d of %d within the catch-up wait", upTo, last)
	}
	ds, _, err := r.Scan(ctx, "ns", "crm", upTo)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 30 {
		t.Fatalf("%d deliveries found, want 30", len(ds))
	}
	for i, d := range ds {
		if want := fmt.Sprintf("e%d", 29-i); d.Object.Spec.EventID != want || d.Object.Spec.Envelope != `{"a":1}` {
			t.Errorf("delivery %d: %s %s, want %s", i, d.Object.Spec.EventID, d.Object.Spec.Envelope, want)
		}
	}
	if n := r.readBackCount.Load() - before; n != 5 {
		t.Errorf("%d records read back from the stream, want the 5 not handed over", n)
	}
}

// A fed index opened on a log written while it was closed reads what it
// misses from the stream at the start.
func TestAFedIndexCatchesUpAtTheStart(t *testing.T) {
	s := openStore(t, 0)
	var last uint64
	for i := range 50 {
		last = write(t, s, "ns", "crm", stored("u1", fmt.Sprintf("e%d", i), `{"a":1}`))
	}
	r := newReaderIn(t, s, Options{Dir: t.TempDir(), Fed: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, upTo, err := r.Bounds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ds, _, err := r.Scan(ctx, "ns", "crm", upTo)
	if err != nil {
		t.Fatal(err)
	}
	if upTo != last || len(ds) != 50 || r.readBackCount.Load() != 50 {
		t.Errorf("up to %d of %d, %d deliveries of 50, %d read back", upTo, last, len(ds), r.readBackCount.Load())
	}
}
