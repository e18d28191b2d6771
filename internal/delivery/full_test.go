package delivery

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/store"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// A store at its bound refuses new events with ErrFull (the ingestion
// API's 503) and says so through Healthy (/readyz), drops nothing it
// acknowledged, and takes events again once deliveries have drained it.
func TestAFullStoreRefusesNewEventsAndLosesNothing(t *testing.T) {
	var open atomic.Bool // the receiver answers 503 until opened
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		if !open.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	h := newHarnessWithStore(t, "", nil, store.Options{MaxBytes: 4 << 20})
	h.reg.Upsert(testEndpoint("crm", rc.URL, func(e *endpoint.Endpoint) {
		e.Policy.InitialBackoff, e.Policy.MaxBackoff, e.Policy.MaxAttempts = 50*time.Millisecond, 200*time.Millisecond, 1000
	}))
	pad := strings.Repeat("x", 4000)
	var accepted []Event
	var refused error
	for round := range 400 {
		batch := make([]Event, 20)
		for i := range batch {
			batch[i] = testEvent(round*20 + i)
			batch[i].Data = []byte(fmt.Sprintf(`{"messageId":"m%d","sessionId":"s1","to":"+6281234567890","text":%q}`, round*20+i, pad))
		}
		recordEnqueued(t, batch...)
		if _, err := h.d.Enqueue(t.Context(), batch); err != nil {
			refused = err
			break
		}
		accepted = append(accepted, batch...)
		time.Sleep(20 * time.Millisecond) // a producer's pace: the usage is read every second
	}
	if !errors.Is(refused, store.ErrFull) {
		t.Fatalf("after %d accepted events the store answered %v, want ErrFull", len(accepted), refused)
	}
	if !errors.Is(refused, store.ErrUnavailable) {
		t.Error("ErrFull does not wrap ErrUnavailable: the ingestion API would not answer 503")
	}
	if err := h.store.Healthy(); !errors.Is(err, store.ErrFull) {
		t.Errorf("a full store reports itself healthy (%v): /readyz would say ready", err)
	}
	used, limit := h.store.Usage()
	t.Logf("%d events accepted before the store was full (%d of %d bytes)", len(accepted), used, limit)

	// The receiver comes back: everything acknowledged arrives, and the
	// store takes events again.
	open.Store(true)
	testutil.Eventually(t, 60*time.Second, func() error {
		if n := len(rc.uniqueIDs()); n < len(accepted) {
			return fmt.Errorf("%d of %d delivered", n, len(accepted))
		}
		if err := h.store.Healthy(); err != nil {
			ai, _ := h.store.JetStream().AccountInfo(t.Context())
			detail := fmt.Sprintf("account %d", ai.Store)
			for name := range h.store.JetStream().StreamNames(t.Context()).Name() {
				st, _ := h.store.JetStream().Stream(t.Context(), name)
				detail += fmt.Sprintf(" %s=%d/%d", name, st.CachedInfo().State.Bytes, st.CachedInfo().State.Msgs)
			}
			if q := h.store.Retries(); q != nil {
				d, _ := q.Metrics()
				detail += fmt.Sprintf(" retries=%d", d)
			}
			if ix := h.store.Index(); ix != nil {
				d, _ := ix.Metrics()
				detail += fmt.Sprintf(" index=%d", d)
			}
			return fmt.Errorf("%w (bytes held: %s)", err, detail)
		}
		return nil
	})
	rc.checkAll(t, accepted...)
	later := testEvent(900001)
	h.enqueue(later)
	testutil.Eventually(t, 10*time.Second, func() error {
		if _, ok := rc.uniqueIDs()[later.ID]; !ok {
			return errors.New("the event posted after the drain did not arrive")
		}
		return nil
	})
}
