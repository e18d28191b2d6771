package delivery

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/stats"
	"github.com/wablast/webhook-operator/internal/store"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// Deliveries to one endpoint accepted together are stored as one message,
// and each arrives once, with its own event's body and id (every event's
// data differs in content and length, so a body that went to the wrong
// delivery shows).
func TestDeliveriesAcceptedTogetherAreStoredAsOneMessage(t *testing.T) {
	hold := make(chan struct{})
	rc := newReceiver(t, func(_ int, _ http.ResponseWriter, _ *http.Request) { <-hold })
	h := newHarness(t, "", nil)
	h.reg.Upsert(testEndpoint("crm", rc.URL, func(e *endpoint.Endpoint) { e.Policy.MaxInFlight = 1 }))
	events := variedEvents(t, "together", 10)
	h.enqueue(events...)
	if n := streamMsgs(t, h.store, store.StreamDeliveries); n != 1 {
		t.Errorf("10 deliveries to one endpoint accepted together were stored as %d messages, want 1", n)
	}
	stored := storedDeliveries(t, h.store)
	if len(stored) != 10 {
		t.Fatalf("%d deliveries stored, want 10", len(stored))
	}
	for i, dl := range stored {
		want, _ := events[i].Envelope()
		if dl.EventID != events[i].ID || !bytes.Equal(dl.Body, want) || dl.Attempt != 0 {
			t.Errorf("stored delivery %d: %s attempt %d body %s", i, dl.EventID, dl.Attempt, dl.Body)
		}
	}
	close(hold)
	testutil.EventuallyEvery(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := len(rc.requests()); n < 10 {
			return fmt.Errorf("%d of 10 delivered", n)
		}
		return nil
	})
	h.waitStats("uid-crm", func(st stats.EndpointStats) error {
		if st.EventsDelivered != 10 {
			return fmt.Errorf("delivered %d", st.EventsDelivered)
		}
		return nil
	})
	ids := rc.uniqueIDs()
	for i := range events {
		if ids[events[i].ID] != 1 {
			t.Errorf("%s arrived %d times", events[i].ID, ids[events[i].ID])
		}
	}
	rc.checkAll(t, events...)
	if peak := rc.peak.Load(); peak > 1 {
		t.Errorf("%d attempts at once from one batch, maxInFlight is 1", peak)
	}
}

// A batch whose worker stops after some of its deliveries are done keeps
// only the unfinished ones, stored again on their own: the done one is not
// attempted again.
func TestAStoppedBatchKeepsOnlyItsUnfinishedDeliveries(t *testing.T) {
	hold := make(chan struct{})
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 2 {
			select {
			case <-hold:
			case <-r.Context().Done():
			}
		}
	})
	dir := t.TempDir()
	h := newHarness(t, dir, nil)
	h.reg.Upsert(testEndpoint("crm", rc.URL, func(e *endpoint.Endpoint) { e.Policy.MaxInFlight = 1 }))
	h.enqueue(testEvent(1), testEvent(2), testEvent(3))
	testutil.EventuallyEvery(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := len(rc.requests()); n < 2 {
			return fmt.Errorf("%d requests", n)
		}
		return nil
	})
	h.stop() // cancels the attempt of msg_000002; msg_000003 was never attempted

	s, err := store.Open(t.Context(), store.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	left := storedDeliveries(t, s)
	n := streamMsgs(t, s, store.StreamDeliveries)
	s.Close()
	var ids []string
	for _, dl := range left {
		ids = append(ids, dl.EventID)
	}
	if !slices.Equal(ids, []string{"msg_000002", "msg_000003"}) || n != 2 {
		t.Fatalf("after the stop the store holds %v in %d messages, want msg_000002 and msg_000003 in 2", ids, n)
	}

	close(hold)
	h.start()
	testutil.EventuallyEvery(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := len(rc.uniqueIDs()); n != 3 {
			return fmt.Errorf("%d of 3 events arrived", n)
		}
		return nil
	})
	h.waitStats("uid-crm", func(st stats.EndpointStats) error {
		if st.EventsDelivered != 3 {
			return fmt.Errorf("delivered %d", st.EventsDelivered)
		}
		return nil
	})
	if got := rc.uniqueIDs()["msg_000001"]; got != 1 {
		t.Errorf("msg_000001, done before the stop, arrived %d times", got)
	}
	rc.checkAll(t, testEvent(1), testEvent(2), testEvent(3))
}

