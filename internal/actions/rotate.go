package actions

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/signing"
)

// DefaultRotationGrace is how long the previous secret keeps signing after
// a rotation, as Svix keeps it valid.
const DefaultRotationGrace = 24 * time.Hour

// Rotation is what RotateSecret did. It holds no secret.
type Rotation struct {
	// Secret is the name of the Secret that was rotated.
	Secret string
	// EndsAt is when the grace period ends (RFC 3339, whole seconds, UTC):
	// until then the new and the previous secret sign. Empty when the new
	// secret signs alone at once (grace 0, or nothing to keep).
	EndsAt string
}

// RotateSecret writes a new Standard Webhooks secret (whsec_, 32 random
// bytes) into the signing Secret of whc (SigningSecretRef), in front of the
// current one, and records on the Secret when the grace period ends (the
// annotation webhooks.wablast.io/rotation-ends-at, now plus grace rounded up
// to the second), after which the operator signs with the new one alone.
// grace 0 replaces the secret at once; secrets older than the current one
// are dropped. The update carries the resourceVersion read, so a concurrent
// change fails it instead of being lost. Errors are explained; a negative
// grace is refused.
func RotateSecret(ctx context.Context, c client.Client, whc *webhooksv1alpha1.WebhookConfig, grace time.Duration, now time.Time) (Rotation, error) {
	if grace < 0 {
		return Rotation{}, fmt.Errorf("the grace period must not be negative, got %s", grace)
	}
	ns, name := whc.Namespace, whc.Name
	ref := SigningSecretRef(whc)
	var secret corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: ref.Name}, &secret); err != nil {
		if apierrors.IsNotFound(err) {
			return Rotation{}, Explained(err, "secret %q of webhookconfig/%s not found in namespace %q: nothing to rotate", ref.Name, name, ns)
		}
		return Rotation{}, ExplainAccessError(err, "get", "secrets", ns, fmt.Sprintf("secret %q", ref.Name))
	}
	newSecret, err := signing.GenerateSecret()
	if err != nil {
		return Rotation{}, err
	}
	value, annotations := rotatedValue(string(secret.Data[ref.Key]), secret.Annotations, newSecret, now, grace)
	if secret.Data == nil {
		secret.Data = map[string][]byte{}
	}
	secret.Data[ref.Key] = []byte(value)
	secret.Annotations = annotations
	// The resourceVersion read above makes a concurrent change fail the update.
	if err := c.Update(ctx, &secret); err != nil {
		if apierrors.IsConflict(err) {
			return Rotation{}, Explained(err, "secret %q changed while it was being rotated: run the command again", ref.Name)
		}
		return Rotation{}, ExplainAccessError(err, "update", "secrets", ns, fmt.Sprintf("secret %q", ref.Name))
	}
	return Rotation{Secret: ref.Name, EndsAt: annotations[webhooksv1alpha1.AnnotationRotationEndsAt]}, nil
}

// rotatedValue is the signing Secret's new value and annotations after a
// rotation to newSecret at now with the given grace: the new secret, then
// (during a grace period) the current, newest, one; the end of the grace
// recorded, or removed when there is none.
func rotatedValue(current string, annotations map[string]string, newSecret string, now time.Time, grace time.Duration) (string, map[string]string) {
	out := make(map[string]string, len(annotations)+1)
	for k, v := range annotations {
		out[k] = v
	}
	delete(out, webhooksv1alpha1.AnnotationRotationEndsAt)
	old := strings.Fields(current)
	if grace == 0 || len(old) == 0 {
		return newSecret, out
	}
	// Round up to whole seconds: the annotation holds RFC 3339 seconds.
	end := now.Add(grace).UTC().Truncate(time.Second)
	if end.Before(now.Add(grace)) {
		end = end.Add(time.Second)
	}
	out[webhooksv1alpha1.AnnotationRotationEndsAt] = end.Format(time.RFC3339)
	return newSecret + "\n" + old[0], out
}
