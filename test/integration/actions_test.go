package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// recordingReceiver keeps every request's webhook-id and envelope type,
// answers code, and checks content through the oracle (rc.oracle: every
// signature verified with the official library, every body compared with
// what was posted, as recorded in its ledger).
type recordingReceiver struct {
	*httptest.Server
	oracle *testutil.Receiver
	mu     sync.Mutex
	ids    []string
	types  []string
	code   atomic.Int32
}

func newRecordingReceiver(t *testing.T, ledger *testutil.Ledger, code int) *recordingReceiver {
	oracle, err := testutil.NewReceiver(secret, ledger)
	if err != nil {
		t.Fatal(err)
	}
	rc := &recordingReceiver{oracle: oracle}
	rc.code.Store(int32(code))
	oracle.Respond = func(w http.ResponseWriter, _ *http.Request, d testutil.Delivery) int {
		var env struct{ Type string }
		_ = json.Unmarshal(d.Body, &env)
		rc.mu.Lock()
		rc.ids = append(rc.ids, d.ID)
		rc.types = append(rc.types, env.Type)
		rc.mu.Unlock()
		code := int(rc.code.Load())
		w.WriteHeader(code)
		return code
	}
	rc.Server = httptest.NewServer(oracle)
	t.Cleanup(rc.Close)
	return rc
}

// checkContent fails t unless every body rc received is what was posted
// and every id of want arrived.
func (rc *recordingReceiver) checkContent(t *testing.T, want []string) {
	t.Helper()
	if err := rc.oracle.CheckAll(want); err != nil {
		t.Errorf("content: %v", err)
	}
}

func (rc *recordingReceiver) count(pred func(id, typ string) bool) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	n := 0
	for i := range rc.ids {
		if pred(rc.ids[i], rc.types[i]) {
			n++
		}
	}
	return n
}

func annotate(t *testing.T, ns, name, key, value string) {
	t.Helper()
	w := getWHC(t, ns, name)
	patch := client.MergeFrom(w.DeepCopy())
	if w.Annotations == nil {
		w.Annotations = map[string]string{}
	}
	w.Annotations[key] = value
	if err := env.Client.Patch(context.Background(), w, patch); err != nil {
		t.Fatal(err)
	}
}

func waitLastTest(t *testing.T, ns, name, token string) *webhooksv1alpha1.TestRecord {
	t.Helper()
	var rec *webhooksv1alpha1.TestRecord
	testutil.Eventually(t, 20*time.Second, func() error {
		rec = getWHC(t, ns, name).Status.LastTest
		if rec == nil || rec.RequestedAt != token {
			return fmt.Errorf("lastTest %+v, want token %s", rec, token)
		}
		return nil
	})
	return rec
}

func isTest(_, typ string) bool { return typ == "webhook.test" }

// expectTests makes rc expect webhook.test deliveries of endpoint name in
// ns: the test sets *token to the annotation's value before it requests
// one, and the delivery that arrives next must carry the data the
// dispatcher writes for that token.
func expectTests(rc *recordingReceiver, ns, name string, token *atomic.Value) {
	var mu sync.Mutex
	tokens := map[string]string{} // webhook-id -> the token requested when it arrived
	respond := rc.oracle.Respond
	rc.oracle.Respond = func(w http.ResponseWriter, r *http.Request, d testutil.Delivery) int {
		mu.Lock()
		if _, ok := tokens[d.ID]; !ok {
			tokens[d.ID] = token.Load().(string)
		}
		mu.Unlock()
		return respond(w, r, d)
	}
	rc.oracle.Expect = func(id string) (testutil.Posted, bool) {
		mu.Lock()
		tok, ok := tokens[id]
		mu.Unlock()
		if !ok || !strings.HasPrefix(id, "msg_test_") {
			return testutil.Posted{}, false
		}
		data, err := json.Marshal(map[string]string{
			"message":       "This is a test delivery from the WA Blast webhook operator.",
			"webhookConfig": name,
			"namespace":     ns,
			"requestedAt":   tok,
		})
		if err != nil {
			panic(err) // strings always encode
		}
		return testutil.Posted{ID: id, Type: "webhook.test", Data: data}, true
	}
}

