package delivery

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/store"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// streamMsgs is how many messages a stream holds now.
func streamMsgs(t *testing.T, s *store.Store, name string) uint64 {
	t.Helper()
	st, err := s.JetStream().Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// storedDeliveries returns the deliveries the delivery stream holds now, in
// stream order, batches unpacked.
func storedDeliveries(t *testing.T, s *store.Store) []store.Delivery {
	t.Helper()
	ctx := context.Background()
	st, err := s.JetStream().Stream(ctx, store.StreamDeliveries)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var all []store.Delivery
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		ds, err := store.DeliveriesOf(m.Header, m.Data)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, ds...)
	}
	return all
}

// With the embedded store an event is stored as its deliveries before the
// 202 and never touches the events stream, whether or not it has a
// producer id (the on-disk index keeps the ids). All arrive.
func TestEventsAreStoredAsDeliveriesAtOnce(t *testing.T) {
	hold := make(chan struct{})
	rc := newReceiver(t, func(_ int, _ http.ResponseWriter, _ *http.Request) { <-hold })
	h := newHarness(t, "", nil)
	h.reg.Upsert(testEndpoint("crm", rc.URL, func(e *endpoint.Endpoint) { e.Policy.MaxInFlight = 1 }))
	h.reg.Upsert(testEndpoint("erp", rc.URL, func(e *endpoint.Endpoint) { e.Policy.MaxInFlight = 1 }))

	res := h.enqueue(testEvent(1), testEvent(2))
	if res[0].Subscribers != 2 || res[1].Subscribers != 2 || res[0].Duplicate {
		t.Fatalf("results %+v", res)
	}
	// The receiver holds the first delivery of each endpoint, so the rest
	// wait in the store: all four were stored before Enqueue returned.
	if got := streamMsgs(t, h.store, store.StreamEvents); got != 0 {
		t.Errorf("events without an id put %d messages in %s", got, store.StreamEvents)
	}
	if got := len(storedDeliveries(t, h.store)); got != 4 {
		t.Errorf("%s holds %d deliveries right after the 202, want 4 (2 events x 2 endpoints)", store.StreamDeliveries, got)
	}
	withID := testEvent(3)
	withID.IdempotencyKey = true
	h.enqueue(withID)
	if got := streamMsgs(t, h.store, store.StreamEvents); got != 0 {
		t.Errorf("an event with an id put %d messages in %s, want none", got, store.StreamEvents)
	}
	if got := len(storedDeliveries(t, h.store)); got != 6 {
		t.Errorf("%s holds %d deliveries right after the second 202, want 6 (3 events x 2 endpoints)", store.StreamDeliveries, got)
	}
	close(hold)
	testutil.EventuallyEvery(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := len(rc.requests()); n != 6 {
			return fmt.Errorf("%d of 6 deliveries", n)
		}
		return nil
	})
	rc.checkAll(t, testEvent(1), testEvent(2), withID)

	// An event no endpoint subscribes to (none in its namespace) is
	// accepted, with no subscriber, and stores nothing. (Wait for the
	// acknowledgements of the deliveries above to empty the work queue
	// first: a delivery can arrive before its message is acked.)
	testutil.EventuallyEvery(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := streamMsgs(t, h.store, store.StreamDeliveries); n != 0 {
			return fmt.Errorf("%d delivery messages not acknowledged yet", n)
		}
		return nil
	})
	other := testEvent(4)
	other.Namespace = "elsewhere"
	if res := h.enqueue(other); res[0].Subscribers != 0 {
		t.Errorf("no subscriber: %+v", res[0])
	}
	if got := streamMsgs(t, h.store, store.StreamDeliveries); got != 0 {
		t.Errorf("an event with no subscriber stored %d messages", got)
	}
}

// Before the registry has been rebuilt the subscribers are unknown, so
// nothing is accepted (the ingestion API answers 503) and nothing is stored.
func TestEnqueueBeforeTheRegistryIsRebuiltIsRefused(t *testing.T) {
	st, err := store.Open(context.Background(), store.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	reg := endpoint.NewMemoryRegistry()
	d, err := New(Options{Registry: reg, Store: st, HTTPClient: NewHTTPClient(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Enqueue(context.Background(), []Event{testEvent(1)}); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Enqueue before the registry is rebuilt: %v, want ErrUnavailable", err)
	}
	if got := streamMsgs(t, st, store.StreamDeliveries) + streamMsgs(t, st, store.StreamEvents); got != 0 {
		t.Errorf("%d messages stored", got)
	}
	reg.MarkSynced()
	if _, err := d.Enqueue(context.Background(), []Event{testEvent(1)}); err != nil {
		t.Fatalf("Enqueue once the registry is rebuilt: %v", err)
	}
}
