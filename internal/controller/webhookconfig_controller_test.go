package controller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/signing"
	"github.com/wablast/webhook-operator/internal/testutil"
)

const (
	whsecA = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	rawB   = "a-raw-secret-of-32-bytes-long!!!"
)

func newWHC(ns, name string, mutate ...func(*webhooksv1alpha1.WebhookConfig)) *webhooksv1alpha1.WebhookConfig {
	w := &webhooksv1alpha1.WebhookConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: webhooksv1alpha1.WebhookConfigSpec{
			URL:    "https://crm.example.com/hooks/wa",
			Events: []webhooksv1alpha1.EventType{webhooksv1alpha1.EventMessageSent, webhooksv1alpha1.EventMessageDelivered},
		},
	}
	for _, m := range mutate {
		m(w)
	}
	return w
}

func withSecretRef(name string) func(*webhooksv1alpha1.WebhookConfig) {
	return func(w *webhooksv1alpha1.WebhookConfig) {
		w.Spec.SecretRef = &webhooksv1alpha1.SecretKeyReference{Name: name}
	}
}

// newSecret is a Secret holding value under the default key, "secret".
func newSecret(ns, name, value string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Data:       map[string][]byte{"secret": []byte(value)},
	}
}

func mustCreate(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := env.Client.Create(context.Background(), o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
}

func get(t *testing.T, ns, name string) *webhooksv1alpha1.WebhookConfig {
	t.Helper()
	var w webhooksv1alpha1.WebhookConfig
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &w); err != nil {
		t.Fatalf("getting WebhookConfig: %v", err)
	}
	return &w
}

// waitCondition waits until the condition has the status and reason and
// observedGeneration has caught up with generation.
func waitCondition(t *testing.T, ns, name, condType string, want metav1.ConditionStatus, reason string) *webhooksv1alpha1.WebhookConfig {
	t.Helper()
	var w *webhooksv1alpha1.WebhookConfig
	testutil.Eventually(t, 20*time.Second, func() error {
		w = get(t, ns, name)
		c := meta.FindStatusCondition(w.Status.Conditions, condType)
		switch {
		case c == nil:
			return fmt.Errorf("no %s condition yet", condType)
		case c.Status != want || (reason != "" && c.Reason != reason):
			return fmt.Errorf("%s is %s/%s (%s), want %s/%s", condType, c.Status, c.Reason, c.Message, want, reason)
		case w.Status.ObservedGeneration != w.Generation:
			return fmt.Errorf("observedGeneration %d, generation %d", w.Status.ObservedGeneration, w.Generation)
		}
		return nil
	})
	return w
}

func kstatus(t *testing.T, w *webhooksv1alpha1.WebhookConfig) status.Status {
	t.Helper()
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(w)
	if err != nil {
		t.Fatal(err)
	}
	res, err := status.Compute(&unstructured.Unstructured{Object: u})
	if err != nil {
		t.Fatalf("kstatus: %v", err)
	}
	return res.Status
}

func keysOf(t *testing.T, value string) [][]byte {
	t.Helper()
	k, err := signing.ParseSecrets(value)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// waitRegistered waits for the registry to hold the endpoint ns/crm and,
// when check is not nil, for it to pass check.
func waitRegistered(t *testing.T, reg endpoint.Registry, ns string, check func(endpoint.Endpoint) error) endpoint.Endpoint {
	t.Helper()
	var ep endpoint.Endpoint
	testutil.Eventually(t, 20*time.Second, func() error {
		var ok bool
		ep, ok = reg.Get(types.NamespacedName{Namespace: ns, Name: "crm"})
		if !ok {
			return errors.New("not in the registry")
		}
		if check != nil {
			return check(ep)
		}
		return nil
	})
	return ep
}

func waitUnregistered(t *testing.T, reg endpoint.Registry, ns, name string) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, func() error {
		if _, ok := reg.Get(types.NamespacedName{Namespace: ns, Name: name}); ok {
			return errors.New("still in the registry")
		}
		return nil
	})
}

