package delivery

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/store"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// newTunedHarness is newHarness with tune applied to the dispatcher's options.
func newTunedHarness(t *testing.T, tune func(*Options)) *harness {
	t.Helper()
	egress, err := NewEgressPolicy([]string{"127.0.0.0/8", "::1/128"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, dataDir: t.TempDir(), reg: endpoint.NewMemoryRegistry(), egress: egress, tune: tune}
	h.reg.MarkSynced()
	h.start()
	t.Cleanup(h.stop)
	return h
}

// gauge returns the value of vec's series of endpoint shop/name (every
// test endpoint is in namespace shop), and whether it exists (without
// making it, as WithLabelValues would).
func gauge(t *testing.T, vec *prometheus.GaugeVec, name string) (float64, bool) {
	t.Helper()
	ch := make(chan prometheus.Metric, 64)
	vec.Collect(ch)
	close(ch)
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, l := range pb.Label {
			got[l.GetName()] = l.GetValue()
		}
		if len(got) == 2 && got["namespace"] == "shop" && got["name"] == name {
			return pb.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// The pending deliveries of an endpoint count every delivery stored for it
// and not finished: the deliveries that group commit packed into a few
// messages one by one, those in flight, and its retries waiting in the
// on-disk queue. The lag is the age of the oldest one waiting, from its
// event's acceptance. Both go to 0 once everything is delivered.
func TestPendingDeliveriesAndLagPerEndpoint(t *testing.T) {
	const n = 100
	var answer atomic.Int32 // 0: hang until released, else this status code
	release := make(chan struct{})
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		if code := answer.Load(); code != 0 {
			w.WriteHeader(int(code))
			return
		}
		select {
		case <-release:
			w.WriteHeader(http.StatusServiceUnavailable)
		case <-r.Context().Done():
		}
	})
	var offset atomic.Int64 // added to the clock: the lag grows without a wait
	m := NewMetrics(prometheus.NewRegistry())
	h := newTunedHarness(t, func(o *Options) {
		o.Metrics = m
		o.BacklogInterval = 20 * time.Millisecond
		o.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	})
	crm := testEndpoint("crm", rc.URL+"/crm", func(e *endpoint.Endpoint) {
		e.Policy.MaxInFlight = 1
		e.Policy.MaxAge = 72 * time.Hour
		e.Policy.Timeout = 30 * time.Second
		// Retries fall due within 4 minutes: the test moves the clock past
		// that, and receivers still take the signatures' timestamps (the
		// Standard Webhooks tolerance is 5 minutes).
		e.Policy.InitialBackoff, e.Policy.MaxBackoff = 4*time.Minute, 4*time.Minute
	})
	h.reg.Upsert(crm)
	idle := testEndpoint("idle", rc.URL+"/idle", func(e *endpoint.Endpoint) { e.Events = []string{"campaign.completed"} })
	h.reg.Upsert(idle)

	events := make([]Event, n)
	for i := range events {
		events[i] = testEvent(i)
	}
	h.enqueue(events...)
	if msgs := subjectMsgs(t, h.store, store.StreamDeliveries, store.DeliverSubject("shop", "crm")); msgs >= n {
		t.Fatalf("%d messages for %d deliveries: group commit did not pack them, so this test shows nothing about counting them", msgs, n)
	}
	offset.Store(int64(3 * time.Minute))
	testutil.EventuallyEvery(t, 10*time.Second, 10*time.Millisecond, func() error {
		pending, _ := gauge(t, m.Pending, "crm")
		lag, _ := gauge(t, m.Lag, "crm")
		if pending != n || lag < 180 {
			return fmt.Errorf("pending %v, lag %vs; want %d and at least the 3 minutes the clock moved", pending, lag, n)
		}
		return nil
	})
	if lag, _ := gauge(t, m.Lag, "crm"); lag > 180+60 {
		t.Errorf("lag %vs: more than the 3 minutes the clock moved and the test's minute", lag)
	}
	offset.Store(0)
	if pending, ok := gauge(t, m.Pending, "idle"); !ok || pending != 0 {
		t.Errorf("an endpoint with nothing stored: pending %v (series exists: %v), want 0", pending, ok)
	}

	// Every delivery fails once and waits in the retry queue for minutes:
	// still pending, no longer waiting in the stream, so no lag.
	answer.Store(http.StatusServiceUnavailable)
	close(release)
	testutil.EventuallyEvery(t, 20*time.Second, 10*time.Millisecond, func() error {
		pending, _ := gauge(t, m.Pending, "crm")
		lag, _ := gauge(t, m.Lag, "crm")
		queued := h.store.Retries().PartLen(retryPart(crm.UID))
		if pending != n || lag != 0 || queued != n {
			return fmt.Errorf("pending %v, lag %vs, %d in the retry queue; want %d, 0, %d", pending, lag, queued, n, n)
		}
		return nil
	})

	// The retries fall due and succeed: nothing is pending.
	answer.Store(http.StatusOK)
	offset.Store(int64(4*time.Minute + 30*time.Second))
	h.store.Retries().Kick()
	testutil.EventuallyEvery(t, 30*time.Second, 20*time.Millisecond, func() error {
		pending, _ := gauge(t, m.Pending, "crm")
		lag, _ := gauge(t, m.Lag, "crm")
		if pending != 0 || lag != 0 {
			return fmt.Errorf("pending %v, lag %vs after every delivery succeeded; want 0 and 0", pending, lag)
		}
		return nil
	})
	if extra := h.d.batches.extra(crm.Key()); extra != 0 {
		t.Errorf("%d deliveries of group commit messages still counted after every message left the stream", extra)
	}
	if got := promtest.ToFloat64(m.Deliveries.WithLabelValues("shop", "crm", "message.sent", "success")); got != n {
		t.Errorf("%v successful attempts, want %d", got, n)
	}
	rc.checkAll(t, events...)
}

// The end-to-end latency is observed once per event, at its first
// successful delivery, from its acceptance; a delivery given up for good is
// counted as failed, by event type.
func TestLatencyAndFailedForGood(t *testing.T) {
	var offset atomic.Int64
	release := make(chan struct{})
	ok := newReceiver(t, func(_ int, _ http.ResponseWriter, _ *http.Request) { <-release })
	bad := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	m := NewMetrics(prometheus.NewRegistry())
	h := newTunedHarness(t, func(o *Options) {
		o.Metrics = m
		o.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	})
	// The receiver that succeeds answers only once the clock moved by 90 s
	// after the events were accepted: their latency is at least that.
	h.reg.Upsert(testEndpoint("gives-up", bad.URL, func(e *endpoint.Endpoint) { e.Policy.MaxAttempts = 2; e.Policy.InitialBackoff = 10 * time.Millisecond }))
	h.reg.Upsert(testEndpoint("crm", ok.URL))
	events := []Event{testEvent(1), testEvent(2), testEvent(3)}
	events[2].Type = "session.connected"
	events[2].Data = []byte(`{"sessionId":"s1","phoneNumber":"+6281234567890"}`)
	h.enqueue(events...)
	offset.Store(int64(90 * time.Second))
	close(release)

	testutil.EventuallyEvery(t, 20*time.Second, 20*time.Millisecond, func() error {
		sent := promtest.ToFloat64(m.Failed.WithLabelValues("shop", "gives-up", "message.sent"))
		session := promtest.ToFloat64(m.Failed.WithLabelValues("shop", "gives-up", "session.connected"))
		if sent != 2 || session != 1 {
			return fmt.Errorf("failed for good: %v message.sent, %v session.connected; want 2 and 1", sent, session)
		}
		return nil
	})
	testutil.EventuallyEvery(t, 20*time.Second, 20*time.Millisecond, func() error {
		count, sum := histogram(t, m.Latency, "shop", "crm")
		if count != 3 {
			return fmt.Errorf("%d latencies observed, want 3", count)
		}
		if sum < 3*90 || sum > 3*(90+30) {
			return fmt.Errorf("latencies sum to %vs, want 3 × 90-120 s", sum)
		}
		return nil
	})
	if count, _ := histogram(t, m.Latency, "shop", "gives-up"); count != 0 {
		t.Errorf("%d latencies observed for an endpoint that never succeeded", count)
	}
	if got := promtest.ToFloat64(m.Failed.WithLabelValues("shop", "crm", "message.sent")); got != 0 {
		t.Errorf("%v failures for good at the endpoint that succeeded", got)
	}
	ok.checkAll(t, events...)
}

// histogram returns the count and sum of vec's series for labels.
func histogram(t *testing.T, vec *prometheus.HistogramVec, labels ...string) (uint64, float64) {
	t.Helper()
	o, err := vec.GetMetricWithLabelValues(labels...)
	if err != nil {
		t.Fatal(err)
	}
	var pb dto.Metric
	if err := o.(prometheus.Metric).Write(&pb); err != nil {
		t.Fatal(err)
	}
	return pb.GetHistogram().GetSampleCount(), pb.GetHistogram().GetSampleSum()
}

// Once a WebhookConfig is deleted (the controller removes it from the
// registry and calls Forget), none of its series is exported any more, also
// after further rounds of the sync loop and the backlog; another
// endpoint's stay.
func TestDeletedWebhookConfigLeavesNoSeries(t *testing.T) {
	rc := newReceiver(t, nil)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	h := newTunedHarness(t, func(o *Options) {
		o.Metrics = m
		o.BacklogInterval = 20 * time.Millisecond
	})
	crm, other := testEndpoint("crm", rc.URL+"/crm"), testEndpoint("other", rc.URL+"/other")
	h.reg.Upsert(crm)
	h.reg.Upsert(other)
	events := []Event{testEvent(1), testEvent(2)}
	h.enqueue(events...)
	testutil.EventuallyEvery(t, 20*time.Second, 20*time.Millisecond, func() error {
		for _, name := range []string{"crm", "other"} {
			if got := promtest.ToFloat64(m.Deliveries.WithLabelValues("shop", name, "message.sent", "success")); got != 2 {
				return fmt.Errorf("%s: %v successes, want 2", name, got)
			}
			if _, ok := gauge(t, m.Pending, name); !ok {
				return fmt.Errorf("%s: no pending series yet", name)
			}
		}
		return nil
	})
	otherSeries := seriesOf(t, reg, "other")

	h.reg.Remove(crm.Key())
	h.d.Forget(crm.Key())
	syncs, backlogs := h.d.syncs.Load(), h.d.backlogs.Load()
	testutil.EventuallyEvery(t, 10*time.Second, 20*time.Millisecond, func() error {
		if h.d.syncs.Load() < syncs+2 || h.d.backlogs.Load() < backlogs+2 {
			return fmt.Errorf("waiting for two more rounds of the sync loop and the backlog")
		}
		return nil
	})
	if got := seriesOf(t, reg, "crm"); len(got) != 0 {
		t.Errorf("series of the deleted WebhookConfig: %v", got)
	}
	if got := seriesOf(t, reg, "other"); len(got) != len(otherSeries) {
		t.Errorf("the other WebhookConfig's series went from %v to %v", otherSeries, got)
	}
	rc.checkAll(t, events...)
}

// A worker may finish a group commit message before the batcher hears that
// its write was acknowledged: the message is then not counted at all, and
// a message the batcher never hears of (stored before a restart) is
// forgotten after a while.
func TestBatchCountsWhateverComesFirst(t *testing.T) {
	crm := types.NamespacedName{Namespace: "shop", Name: "crm"}
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	var b batchCounts
	b.stored(crm, 1, 64)
	b.stored(crm, 2, 3)
	if got := b.extra(crm); got != 63+2 {
		t.Fatalf("extra %d, want 65", got)
	}
	b.done(1, at)
	b.done(3, at) // before its write was acknowledged
	b.stored(crm, 3, 10)
	if got := b.extra(crm); got != 2 {
		t.Errorf("extra %d after message 1 left and 3 left before it was counted, want 2", got)
	}
	b.done(2, at)
	if got := b.extra(crm); got != 0 || len(b.bySeq) != 0 || len(b.early) != 0 {
		t.Errorf("extra %d, %d messages and %d early ones kept after all left, want none", got, len(b.bySeq), len(b.early))
	}
	b.done(7, at) // stored before a restart: never heard of
	b.done(8, at.Add(2*earlyFor))
	if _, ok := b.early[7]; ok || len(b.early) != 1 {
		t.Errorf("early = %v: the entry of a message never heard of is kept beyond %v", b.early, earlyFor)
	}
}
