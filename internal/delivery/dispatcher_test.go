package delivery

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"k8s.io/apimachinery/pkg/types"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/signing"
	"github.com/wablast/webhook-operator/internal/stats"
	"github.com/wablast/webhook-operator/internal/store"
	"github.com/wablast/webhook-operator/internal/testutil"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// received is one request seen by a test receiver.
type received struct {
	at     time.Time
	id     string
	header http.Header
	body   []byte
}

// receiver is an httptest server that records requests and answers with
// whatever respond returns. Every request also goes through the content
// oracle (testutil.Receiver): its signature is verified with the official
// Standard Webhooks library (one that does not verify is answered 401) and
// its body kept by webhook-id. When the test ends, every body it received
// is compared with what the test enqueued (ledgerOf): type, data as a JSON
// value, timestamp. checkAll also requires given events to have arrived.
type receiver struct {
	*httptest.Server
	oracle   *testutil.Receiver
	reported atomic.Bool // checkAll reported a mismatch already
	mu       sync.Mutex
	reqs     []received
	inFlight atomic.Int32
	peak     atomic.Int32
	respond  func(n int, w http.ResponseWriter, r *http.Request) // n counts requests from 1
}

func newReceiver(t *testing.T, respond func(n int, w http.ResponseWriter, r *http.Request)) *receiver {
	t.Helper()
	oracle, err := testutil.NewReceiver(testSecret, ledgerOf(t))
	if err != nil {
		t.Fatal(err)
	}
	rc := &receiver{respond: respond, oracle: oracle}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cur := rc.inFlight.Add(1)
		defer rc.inFlight.Add(-1)
		for {
			p := rc.peak.Load()
			if cur <= p || rc.peak.CompareAndSwap(p, cur) {
				break
			}
		}
		body, _ := io.ReadAll(r.Body)
		// The oracle records first: a test that saw a request in reqs
		// (uniqueIDs) must find it in the oracle too (checkAll).
		_, verifyErr := rc.oracle.Record(r.Header, r.URL.Path, body)
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, received{at: time.Now(), id: r.Header.Get("webhook-id"), header: r.Header.Clone(), body: body})
		n := len(rc.reqs)
		rc.mu.Unlock()
		if verifyErr != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if rc.respond != nil {
			r.Body = io.NopCloser(bytes.NewReader(body)) // read again by respond, should it want to
			rc.respond(n, w, r)
		}
	}))
	t.Cleanup(rc.Close)
	t.Cleanup(func() {
		if err := rc.oracle.Check(); err != nil && !rc.reported.Load() {
			t.Errorf("receiver %s: %v", rc.URL, err)
		}
	})
	return rc
}

// checkAll fails the test unless every event arrived, each carrying what
// was enqueued (and everything else that arrived did too).
func (rc *receiver) checkAll(t *testing.T, events ...Event) {
	t.Helper()
	ids := make([]string, len(events))
	for i, ev := range events {
		ids[i] = ev.ID
	}
	if err := rc.oracle.CheckAll(ids); err != nil {
		rc.reported.Store(true)
		t.Errorf("receiver %s: %v", rc.URL, err)
	}
}

func (rc *receiver) requests() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.reqs...)
}

func (rc *receiver) uniqueIDs() map[string]int {
	out := map[string]int{}
	for _, r := range rc.requests() {
		out[r.id]++
	}
	return out
}

// ledgers holds each test's Ledger: every event it enqueued, which its
// receivers' deliveries are compared with.
var ledgers sync.Map // *testing.T -> *testutil.Ledger

// ledgerOf returns t's Ledger.
func ledgerOf(t *testing.T) *testutil.Ledger {
	if l, ok := ledgers.Load(t); ok {
		return l.(*testutil.Ledger)
	}
	l, loaded := ledgers.LoadOrStore(t, testutil.NewLedger())
	if !loaded {
		t.Cleanup(func() { ledgers.Delete(t) })
	}
	return l.(*testutil.Ledger)
}

// recordEnqueued adds events to t's Ledger: a test that enqueues or stores
// deliveries other than through harness.enqueue says so with it.
func recordEnqueued(t *testing.T, events ...Event) {
	posted := make([]testutil.Posted, len(events))
	for i, ev := range events {
		posted[i] = testutil.Posted{ID: ev.ID, Type: ev.Type, Data: ev.Data, Timestamp: ev.Timestamp.Format(time.RFC3339Nano)}
	}
	ledgerOf(t).Add(posted...)
}