func TestAPIServerRejectsInvalidManifests(t *testing.T) {
	ns := env.Namespace(t)
	cases := map[string]struct {
		mutate func(*webhooksv1alpha1.WebhookConfig)
		want   string
	}{
		"a malformed URL is rejected": {
			func(w *webhooksv1alpha1.WebhookConfig) { w.Spec.URL = "not a url" },
			"url must be an absolute URL"},
		"a URL with user-info is rejected": {
			func(w *webhooksv1alpha1.WebhookConfig) { w.Spec.URL = "https://user:pass@crm.example.com/hooks" },
			"url must not contain user-info"},
		"a non-http scheme is rejected": {
			func(w *webhooksv1alpha1.WebhookConfig) { w.Spec.URL = "ftp://crm.example.com/hooks" },
			"url scheme must be http or https"},
		"a URL without a host is rejected": {
			func(w *webhooksv1alpha1.WebhookConfig) { w.Spec.URL = "https:///hooks" },
			"url must have a host"},
		"a URL with a fragment is rejected": {
			func(w *webhooksv1alpha1.WebhookConfig) { w.Spec.URL = "https://crm.example.com/hooks#frag" },
			"url must not contain a #fragment"},
		"a URL over 2048 characters is rejected": {
			func(w *webhooksv1alpha1.WebhookConfig) {
				w.Spec.URL = "https://crm.example.com/" + strings.Repeat("a", 2048)
			},
			"Too long"},
		"an unknown event type is rejected": {
			func(w *webhooksv1alpha1.WebhookConfig) { w.Spec.Events = []webhooksv1alpha1.EventType{"message.read"} },
			`spec.events[0]: Invalid value: "message.read": unknown event type: the types are message.sent, message.delivered, message.failed, session.connected, session.disconnected, campaign.started, campaign.completed, or "*" for every type`},
		"webhook.test cannot be subscribed to": {
			func(w *webhooksv1alpha1.WebhookConfig) { w.Spec.Events = []webhooksv1alpha1.EventType{"webhook.test"} },
			`webhook.test is sent only by test deliveries and cannot be subscribed to`},
		"an unknown event type beside a wildcard: both problems, every rule checked": {
			func(w *webhooksv1alpha1.WebhookConfig) {
				w.Spec.Events = []webhooksv1alpha1.EventType{"*", "message.read"}
			},
			`spec.events[1]: Invalid value: "message.read": unknown event type`},
		"an empty events list is rejected": {
			func(w *webhooksv1alpha1.WebhookConfig) { w.Spec.Events = []webhooksv1alpha1.EventType{} },
			"spec.events: Invalid value"},
		"a missing events list is rejected": {
			func(w *webhooksv1alpha1.WebhookConfig) { w.Spec.Events = nil },
			"spec.events: Required value"},
		"duplicate event types are rejected": {
			func(w *webhooksv1alpha1.WebhookConfig) {
				w.Spec.Events = []webhooksv1alpha1.EventType{"message.sent", "message.sent"}
			},
			"Duplicate value"},
		"a wildcard combined with a type is rejected": {
			func(w *webhooksv1alpha1.WebhookConfig) {
				w.Spec.Events = []webhooksv1alpha1.EventType{"*", "message.sent"}
			},
			"cannot be combined"},
		"timeoutSeconds above 60 is rejected": {
			func(w *webhooksv1alpha1.WebhookConfig) {
				w.Spec.Delivery = &webhooksv1alpha1.DeliveryPolicy{TimeoutSeconds: 61}
			},
			"spec.delivery.timeoutSeconds: Invalid value: 61"},
		"a negative timeoutSeconds is rejected": {
			func(w *webhooksv1alpha1.WebhookConfig) {
				w.Spec.Delivery = &webhooksv1alpha1.DeliveryPolicy{TimeoutSeconds: -1}
			},
			"spec.delivery.timeoutSeconds: Invalid value: -1"},
		"maxAttempts above 20 is rejected": {
			func(w *webhooksv1alpha1.WebhookConfig) {
				w.Spec.Delivery = &webhooksv1alpha1.DeliveryPolicy{MaxAttempts: 21}
			},
			"spec.delivery.maxAttempts: Invalid value: 21"},
		"maxInFlight above 256 is rejected": {
			func(w *webhooksv1alpha1.WebhookConfig) {
				w.Spec.Delivery = &webhooksv1alpha1.DeliveryPolicy{MaxInFlight: 257}
			},
			"spec.delivery.maxInFlight: Invalid value: 257"},
		"maxAgeSeconds under a minute is rejected": {
			func(w *webhooksv1alpha1.WebhookConfig) {
				w.Spec.Delivery = &webhooksv1alpha1.DeliveryPolicy{MaxAgeSeconds: 30}
			},
			"spec.delivery.maxAgeSeconds: Invalid value: 30"},
		"an initial backoff above the maximum is rejected": {
			func(w *webhooksv1alpha1.WebhookConfig) {
				w.Spec.Delivery = &webhooksv1alpha1.DeliveryPolicy{InitialBackoffSeconds: 600, MaxBackoffSeconds: 60}
			},
			"initialBackoffSeconds must not be greater than delivery.maxBackoffSeconds"},
		"a blank filter is rejected": {
			func(w *webhooksv1alpha1.WebhookConfig) { w.Spec.Filter = "  " },
			"filter must not be blank"},
		"a filter over 4096 characters is rejected": {
			func(w *webhooksv1alpha1.WebhookConfig) { w.Spec.Filter = strings.Repeat("true && ", 512) + "true" },
			"spec.filter: Too long"},
		"a secretRef with a namespace is rejected": {
			func(w *webhooksv1alpha1.WebhookConfig) {
				w.Spec.SecretRef = &webhooksv1alpha1.SecretKeyReference{Name: "s", Namespace: "other"}
			},
			"secretRef.namespace is not supported"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := newWHC(ns, "bad", tc.mutate)
			err := env.Client.Create(context.Background(), w)
			if err == nil {
				_ = env.Client.Delete(context.Background(), w)
				t.Fatal("the API server accepted the manifest")
			}
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
			// A problem with the event types is reported alone: no CEL rule
			// was skipped for it (an enum would have had every rule skipped).
			if strings.Contains(name, "event type") && strings.Contains(err.Error(), "were not checked") {
				t.Errorf("error %q carries the API server's skipped-rules noise", err)
			}
			if strings.Contains(name, "beside a wildcard") && !strings.Contains(err.Error(), "cannot be combined") {
				t.Errorf("error %q does not report the wildcard rule too", err)
			}
		})
	}
	var list webhooksv1alpha1.WebhookConfigList
	if err := env.Client.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 0 {
		t.Fatalf("%d invalid resources were stored", len(list.Items))
	}
}

