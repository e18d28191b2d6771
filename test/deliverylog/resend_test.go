package deliverylog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1alpha1 "github.com/wablast/webhook-operator/api/delivery/v1alpha1"
	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/deliverylog"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// TestResendAndPluginThroughAggregation resends one failed delivery with
// kubectl webhook resend (the create on webhookdeliveries/resend through the
// API server): the receiver gets the same webhook-id and the same body again,
// and the new attempt joins the same WebhookDelivery; kubectl webhook
// deliveries lists it with its event id as posted.
func TestResendAndPluginThroughAggregation(t *testing.T) {
	ns := env.Namespace(t)
	op := startOperator(t, ns)
	rc := newReceiver(t, http.StatusInternalServerError)
	createEndpoint(t, ns, "flaky", rc.URL+"/hooks", 1)
	posted := enqueue(t, op, ns, "Resend.Me")
	name := deliverylog.Name("flaky", "Resend.Me")
	waitAttempts(t, ns, name, 1)
	first, _ := rc.body("Resend.Me")
	rc.mu.Lock()
	delete(rc.bodies, "Resend.Me")
	rc.mu.Unlock()

	run := pluginRunner(t, ns)
	out, err := run("deliveries", "flaky", "--state", "failed")
	if err != nil || !strings.Contains(out, "Resend.Me") || !strings.Contains(out, "message.failed") || !strings.Contains(out, "500") {
		t.Fatalf("kubectl webhook deliveries flaky --state failed: %v:\n%s", err, out)
	}
	out, err = run("deliveries", "flaky", "--state", "succeeded")
	if err != nil || strings.Contains(out, "Resend.Me") {
		t.Errorf("--state succeeded shows the failed delivery: %v:\n%s", err, out)
	}
	// --since is the API's since: within the hour it lists the delivery;
	// the API itself, asked for deliveries since a later time, none.
	out, err = run("deliveries", "flaky", "--since", "1h")
	if err != nil || !strings.Contains(out, "Resend.Me") {
		t.Errorf("kubectl webhook deliveries flaky --since 1h: %v:\n%s", err, out)
	}
	raw := func(since string) []string {
		t.Helper()
		out, err := kubectl(t, "get", "--raw", fmt.Sprintf("/apis/delivery.wablast.io/v1alpha1/namespaces/%s/webhookdeliveries?since=%s", ns, since))
		if err != nil {
			t.Fatalf("list with since=%s: %v: %s", since, err, out)
		}
		var l deliveryv1alpha1.WebhookDeliveryList
		if err := json.Unmarshal([]byte(out), &l); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, d := range l.Items {
			ids = append(ids, d.Spec.EventID)
		}
		return ids
	}
	if ids := raw("2h"); fmt.Sprint(ids) != "[Resend.Me]" {
		t.Errorf("since=2h: %v, want [Resend.Me]", ids)
	}
	if ids := raw(time.Now().Add(time.Hour).UTC().Format(time.RFC3339)); len(ids) != 0 {
		t.Errorf("since an hour from now: %v, want none", ids)
	}
	if out, err := kubectl(t, "get", "--raw", fmt.Sprintf("/apis/delivery.wablast.io/v1alpha1/namespaces/%s/webhookdeliveries?since=yesterday", ns)); err == nil || !strings.Contains(out, "since=") {
		t.Errorf("since=yesterday: %v: %s", err, out)
	}
	out, err = run("deliveries", "flaky", "--state", "bogus")
	if err == nil || !strings.Contains(out, "invalid --state") {
		t.Errorf("--state bogus: %v:\n%s", err, out)
	}

	out, err = run("resend", "flaky", "Resend.Me")
	if err != nil {
		t.Fatalf("kubectl webhook resend: %v:\n%s", err, out)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if _, ok := rc.body("Resend.Me"); !ok {
			return fmt.Errorf("the resent delivery has not arrived")
		}
		return nil
	})
	again, _ := rc.body("Resend.Me")
	if !bytes.Equal(again, first) {
		t.Errorf("resent body differs:\nfirst: %s\nagain: %s", first, again)
	}
	d := waitAttempts(t, ns, name, 2)
	checkEnvelope(t, d, posted["Resend.Me"], again)
	if d.Status.State != deliveryv1alpha1.StateFailed || d.Status.Attempts[1].StatusCode != http.StatusInternalServerError {
		t.Errorf("after the resend: %s, attempts %+v", d.Status.State, d.Status.Attempts)
	}

	out, err = run("resend", "flaky", "never-posted")
	if err == nil || !strings.Contains(out, "holds no delivery") {
		t.Errorf("resend of an unknown event: %v:\n%s", err, out)
	}
}

func waitAttempts(t *testing.T, ns, name string, n int) *deliveryv1alpha1.WebhookDelivery {
	t.Helper()
	var d deliveryv1alpha1.WebhookDelivery
	testutil.Eventually(t, 30*time.Second, func() error {
		out, err := kubectl(t, "get", "whd", "-n", ns, name, "-o", "json")
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		d = deliveryv1alpha1.WebhookDelivery{}
		if err := json.Unmarshal([]byte(out), &d); err != nil {
			return err
		}
		if len(d.Status.Attempts) != n || d.Status.State == deliveryv1alpha1.StatePending {
			return fmt.Errorf("%s: %d attempts, state %s; want %d", name, len(d.Status.Attempts), d.Status.State, n)
		}
		return nil
	})
	return &d
}

