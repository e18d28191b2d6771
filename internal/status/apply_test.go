package status

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/stats"
)

// jsonOf is the body an apply sends.
func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The delivery fields are applied with the resource's UID (a new resource
// of the same name is never written), every counter even at zero, records
// without the fields they do not have, and times to the second.
func TestDeliveryApplyBody(t *testing.T) {
	at := time.Date(2026, 12, 7, 4, 5, 6, 789e6, time.UTC)
	st := &stats.EndpointStats{
		UID: "uid-1", Namespace: "shop", Name: "crm",
		TotalEventsSent: 3, EventsDelivered: 2, EventsFailed: 0, EventsPending: 1, ConsecutiveFailures: 1,
		LastDelivery: &webhooksv1alpha1.DeliveryRecord{Time: metav1.NewTime(at), EventID: "msg_2", EventType: "message.sent", Attempt: 2, StatusCode: 503, DurationMilliseconds: 12, Result: webhooksv1alpha1.ResultRetrying, Error: "receiver answered 503"},
		Recent: []webhooksv1alpha1.DeliveryRecord{
			{Time: metav1.NewTime(at), EventID: "msg_2", EventType: "message.sent", Attempt: 2, StatusCode: 503, DurationMilliseconds: 12, Result: webhooksv1alpha1.ResultRetrying, Error: "receiver answered 503"},
			{Time: metav1.NewTime(at.Add(-time.Second)), EventID: "msg_1", EventType: "message.sent", Attempt: 1, DurationMilliseconds: 0, Result: webhooksv1alpha1.ResultFailed, Error: "connection refused"},
		},
		DeliveringStatus: metav1.ConditionFalse, DeliveringReason: webhooksv1alpha1.ReasonDeliveryFailing, DeliveringMessage: "receiver answered 503", DeliveringSince: at,
	}
	got := jsonOf(t, Delivery(st, "66.7%"))
	want := `{"kind":"WebhookConfig","apiVersion":"webhooks.wablast.io/v1alpha1","metadata":{"name":"crm","namespace":"shop","uid":"uid-1"},` +
		`"status":{"conditions":[{"type":"Delivering","status":"False","lastTransitionTime":"2026-12-07T04:05:06Z","reason":"DeliveryFailing","message":"receiver answered 503"}],` +
		`"totalEventsSent":3,"eventsDelivered":2,"eventsFailed":0,"eventsPending":1,"successRate":"66.7%","consecutiveFailures":1,` +
		`"lastDelivery":{"time":"2026-12-07T04:05:06Z","eventID":"msg_2","eventType":"message.sent","attempt":2,"statusCode":503,"durationMilliseconds":12,"result":"Retrying","error":"receiver answered 503"},` +
		`"recentDeliveries":[{"time":"2026-12-07T04:05:06Z","eventID":"msg_2","eventType":"message.sent","attempt":2,"statusCode":503,"durationMilliseconds":12,"result":"Retrying","error":"receiver answered 503"},` +
		`{"time":"2026-12-07T04:05:05Z","eventID":"msg_1","eventType":"message.sent","attempt":1,"durationMilliseconds":0,"result":"Failed","error":"connection refused"}]}}`
	if got != want {
		t.Errorf("Delivery apply body:\n got %s\nwant %s", got, want)
	}

	// Before anything is known: the counters, no records, no condition.
	empty := jsonOf(t, Delivery(&stats.EndpointStats{UID: "uid-2", Namespace: "shop", Name: "erp"}, "-"))
	if want := `{"kind":"WebhookConfig","apiVersion":"webhooks.wablast.io/v1alpha1","metadata":{"name":"erp","namespace":"shop","uid":"uid-2"},"status":{"totalEventsSent":0,"eventsDelivered":0,"eventsFailed":0,"eventsPending":0,"successRate":"-","consecutiveFailures":0}}`; empty != want {
		t.Errorf("empty Delivery apply body:\n got %s\nwant %s", empty, want)
	}
}