func TestAPIServerAppliesDefaults(t *testing.T) {
	ns := env.Namespace(t)
	mustCreate(t, newWHC(ns, "defaults", withSecretRef("s")))
	w := get(t, ns, "defaults")
	if w.Spec.Enabled == nil || !*w.Spec.Enabled {
		t.Errorf("enabled = %v, want true", w.Spec.Enabled)
	}
	if w.Spec.SecretRef.Key != "secret" {
		t.Errorf("secretRef.key = %q, want secret", w.Spec.SecretRef.Key)
	}
	want := webhooksv1alpha1.DeliveryPolicy{
		TimeoutSeconds: 10, MaxAttempts: 10, InitialBackoffSeconds: 5,
		MaxBackoffSeconds: 21600, MaxAgeSeconds: 259200, MaxInFlight: 16, Ordering: webhooksv1alpha1.OrderingUnordered,
	}
	if w.Spec.Delivery == nil || *w.Spec.Delivery != want {
		t.Errorf("delivery = %+v, want %+v", w.Spec.Delivery, want)
	}
	if w.Status.ObservedGeneration != -1 {
		t.Errorf("status.observedGeneration = %d before any reconcile, want -1", w.Status.ObservedGeneration)
	}
}

func TestReadyResourceIsRegistered(t *testing.T) {
	ns := env.Namespace(t)
	m := startManager(t, ns)
	mustCreate(t, newSecret(ns, "crm-secret", whsecA),
		newWHC(ns, "crm", withSecretRef("crm-secret"), func(w *webhooksv1alpha1.WebhookConfig) {
			w.Spec.Delivery = &webhooksv1alpha1.DeliveryPolicy{TimeoutSeconds: 3, MaxInFlight: 2}
		}))

	w := waitCondition(t, ns, "crm", webhooksv1alpha1.ConditionReady, metav1.ConditionTrue, webhooksv1alpha1.ReasonSucceeded)
	if !w.Status.Active {
		t.Error("active = false, want true")
	}
	if meta.FindStatusCondition(w.Status.Conditions, webhooksv1alpha1.ConditionStalled) != nil {
		t.Error("a Ready resource has a Stalled condition")
	}
	if got := kstatus(t, w); got != status.CurrentStatus {
		t.Errorf("kstatus = %s, want Current", got)
	}
	if w.Status.SecretRef == nil || w.Status.SecretRef.Name != "crm-secret" || w.Status.SecretRef.Key != "secret" {
		t.Errorf("status.secretRef = %+v", w.Status.SecretRef)
	}

	got := waitRegistered(t, m.registry, ns, nil)
	want := endpoint.Endpoint{
		Namespace: ns, Name: "crm", UID: w.UID, Generation: w.Generation,
		URL: "https://crm.example.com/hooks/wa", Keys: keysOf(t, whsecA),
		Events: []string{"message.sent", "message.delivered"}, Enabled: true,
		Policy: endpoint.Policy{
			Timeout: 3 * time.Second, MaxAttempts: 10, InitialBackoff: 5 * time.Second,
			MaxBackoff: 21600 * time.Second, MaxAge: 259200 * time.Second, MaxInFlight: 2,
		},
	}
	if !got.Equal(&want) {
		t.Errorf("registry holds\n%+v\nwant\n%+v", got, want)
	}
	if n := len(m.registry.List()); n != 1 {
		t.Errorf("registry holds %d endpoints, want 1", n)
	}

	// A spec change reaches the registry and observedGeneration follows.
	w.Spec.URL = "https://crm.example.com/v2"
	if err := env.Client.Update(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	waitRegistered(t, m.registry, ns, func(ep endpoint.Endpoint) error {
		if ep.URL != "https://crm.example.com/v2" {
			return fmt.Errorf("url %s", ep.URL)
		}
		return nil
	})
	waitCondition(t, ns, "crm", webhooksv1alpha1.ConditionReady, metav1.ConditionTrue, webhooksv1alpha1.ReasonSucceeded)
}

func TestSecretProblemsStallAndRecover(t *testing.T) {
	ns := env.Namespace(t)
	m := startManager(t, ns)
	mustCreate(t, newWHC(ns, "crm", withSecretRef("later")))

	w := waitCondition(t, ns, "crm", webhooksv1alpha1.ConditionReady, metav1.ConditionFalse, webhooksv1alpha1.ReasonSecretNotFound)
	stalled := meta.FindStatusCondition(w.Status.Conditions, webhooksv1alpha1.ConditionStalled)
	if stalled == nil || stalled.Status != metav1.ConditionTrue || stalled.Reason != webhooksv1alpha1.ReasonSecretNotFound {
		t.Fatalf("Stalled = %+v, want True/SecretNotFound", stalled)
	}
	if !strings.Contains(stalled.Message, `"later"`) {
		t.Errorf("message %q does not name the Secret", stalled.Message)
	}
	if w.Status.Active {
		t.Error("active = true on a stalled resource")
	}
	if got := kstatus(t, w); got != status.FailedStatus {
		t.Errorf("kstatus = %s, want Failed", got)
	}
	if _, ok := m.registry.Get(types.NamespacedName{Namespace: ns, Name: "crm"}); ok {
		t.Error("a stalled resource is in the registry")
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		var evs eventsv1.EventList
		if err := env.Client.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == webhooksv1alpha1.ReasonSecretNotFound && e.Regarding.Name == "crm" && e.Type == corev1.EventTypeWarning {
				return nil
			}
		}
		return errors.New("no SecretNotFound warning event")
	})
	generation, rv := w.Generation, w.ResourceVersion

	// Creating the Secret heals the resource without touching it.
	sec := newSecret(ns, "later", whsecA)
	mustCreate(t, sec)
	w = waitCondition(t, ns, "crm", webhooksv1alpha1.ConditionReady, metav1.ConditionTrue, webhooksv1alpha1.ReasonSucceeded)
	if w.Generation != generation {
		t.Errorf("generation changed from %d to %d", generation, w.Generation)
	}
	if w.ResourceVersion == rv {
		t.Error("status was not rewritten")
	}
	if meta.FindStatusCondition(w.Status.Conditions, webhooksv1alpha1.ConditionStalled) != nil {
		t.Error("Stalled is still set")
	}
	if got := kstatus(t, w); got != status.CurrentStatus {
		t.Errorf("kstatus = %s, want Current", got)
	}
	waitRegistered(t, m.registry, ns, func(ep endpoint.Endpoint) error {
		if !bytes.Equal(ep.Keys[0], keysOf(t, whsecA)[0]) {
			return errors.New("wrong key")
		}
		return nil
	})

	// A changed value reaches the registry: here a rotation to two secrets.
	sec.Data["secret"] = []byte(rawB + "\n" + whsecA + "\n")
	if err := env.Client.Update(context.Background(), sec); err != nil {
		t.Fatal(err)
	}
	waitRegistered(t, m.registry, ns, func(ep endpoint.Endpoint) error {
		if len(ep.Keys) != 2 || string(ep.Keys[0]) != rawB {
			return fmt.Errorf("%d keys", len(ep.Keys))
		}
		return nil
	})

	// A key shorter than 16 bytes has its own reason, and leaves the registry.
	sec.Data["secret"] = []byte("fifteen-bytes!!")
	if err := env.Client.Update(context.Background(), sec); err != nil {
		t.Fatal(err)
	}
	w = waitCondition(t, ns, "crm", webhooksv1alpha1.ConditionStalled, metav1.ConditionTrue, webhooksv1alpha1.ReasonSecretTooShort)
	if strings.Contains(fmt.Sprint(w.Status), "fifteen-bytes") {
		t.Error("the secret value appears in status")
	}
	waitUnregistered(t, m.registry, ns, "crm")

	// A missing key, and a malformed whsec_ secret.
	sec.Data = map[string][]byte{"other": []byte(whsecA)}
	if err := env.Client.Update(context.Background(), sec); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, ns, "crm", webhooksv1alpha1.ConditionStalled, metav1.ConditionTrue, webhooksv1alpha1.ReasonSecretKeyMissing)
	sec.Data = map[string][]byte{"secret": []byte("whsec_%%%notbase64%%%")}
	if err := env.Client.Update(context.Background(), sec); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, ns, "crm", webhooksv1alpha1.ConditionStalled, metav1.ConditionTrue, webhooksv1alpha1.ReasonSecretInvalid)

	// Deleting the Secret is noticed too; fixing it heals.
	if err := env.Client.Delete(context.Background(), sec); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, ns, "crm", webhooksv1alpha1.ConditionReady, metav1.ConditionFalse, webhooksv1alpha1.ReasonSecretNotFound)
	mustCreate(t, newSecret(ns, "later", rawB))
	waitCondition(t, ns, "crm", webhooksv1alpha1.ConditionReady, metav1.ConditionTrue, webhooksv1alpha1.ReasonSucceeded)
	waitRegistered(t, m.registry, ns, func(ep endpoint.Endpoint) error {
		if string(ep.Keys[0]) != rawB {
			return errors.New("old key")
		}
		return nil
	})
}

