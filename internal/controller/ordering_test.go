package controller

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
	w.Spec.Delivery.OrderingKey = `data.messageId +`
	if err := env.Client.Update(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	w = waitCondition(t, ns, "crm", webhooksv1alpha1.ConditionReady, metav1.ConditionFalse, webhooksv1alpha1.ReasonInvalidOrderingKey)
	ready := meta.FindStatusCondition(w.Status.Conditions, webhooksv1alpha1.ConditionReady)
	for _, want := range []string{"spec.delivery.orderingKey is invalid: ERROR: <input>:1:17: Syntax error", fmt.Sprintf("keeps the configuration of generation %d", goodGen)} {
		if !strings.Contains(ready.Message, want) {
			t.Errorf("Ready message %q does not contain %q", ready.Message, want)
		}
	}

	// Fixed with a key of its own; then Unordered registers no key.
	w.Spec.Delivery.OrderingKey = `data.sessionId`
	if err := env.Client.Update(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, ns, "crm", webhooksv1alpha1.ConditionReady, metav1.ConditionTrue, webhooksv1alpha1.ReasonSucceeded)
	waitRegistered(t, m.registry, ns, registeredOrdering(true, `data.sessionId`))
	w = get(t, ns, "crm")
	w.Spec.Delivery.Ordering = webhooksv1alpha1.OrderingUnordered
	if err := env.Client.Update(context.Background(), w); err != nil {
		t.Fatal(err)
	}
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
