package controller

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/endpoint"
)

func withOrdering(ordering webhooksv1alpha1.DeliveryOrdering, key string) func(*webhooksv1alpha1.WebhookConfig) {
	return func(w *webhooksv1alpha1.WebhookConfig) {
		if w.Spec.Delivery == nil {
			w.Spec.Delivery = &webhooksv1alpha1.DeliveryPolicy{}
		}
		w.Spec.Delivery.Ordering, w.Spec.Delivery.OrderingKey = ordering, key
	}
}

// updateDelivery changes spec.delivery of ns/name, again on a conflict with
// the controller's status writes.
func updateDelivery(t *testing.T, ns, name string, mutate func(*webhooksv1alpha1.DeliveryPolicy)) {
	t.Helper()
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		w := get(t, ns, name)
		mutate(w.Spec.Delivery)
		return env.Client.Update(context.Background(), w)
	}); err != nil {
		t.Fatal(err)
	}
}

func registeredOrdering(perKey bool, key string) func(endpoint.Endpoint) error {
	return func(ep endpoint.Endpoint) error {
		if ep.Policy.PerKey != perKey || ep.OrderingKey.Source() != key {
			return fmt.Errorf("registered PerKey %v with key %q, want %v with %q", ep.Policy.PerKey, ep.OrderingKey.Source(), perKey, key)
		}
		return nil
	}
}

func TestAnOrderingKeyIsCompiledAndABadOneIsNotReady(t *testing.T) {
	ns := env.Namespace(t)
	m := startManager(t, ns)
	mustCreate(t, newSecret(ns, "s", whsecA), newWHC(ns, "crm", withSecretRef("s"), withOrdering(webhooksv1alpha1.OrderingPerKey, "")))

	// PerKey without a key: the default key, compiled.
	ep := waitRegistered(t, m.registry, ns, registeredOrdering(true, endpoint.DefaultOrderingKey))
	if k, err := ep.OrderingKey.Key("message.sent", []byte(`{"type":"message.sent","timestamp":"2026-12-08T10:00:00Z","data":{"messageId":"m-1","sessionId":"s-1"}}`)); err != nil || k != "m-1" {
		t.Errorf("default key of a message event = %q, %v; want m-1", k, err)
	}
	w := get(t, ns, "crm")
	if w.Spec.Delivery.Ordering != webhooksv1alpha1.OrderingPerKey {
		t.Errorf("spec.delivery.ordering = %q", w.Spec.Delivery.Ordering)
	}

	// A key that does not compile: Ready=False with the compiler's message;
	// the previous generation stays registered.
	goodGen := ep.Generation
	updateDelivery(t, ns, "crm", func(d *webhooksv1alpha1.DeliveryPolicy) { d.OrderingKey = `data.messageId +` })
	w = waitCondition(t, ns, "crm", webhooksv1alpha1.ConditionReady, metav1.ConditionFalse, webhooksv1alpha1.ReasonInvalidOrderingKey)
	ready := meta.FindStatusCondition(w.Status.Conditions, webhooksv1alpha1.ConditionReady)
	for _, want := range []string{"spec.delivery.orderingKey is invalid: ERROR: <input>:1:17: Syntax error", fmt.Sprintf("keeps the configuration of generation %d", goodGen)} {
		if !strings.Contains(ready.Message, want) {
			t.Errorf("Ready message %q does not contain %q", ready.Message, want)
		}
	}

	// Fixed with a key of its own; then Unordered registers no key.
	updateDelivery(t, ns, "crm", func(d *webhooksv1alpha1.DeliveryPolicy) { d.OrderingKey = `data.sessionId` })
	waitCondition(t, ns, "crm", webhooksv1alpha1.ConditionReady, metav1.ConditionTrue, webhooksv1alpha1.ReasonSucceeded)
	waitRegistered(t, m.registry, ns, registeredOrdering(true, `data.sessionId`))
	updateDelivery(t, ns, "crm", func(d *webhooksv1alpha1.DeliveryPolicy) { d.Ordering = webhooksv1alpha1.OrderingUnordered })
	waitRegistered(t, m.registry, ns, registeredOrdering(false, ""))
}

func TestTheAPIServerRefusesAnUnknownOrdering(t *testing.T) {
	ns := env.Namespace(t)
	err := env.Client.Create(context.Background(), newWHC(ns, "crm", withOrdering("Sometimes", "")))
	if err == nil || !strings.Contains(err.Error(), `spec.delivery.ordering: Unsupported value: "Sometimes"`) {
		t.Fatalf("create with ordering Sometimes: %v", err)
	}
	err = env.Client.Create(context.Background(), newWHC(ns, "crm2", withOrdering(webhooksv1alpha1.OrderingPerKey, "  ")))
	if err == nil || !strings.Contains(err.Error(), "orderingKey must not be blank") {
		t.Fatalf("create with a blank orderingKey: %v", err)
	}
}