// harness runs a store, a dispatcher and an aggregator on a temporary data directory.
type harness struct {
	t       *testing.T
	dataDir string
	reg     *endpoint.MemoryRegistry
	store   *store.Store
	d       *Dispatcher
	agg     *stats.Aggregator
	cancel  context.CancelFunc
	done    sync.WaitGroup
	egress  *EgressPolicy
	// tune adjusts the dispatcher's options before each start.
	tune func(*Options)
	// storeOpts are the store's options (DataDir is the harness's).
	storeOpts store.Options
}

func newHarness(t *testing.T, dataDir string, egress *EgressPolicy) *harness {
	t.Helper()
	return newHarnessWithStore(t, dataDir, egress, store.Options{})
}

// newHarnessWithStore is newHarness with the store's options.
func newHarnessWithStore(t *testing.T, dataDir string, egress *EgressPolicy, so store.Options) *harness {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	if egress == nil {
		var err error
		if egress, err = NewEgressPolicy([]string{"127.0.0.0/8", "::1/128"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	h := &harness{t: t, dataDir: dataDir, reg: endpoint.NewMemoryRegistry(), egress: egress, storeOpts: so}
	h.reg.MarkSynced()
	h.start()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) start() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	so := h.storeOpts
	so.DataDir = h.dataDir
	st, err := store.Open(ctx, so)
	if err != nil {
		h.t.Fatal(err)
	}
	h.store = st
	// Errors the dispatcher logs (a store write that failed, say) show in
	// the output of a failing test.
	opts := Options{Registry: h.reg, Store: st, HTTPClient: NewHTTPClient(h.egress), SyncInterval: 50 * time.Millisecond,
		Logger: testr.NewWithOptions(h.t, testr.Options{Verbosity: 0})}
	if h.tune != nil {
		h.tune(&opts)
	}
	d, err := New(opts)
	if err != nil {
		h.t.Fatal(err)
	}
	h.d = d
	h.agg = stats.NewAggregator(st, nil)
	h.done.Add(2)
	go func() {
		defer h.done.Done()
		if err := d.Start(ctx); err != nil {
			h.t.Errorf("dispatcher: %v", err)
		}
	}()
	go func() {
		defer h.done.Done()
		if err := h.agg.Run(ctx, 100*time.Millisecond, logr.Discard()); err != nil && ctx.Err() == nil {
			h.t.Errorf("aggregator: %v", err)
		}
	}()
}

// stop stops everything and closes the store; safe to call twice.
func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.done.Wait()
	h.store.Close()
	h.cancel = nil
}

// crash closes the store under the running dispatcher, as a kill would: no
// acknowledgement in flight reaches the store.
func (h *harness) crash() {
	h.store.Close()
	h.cancel()
	h.done.Wait()
	h.cancel = nil
}

func testEndpoint(name, url string, mutate ...func(*endpoint.Endpoint)) endpoint.Endpoint {
	keys, _ := signing.ParseSecrets(testSecret)
	ep := endpoint.Endpoint{
		Namespace: "shop", Name: name, UID: types.UID("uid-" + name), Generation: 1,
		URL: url, Keys: keys, Events: []string{"*"}, Enabled: true,
		Policy: endpoint.Policy{
			Timeout: 2 * time.Second, MaxAttempts: 5, InitialBackoff: 200 * time.Millisecond,
			MaxBackoff: 5 * time.Second, MaxAge: time.Hour, MaxInFlight: 4,
		},
	}
	for _, m := range mutate {
		m(&ep)
	}
	return ep
}

func testEvent(i int) Event {
	return Event{
		ID: fmt.Sprintf("msg_%06d", i), Namespace: "shop", Type: "message.sent",
		Timestamp: time.Date(2026, 11, 28, 10, 15, 2, 123e6, time.UTC),
		Data:      json.RawMessage(fmt.Sprintf(`{"messageId":"m%d","sessionId":"s1","to":"+6281234567890"}`, i)),
	}
}

// variedEvents returns n events whose data differ from one another in
// content, length (a few bytes to a few kilobytes), member order and
// escapes (testutil.VariedEvents), as the ingestion API hands them over:
// data in canonical form, a timestamp on every one (the posted one, or the
// time of acceptance). Their ids are msg_<prefix>-<i>.
func variedEvents(t *testing.T, prefix string, n int) []Event {
	t.Helper()
	out := make([]Event, n)
	for i, p := range testutil.VariedEvents(prefix, n) {
		ts := time.Date(2026, 11, 28, 10, 15, 2, 123456789, time.UTC)
		if p.Timestamp != "" {
			var err error
			if ts, err = time.Parse(time.RFC3339Nano, p.Timestamp); err != nil {
				t.Fatal(err)
			}
		}
		data, err := CanonicalData(p.Data)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = Event{ID: "msg_" + p.ID, Namespace: "shop", Type: p.Type, Timestamp: ts, Data: data, DataCanonical: true}
	}
	return out
}

// enqueue enqueues events and records them in the test's Ledger.
func (h *harness) enqueue(events ...Event) []EnqueueResult {
	h.t.Helper()
	recordEnqueued(h.t, events...)
	res, err := h.d.Enqueue(context.Background(), events)
	if err != nil {
		h.t.Fatalf("enqueue: %v", err)
	}
	return res
}

func (h *harness) waitStats(uid types.UID, check func(stats.EndpointStats) error) stats.EndpointStats {
	h.t.Helper()
	var st stats.EndpointStats
	testutil.EventuallyEvery(h.t, 20*time.Second, 20*time.Millisecond, func() error {
		var ok bool
		if st, ok = h.agg.Get(uid); !ok {
			return fmt.Errorf("no stats for %s", uid)
		}
		return check(st)
	})
	return st
}

func TestDeliveryIsSignedAndCounted(t *testing.T) {
	rc := newReceiver(t, nil)
	h := newHarness(t, "", nil)
	h.reg.Upsert(testEndpoint("crm", rc.URL+"/hooks"))
	h.reg.Upsert(testEndpoint("other-type", rc.URL+"/other", func(e *endpoint.Endpoint) { e.Events = []string{"campaign.started"} }))

	res := h.enqueue(testEvent(1))
	if res[0].Subscribers != 1 || res[0].ID != "msg_000001" {
		t.Fatalf("enqueue result %+v, want 1 subscriber", res[0])
	}
	testutil.EventuallyEvery(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := len(rc.requests()); n != 1 {
			return fmt.Errorf("%d requests", n)
		}
		return nil
	})
	r := rc.requests()[0]
	if r.id != "msg_000001" {
		t.Errorf("webhook-id %q", r.id)
	}
	if got := r.header.Get("Content-Type"); got != "application/json" {
		t.Errorf("content-type %q", got)
	}
	if !strings.Contains(r.header.Get("User-Agent"), "webhook-operator") {
		t.Errorf("user-agent %q", r.header.Get("User-Agent"))
	}
	if got := r.header.Get("Accept-Encoding"); got != "" {
		t.Errorf("accept-encoding %q: response bodies are dropped, so none should be asked for compressed", got)
	}
	want := `{"type":"message.sent","timestamp":"2026-11-28T10:15:02.123Z","data":{"messageId":"m1","sessionId":"s1","to":"+6281234567890"}}`
	if string(r.body) != want {
		t.Errorf("body\n%s\nwant\n%s", r.body, want)
	}
	wh, err := standardwebhooks.NewWebhook(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(r.body, r.header); err != nil {
		t.Errorf("the official Standard Webhooks library rejects the delivery: %v", err)
	}
	rc.checkAll(t, testEvent(1))

	st := h.waitStats("uid-crm", func(st stats.EndpointStats) error {
		if st.EventsDelivered != 1 {
			return fmt.Errorf("delivered %d", st.EventsDelivered)
		}
		return nil
	})
	if st.TotalEventsSent != 1 || st.EventsFailed != 0 || st.EventsPending != 0 || st.SuccessRate(time.Now()) != "100.0%" {
		t.Errorf("stats %+v rate %s", st, st.SuccessRate(time.Now()))
	}
	if st.LastDelivery == nil || st.LastDelivery.Result != webhooksv1alpha1.ResultSucceeded || st.LastDelivery.StatusCode != http.StatusOK || st.LastDelivery.EventID != "msg_000001" {
		t.Errorf("lastDelivery %+v", st.LastDelivery)
	}
	if _, ok := h.agg.Get("uid-other-type"); ok {
		t.Error("an endpoint not subscribed to the type got an attempt")
	}
}

func TestRetriesWithGrowingDelays(t *testing.T) {
	rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n <= 3 {
			w.WriteHeader(http.StatusInternalServerError)
		}
	})
	h := newHarness(t, "", nil)
	h.reg.Upsert(testEndpoint("crm", rc.URL, func(e *endpoint.Endpoint) { e.Policy.InitialBackoff = 300 * time.Millisecond }))
	h.enqueue(testEvent(1))

	st := h.waitStats("uid-crm", func(st stats.EndpointStats) error {
		if st.EventsDelivered != 1 {
			return fmt.Errorf("delivered %d", st.EventsDelivered)
		}
		return nil
	})
	reqs := rc.requests()
	if len(reqs) != 4 {
		t.Fatalf("%d attempts, want 4", len(reqs))
	}
	for _, r := range reqs {
		if r.id != "msg_000001" {
			t.Errorf("attempt with webhook-id %q", r.id)
		}
	}
	rc.checkAll(t, testEvent(1)) // every attempt the same body, the one enqueued
	// Equal jitter: the delay after attempt n lies in [b*2^(n-1)/2, b*2^(n-1)].
	for i, least := range []time.Duration{150 * time.Millisecond, 300 * time.Millisecond, 600 * time.Millisecond} {
		if gap := reqs[i+1].at.Sub(reqs[i].at); gap < least {
			t.Errorf("delay before attempt %d was %s, want at least %s", i+2, gap, least)
		}
	}
	if st.TotalEventsSent != 1 || st.EventsPending != 0 || st.ConsecutiveFailures != 0 || st.LastDelivery.Attempt != 4 {
		t.Errorf("stats %+v", st)
	}
	if len(st.Recent) != 4 || st.Recent[0].Result != webhooksv1alpha1.ResultSucceeded || st.Recent[1].Result != webhooksv1alpha1.ResultRetrying || st.Recent[1].StatusCode != http.StatusInternalServerError {
		t.Errorf("recent deliveries %+v", st.Recent)
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	cases := map[string]func() string{
		"Retry-After in seconds":   func() string { return "2" },
		"Retry-After as HTTP date": func() string { return time.Now().Add(3 * time.Second).UTC().Format(http.TimeFormat) },
	}
	for name, value := range cases {
		t.Run(name, func(t *testing.T) {
			rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
				if n == 1 {
					w.Header().Set("Retry-After", value())
					w.WriteHeader(http.StatusServiceUnavailable)
				}
			})
			h := newHarness(t, "", nil)
			h.reg.Upsert(testEndpoint("crm", rc.URL, func(e *endpoint.Endpoint) { e.Policy.InitialBackoff = 100 * time.Millisecond }))
			h.enqueue(testEvent(1))
			testutil.EventuallyEvery(t, 15*time.Second, 20*time.Millisecond, func() error {
				if n := len(rc.requests()); n < 2 {
					return fmt.Errorf("%d attempts", n)
				}
				return nil
			})
			reqs := rc.requests()
			if gap := reqs[1].at.Sub(reqs[0].at); gap < 1900*time.Millisecond {
				t.Errorf("retried after %s, Retry-After asked for about 2s or more", gap)
			}
		})
	}
	t.Run("Retry-After is capped at maxBackoff", func(t *testing.T) {
		rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
			if n == 1 {
				w.Header().Set("Retry-After", "3600")
				w.WriteHeader(http.StatusTooManyRequests)
			}
		})
		h := newHarness(t, "", nil)
		h.reg.Upsert(testEndpoint("crm", rc.URL, func(e *endpoint.Endpoint) { e.Policy.MaxBackoff = time.Second }))
		h.enqueue(testEvent(1))
		testutil.EventuallyEvery(t, 10*time.Second, 20*time.Millisecond, func() error {
			if n := len(rc.requests()); n < 2 {
				return fmt.Errorf("%d attempts", n)
			}
			return nil
		})
	})
}

