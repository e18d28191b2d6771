package plugin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/signing"
)

// DefaultRotationGrace is how long the previous secret keeps signing after
// rotate-secret, as Svix keeps it valid.
const DefaultRotationGrace = 24 * time.Hour

func newRotateSecretCommand(o *options) *cobra.Command {
	grace := DefaultRotationGrace
	cmd := &cobra.Command{
		Use:   "rotate-secret NAME [--grace 24h]",
		Short: "Write a new signing secret; the current one keeps signing beside it for a grace period",
		Long: `Write a new Standard Webhooks secret (whsec_, 32 random bytes) into the signing
Secret of a WebhookConfig (status.secretRef), in front of the current one. Until the
grace period ends every delivery carries a signature by each, so receivers can move
to the new secret at their pace; then the operator signs with the new one alone, by
itself (the end is recorded on the Secret, annotation
webhooks.wablast.io/rotation-ends-at, so it holds across restarts). The previous
secret stays in the Secret's value, unused, until the next rotation replaces it.
status.secretRotationEndsAt shows the end while the rotation runs.

--grace 0 replaces the secret at once. Secrets older than the current one are
dropped. Prints the new secret's end of grace, not the secret: use
'kubectl webhook secret NAME' for it.

You need get and update on the Secret.`,
		Example: `  # Rotate; the old secret keeps signing for 24 hours
  kubectl webhook rotate-secret crm

  # Give receivers a week
  kubectl webhook rotate-secret crm -n shop --grace 168h`,
		Args:              nameArg,
		ValidArgsFunction: o.completeNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			if grace < 0 {
				return errors.New("--grace must not be negative")
			}
			return o.runRotateSecret(cmd.Context(), args[0], grace)
		},
	}
	cmd.Flags().DurationVar(&grace, "grace", DefaultRotationGrace, "how long the current secret keeps signing beside the new one (0: replace it at once)")
	return cmd
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

func (o *options) runRotateSecret(ctx context.Context, name string, grace time.Duration) error {
	c, ns, whc, err := o.getWebhookConfig(ctx, name)
	if err != nil {
		return err
	}
	ref := signingSecretRef(whc)
	var secret corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: ref.Name}, &secret); err != nil {
		if apierrors.IsNotFound(err) {
			return explained(err, "secret %q of webhookconfig/%s not found in namespace %q: nothing to rotate", ref.Name, name, ns)
		}
		return explainAccessError(err, "get", "secrets", ns, fmt.Sprintf("secret %q", ref.Name))
	}
	newSecret, err := signing.GenerateSecret()
	if err != nil {
		return err
	}
	value, annotations := rotatedValue(string(secret.Data[ref.Key]), secret.Annotations, newSecret, o.now(), grace)
	if secret.Data == nil {
		secret.Data = map[string][]byte{}
	}
	secret.Data[ref.Key] = []byte(value)
	secret.Annotations = annotations
	// The resourceVersion read above makes a concurrent change fail the update.
	if err := c.Update(ctx, &secret); err != nil {
		if apierrors.IsConflict(err) {
			return explained(err, "secret %q changed while it was being rotated: run the command again", ref.Name)
		}
		return explainAccessError(err, "update", "secrets", ns, fmt.Sprintf("secret %q", ref.Name))
	}
	if end, ok := annotations[webhooksv1alpha1.AnnotationRotationEndsAt]; ok {
		_, err = fmt.Fprintf(o.streams.Out, "secret/%s rotated: webhookconfig/%s signs with the new and the previous secret until %s, then with the new one alone\n", ref.Name, name, end)
	} else {
		_, err = fmt.Fprintf(o.streams.Out, "secret/%s rotated: webhookconfig/%s signs with the new secret alone\n", ref.Name, name)
	}
	return err
}