func TestGeneratedSecret(t *testing.T) {
	ns := env.Namespace(t)
	m := startManager(t, ns)
	mustCreate(t, newWHC(ns, "crm"))

	w := waitCondition(t, ns, "crm", webhooksv1alpha1.ConditionReady, metav1.ConditionTrue, webhooksv1alpha1.ReasonSucceeded)
	if w.Status.SecretRef == nil || *w.Status.SecretRef != (webhooksv1alpha1.SecretKeyReference{Name: "crm-signing", Key: "secret"}) {
		t.Fatalf("status.secretRef = %+v, want crm-signing/secret", w.Status.SecretRef)
	}
	var sec corev1.Secret
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "crm-signing"}, &sec); err != nil {
		t.Fatal(err)
	}
	if !metav1.IsControlledBy(&sec, w) {
		t.Errorf("generated Secret is not controlled by the WebhookConfig: %+v", sec.OwnerReferences)
	}
	value := string(sec.Data["secret"])
	if !strings.HasPrefix(value, "whsec_") {
		t.Fatalf("generated secret does not start with whsec_")
	}
	key, err := signing.ParseSecret(value)
	if err != nil || len(key) != 32 {
		t.Fatalf("generated secret: %d bytes, %v", len(key), err)
	}
	waitRegistered(t, m.registry, ns, func(ep endpoint.Endpoint) error {
		if !bytes.Equal(ep.Keys[0], key) {
			return errors.New("registry key differs from the generated Secret")
		}
		return nil
	})

	// A Secret of that name owned by someone else is not adopted.
	mustCreate(t, newSecret(ns, "other-signing", whsecA), newWHC(ns, "other"))
	waitCondition(t, ns, "other", webhooksv1alpha1.ConditionStalled, metav1.ConditionTrue, webhooksv1alpha1.ReasonSecretConflict)
}