func TestGoneStopsTheEndpointUntilItsSpecChanges(t *testing.T) {
	var gone atomic.Bool
	gone.Store(true)
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		if gone.Load() {
			w.WriteHeader(http.StatusGone)
		}
	})
	h := newHarness(t, "", nil)
	h.reg.Upsert(testEndpoint("crm", rc.URL))
	h.enqueue(testEvent(1))
	st := h.waitStats("uid-crm", func(st stats.EndpointStats) error {
		if st.EventsFailed != 1 {
			return fmt.Errorf("failed %d", st.EventsFailed)
		}
		return nil
	})
	if st.DeliveringStatus != "False" || st.DeliveringReason != webhooksv1alpha1.ReasonEndpointGone || st.GoneGeneration != 1 {
		t.Errorf("delivering %s/%s gone=%d", st.DeliveringStatus, st.DeliveringReason, st.GoneGeneration)
	}
	if n := len(rc.requests()); n != 1 {
		t.Fatalf("410 was retried: %d attempts", n)
	}

	// Further events are held, not attempted: stored, and still there after
	// the sync loop decided about the endpoint several times.
	h.enqueue(testEvent(2))
	from := h.d.syncs.Load()
	testutil.EventuallyEvery(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := h.d.syncs.Load() - from; n < 5 {
			return fmt.Errorf("%d sync rounds since the event was stored", n)
		}
		return nil
	})
	if n := streamMsgs(t, h.store, store.StreamDeliveries); n != 1 {
		t.Fatalf("%s holds %d messages, want the held delivery", store.StreamDeliveries, n)
	}
	if n := len(rc.requests()); n != 1 {
		t.Fatalf("deliveries went on after 410: %d attempts", n)
	}

	// A spec change (new generation) resumes deliveries; the held event arrives.
	gone.Store(false)
	h.reg.Upsert(testEndpoint("crm", rc.URL, func(e *endpoint.Endpoint) { e.Generation = 2 }))
	testutil.EventuallyEvery(t, 10*time.Second, 20*time.Millisecond, func() error {
		if ids := rc.uniqueIDs(); ids["msg_000002"] == 0 {
			return fmt.Errorf("held event not delivered: %v", ids)
		}
		return nil
	})
	rc.checkAll(t, testEvent(1), testEvent(2))
}