func TestTestDeliveries(t *testing.T) {
	ns := env.Namespace(t)
	dataDir := t.TempDir()
	r := startOperator(t, ns, dataDir)
	rc := newRecordingReceiver(t, testutil.NewLedger(), http.StatusOK)
	var token atomic.Value
	expectTests(rc, ns, "crm", &token)
	createEndpoint(t, ns, "crm", rc.URL, 3)
	waitReady(t, ns, "crm")

	token.Store("t1")
	annotate(t, ns, "crm", webhooksv1alpha1.AnnotationTestRequestedAt, "t1")
	rec := waitLastTest(t, ns, "crm", "t1")
	if rec.Result != webhooksv1alpha1.ResultSucceeded || rec.StatusCode != http.StatusOK || rec.Time == nil {
		t.Errorf("lastTest %+v, want Succeeded/200", rec)
	}
	if n := rc.count(isTest); n != 1 {
		t.Errorf("%d webhook.test requests, want 1", n)
	}

	rc.code.Store(http.StatusInternalServerError)
	token.Store("t2")
	annotate(t, ns, "crm", webhooksv1alpha1.AnnotationTestRequestedAt, "t2")
	rec = waitLastTest(t, ns, "crm", "t2")
	if rec.Result != webhooksv1alpha1.ResultFailed || rec.StatusCode != http.StatusInternalServerError || rec.Error == "" {
		t.Errorf("lastTest %+v, want Failed/500", rec)
	}
	if n := rc.count(isTest); n != 2 {
		t.Errorf("a failed test was retried: %d requests", n)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		var evs eventsv1.EventList
		if err := env.Client.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, e := range evs.Items {
			seen[e.Reason] = true
		}
		if !seen["TestDeliverySucceeded"] || !seen["TestDeliveryFailed"] {
			return fmt.Errorf("events %v", seen)
		}
		return nil
	})

	// A disabled endpoint that is not subscribed to anything tested still gets its test.
	w := getWHC(t, ns, "crm")
	patch := client.MergeFrom(w.DeepCopy())
	w.Spec.Enabled = new(bool)
	w.Spec.Events = []webhooksv1alpha1.EventType{webhooksv1alpha1.EventCampaignCompleted}
	if err := env.Client.Patch(context.Background(), w, patch); err != nil {
		t.Fatal(err)
	}
	rc.code.Store(http.StatusNoContent)
	token.Store("t3")
	annotate(t, ns, "crm", webhooksv1alpha1.AnnotationTestRequestedAt, "t3")
	if rec := waitLastTest(t, ns, "crm", "t3"); rec.Result != webhooksv1alpha1.ResultSucceeded || rec.StatusCode != http.StatusNoContent {
		t.Errorf("disabled endpoint's test %+v", rec)
	}
	if getWHC(t, ns, "crm").Status.Active {
		t.Error("disabled endpoint is active")
	}

	// After a restart, the handled token is not sent again. A new token,
	// requested after the restart, is handled by a reconcile that comes
	// after the first one (the one that would re-send t3): once its result
	// is in status, exactly one more test request has arrived.
	before := rc.count(isTest)
	r.stop()
	startOperator(t, ns, dataDir)
	token.Store("t4")
	annotate(t, ns, "crm", webhooksv1alpha1.AnnotationTestRequestedAt, "t4")
	if rec := waitLastTest(t, ns, "crm", "t4"); rec.Result != webhooksv1alpha1.ResultSucceeded {
		t.Errorf("test after the restart %+v", rec)
	}
	if after := rc.count(isTest); after != before+1 {
		t.Errorf("the restart re-sent a handled test: %d requests before it, %d after one new test, want %d", before, after, before+1)
	}
	// Each test delivery carried the data written for its token.
	if n := rc.oracle.Unique(); n != 4 {
		t.Errorf("%d distinct test deliveries, want 4", n)
	}
	rc.checkContent(t, nil)
}