func TestDisabledAndDeleted(t *testing.T) {
	ns := env.Namespace(t)
	m := startManager(t, ns)
	mustCreate(t, newSecret(ns, "s", whsecA),
		newWHC(ns, "crm", withSecretRef("s"), func(w *webhooksv1alpha1.WebhookConfig) { w.Spec.Enabled = ptr.To(false) }))

	w := waitCondition(t, ns, "crm", webhooksv1alpha1.ConditionReady, metav1.ConditionTrue, webhooksv1alpha1.ReasonSucceeded)
	if w.Status.Active {
		t.Error("active = true for a disabled resource")
	}
	if got := kstatus(t, w); got != status.CurrentStatus {
		t.Errorf("kstatus = %s, want Current", got)
	}
	if _, ok := m.registry.Get(types.NamespacedName{Namespace: ns, Name: "crm"}); ok {
		t.Error("a disabled resource is in the live configuration")
	}

	w.Spec.Enabled = ptr.To(true)
	if err := env.Client.Update(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	waitRegistered(t, m.registry, ns, nil)
	testutil.Eventually(t, 20*time.Second, func() error {
		if !get(t, ns, "crm").Status.Active {
			return errors.New("not active")
		}
		return nil
	})

	w = get(t, ns, "crm")
	w.Spec.Enabled = ptr.To(false)
	if err := env.Client.Update(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	waitUnregistered(t, m.registry, ns, "crm")
	w = waitCondition(t, ns, "crm", webhooksv1alpha1.ConditionReady, metav1.ConditionTrue, webhooksv1alpha1.ReasonSucceeded)
	if w.Status.Active {
		t.Error("active stayed true after disabling")
	}

	w.Spec.Enabled = ptr.To(true)
	if err := env.Client.Update(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	waitRegistered(t, m.registry, ns, nil)
	if err := env.Client.Delete(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	waitUnregistered(t, m.registry, ns, "crm")
}

func TestKstatusBeforeFirstReconcile(t *testing.T) {
	ns := env.Namespace(t)
	mustCreate(t, newSecret(ns, "s", whsecA), newWHC(ns, "crm", withSecretRef("s")))
	if got := kstatus(t, get(t, ns, "crm")); got != status.InProgressStatus {
		t.Fatalf("kstatus before the first reconcile = %s, want InProgress", got)
	}
	startManager(t, ns)
	w := waitCondition(t, ns, "crm", webhooksv1alpha1.ConditionReady, metav1.ConditionTrue, webhooksv1alpha1.ReasonSucceeded)
	if got := kstatus(t, w); got != status.CurrentStatus {
		t.Fatalf("kstatus = %s, want Current", got)
	}
}

func TestRestartRebuildsRegistry(t *testing.T) {
	ns := env.Namespace(t)
	first := startManager(t, ns)
	mustCreate(t,
		newSecret(ns, "s", whsecA),
		newWHC(ns, "a", withSecretRef("s")),
		newWHC(ns, "b", func(w *webhooksv1alpha1.WebhookConfig) {
			w.Spec.Events = []webhooksv1alpha1.EventType{webhooksv1alpha1.EventTypeAll}
		}),
		newWHC(ns, "disabled", withSecretRef("s"), func(w *webhooksv1alpha1.WebhookConfig) { w.Spec.Enabled = ptr.To(false) }),
		newWHC(ns, "stalled", withSecretRef("missing")),
	)
	waitCondition(t, ns, "a", webhooksv1alpha1.ConditionReady, metav1.ConditionTrue, "")
	waitCondition(t, ns, "b", webhooksv1alpha1.ConditionReady, metav1.ConditionTrue, "")
	waitCondition(t, ns, "disabled", webhooksv1alpha1.ConditionReady, metav1.ConditionTrue, "")
	waitCondition(t, ns, "stalled", webhooksv1alpha1.ConditionStalled, metav1.ConditionTrue, "")
	before := first.registry.List()
	if len(before) != 2 {
		t.Fatalf("first manager registered %d endpoints, want 2", len(before))
	}
	first.stop()

	second := startManager(t, ns) // returns once the registry is synced
	after := second.registry.List()
	if len(after) != len(before) {
		t.Fatalf("rebuilt registry has %d endpoints, want %d", len(after), len(before))
	}
	for i := range before {
		if !after[i].Equal(&before[i]) {
			t.Errorf("rebuilt endpoint %s differs:\n%+v\n%+v", before[i].Name, after[i], before[i])
		}
	}
}

func TestKubectlShowsContractColumns(t *testing.T) {
	ns := env.Namespace(t)
	startManager(t, ns)
	mustCreate(t, newSecret(ns, "s", whsecA), newWHC(ns, "crm", withSecretRef("s")))
	waitCondition(t, ns, "crm", webhooksv1alpha1.ConditionReady, metav1.ConditionTrue, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	out, err := env.Kubectl(ctx, "get", "webhookconfigs", "-n", ns)
	if err != nil {
		t.Fatalf("kubectl get: %v\n%s", err, out)
	}
	header := strings.Fields(strings.SplitN(out, "\n", 2)[0])
	if got, want := strings.Join(header, " "), "NAME ACTIVE READY DELIVERING SUCCESS RATE SENT LAST DELIVERY AGE"; got != want {
		t.Errorf("columns %q, want %q", got, want)
	}
	row := strings.Fields(strings.Split(out, "\n")[1])
	if row[0] != "crm" || row[1] != "true" || row[2] != "True" {
		t.Errorf("row %q", row)
	}

	out, err = env.Kubectl(ctx, "get", "whc", "-n", ns, "-o", "wide")
	if err != nil {
		t.Fatalf("kubectl get -o wide: %v\n%s", err, out)
	}
	header = strings.Fields(strings.SplitN(out, "\n", 2)[0])
	if got, want := strings.Join(header, " "), "NAME ACTIVE READY DELIVERING SUCCESS RATE SENT LAST DELIVERY AGE URL EVENTS FILTER ORDERING"; got != want {
		t.Errorf("wide columns %q, want %q", got, want)
	}
	if !strings.Contains(out, "https://crm.example.com/hooks/wa") || !strings.Contains(out, "message.sent") {
		t.Errorf("wide output lacks URL or events:\n%s", out)
	}

	// The category and short name work, and kubectl apply of a bad manifest fails clearly.
	if out, err := env.Kubectl(ctx, "get", "wablast", "-n", ns); err != nil || !strings.Contains(out, "crm") {
		t.Errorf("kubectl get wablast: %v\n%s", err, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	manifest := fmt.Sprintf(`apiVersion: webhooks.wablast.io/v1alpha1
kind: WebhookConfig
metadata: {name: bad, namespace: %s}
spec:
  url: https://crm.example.com/hooks
  secretRef: {name: s, namespace: elsewhere}
  events: [message.sent]
`, ns)
	if err := os.WriteFile(bad, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = env.Kubectl(ctx, "apply", "-f", bad)
	if err == nil || !strings.Contains(out, "secretRef.namespace is not supported") {
		t.Errorf("kubectl apply of a bad manifest: err=%v\n%s", err, out)
	}
}