func TestRedirectIsNotFollowed(t *testing.T) {
	var targetHits atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { targetHits.Add(1) }))
	defer target.Close()
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusFound)
	})
	h := newHarness(t, "", nil)
	h.reg.Upsert(testEndpoint("crm", rc.URL, func(e *endpoint.Endpoint) { e.Policy.MaxAttempts = 1 }))
	h.enqueue(testEvent(1))
	st := h.waitStats("uid-crm", func(st stats.EndpointStats) error {
		if st.EventsFailed != 1 {
			return fmt.Errorf("failed %d", st.EventsFailed)
		}
		return nil
	})
	if targetHits.Load() != 0 {
		t.Error("the redirect was followed")
	}
	if st.LastDelivery.StatusCode != http.StatusFound || !strings.Contains(st.LastDelivery.Error, "redirects are not followed") {
		t.Errorf("lastDelivery %+v", st.LastDelivery)
	}
}

func TestSlowReceiverTimesOutAndIsRetried(t *testing.T) {
	rc := newReceiver(t, func(n int, _ http.ResponseWriter, r *http.Request) {
		if n == 1 {
			select {
			case <-time.After(3 * time.Second):
			case <-r.Context().Done():
			}
		}
	})
	h := newHarness(t, "", nil)
	h.reg.Upsert(testEndpoint("crm", rc.URL, func(e *endpoint.Endpoint) { e.Policy.Timeout = 300 * time.Millisecond }))
	h.enqueue(testEvent(1))
	st := h.waitStats("uid-crm", func(st stats.EndpointStats) error {
		if st.EventsDelivered != 1 {
			return fmt.Errorf("delivered %d", st.EventsDelivered)
		}
		return nil
	})
	if len(st.Recent) != 2 || !strings.Contains(st.Recent[1].Error, "no response within timeoutSeconds") {
		t.Errorf("recent %+v", st.Recent)
	}
}

