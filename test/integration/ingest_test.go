package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/testutil"
)

const ingestToken = "integration-token-0123456789abcdef"

func createIngestToken(t *testing.T, ns string) {
	t.Helper()
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ingest", Labels: map[string]string{"webhooks.wablast.io/ingest-token": "true"}},
		StringData: map[string]string{"token": ingestToken},
	}
	if err := env.Client.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
}

// post sends body to the running operator's ingestion API.
func post(t *testing.T, r *running, ns, contentType, body string) (int, string) {
	t.Helper()
	var addr string
	testutil.Eventually(t, 10*time.Second, func() error {
		if addr = r.op.Ingest.Addr(); addr == "" {
			return fmt.Errorf("ingest not listening yet")
		}
		return nil
	})
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/namespaces/"+ns+"/events", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Authorization", "Bearer "+ingestToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// event is one message.sent event with data of its own
// (testutil.VariedEvent, distinct for every id), posted with id unless id
// is "" (then the prefix "anon" makes the data).
func event(id string, i int) testutil.Posted {
	prefix := id
	if prefix == "" {
		prefix = "anon"
	}
	p := testutil.VariedEvent(prefix, i, "message.sent")
	p.ID = id
	return p
}

// eventJSON is the request body of a message.sent event.
func eventJSON(id string) string { return string(event(id, 0).JSON(id != "")) }

func TestIngestedEventsReachOnlyTheirNamespacesSubscribers(t *testing.T) {
	nsA, nsB := env.Namespace(t), env.Namespace(t)
	// One operator serves both namespaces: what keeps them apart is the
	// token and the registry, not two processes.
	rA := startOperatorFor(t, []string{nsA, nsB}, t.TempDir())
	createIngestToken(t, nsA)
	ledger := testutil.NewLedger()
	a := newRecordingReceiver(t, ledger, http.StatusOK)
	aOther := newRecordingReceiver(t, ledger, http.StatusOK)
	b := newRecordingReceiver(t, ledger, http.StatusOK)
	createEndpoint(t, nsA, "a", a.URL, 3)
	createEndpoint(t, nsA, "a-campaigns", aOther.URL, 3)
	w := getWHC(t, nsA, "a-campaigns")
	patch := client.MergeFrom(w.DeepCopy())
	w.Spec.Events = []webhooksv1alpha1.EventType{webhooksv1alpha1.EventCampaignStarted}
	if err := env.Client.Patch(context.Background(), w, patch); err != nil {
		t.Fatal(err)
	}
	createEndpoint(t, nsB, "b", b.URL, 3)
	for _, x := range [][2]string{{nsA, "a"}, {nsA, "a-campaigns"}, {nsB, "b"}} {
		waitReady(t, x[0], x[1])
	}

	ledger.Add(event("dup-1", 0))
	code, body := post(t, rA, nsA, "application/json", eventJSON("dup-1"))
	if code != http.StatusAccepted {
		t.Fatalf("post: %d %s", code, body)
	}
	var res struct {
		ID          string `json:"id"`
		Subscribers int    `json:"subscribers"`
	}
	if err := json.Unmarshal([]byte(body), &res); err != nil || res.ID != "dup-1" || res.Subscribers != 1 {
		t.Errorf("202 body %s: want id dup-1 and 1 subscriber", body)
	}
	// The same id again is accepted and not delivered twice.
	if code, body := post(t, rA, nsA, "application/json", eventJSON("dup-1")); code != http.StatusAccepted || !strings.Contains(body, `"duplicate":true`) {
		t.Fatalf("second post: %d %s, want 202 with \"duplicate\":true", code, body)
	}

	// A batch of 500, each event with data of its own.
	batch := make([]testutil.Posted, 500)
	for i := range batch {
		batch[i] = testutil.VariedEvent("batch", i, "message.delivered")
	}
	code, body = post(t, rA, nsA, "application/x-ndjson", string(testutil.NDJSON(batch, true)))
	if code != http.StatusAccepted {
		t.Fatalf("batch: %d %.300s", code, body)
	}
	if _, err := ledger.Accepted(batch, []byte(body)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		if n := a.count(func(string, string) bool { return true }); n != 501 {
			return fmt.Errorf("endpoint a received %d, want 501", n)
		}
		return nil
	})
	// Quiescent: every event a stored for a has an outcome, and there are
	// 501 of them (the repeated dup-1 was never stored, so it can never be
	// delivered a second time).
	testutil.Eventually(t, 30*time.Second, func() error {
		if st := getWHC(t, nsA, "a").Status; st.TotalEventsSent != 501 || st.EventsDelivered != 501 || st.EventsPending != 0 {
			return fmt.Errorf("a: sent %d delivered %d pending %d, want 501, 501, 0", st.TotalEventsSent, st.EventsDelivered, st.EventsPending)
		}
		return nil
	})
	if n := a.count(func(id, _ string) bool { return id == "dup-1" }); n != 1 {
		t.Errorf("dup-1 delivered %d times", n)
	}
	if n := aOther.count(func(string, string) bool { return true }); n != 0 {
		t.Errorf("an endpoint not subscribed to message events received %d", n)
	}
	if n := b.count(func(string, string) bool { return true }); n != 0 {
		t.Errorf("namespace B's endpoint received %d events of namespace A", n)
	}
	a.checkContent(t, ledger.IDs())
	aOther.checkContent(t, nil)
	b.checkContent(t, nil)

	// A static token of A cannot post into B, and is answered as an unknown
	// token is.
	if code, body := post(t, rA, nsB, "application/json", eventJSON("")); code != http.StatusUnauthorized {
		t.Errorf("A's token in B: %d %s", code, body)
	}
}

