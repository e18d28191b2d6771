package actions

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
)

// TestTokenLayout formats the test token: RFC 3339 in UTC with nanoseconds,
// all nine digits kept so tokens sort and read alike.
const TestTokenLayout = "2006-01-02T15:04:05.000000000Z07:00"

// RequestTest asks the operator for one webhook.test delivery to the
// endpoint of WebhookConfig key: it sets the annotation
// webhooks.wablast.io/test-requested-at to a fresh token, the time now, and
// returns the token. The operator records the outcome in status.lastTest with
// requestedAt set to the token. The error is explained
// (ExplainWebhookConfigError with verb patch).
func RequestTest(ctx context.Context, c client.Client, key client.ObjectKey, now time.Time) (string, error) {
	token := now.UTC().Format(TestTokenLayout)
	if err := Annotate(ctx, c, key, webhooksv1alpha1.AnnotationTestRequestedAt, token); err != nil {
		return "", ExplainWebhookConfigError(err, "patch", key.Namespace, key.Name)
	}
	return token, nil
}

// Annotate sets one annotation of the WebhookConfig key with a JSON merge
// patch, leaving every other annotation and field alone. The error is the
// API server's.
func Annotate(ctx context.Context, c client.Client, key client.ObjectKey, annotation, value string) error {
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{annotation: value}},
	})
	if err != nil {
		return fmt.Errorf("encoding the patch: %w", err)
	}
	obj := &webhooksv1alpha1.WebhookConfig{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	return c.Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch))
}