func TestMaxInFlightIsNeverExceeded(t *testing.T) {
	rc := newReceiver(t, func(_ int, _ http.ResponseWriter, _ *http.Request) { time.Sleep(100 * time.Millisecond) })
	h := newHarness(t, "", nil)
	h.reg.Upsert(testEndpoint("crm", rc.URL, func(e *endpoint.Endpoint) { e.Policy.MaxInFlight = 3 }))
	events := make([]Event, 30)
	for i := range events {
		events[i] = testEvent(i)
	}
	h.enqueue(events...)
	testutil.EventuallyEvery(t, 20*time.Second, 20*time.Millisecond, func() error {
		if n := len(rc.uniqueIDs()); n != 30 {
			return fmt.Errorf("%d delivered", n)
		}
		return nil
	})
	if p := rc.peak.Load(); p > 3 || p < 2 {
		t.Errorf("peak concurrency at the receiver %d, want 3 (never above)", p)
	}
	rc.checkAll(t, events...)
}

func TestHungEndpointDoesNotSlowAnother(t *testing.T) {
	release := make(chan struct{})
	hung := newReceiver(t, func(_ int, _ http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	fast := newReceiver(t, nil)
	h := newHarness(t, "", nil)
	h.reg.Upsert(testEndpoint("hung", hung.URL, func(e *endpoint.Endpoint) { e.Policy.MaxInFlight = 2; e.Policy.Timeout = 30 * time.Second }))
	h.reg.Upsert(testEndpoint("fast", fast.URL))
	events := make([]Event, 50)
	for i := range events {
		events[i] = testEvent(i)
	}
	start := time.Now()
	h.enqueue(events...)
	testutil.EventuallyEvery(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := len(fast.uniqueIDs()); n != 50 {
			return fmt.Errorf("fast endpoint got %d of 50", n)
		}
		return nil
	})
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the healthy endpoint took %s next to a hung one", took)
	}
	fast.checkAll(t, events...)
	if p := hung.peak.Load(); p > 2 {
		t.Errorf("hung endpoint saw %d concurrent requests, maxInFlight is 2", p)
	}
}