func TestStoreUnavailableAnswers503AndLosesNothingAcknowledged(t *testing.T) {
	ns := env.Namespace(t)
	dataDir := t.TempDir()
	r := startOperator(t, ns, dataDir)
	createIngestToken(t, ns)
	// Every event posted goes to the ledger before its post: one answered
	// 503 must not be delivered, but if it were, its content is known.
	ledger := testutil.NewLedger()
	rc := newRecordingReceiver(t, ledger, http.StatusOK)
	createEndpoint(t, ns, "crm", rc.URL, 3)
	waitReady(t, ns, "crm")

	// Post continuously while the store goes away.
	var mu sync.Mutex
	accepted := map[string]bool{}
	codes := map[int]int{}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 150 {
				id := fmt.Sprintf("g%d-%d", g, i)
				ev := event(id, i)
				ledger.Add(ev)
				code, _ := post(t, r, ns, "application/json", string(ev.JSON(true)))
				mu.Lock()
				codes[code]++
				if code == http.StatusAccepted {
					accepted[id] = true
				}
				mu.Unlock()
				if i == 40 && g == 0 {
					r.op.Store.Close()
				}
			}
		})
	}
	wg.Wait()
	if codes[http.StatusServiceUnavailable] == 0 {
		t.Fatalf("no 503 while the store was down: %v", codes)
	}
	for code := range codes {
		if code != http.StatusAccepted && code != http.StatusServiceUnavailable {
			t.Errorf("unexpected status %d (%d times)", code, codes[code])
		}
	}
	ledger.Add(event("after", 0))
	code, body := post(t, r, ns, "application/json", eventJSON("after"))
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"code"`) {
		t.Errorf("with the store down: %d %s", code, body)
	}

	// Restart on the same data: every event answered 202 is delivered.
	r.stop()
	startOperator(t, ns, dataDir)
	testutil.Eventually(t, 60*time.Second, func() error {
		for id := range accepted {
			if rc.count(func(got, _ string) bool { return got == id }) == 0 {
				return fmt.Errorf("acknowledged event %s not delivered (of %d acknowledged)", id, len(accepted))
			}
		}
		return nil
	})
	ids := make([]string, 0, len(accepted))
	for id := range accepted {
		ids = append(ids, id)
	}
	rc.checkContent(t, ids)
	t.Logf("%d acknowledged and delivered, %d refused with 503", len(accepted), codes[http.StatusServiceUnavailable])
}
