package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/testutil"
)

func withFilter(expr string) func(*webhooksv1alpha1.WebhookConfig) {
	return func(w *webhooksv1alpha1.WebhookConfig) { w.Spec.Filter = expr }
}

// setFilter updates spec.filter of ns/crm.
func setFilter(t *testing.T, ns, expr string) {
	t.Helper()
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		w := get(t, ns, "crm")
		w.Spec.Filter = expr
		return env.Client.Update(context.Background(), w)
	}); err != nil {
		t.Fatal(err)
	}
}

func registeredFilter(want string) func(endpoint.Endpoint) error {
	return func(ep endpoint.Endpoint) error {
		if got := ep.Filter.Source(); got != want {
			return fmt.Errorf("registered filter %q, want %q", got, want)
		}
		return nil
	}
}

var sessionEvent = endpoint.FilterEvent{Type: "session.connected", Timestamp: time.Now(), Data: []byte(`{"sessionId":"s-1","phoneNumber":"+62"}`)}

func TestAFilterThatDoesNotCompileIsNotReadyAndRecovers(t *testing.T) {
	ns := env.Namespace(t)
	m := startManager(t, ns)
	const bad = `data.campaignId == "c-42" ||`
	mustCreate(t, newSecret(ns, "s", whsecA), newWHC(ns, "crm", withSecretRef("s"), withFilter(bad)))

	// A new resource with a bad filter: Ready=False with the compiler's
	// message, Stalled, not active, and nothing registered.
	w := waitCondition(t, ns, "crm", webhooksv1alpha1.ConditionReady, metav1.ConditionFalse, webhooksv1alpha1.ReasonInvalidFilter)
	ready := meta.FindStatusCondition(w.Status.Conditions, webhooksv1alpha1.ConditionReady)
	for _, want := range []string{"spec.filter is invalid: ERROR: <input>:1:29: Syntax error: mismatched input '<EOF>'", "not registered"} {
		if !strings.Contains(ready.Message, want) {
			t.Errorf("Ready message %q does not contain %q", ready.Message, want)
		}
	}
	if s := meta.FindStatusCondition(w.Status.Conditions, webhooksv1alpha1.ConditionStalled); s == nil || s.Status != metav1.ConditionTrue || s.Reason != webhooksv1alpha1.ReasonInvalidFilter {
		t.Errorf("Stalled = %+v, want True/InvalidFilter", s)
	}
	if w.Status.Active {
		t.Error("active = true with an invalid filter")
	}
	if got := kstatus(t, w); got != status.FailedStatus {
		t.Errorf("kstatus = %s, want Failed", got)
	}
	if _, ok := m.registry.Get(client.ObjectKeyFromObject(w)); ok {
		t.Error("an endpoint with a filter that does not compile is registered")
	}

	// Fixed: Ready=True and the filter is registered, compiled.
	const good = `data.campaignId == "c-42" || type.startsWith("session.")`
	setFilter(t, ns, good)
	w = waitCondition(t, ns, "crm", webhooksv1alpha1.ConditionReady, metav1.ConditionTrue, webhooksv1alpha1.ReasonSucceeded)
	if !w.Status.Active || meta.FindStatusCondition(w.Status.Conditions, webhooksv1alpha1.ConditionStalled) != nil {
		t.Errorf("after the fix: active %v, conditions %+v", w.Status.Active, w.Status.Conditions)
	}
	ep := waitRegistered(t, m.registry, ns, registeredFilter(good))
	if !ep.Filter.Matches(sessionEvent) {
		t.Error("the registered filter does not match a session event")
	}

	// A type error on a live resource: Ready=False with the checker's
	// message, and the previous generation stays registered, filter
	// included, so its deliveries go on.
	goodGen := ep.Generation
	setFilter(t, ns, `type == 42`)
	w = waitCondition(t, ns, "crm", webhooksv1alpha1.ConditionReady, metav1.ConditionFalse, webhooksv1alpha1.ReasonInvalidFilter)
	ready = meta.FindStatusCondition(w.Status.Conditions, webhooksv1alpha1.ConditionReady)
	for _, want := range []string{"found no matching overload for '_==_' applied to '(string, int)'", fmt.Sprintf("keeps the configuration of generation %d", goodGen)} {
		if !strings.Contains(ready.Message, want) {
			t.Errorf("Ready message %q does not contain %q", ready.Message, want)
		}
	}
	ep, ok := m.registry.Get(client.ObjectKeyFromObject(w))
	if !ok || ep.Generation != goodGen || ep.Filter.Source() != good {
		t.Errorf("registry holds %v (generation %d, filter %q), want generation %d with %q", ok, ep.Generation, ep.Filter.Source(), goodGen, good)
	}

	// A result that is not a bool, and a cost over the limit.
	for expr, want := range map[string]string{
		`data.campaignId`: "must evaluate to a bool, not dyn",
		`data.items.all(a, data.items.all(b, a == b))`: "estimated worst-case cost",
	} {
		setFilter(t, ns, expr)
		testutil.Eventually(t, 20*time.Second, func() error {
			w = get(t, ns, "crm")
			c := meta.FindStatusCondition(w.Status.Conditions, webhooksv1alpha1.ConditionReady)
			if w.Status.ObservedGeneration != w.Generation || c == nil || !strings.Contains(c.Message, want) {
				return fmt.Errorf("Ready %+v, want a message with %q", c, want)
			}
			return nil
		})
	}

	// Removing the filter delivers every subscribed event again.
	setFilter(t, ns, "")
	waitCondition(t, ns, "crm", webhooksv1alpha1.ConditionReady, metav1.ConditionTrue, webhooksv1alpha1.ReasonSucceeded)
	waitRegistered(t, m.registry, ns, func(ep endpoint.Endpoint) error {
		if ep.Filter != nil {
			return errors.New("a filter is still registered")
		}
		return nil
	})
}

func TestAFilterIsCompiledOncePerGeneration(t *testing.T) {
	ns := env.Namespace(t)
	m := startManager(t, ns)
	const expr = `has(data.campaignId) && data.campaignId == "c-42"`
	mustCreate(t, newSecret(ns, "s", whsecA), newWHC(ns, "crm", withSecretRef("s"), withFilter(expr)))
	waitCondition(t, ns, "crm", webhooksv1alpha1.ConditionReady, metav1.ConditionTrue, webhooksv1alpha1.ReasonSucceeded)
	first := waitRegistered(t, m.registry, ns, registeredFilter(expr)).Filter

	// A Secret change reconciles the resource again: new keys, the same
	// compiled filter.
	sec := newSecret(ns, "s", rawB)
	if err := env.Client.Update(context.Background(), sec); err != nil {
		t.Fatal(err)
	}
	ep := waitRegistered(t, m.registry, ns, func(ep endpoint.Endpoint) error {
		if string(ep.Keys[0]) != rawB {
			return errors.New("the new secret is not registered yet")
		}
		return nil
	})
	if ep.Filter != first {
		t.Error("the filter was compiled again for the same generation")
	}
}