func TestExhaustedAttemptsLandInTheFailedStore(t *testing.T) {
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) })
	h := newHarness(t, "", nil)
	h.reg.Upsert(testEndpoint("crm", rc.URL, func(e *endpoint.Endpoint) { e.Policy.MaxAttempts = 2; e.Policy.InitialBackoff = 100 * time.Millisecond }))
	h.enqueue(testEvent(7))
	st := h.waitStats("uid-crm", func(st stats.EndpointStats) error {
		if st.EventsFailed != 1 {
			return fmt.Errorf("failed %d", st.EventsFailed)
		}
		return nil
	})
	if n := len(rc.requests()); n != 2 {
		t.Errorf("%d attempts, want 2", n)
	}
	if st.EventsPending != 0 || st.SuccessRate(time.Now()) != "0.0%" || !strings.Contains(st.LastDelivery.Error, "gave up after 2 attempts") {
		t.Errorf("stats %+v", st)
	}
	msg, err := h.store.JetStream().Stream(context.Background(), store.StreamFailed)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := msg.GetLastMsgForSubject(context.Background(), store.FailedSubject("shop", "crm"))
	if err != nil {
		t.Fatalf("no failed delivery stored: %v", err)
	}
	if raw.Header.Get(store.HdrEventID) != "msg_000007" || !strings.Contains(string(raw.Data), `"messageId":"m7"`) {
		t.Errorf("failed store holds %v %s", raw.Header, raw.Data)
	}
}

func TestEgressPolicyRefusesLoopbackAndPrivateNetworksByDefault(t *testing.T) {
	rc := newReceiver(t, nil)
	def, err := NewEgressPolicy(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, "", def)
	port := rc.URL[strings.LastIndex(rc.URL, ":"):]
	h.reg.Upsert(testEndpoint("ip", rc.URL, func(e *endpoint.Endpoint) { e.Policy.MaxAttempts = 1 }))
	h.reg.Upsert(testEndpoint("name", "http://localhost"+port, func(e *endpoint.Endpoint) { e.Policy.MaxAttempts = 1 }))
	// A Service address in the cluster: refused before any packet leaves.
	h.reg.Upsert(testEndpoint("private", "http://10.96.0.1:443/", func(e *endpoint.Endpoint) { e.Policy.MaxAttempts = 1 }))
	h.enqueue(testEvent(1))
	for _, uid := range []types.UID{"uid-ip", "uid-name", "uid-private"} {
		st := h.waitStats(uid, func(st stats.EndpointStats) error {
			if st.EventsFailed != 1 {
				return fmt.Errorf("failed %d", st.EventsFailed)
			}
			return nil
		})
		// Only that: no address, no rule, nothing a port scan could use.
		if st.DeliveringReason != webhooksv1alpha1.ReasonEgressRefused || st.LastDelivery.Error != "refused by the egress policy; gave up after 1 attempts (maxAttempts)" {
			t.Errorf("%s: reason %s, error %q", uid, st.DeliveringReason, st.LastDelivery.Error)
		}
	}
	if n := len(rc.requests()); n != 0 {
		t.Errorf("the loopback receiver got %d requests", n)
	}
}