func TestLastTestAndLastReplayApplyBodies(t *testing.T) {
	at := metav1.NewTime(time.Date(2026, 12, 7, 4, 5, 6, 0, time.UTC))
	long := strings.Repeat("é", 800) // 1,600 bytes
	got := jsonOf(t, LastTest("shop", "crm", "uid-1", &webhooksv1alpha1.TestRecord{RequestedAt: "2026-12-07T04:05:00Z", Time: &at, Result: webhooksv1alpha1.ResultFailed, Error: long}))
	var body struct {
		Metadata struct{ UID string }
		Status   struct {
			LastTest map[string]any `json:"lastTest"`
		}
	}
	if err := json.Unmarshal([]byte(got), &body); err != nil {
		t.Fatal(err)
	}
	lt := body.Status.LastTest
	if body.Metadata.UID != "uid-1" || lt["requestedAt"] != "2026-12-07T04:05:00Z" || lt["time"] != "2026-12-07T04:05:06Z" || lt["result"] != "Failed" || lt["durationMilliseconds"] != 0.0 {
		t.Errorf("lastTest body %s", got)
	}
	if _, ok := lt["statusCode"]; ok {
		t.Errorf("lastTest has a statusCode without an answer: %s", got)
	}
	if e, _ := lt["error"].(string); len(e) > maxErrorBytes || !strings.HasPrefix(long, strings.TrimSuffix(e, "...")) {
		t.Errorf("lastTest error is %d bytes, want at most %d of the error's start", len(e), maxErrorBytes)
	}

	rp := jsonOf(t, LastReplay("shop", "crm", "uid-1", &webhooksv1alpha1.ReplayRecord{RequestedAt: "bad", Time: &at}))
	if want := `{"kind":"WebhookConfig","apiVersion":"webhooks.wablast.io/v1alpha1","metadata":{"name":"crm","namespace":"shop","uid":"uid-1"},"status":{"lastReplay":{"requestedAt":"bad","time":"2026-12-07T04:05:06Z","eventsRequeued":0}}}`; rp != want {
		t.Errorf("lastReplay body:\n got %s\nwant %s", rp, want)
	}
}

func TestControllerApplyBody(t *testing.T) {
	whc := &webhooksv1alpha1.WebhookConfig{}
	whc.Namespace, whc.Name, whc.UID = "shop", "crm", "uid-1"
	at := metav1.NewTime(time.Date(2026, 12, 7, 4, 5, 6, 0, time.UTC))
	got := jsonOf(t, Controller(whc, 4, true, webhooksv1alpha1.SecretKeyReference{Name: "crm-signing", Key: "secret"}, nil, []metav1.Condition{
		{Type: webhooksv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: webhooksv1alpha1.ReasonSucceeded, Message: "live", ObservedGeneration: 4, LastTransitionTime: at},
	}))
	want := `{"kind":"WebhookConfig","apiVersion":"webhooks.wablast.io/v1alpha1","metadata":{"name":"crm","namespace":"shop"},"status":{"observedGeneration":4,` +
		`"conditions":[{"type":"Ready","status":"True","observedGeneration":4,"lastTransitionTime":"2026-12-07T04:05:06Z","reason":"Succeeded","message":"live"}],` +
		`"active":true,"secretRef":{"name":"crm-signing","key":"secret"}}}`
	if got != want {
		t.Errorf("controller apply body:\n got %s\nwant %s", got, want)
	}
	// During a rotation the controller also applies when it ends.
	end := metav1.NewTime(time.Date(2026, 12, 8, 4, 5, 6, 0, time.UTC))
	got = jsonOf(t, Controller(whc, 4, true, webhooksv1alpha1.SecretKeyReference{Name: "crm-signing", Key: "secret"}, &end, nil))
	if !strings.Contains(got, `"secretRotationEndsAt":"2026-12-08T04:05:06Z"`) {
		t.Errorf("controller apply body during a rotation: %s", got)
	}
}