// When a delivery of a batch answers 410 Gone, the batch's other deliveries
// are not attempted: they wait, stored on their own, until the spec changes.
func TestGoneInTheMiddleOfABatchHoldsTheRest(t *testing.T) {
	rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.WriteHeader(http.StatusGone)
		}
	})
	h := newHarness(t, "", nil)
	ep := testEndpoint("crm", rc.URL, func(e *endpoint.Endpoint) { e.Policy.MaxInFlight = 1 })
	h.reg.Upsert(ep)
	h.enqueue(testEvent(1), testEvent(2), testEvent(3))
	testutil.EventuallyEvery(t, 10*time.Second, 20*time.Millisecond, func() error {
		ids := map[string]bool{}
		for _, dl := range storedDeliveries(t, h.store) {
			ids[dl.EventID] = true
		}
		if n := streamMsgs(t, h.store, store.StreamDeliveries); n != 2 || !ids["msg_000002"] || !ids["msg_000003"] {
			return fmt.Errorf("store holds %d messages with %v", n, ids)
		}
		return nil
	})
	// Held: still not attempted after the sync loop decided about the
	// endpoint several times.
	from := h.d.syncs.Load()
	testutil.EventuallyEvery(t, 20*time.Second, 10*time.Millisecond, func() error {
		if n := h.d.syncs.Load() - from; n < 5 {
			return fmt.Errorf("%d sync rounds", n)
		}
		return nil
	})
	if n := len(rc.requests()); n != 1 {
		t.Fatalf("%d requests after the 410, want 1", n)
	}
	ep.Generation = 2
	h.reg.Upsert(ep)
	testutil.EventuallyEvery(t, 10*time.Second, 20*time.Millisecond, func() error {
		ids := rc.uniqueIDs()
		if ids["msg_000002"] != 1 || ids["msg_000003"] != 1 {
			return fmt.Errorf("after the spec changed: %v", ids)
		}
		return nil
	})
	rc.checkAll(t, testEvent(1), testEvent(2), testEvent(3))
}

