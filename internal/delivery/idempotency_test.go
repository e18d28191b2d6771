package delivery

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/idempotency"
	"github.com/wablast/webhook-operator/internal/store"
)

// enqueueWithID enqueues one event with a producer id and returns its result.
func enqueueWithID(t *testing.T, d *Dispatcher, id string) EnqueueResult {
	t.Helper()
	ev := testEvent(1)
	ev.ID, ev.IdempotencyKey = id, true
	res, err := d.Enqueue(context.Background(), []Event{ev})
	if err != nil {
		t.Fatal(err)
	}
	return res[0]
}

func newIndexedDispatcher(t *testing.T, dir string, window time.Duration, now func() time.Time) (*store.Store, *Dispatcher) {
	t.Helper()
	st, err := store.Open(context.Background(), store.Options{DataDir: dir, IdempotencyWindow: window})
	if err != nil {
		t.Fatal(err)
	}
	reg := endpoint.NewMemoryRegistry()
	reg.MarkSynced()
	d, err := New(Options{Registry: reg, Store: st, HTTPClient: NewHTTPClient(nil), Now: now})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	return st, d
}

// With the embedded server the window's ids live in the on-disk index, not
// in JetStream's duplicate window (which would keep them all in memory):
// the events stream's own window is only the short guard.
func TestTheIdempotencyWindowIsKeptOnDisk(t *testing.T) {
	st, d := newIndexedDispatcher(t, t.TempDir(), 24*time.Hour, nil)
	defer st.Close()
	info, err := st.JetStream().Stream(context.Background(), store.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.CachedInfo().Config.Duplicates; got != store.DedupeGuard {
		t.Fatalf("the events stream's duplicate window is %v, want the %v guard", got, store.DedupeGuard)
	}
	if st.Index() == nil {
		t.Fatal("no on-disk index with the embedded server")
	}
	if r := enqueueWithID(t, d, "order-1"); r.Duplicate {
		t.Fatal("a new id answered as a duplicate")
	}
	if ok, err := st.Index().Seen("shop/order-1", time.Now()); err != nil || !ok {
		t.Fatalf("the accepted id is not in the index (%v)", err)
	}
	// An id the index holds is a duplicate without touching the stream.
	if err := st.Index().Record(idempotency.Entry{Key: "shop/order-2", At: time.Now().Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	before := streamMsgs(t, st, store.StreamEvents)
	if r := enqueueWithID(t, d, "order-2"); !r.Duplicate {
		t.Fatal("an id the index holds from an hour ago was accepted as new")
	}
	if after := streamMsgs(t, st, store.StreamEvents); after != before {
		t.Fatalf("a duplicate was stored: %d messages, then %d", before, after)
	}
}

// An id is remembered for the window and then forgotten.
func TestAnIDIsForgottenAfterTheWindow(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	st, d := newIndexedDispatcher(t, t.TempDir(), time.Second, clock)
	defer st.Close()
	if r := enqueueWithID(t, d, "order-1"); r.Duplicate {
		t.Fatal("a new id answered as a duplicate")
	}
	if r := enqueueWithID(t, d, "order-1"); !r.Duplicate {
		t.Fatal("the same id within the window was accepted again")
	}
	// Past the window for the index and, in real time, for JetStream's guard
	// (min(guard, window) = 1 s).
	time.Sleep(1500 * time.Millisecond)
	now = now.Add(2 * time.Second)
	if r := enqueueWithID(t, d, "order-1"); r.Duplicate {
		t.Fatal("the id is still a duplicate after the window")
	}
	if _, err := st.Index().Expire(now.Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
}

// Ids stored in the events stream but missing from the index (a crash
// between JetStream's acknowledgement and the index's write, or the first
// start after an upgrade from JetStream's 24-hour window) are recorded
// from the stream when the store opens.
func TestTheIndexIsCompletedFromTheStreamAtStart(t *testing.T) {
	dir := t.TempDir()
	st, d := newIndexedDispatcher(t, dir, 24*time.Hour, nil)
	// More than one fetch's worth (1,000), so the reading goes on where the
	// last fetch ended (an ordered consumer's FetchNoWait started over from
	// the beginning every time, and a restart never finished).
	const n = 2500
	var ids []string
	for from := 0; from < n; from += 500 {
		var events []Event
		for i := from; i < from+500; i++ {
			ev := testEvent(i)
			ev.ID, ev.IdempotencyKey = fmt.Sprintf("e-%d", i), true
			events = append(events, ev)
			ids = append(ids, ev.ID)
		}
		if _, err := d.Enqueue(context.Background(), events); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()

	reopen := func(what string) (*store.Store, *Dispatcher) {
		t.Helper()
		done := make(chan struct{})
		var s *store.Store
		var dd *Dispatcher
		go func() {
			defer close(done)
			s, dd = newIndexedDispatcher(t, dir, 24*time.Hour, nil)
		}()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Fatalf("%s: the store did not open within 60s", what)
		}
		return s, dd
	}
	// A start after a crash: the index holds the ids; the stream is read
	// from shortly before the latest.
	st, _ = reopen("with the index")
	st.Close()
	// Lose the index entirely (or the first start after an upgrade).
	if err := os.RemoveAll(filepath.Join(dir, "idempotency")); err != nil {
		t.Fatal(err)
	}
	st, d = reopen("without the index")
	defer st.Close()
	for _, id := range ids {
		if ok, err := st.Index().Seen("shop/"+id, time.Now()); err != nil || !ok {
			t.Fatalf("%s is not in the index rebuilt from the stream (%v)", id, err)
		}
	}
	if r := enqueueWithID(t, d, ids[0]); !r.Duplicate {
		t.Fatalf("%s accepted again after the index was rebuilt", ids[0])
	}
}