func TestIdempotencyKeyIsDeliveredOnce(t *testing.T) {
	rc := newReceiver(t, nil)
	h := newHarness(t, "", nil)
	h.reg.Upsert(testEndpoint("crm", rc.URL))
	ev := testEvent(1)
	ev.IdempotencyKey = true
	first := h.enqueue(ev)
	events := streamMsgs(t, h.store, store.StreamEvents)
	second := h.enqueue(ev)
	if first[0].Duplicate || !second[0].Duplicate {
		t.Errorf("duplicate flags %v %v", first[0].Duplicate, second[0].Duplicate)
	}
	// The duplicate stored nothing: nothing can deliver it a second time.
	if n := streamMsgs(t, h.store, store.StreamEvents); n != events {
		t.Errorf("the duplicate was stored: %s holds %d events, %d before it", store.StreamEvents, n, events)
	}
	h.enqueue(testEvent(2))
	testutil.EventuallyEvery(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := len(rc.uniqueIDs()); n != 2 {
			return fmt.Errorf("%d ids", n)
		}
		if n := streamMsgs(t, h.store, store.StreamDeliveries); n != 0 {
			return fmt.Errorf("%d deliveries pending", n)
		}
		return nil
	})
	if ids := rc.uniqueIDs(); ids["msg_000001"] != 1 {
		t.Errorf("msg_000001 delivered %d times", ids["msg_000001"])
	}
	rc.checkAll(t, ev, testEvent(2))

	// The window survives a restart of the store.
	h.stop()
	h.start()
	events = streamMsgs(t, h.store, store.StreamEvents)
	if again := h.enqueue(ev); !again[0].Duplicate {
		t.Error("after a restart the same id was accepted as new")
	}
	if n, d := streamMsgs(t, h.store, store.StreamEvents), streamMsgs(t, h.store, store.StreamDeliveries); n != events || d != 0 {
		t.Errorf("after a restart the duplicate was stored: %d events (%d before), %d deliveries", n, events, d)
	}
}

func TestNothingAcknowledgedIsLostAcrossAnAbruptStop(t *testing.T) {
	rc := newReceiver(t, func(_ int, _ http.ResponseWriter, _ *http.Request) { time.Sleep(2 * time.Millisecond) })
	dir := t.TempDir()
	h := newHarness(t, dir, nil)
	h.reg.Upsert(testEndpoint("crm", rc.URL, func(e *endpoint.Endpoint) { e.Policy.MaxInFlight = 8 }))
	const total = 1000
	// Every event's data its own, of mixed lengths: each must arrive with
	// it across the stop, whichever batch message carried it.
	events := variedEvents(t, "crash", total)
	for i := 0; i < total; i += 100 {
		h.enqueue(events[i : i+100]...)
	}
	testutil.EventuallyEvery(t, 20*time.Second, 20*time.Millisecond, func() error {
		if n := len(rc.uniqueIDs()); n < total/4 {
			return fmt.Errorf("only %d delivered", n)
		}
		return nil
	})
	h.crash()
	before := len(rc.uniqueIDs())
	if before == total {
		t.Log("every event arrived before the stop; the restart still has to keep counters")
	}
	var sent int64
	if all, err := func() (map[types.UID]*stats.EndpointStats, error) {
		s, err := store.Open(context.Background(), store.Options{DataDir: dir})
		if err != nil {
			return nil, err
		}
		defer s.Close()
		return stats.LoadAll(context.Background(), s)
	}(); err == nil && all["uid-crm"] != nil {
		sent = all["uid-crm"].TotalEventsSent
	}

	h.start()
	testutil.EventuallyEvery(t, 60*time.Second, 20*time.Millisecond, func() error {
		if n := len(rc.uniqueIDs()); n != total {
			return fmt.Errorf("%d of %d unique webhook-ids arrived", n, total)
		}
		return nil
	})
	st := h.waitStats("uid-crm", func(st stats.EndpointStats) error {
		if st.EventsDelivered < total {
			return fmt.Errorf("delivered counter %d", st.EventsDelivered)
		}
		return nil
	})
	if st.TotalEventsSent < sent || st.TotalEventsSent < total {
		t.Errorf("totalEventsSent %d after restart, %d persisted before it", st.TotalEventsSent, sent)
	}
	dups := len(rc.requests()) - total
	t.Logf("%d events, %d arrived before the stop, %d duplicate deliveries (at-least-once), counters: sent=%d delivered=%d",
		total, before, dups, st.TotalEventsSent, st.EventsDelivered)
	if st.EventsDelivered > int64(len(rc.requests())) {
		t.Errorf("delivered counter %d exceeds requests the receiver saw %d", st.EventsDelivered, len(rc.requests()))
	}
	rc.checkAll(t, events...)
}

