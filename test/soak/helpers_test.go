//go:build soak

package soak

// Kubernetes objects and small helpers, after test/reliability/helpers_test.go.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// signingSecret signs every endpoint of the run.
const signingSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return "soak-" + hex.EncodeToString(b)
}

// createEndpoint creates the signing Secret and a WebhookConfig for every
// event type with the run's delivery policy: the CRD's defaults, or
// initialBackoffSeconds 1 and maxBackoffSeconds 10 for "fast".
func createEndpoint(t *testing.T, env *testutil.Env, ns, name, url string, cfg config) {
	t.Helper()
	ctx := context.Background()
	pol := &webhooksv1alpha1.DeliveryPolicy{}
	if cfg.Policy == policyFast {
		pol.InitialBackoffSeconds, pol.MaxBackoffSeconds = 1, 10
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-secret"},
		StringData: map[string]string{"secret": signingSecret},
	}
	whc := &webhooksv1alpha1.WebhookConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: webhooksv1alpha1.WebhookConfigSpec{
			URL:       url,
			SecretRef: &webhooksv1alpha1.SecretKeyReference{Name: name + "-secret"},
			Events:    []webhooksv1alpha1.EventType{webhooksv1alpha1.EventTypeAll},
			Delivery:  pol,
		},
	}
	for _, o := range []client.Object{sec, whc} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	// envtest has no namespace controller: remove the resource so that a
	// later manager, watching every namespace, does not pick it up.
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), whc) })
}

// createIngestToken creates a static ingest token Secret in ns.
func createIngestToken(t *testing.T, env *testutil.Env, ns, token string) {
	t.Helper()
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ingest-token", Labels: map[string]string{"webhooks.wablast.io/ingest-token": "true"}},
		StringData: map[string]string{"token": token},
	}
	if err := env.Client.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), s) })
}

func getWHC(env *testutil.Env, ns, name string) (*webhooksv1alpha1.WebhookConfig, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var w webhooksv1alpha1.WebhookConfig
	err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &w)
	return &w, err
}

func waitWHCReady(t *testing.T, env *testutil.Env, ns string, names ...string) {
	t.Helper()
	for _, name := range names {
		testutil.EventuallyEvery(t, 60*time.Second, 100*time.Millisecond, func() error {
			w, err := getWHC(env, ns, name)
			if err != nil {
				return err
			}
			if !meta.IsStatusConditionTrue(w.Status.Conditions, "Ready") {
				return fmt.Errorf("%s/%s not Ready", ns, name)
			}
			return nil
		})
	}
}

// percentile returns the p-th percentile (0..100) of sorted ds, nearest rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted)) + 0.999999)
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// latencies summarises durations: count, p50, p90, p99 and max.
type latencies struct {
	N                       int
	P50, P90, P99, Max, Min time.Duration
}

func summarise(ds []time.Duration) latencies {
	if len(ds) == 0 {
		return latencies{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return latencies{N: len(s), P50: percentile(s, 50), P90: percentile(s, 90), P99: percentile(s, 99), Max: s[len(s)-1], Min: s[0]}
}

func (l latencies) String() string {
	if l.N == 0 {
		return "none"
	}
	return fmt.Sprintf("p50 %s, p90 %s, p99 %s, max %s (%d events)", roundDur(l.P50), roundDur(l.P90), roundDur(l.P99), roundDur(l.Max), l.N)
}

// roundDur rounds d to a precision that suits its size.
func roundDur(d time.Duration) time.Duration {
	switch a := max(d, -d); {
	case a < 10*time.Millisecond:
		return d.Round(10 * time.Microsecond)
	case a < time.Second:
		return d.Round(time.Millisecond)
	case a < time.Minute:
		return d.Round(10 * time.Millisecond)
	default:
		return d.Round(time.Second)
	}
}
