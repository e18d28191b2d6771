package delivery

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/stats"
	"github.com/wablast/webhook-operator/internal/store"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// TestRetriesWaitOnDiskAcrossACrash: with the embedded store, deliveries
// waiting for their next attempt are in the on-disk retry queue, not in
// JetStream (whose schedules keep state in memory per waiting delivery);
// they survive a crash and are delivered, each with its own content, when
// the receiver is back.
func TestRetriesWaitOnDiskAcrossACrash(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	var mu sync.Mutex
	delivered := map[string]int{} // answered 2xx, by webhook-id
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		mu.Lock()
		delivered[r.Header.Get("webhook-id")]++
		mu.Unlock()
	})
	dir := t.TempDir()
	h := newHarness(t, dir, nil)
	h.reg.Upsert(testEndpoint("crm", rc.URL, func(e *endpoint.Endpoint) {
		e.Policy.InitialBackoff = 2 * time.Second
		e.Policy.MaxBackoff = 2 * time.Second
		e.Policy.MaxAttempts = 20
	}))
	const total = 200
	events := variedEvents(t, "outage", total)
	for i := 0; i < total; i += 50 {
		h.enqueue(events[i : i+50]...)
	}
	q := h.store.Retries()
	if q == nil {
		t.Fatal("the embedded store has no retry queue")
	}
	// Every event attempted once and waiting: in the queue, none in the
	// deliveries stream.
	testutil.EventuallyEvery(t, 30*time.Second, 20*time.Millisecond, func() error {
		if n := q.Len(); n != total {
			return fmt.Errorf("%d retries queued, want %d", n, total)
		}
		if n := streamMsgs(t, h.store, store.StreamDeliveries); n != 0 {
			return fmt.Errorf("%d messages in %s", n, store.StreamDeliveries)
		}
		return nil
	})
	h.crash()

	down.Store(false)
	h.start()
	testutil.EventuallyEvery(t, 60*time.Second, 20*time.Millisecond, func() error {
		mu.Lock()
		n := len(delivered)
		mu.Unlock()
		if n != total {
			return fmt.Errorf("%d of %d delivered", n, total)
		}
		if n := h.store.Retries().Len(); n != 0 {
			return fmt.Errorf("%d retries still queued", n)
		}
		return nil
	})
	rc.checkAll(t, events...)
	// Each event was answered 503 once before the crash, then delivered
	// from the queue.
	if n := len(rc.requests()); n < 2*total {
		t.Errorf("the receiver saw %d requests, want at least %d (a 503 and a delivery each)", n, 2*total)
	}
	st := h.waitStats("uid-crm", func(st stats.EndpointStats) error {
		if st.EventsDelivered != total || st.EventsPending != 0 {
			return fmt.Errorf("delivered %d, pending %d", st.EventsDelivered, st.EventsPending)
		}
		return nil
	})
	if st.EventsFailed != 0 {
		t.Errorf("failed %d", st.EventsFailed)
	}
}

// TestRetriesWaitInTheQueueWhileTheirEndpointIsBehind: a receiver that
// fails slowly makes retries fall due faster than they can be attempted.
// The pump keeps at most retryHold of them ahead of the endpoint's worker
// in the delivery stream; the rest wait in the on-disk queue.
func TestRetriesWaitInTheQueueWhileTheirEndpointIsBehind(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		if down.Load() {
			time.Sleep(10 * time.Millisecond)
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	h := newHarness(t, "", nil)
	h.reg.Upsert(testEndpoint("crm", rc.URL, func(e *endpoint.Endpoint) {
		e.Policy.InitialBackoff = 100 * time.Millisecond
		e.Policy.MaxBackoff = 200 * time.Millisecond
		e.Policy.MaxAttempts = 1000
		e.Policy.MaxInFlight = 4
	}))
	const total = 1500
	events := variedEvents(t, "behind", total)
	for i := 0; i < total; i += 100 {
		h.enqueue(events[i : i+100]...)
	}
	q := h.store.Retries()
	// Once the first attempts are made, the stream holds only moved
	// retries: never more than retryHold (plus the few being attempted).
	testutil.EventuallyEvery(t, 60*time.Second, 20*time.Millisecond, func() error {
		if n := q.Len(); n < total-retryHold-10 {
			return fmt.Errorf("%d retries queued", n)
		}
		return nil
	})
	peak := uint64(0)
	for range 40 {
		n := streamMsgs(t, h.store, store.StreamDeliveries)
		peak = max(peak, n)
		time.Sleep(50 * time.Millisecond)
	}
	if peak > retryHold+8 {
		t.Errorf("the delivery stream held up to %d messages for the slow endpoint, want at most %d", peak, retryHold+8)
	}
	if n := q.Len(); n < total-retryHold-8 {
		t.Errorf("only %d retries wait in the queue, want at least %d", n, total-retryHold-8)
	}
	t.Logf("stream peak %d, queued %d", peak, q.Len())
	down.Store(false)
	testutil.EventuallyEvery(t, 60*time.Second, 20*time.Millisecond, func() error {
		if n := len(rc.uniqueIDs()); n != total {
			return fmt.Errorf("%d of %d arrived", n, total)
		}
		return nil
	})
	rc.checkAll(t, events...)
}
