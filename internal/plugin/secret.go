package plugin

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
)

func newSecretCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "secret NAME",
		Short: "Print the signing secret of a WebhookConfig",
		Long: `Print the signing secret a WebhookConfig's deliveries are signed with, followed
by a newline, and nothing else, so that $(kubectl webhook secret NAME) is the
secret. Configure your receiver with it to verify the webhook-signature header.

The secret is read from the Secret key in status.secretRef: spec.secretRef, or
the "<name>-signing" Secret the operator generates when spec.secretRef is
omitted. During a rotation the value holds several secrets separated by
whitespace, the current one first, and all of them are printed.

You need get on the WebhookConfig and on the Secret.`,
		Example: `  # Print the signing secret of WebhookConfig "crm"
  kubectl webhook secret crm

  # Hand it to a receiver
  WEBHOOK_SECRET="$(kubectl webhook secret crm -n shop)" ./my-receiver`,
		Args:              nameArg,
		ValidArgsFunction: o.completeNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.runSecret(cmd.Context(), args[0])
		},
	}
}

// runSecret prints the signing secret of WebhookConfig name.
func (o *options) runSecret(ctx context.Context, name string) error {
	c, ns, whc, err := o.getWebhookConfig(ctx, name)
	if err != nil {
		return err
	}
	ref := signingSecretRef(whc)
	generated := whc.Spec.SecretRef == nil

	var secret corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: ref.Name}, &secret); err != nil {
		if apierrors.IsNotFound(err) {
			if generated {
				return explained(err, "secret %q of webhookconfig/%s not found in namespace %q: the operator generates it, check that the manager is running (%s)",
					ref.Name, name, ns, operatorPodsHint)
			}
			return explained(err, "secret %q, named by spec.secretRef of webhookconfig/%s, not found in namespace %q: create it with the signing secret under key %q",
				ref.Name, name, ns, ref.Key)
		}
		return explainAccessError(err, "get", "secrets", ns, fmt.Sprintf("secret %q", ref.Name))
	}
	value, ok := secret.Data[ref.Key]
	if !ok || strings.TrimSpace(string(value)) == "" {
		return fmt.Errorf("secret %q in namespace %q has no value under key %q, the key webhookconfig/%s signs with",
			ref.Name, ns, ref.Key, name)
	}
	// Surrounding whitespace, such as a trailing newline, is not part of a secret.
	_, err = fmt.Fprintln(o.streams.Out, strings.TrimSpace(string(value)))
	return err
}

// signingSecretRef returns the Secret key whc is signed with: status.secretRef
// as recorded by the operator, else what the operator would use.
func signingSecretRef(whc *webhooksv1alpha1.WebhookConfig) webhooksv1alpha1.SecretKeyReference {
	if ref := whc.Status.SecretRef; ref != nil && ref.Name != "" {
		out := webhooksv1alpha1.SecretKeyReference{Name: ref.Name, Key: ref.Key}
		if out.Key == "" {
			out.Key = webhooksv1alpha1.DefaultSecretKey
		}
		return out
	}
	return whc.SigningSecretRef()
}