// workers returns how many endpoint workers run.
func (d *Dispatcher) runningWorkers() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.workers)
}

func TestIdleWorkersStopAndComeBackForNewAndRetriedDeliveries(t *testing.T) {
	rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 2 {
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	dir := t.TempDir()
	h := &harness{t: t, dataDir: dir, reg: endpoint.NewMemoryRegistry(), tune: func(o *Options) {
		o.IdleTimeout = 300 * time.Millisecond
		o.ScanInterval = 200 * time.Millisecond
	}}
	var err error
	if h.egress, err = NewEgressPolicy([]string{"127.0.0.0/8"}, nil); err != nil {
		t.Fatal(err)
	}
	h.reg.MarkSynced()
	h.start()
	t.Cleanup(h.stop)
	h.reg.Upsert(testEndpoint("crm", rc.URL))
	if n := h.d.runningWorkers(); n != 0 {
		t.Fatalf("%d workers before any delivery, want 0: idle endpoints cost nothing", n)
	}

	h.enqueue(testEvent(1))
	testutil.EventuallyEvery(t, 10*time.Second, 20*time.Millisecond, func() error {
		if len(rc.uniqueIDs()) != 1 {
			return fmt.Errorf("not delivered")
		}
		return nil
	})
	testutil.EventuallyEvery(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := h.d.runningWorkers(); n != 0 {
			return fmt.Errorf("%d workers still running after the idle timeout", n)
		}
		return nil
	})

	// A new delivery starts the worker again; its retry, due after the
	// worker went idle, is found by the scan and delivered.
	h.enqueue(testEvent(2))
	testutil.EventuallyEvery(t, 15*time.Second, 20*time.Millisecond, func() error {
		if ids := rc.uniqueIDs(); ids["msg_000002"] != 2 {
			return fmt.Errorf("msg_000002 seen %d times, want 2 (503, then the retry)", ids["msg_000002"])
		}
		return nil
	})
	rc.checkAll(t, testEvent(1), testEvent(2))
}

func TestMoreThanAThousandEndpoints(t *testing.T) {
	rc := newReceiver(t, nil)
	h := newHarness(t, "", nil)
	const n = 1100 // JetStream allows 1,000 consumers per stream unless told otherwise
	for i := range n {
		h.reg.Upsert(testEndpoint(fmt.Sprintf("ep-%04d", i), rc.URL, func(e *endpoint.Endpoint) { e.UID = types.UID(fmt.Sprintf("uid-%d", i)) }))
	}
	res := h.enqueue(testEvent(1))
	if res[0].Subscribers != n {
		t.Fatalf("%d subscribers, want %d", res[0].Subscribers, n)
	}
	// A bound, not a speed target: 1,100 consumers are created one by one,
	// which with -race on a loaded 2-core machine took over a minute.
	testutil.EventuallyEvery(t, 5*time.Minute, 50*time.Millisecond, func() error {
		if got := len(rc.requests()); got < n {
			return fmt.Errorf("%d of %d endpoints received the event", got, n)
		}
		return nil
	})
	rc.checkAll(t, testEvent(1)) // and every endpoint's copy the same body
}
