package delivery

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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

// Ids in the events stream but missing from the index (events accepted by
// a version before the index stored deliveries at once, or the first start
// after an upgrade from JetStream's 24-hour window) are recorded from the
// stream when the store opens.
func TestTheIndexIsCompletedFromTheStreamAtStart(t *testing.T) {
	dir := t.TempDir()
	st, _ := newIndexedDispatcher(t, dir, 24*time.Hour, nil)
	// More than one fetch's worth (1,000), so the reading goes on where the
	// last fetch ended (an ordered consumer's FetchNoWait started over from
	// the beginning every time, and a restart never finished). Written as
	// the earlier versions did: one message an event, its id the message ID.
	const n = 2500
	var ids []string
	ctx := context.Background()
	for i := range n {
		ev := testEvent(i)
		ev.ID, ev.IdempotencyKey = fmt.Sprintf("e-%d", i), true
		ids = append(ids, ev.ID)
		body, err := ev.Envelope()
		if err != nil {
			t.Fatal(err)
		}
		msg := nats.NewMsg(store.EventSubject(ev.Namespace))
		msg.Data = body
		msg.Header.Set(store.HdrEventID, ev.ID)
		msg.Header.Set(store.HdrEventType, ev.Type)
		msg.Header.Set(store.HdrAcceptedAt, time.Now().UTC().Format(time.RFC3339Nano))
		if _, err := st.JetStream().PublishMsg(ctx, msg, jetstream.WithMsgID(ev.Namespace+"/"+ev.ID)); err != nil {
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
	st, d := reopen("without the index")
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

// The same id posted by many requests at the same moment, and twice in one
// request, is stored once: one answer is not a duplicate, every other one
// is, and the endpoint has exactly one delivery of it, with its content.
func TestTheSameIDPostedAtOnceIsStoredOnce(t *testing.T) {
	st, d := newIndexedDispatcher(t, t.TempDir(), 24*time.Hour, nil)
	defer st.Close()
	d.opts.Registry.(*endpoint.MemoryRegistry).Upsert(testEndpoint("crm", "http://127.0.0.1:1"))
	const posters = 16
	ev := testEvent(7)
	ev.ID, ev.IdempotencyKey = "msg-7.sent", true
	other := testEvent(8)
	other.ID, other.IdempotencyKey = "msg-8.sent", true
	var mu sync.Mutex
	var fresh, dups int
	var wg sync.WaitGroup
	for p := range posters {
		wg.Go(func() {
			batch := []Event{ev}
			if p%2 == 0 {
				batch = []Event{other, ev, ev, other} // both twice, in another order
			}
			res, err := d.Enqueue(context.Background(), batch)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, r := range res {
				if r.ID != ev.ID {
					continue
				}
				if r.Duplicate {
					dups++
				} else {
					fresh++
				}
				if r.Subscribers != 1 {
					t.Errorf("result %+v, want 1 subscriber", r)
				}
			}
		})
	}
	wg.Wait()
	if fresh != 1 || dups != posters+posters/2-1 {
		t.Errorf("%d answers without \"duplicate\" and %d with, want 1 and %d", fresh, dups, posters+posters/2-1)
	}
	got := map[string]int{}
	for _, dl := range storedDeliveries(t, st) {
		got[dl.EventID]++
		for _, want := range []Event{ev, other} {
			if dl.EventID == want.ID {
				if body, _ := want.Envelope(); !bytes.Equal(dl.Body, body) {
					t.Errorf("the delivery of %s carries %s, want %s", dl.EventID, dl.Body, body)
				}
			}
		}
	}
	if got[ev.ID] != 1 || got[other.ID] != 1 || len(got) != 2 {
		t.Errorf("stored deliveries by event %v, want one of %s and one of %s", got, ev.ID, other.ID)
	}
}
