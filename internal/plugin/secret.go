package plugin

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
)

func newSecretCommand(o *options) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "secret NAME [--all]",
		Short: "Print the signing secret of a WebhookConfig",
		Long: `Print the signing secret a WebhookConfig's deliveries are signed with, followed
by a newline, and nothing else, so that $(kubectl webhook secret NAME) is the
secret. Configure your receiver with it to verify the webhook-signature header.

The secret is read from the Secret key in status.secretRef: spec.secretRef, or
the "<name>-signing" Secret the operator generates when spec.secretRef is
omitted. During a rotation the key holds several secrets separated by
whitespace, the newest first, and every delivery carries a signature for each.
Without --all only the newest is printed, which is what a receiver should
verify with; --all prints every one that still signs, newest first, one a
line (after a rotate-secret grace period only the newest does).

You need get on the WebhookConfig and on the Secret.`,
		Example: `  # Print the signing secret of WebhookConfig "crm"
  kubectl webhook secret crm

  # Hand it to a receiver
  WEBHOOK_SECRET="$(kubectl webhook secret crm -n shop)" ./my-receiver

  # During a rotation: every secret that still signs, newest first
  kubectl webhook secret crm --all`,
		Args:              nameArg,
		ValidArgsFunction: o.completeNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.runSecret(cmd.Context(), args[0], all)
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "print every secret that signs deliveries (during a rotation), newest first, one a line")
	return cmd
}

// runSecret prints the signing secret of WebhookConfig name: the newest,
// or with all every one, newest first, one a line.
func (o *options) runSecret(ctx context.Context, name string, all bool) error {
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
	// The secrets are separated by whitespace, the newest first; surrounding
	// whitespace, such as a trailing newline, is not part of a secret.
	secrets := strings.Fields(string(secret.Data[ref.Key]))
	if len(secrets) == 0 {
		return fmt.Errorf("secret %q in namespace %q has no value under key %q, the key webhookconfig/%s signs with",
			ref.Name, ns, ref.Key, name)
	}
	// Once a rotation's grace period ended, the previous secrets no longer sign.
	if end, err := time.Parse(time.RFC3339, secret.Annotations[webhooksv1alpha1.AnnotationRotationEndsAt]); !all || err == nil && !o.now().Before(end) {
		secrets = secrets[:1]
	}
	_, err = fmt.Fprintln(o.streams.Out, strings.Join(secrets, "\n"))
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