// With an external NATS several managers may share an endpoint's consumer,
// so every delivery is a message of its own and MaxAckPending bounds the
// requests of all of them; a batch message, should one be there, is
// attempted one delivery at a time.
func TestWithAnExternalNATSMaxInFlightHoldsAcrossManagers(t *testing.T) {
	ns := startNATSServer(t)
	rc := newReceiver(t, func(_ int, _ http.ResponseWriter, _ *http.Request) { time.Sleep(20 * time.Millisecond) })
	crm := testEndpoint("crm", rc.URL, func(e *endpoint.Endpoint) { e.Policy.MaxInFlight = 4 })
	egress, err := NewEgressPolicy([]string{"127.0.0.0/8"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var managers []*Dispatcher
	var stores []*store.Store
	var running sync.WaitGroup
	defer func() {
		cancel()
		running.Wait()
		for _, s := range stores {
			s.Close()
		}
	}()
	for range 2 {
		st, err := store.Open(t.Context(), store.Options{URL: ns.ClientURL()})
		if err != nil {
			t.Fatal(err)
		}
		stores = append(stores, st)
		if st.Embedded() {
			t.Fatal("a store with a URL reports itself embedded")
		}
		reg := endpoint.NewMemoryRegistry()
		reg.Upsert(crm)
		reg.MarkSynced()
		d, err := New(Options{Registry: reg, Store: st, HTTPClient: NewHTTPClient(egress), SyncInterval: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		managers = append(managers, d)
	}

	events := make([]Event, 10)
	for i := range events {
		events[i] = testEvent(i)
	}
	recordEnqueued(t, events...)
	if _, err := managers[0].Enqueue(t.Context(), events); err != nil {
		t.Fatal(err)
	}
	if n := streamMsgs(t, stores[0], store.StreamDeliveries); n != 10 {
		t.Errorf("10 deliveries accepted together were stored as %d messages, want 10", n)
	}
	for b := range 4 {
		batch := make([]store.Delivery, 5)
		for i := range batch {
			ev := testEvent(100 + 10*b + i)
			recordEnqueued(t, ev)
			events = append(events, ev)
			body, _ := ev.Envelope()
			batch[i] = store.Delivery{EventID: ev.ID, EventType: ev.Type, AcceptedAt: time.Now().UTC().Format(time.RFC3339Nano), Body: body}
		}
		if _, err := stores[0].JetStream().PublishMsg(t.Context(), store.BatchMsg("shop", "crm", crm.UID, batch)); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range managers {
		running.Go(func() { _ = d.Start(ctx) })
	}
	testutil.EventuallyEvery(t, 20*time.Second, 20*time.Millisecond, func() error {
		if n := len(rc.uniqueIDs()); n != 30 {
			return fmt.Errorf("%d of 30 delivered", n)
		}
		return nil
	})
	if peak := rc.peak.Load(); peak > 4 {
		t.Errorf("%d requests open at once from two managers, maxInFlight is 4", peak)
	}
	rc.checkAll(t, events...)
}

// A write after a write of one delivery starts at once; after a write of
// several, the next waits for more deliveries until it is full (or the
// delay ends), so a busy endpoint's messages carry more.
func TestGroupCommitDelayWaitsOnlyAfterAWriteOfSeveral(t *testing.T) {
	st, err := store.Open(context.Background(), store.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	b := newBatcher(st.JetStream(), time.Hour, nil)
	ep := testEndpoint("crm", "http://127.0.0.1:1")
	deliveries := func(from, n int) []store.Delivery {
		ds := make([]store.Delivery, n)
		for i := range ds {
			ds[i] = store.Delivery{EventID: fmt.Sprintf("msg_%d", from+i), EventType: "message.sent", AcceptedAt: "2026-11-29T10:00:00Z", Body: []byte(`{}`)}
		}
		return ds
	}
	waitDone := func(what string, ws []*batchWrite, within time.Duration) {
		t.Helper()
		for _, w := range ws {
			select {
			case <-w.done:
				if w.err != nil {
					t.Fatalf("%s: %v", what, w.err)
				}
			case <-time.After(within):
				t.Fatalf("%s: not stored within %s", what, within)
			}
		}
	}

	// Light load: single deliveries are written at once, one after another.
	for i := range 3 {
		waitDone(fmt.Sprintf("single delivery %d", i), b.add("shop", &ep, deliveries(i, 1)), 10*time.Second)
	}
	// A write of two: the next write waits for more.
	waitDone("a write of two", b.add("shop", &ep, deliveries(10, 2)), 10*time.Second)
	waiting := b.add("shop", &ep, deliveries(20, 1))
	select {
	case <-waiting[0].done:
		t.Fatal("the write after a write of two did not wait for more deliveries")
	case <-time.After(300 * time.Millisecond):
	}
	// Filling it ends the wait.
	rest := b.add("shop", &ep, deliveries(21, maxBatchDeliveries-1))
	waitDone("a full write", append(waiting, rest...), 10*time.Second)
	if n := streamMsgs(t, st, store.StreamDeliveries); n != 5 {
		t.Errorf("stored %d messages, want 5 (three single deliveries, a write of two, a full write)", n)
	}
	if len(rest) != 1 || rest[0] != waiting[0] {
		t.Errorf("the deliveries added while the write waited went to %d writes, want the waiting one", len(rest))
	}
}

func TestGroupCommitDelayDefaultsAndCanBeTurnedOff(t *testing.T) {
	st, err := store.Open(context.Background(), store.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, c := range []struct{ set, want time.Duration }{{0, DefaultGroupCommitDelay}, {-1, 0}, {time.Millisecond, time.Millisecond}} {
		d, err := New(Options{Registry: endpoint.NewMemoryRegistry(), Store: st, HTTPClient: NewHTTPClient(nil), GroupCommitDelay: c.set})
		if err != nil {
			t.Fatal(err)
		}
		if d.batcher.delay != c.want {
			t.Errorf("GroupCommitDelay %s: the batcher waits %s, want %s", c.set, d.batcher.delay, c.want)
		}
	}
}

// startNATSServer starts a nats-server with JetStream on loopback, as an
// external NATS (--nats-url), shut down when the test ends.
func startNATSServer(t *testing.T) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	return ns
}