func TestTestOfAStalledResourceFails(t *testing.T) {
	ns := env.Namespace(t)
	startOperator(t, ns, t.TempDir())
	w := &webhooksv1alpha1.WebhookConfig{}
	w.Namespace, w.Name = ns, "stalled"
	w.Spec.URL = "http://127.0.0.1:1/x"
	w.Spec.SecretRef = &webhooksv1alpha1.SecretKeyReference{Name: "missing"}
	w.Spec.Events = []webhooksv1alpha1.EventType{webhooksv1alpha1.EventTypeAll}
	w.Annotations = map[string]string{webhooksv1alpha1.AnnotationTestRequestedAt: "now"}
	if err := env.Client.Create(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	rec := waitLastTest(t, ns, "stalled", "now")
	if rec.Result != webhooksv1alpha1.ResultFailed || rec.StatusCode != 0 {
		t.Errorf("lastTest %+v", rec)
	}
}

// A replay delivers the events that failed for good since a time, with
// their original webhook-ids; each one it delivers counts as delivered and
// no longer as failed (and is not sent again), the success rate counts each
// event once by its final outcome, and a later replay of the same window
// sends only what is still failed.
func TestReplayRequeuesFailedEvents(t *testing.T) {
	ns := env.Namespace(t)
	r := startOperator(t, ns, t.TempDir())
	ledger := testutil.NewLedger()
	rc := newRecordingReceiver(t, ledger, http.StatusServiceUnavailable)
	// msg_4 keeps failing while stillFailing is set, whatever rc.code says.
	var stillFailing atomic.Bool
	respond := rc.oracle.Respond
	rc.oracle.Respond = func(w http.ResponseWriter, req *http.Request, d testutil.Delivery) int {
		if d.ID == "msg_4" && stillFailing.Load() {
			rc.mu.Lock()
			rc.ids, rc.types = append(rc.ids, d.ID), append(rc.types, "message.delivered")
			rc.mu.Unlock()
			w.WriteHeader(http.StatusServiceUnavailable)
			return http.StatusServiceUnavailable
		}
		return respond(w, req, d)
	}
	createEndpoint(t, ns, "crm", rc.URL, 1)
	waitReady(t, ns, "crm")
	since := time.Now().Add(-time.Second).UTC().Format(time.RFC3339)
	enqueue(t, r, ledger, ns, 0, 5)
	// Failed for good and nothing pending: nothing is left that could be
	// delivered again before a replay.
	testutil.Eventually(t, 20*time.Second, func() error {
		if st := getWHC(t, ns, "crm").Status; st.EventsFailed != 5 || st.EventsPending != 0 {
			return fmt.Errorf("failed %d pending %d, want 5 and 0", st.EventsFailed, st.EventsPending)
		}
		return nil
	})
	if n := rc.count(func(string, string) bool { return true }); n != 5 {
		t.Fatalf("%d attempts before the replay, want 5", n)
	}
	seen := func(id string) int { return rc.count(func(got, _ string) bool { return got == id }) }
	// replay annotates token and waits for lastReplay to echo it with want requeued.
	replay := func(token string, want int64) {
		t.Helper()
		annotate(t, ns, "crm", webhooksv1alpha1.AnnotationReplaySince, token)
		testutil.Eventually(t, 20*time.Second, func() error {
			lr := getWHC(t, ns, "crm").Status.LastReplay
			if lr == nil || lr.RequestedAt != token {
				return fmt.Errorf("lastReplay %+v", lr)
			}
			if lr.EventsRequeued != want {
				return fmt.Errorf("requeued %d, want %d", lr.EventsRequeued, want)
			}
			return nil
		})
	}
	// waitStatus waits until status has delivered and failed events, and
	// nothing pending.
	waitStatus := func(delivered, failed int64, rate string) {
		t.Helper()
		testutil.Eventually(t, 20*time.Second, func() error {
			st := getWHC(t, ns, "crm").Status
			if st.EventsDelivered != delivered || st.EventsFailed != failed || st.EventsPending != 0 || st.SuccessRate != rate {
				return fmt.Errorf("delivered %d failed %d pending %d rate %s, want %d, %d, 0, %s",
					st.EventsDelivered, st.EventsFailed, st.EventsPending, st.SuccessRate, delivered, failed, rate)
			}
			if st.TotalEventsSent != 5 {
				return fmt.Errorf("sent %d, want 5: a replay sends no new event", st.TotalEventsSent)
			}
			return nil
		})
	}

	// The receiver is back, except for msg_4.
	rc.code.Store(http.StatusOK)
	stillFailing.Store(true)
	replay(since, 5)
	testutil.Eventually(t, 20*time.Second, func() error {
		for i := range 5 {
			id := fmt.Sprintf("msg_%d", i)
			if n := seen(id); n != 2 {
				return fmt.Errorf("%s seen %d times, want 2 (failed, then replayed with the same webhook-id)", id, n)
			}
		}
		return nil
	})
	waitStatus(4, 1, "80.0%")

	// The same window again: only msg_4, still failed, is sent; the four
	// delivered by the first replay are not.
	stillFailing.Store(false)
	again := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339) // covers the same events
	replay(again, 1)
	testutil.Eventually(t, 20*time.Second, func() error {
		if n := seen("msg_4"); n != 3 {
			return fmt.Errorf("msg_4 seen %d times, want 3", n)
		}
		return nil
	})
	waitStatus(5, 0, "100.0%")
	if c := getWHC(t, ns, "crm").Status.ConsecutiveFailures; c != 0 {
		t.Errorf("consecutiveFailures %d after every event was delivered", c)
	}

	// And once more: nothing is failed, nothing is sent. The replay queues
	// what it sends before it records lastReplay, so the count is final.
	replay(time.Now().Add(-2*time.Hour).UTC().Format(time.RFC3339), 0)
	if n := rc.count(func(string, string) bool { return true }); n != 11 {
		t.Errorf("%d attempts, want 11 (5 failed, 5 replayed, msg_4 once more)", n)
	}
	// The replays carried the original content (and the same body as the
	// failed attempts).
	rc.checkContent(t, ledger.IDs())
}
