package status

import (
	"context"
	"testing"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/stats"
)

// Every apply is counted under its field manager, and one the API server
// refuses (here: the resource does not exist) is counted as an error too.
func TestStatusWritesAndErrorsAreCounted(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	whc := &webhooksv1alpha1.WebhookConfig{
		ObjectMeta: metav1.ObjectMeta{Name: "crm", Namespace: ns},
		Spec:       webhooksv1alpha1.WebhookConfigSpec{URL: "https://crm.example.com/hooks", Events: []webhooksv1alpha1.EventType{"message.sent"}},
	}
	if err := env.Client.Create(ctx, whc); err != nil {
		t.Fatal(err)
	}
	writes := func() (float64, float64) {
		return promtest.ToFloat64(writesTotal.WithLabelValues(DeliveryFieldManager)), promtest.ToFloat64(writeErrorsTotal.WithLabelValues(DeliveryFieldManager))
	}
	w0, e0 := writes()
	if err := Apply(ctx, env.Client, Delivery(&stats.EndpointStats{UID: whc.UID, Namespace: ns, Name: "crm", TotalEventsSent: 1, EventsDelivered: 1}, "100.0%"), DeliveryFieldManager); err != nil {
		t.Fatalf("applying the status of an existing resource: %v", err)
	}
	if err := Apply(ctx, env.Client, Delivery(&stats.EndpointStats{UID: "uid-none", Namespace: ns, Name: "gone"}, "-"), DeliveryFieldManager); err == nil {
		t.Fatal("applying the status of a resource that does not exist succeeded")
	}
	w1, e1 := writes()
	if w1-w0 != 2 || e1-e0 != 1 {
		t.Errorf("writes +%v, errors +%v; want +2 and +1", w1-w0, e1-e0)
	}
	// One series per field manager, each there from the start.
	if n := promtest.CollectAndCount(writesTotal); n != len(fieldManagers) {
		t.Errorf("%d series of status writes, want one per field manager (%d)", n, len(fieldManagers))
	}
}
