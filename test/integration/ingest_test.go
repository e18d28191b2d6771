package integration

import (
	"bytes"
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
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func eventJSON(id, typ string) string {
	idField := ""
	if id != "" {
		idField = fmt.Sprintf(`"id":%q,`, id)
	}
	data := `{"messageId":"m-1","sessionId":"s-1","to":"+6281234567890"}`
	if strings.HasPrefix(typ, "campaign.") {
		data = `{"campaignId":"c-1","name":"Promo","total":10,"sent":10,"delivered":9,"failed":1}`
	}
	return fmt.Sprintf(`{%s"type":%q,"data":%s}`, idField, typ, data)
}

func TestIngestedEventsReachOnlyTheirNamespacesSubscribers(t *testing.T) {
	nsA, nsB := env.Namespace(t), env.Namespace(t)
	rA := startOperator(t, nsA, t.TempDir())
	rB := startOperator(t, nsB, t.TempDir())
	createIngestToken(t, nsA)
	a := newRecordingReceiver(t, http.StatusOK)
	aOther := newRecordingReceiver(t, http.StatusOK)
	b := newRecordingReceiver(t, http.StatusOK)
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
	_ = rB

	code, body := post(t, rA, nsA, "application/json", eventJSON("dup-1", "message.sent"))
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
	if code, body := post(t, rA, nsA, "application/json", eventJSON("dup-1", "message.sent")); code != http.StatusAccepted {
		t.Fatalf("second post: %d %s", code, body)
	}

	// A batch of 500.
	var batch bytes.Buffer
	for i := range 500 {
		fmt.Fprintln(&batch, eventJSON(fmt.Sprintf("batch-%d", i), "message.delivered"))
	}
	if code, body := post(t, rA, nsA, "application/x-ndjson", batch.String()); code != http.StatusAccepted {
		t.Fatalf("batch: %d %.300s", code, body)
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		if n := a.count(func(string, string) bool { return true }); n != 501 {
			return fmt.Errorf("endpoint a received %d, want 501", n)
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond)
	if n := a.count(func(id, _ string) bool { return id == "dup-1" }); n != 1 {
		t.Errorf("dup-1 delivered %d times", n)
	}
	if n := aOther.count(func(string, string) bool { return true }); n != 0 {
		t.Errorf("an endpoint not subscribed to message events received %d", n)
	}
	if n := b.count(func(string, string) bool { return true }); n != 0 {
		t.Errorf("namespace B's endpoint received %d events of namespace A", n)
	}

	// A token of A cannot post into B.
	if code, body := post(t, rA, nsB, "application/json", eventJSON("", "message.sent")); code != http.StatusForbidden {
		t.Errorf("A's token in B: %d %s", code, body)
	}
}

func TestStoreUnavailableAnswers503AndLosesNothingAcknowledged(t *testing.T) {
	ns := env.Namespace(t)
	dataDir := t.TempDir()
	r := startOperator(t, ns, dataDir)
	createIngestToken(t, ns)
	rc := newRecordingReceiver(t, http.StatusOK)
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
				code, _ := post(t, r, ns, "application/json", eventJSON(id, "message.sent"))
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
	code, body := post(t, r, ns, "application/json", eventJSON("after", "message.sent"))
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
	t.Logf("%d acknowledged and delivered, %d refused with 503", len(accepted), codes[http.StatusServiceUnavailable])
}