func checkEnvelope(t *testing.T, d *deliveryv1alpha1.WebhookDelivery, p testutil.Posted, arrived []byte) {
	t.Helper()
	if d.Spec.Envelope != string(arrived) {
		t.Errorf("%s: envelope %s, arrived %s", d.Name, rawOf(d), arrived)
	}
	var e envelope
	if err := json.Unmarshal(arrived, &e); err != nil || e.Type != p.Type || !jsonEqual(e.Data, p.Data) {
		t.Errorf("%s: arrived %s, posted %s %s", d.Name, arrived, p.Type, p.Data)
	}
}

// TestResendOfAFailedEventCountsItDelivered: an event that failed for
// good and is resent through the API (webhookdeliveries/resend) and then
// delivered counts as delivered and no longer as failed, as a replay's
// would: eventsFailed goes back down, the success rate counts it once by
// its final outcome, no new event is counted as sent; and a later replay
// does not send it again, only the event still failed.
func TestResendOfAFailedEventCountsItDelivered(t *testing.T) {
	ns := env.Namespace(t)
	op := startOperator(t, ns)
	rc := newReceiver(t, http.StatusInternalServerError)
	createEndpoint(t, ns, "crm", rc.URL+"/hooks", 1)
	posted := enqueue(t, op, ns, "Fail.A", "Fail.B")
	status := func(sent, delivered, failed int64, rate string) {
		t.Helper()
		waitCounters(t, ns, "crm", time.Time{}, sent, delivered, failed, rate)
	}
	status(2, 0, 2, "0.0%")
	waitAttempts(t, ns, deliverylog.Name("crm", "Fail.A"), 1)

	rc.code.Store(http.StatusOK)
	body := filepath.Join(t.TempDir(), "resend.json")
	if err := os.WriteFile(body, []byte(`{"apiVersion":"delivery.wablast.io/v1alpha1","kind":"WebhookDeliveryResend"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	name := deliverylog.Name("crm", "Fail.A")
	path := fmt.Sprintf("/apis/delivery.wablast.io/v1alpha1/namespaces/%s/webhookdeliveries/%s/resend", ns, name)
	if out, err := kubectl(t, "create", "--raw", path, "-f", body); err != nil || !strings.Contains(out, "resentAt") {
		t.Fatalf("resend: %v: %s", err, out)
	}
	d := waitAttempts(t, ns, name, 2)
	if d.Status.State != deliveryv1alpha1.StateSucceeded || d.Status.Attempts[1].StatusCode != http.StatusOK {
		t.Errorf("after the resend: %s, attempts %+v", d.Status.State, d.Status.Attempts)
	}
	// Delivered: no longer failed; sent stays 2 (a resend sends no new event).
	status(2, 1, 1, "50.0%")

	// A replay of everything sends only Fail.B, still failed.
	annotation := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, webhooksv1alpha1.AnnotationReplaySince, annotation)
	if out, err := kubectl(t, "patch", "whc", "crm", "-n", ns, "--type", "merge", "-p", patch); err != nil {
		t.Fatalf("annotating the replay: %v: %s", err, out)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		var w webhooksv1alpha1.WebhookConfig
		if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "crm"}, &w); err != nil {
			return err
		}
		if lr := w.Status.LastReplay; lr == nil || lr.RequestedAt != annotation || lr.EventsRequeued != 1 {
			return fmt.Errorf("lastReplay %+v, want %s with 1 event requeued (Fail.B only)", lr, annotation)
		}
		return nil
	})
	status(2, 2, 0, "100.0%")

	// What arrived: each event failed once and was delivered once, with the
	// body that was posted every time.
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, id := range []string{"Fail.A", "Fail.B"} {
		bodies := rc.all[id]
		if len(bodies) != 2 {
			t.Errorf("%s arrived %d times, want 2 (failed, then resent or replayed)", id, len(bodies))
			continue
		}
		for _, b := range bodies {
			var e envelope
			if err := json.Unmarshal(b, &e); err != nil || e.Type != posted[id].Type || !jsonEqual(e.Data, posted[id].Data) {
				t.Errorf("%s arrived %s, posted %s %s", id, b, posted[id].Type, posted[id].Data)
			}
		}
	}
}

// A resend of a delivered event counts the event once, by the resend's
// final outcome: delivered again, the counters do not move (it is not
// sent again, not delivered twice); failing, it counts as failed and no
// longer as delivered. A delivery still being retried is not resent
// (409): a second life beside it would deliver and count it twice.
func TestResendOfADeliveredEventCountsItOnce(t *testing.T) {
	ns := env.Namespace(t)
	op := startOperator(t, ns)
	rc := newReceiver(t, http.StatusOK)
	createEndpoint(t, ns, "crm", rc.URL+"/hooks", 1)
	posted := enqueue(t, op, ns, "Ok.A")
	name := deliverylog.Name("crm", "Ok.A")
	// status waits until the WebhookConfig's last delivery is the attempt
	// at, then for the counters.
	status := func(at time.Time, sent, delivered, failed int64, rate string) {
		t.Helper()
		waitCounters(t, ns, "crm", at, sent, delivered, failed, rate)
	}
	d := waitAttempts(t, ns, name, 1)
	status(d.Status.Attempts[0].Time.Time, 1, 1, 0, "100.0%")

	run := pluginRunner(t, ns)
	if out, err := run("resend", "crm", "Ok.A"); err != nil {
		t.Fatalf("kubectl webhook resend: %v:\n%s", err, out)
	}
	d = waitAttempts(t, ns, name, 2)
	if d.Status.State != deliveryv1alpha1.StateSucceeded {
		t.Fatalf("after the resend: %s, attempts %+v", d.Status.State, d.Status.Attempts)
	}
	status(d.Status.Attempts[1].Time.Time, 1, 1, 0, "100.0%")

	rc.code.Store(http.StatusInternalServerError)
	if out, err := run("resend", "crm", "Ok.A"); err != nil {
		t.Fatalf("kubectl webhook resend: %v:\n%s", err, out)
	}
	d = waitAttempts(t, ns, name, 3)
	if d.Status.State != deliveryv1alpha1.StateFailed {
		t.Fatalf("after the failed resend: %s, attempts %+v", d.Status.State, d.Status.Attempts)
	}
	status(d.Status.Attempts[2].Time.Time, 1, 0, 1, "0.0%")

	rc.mu.Lock()
	bodies := rc.all["Ok.A"]
	rc.mu.Unlock()
	if len(bodies) != 3 {
		t.Errorf("Ok.A arrived %d times, want 3 (delivered, resent, resent)", len(bodies))
	}
	for _, b := range bodies {
		var e envelope
		if err := json.Unmarshal(b, &e); err != nil || e.Type != posted["Ok.A"].Type || !jsonEqual(e.Data, posted["Ok.A"].Data) {
			t.Errorf("Ok.A arrived %s, posted %s %s", b, posted["Ok.A"].Type, posted["Ok.A"].Data)
		}
	}

	// A delivery waiting for its retry (an hour away) is not resent.
	ctx := context.Background()
	for _, o := range []client.Object{
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "slow-secret"}, StringData: map[string]string{"secret": secret}},
		&webhooksv1alpha1.WebhookConfig{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "slow"}, Spec: webhooksv1alpha1.WebhookConfigSpec{
			URL: rc.URL + "/slow", SecretRef: &webhooksv1alpha1.SecretKeyReference{Name: "slow-secret"},
			Events:   []webhooksv1alpha1.EventType{webhooksv1alpha1.EventTypeAll},
			Delivery: &webhooksv1alpha1.DeliveryPolicy{MaxAttempts: 5, InitialBackoffSeconds: 3600},
		}},
	} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		var w webhooksv1alpha1.WebhookConfig
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "slow"}, &w); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(w.Status.Conditions, "Ready") {
			return errors.New("not Ready")
		}
		return nil
	})
	enqueue(t, op, ns, "Slow.A")
	slow := deliverylog.Name("slow", "Slow.A")
	if d := waitAttempts(t, ns, slow, 1); d.Status.State != deliveryv1alpha1.StateRetrying {
		t.Fatalf("%s: %s, want Retrying", slow, d.Status.State)
	}
	out, err := run("resend", "slow", "Slow.A")
	if err == nil || !strings.Contains(out, "still being delivered") {
		t.Errorf("resend of a retrying delivery: %v:\n%s", err, out)
	}
	if d := waitAttempts(t, ns, slow, 1); d.Status.State != deliveryv1alpha1.StateRetrying {
		t.Errorf("after the refused resend %s: %s, %d attempts", slow, d.Status.State, len(d.Status.Attempts))
	}
}

// waitCounters waits until WebhookConfig ns/name's status counts sent,
// delivered and failed events, none pending, at the success rate rate, and
// (when at is not zero) its last delivery is the attempt at at or later.
func waitCounters(t *testing.T, ns, name string, at time.Time, sent, delivered, failed int64, rate string) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() error {
		var w webhooksv1alpha1.WebhookConfig
		if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &w); err != nil {
			return err
		}
		st := w.Status
		if !at.IsZero() && (st.LastDelivery == nil || st.LastDelivery.Time.Time.Before(at.Truncate(time.Second))) {
			return fmt.Errorf("last delivery %+v, want the attempt at %s", st.LastDelivery, at)
		}
		if st.TotalEventsSent != sent || st.EventsDelivered != delivered || st.EventsFailed != failed || st.EventsPending != 0 || st.SuccessRate != rate {
			return fmt.Errorf("sent %d delivered %d failed %d pending %d rate %s; want %d, %d, %d, 0, %s",
				st.TotalEventsSent, st.EventsDelivered, st.EventsFailed, st.EventsPending, st.SuccessRate, sent, delivered, failed, rate)
		}
		return nil
	})
}
