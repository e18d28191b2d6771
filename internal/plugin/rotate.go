package plugin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/wablast/webhook-operator/internal/actions"
)

// DefaultRotationGrace is how long the previous secret keeps signing after
// rotate-secret, as Svix keeps it valid.
const DefaultRotationGrace = actions.DefaultRotationGrace

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

func (o *options) runRotateSecret(ctx context.Context, name string, grace time.Duration) error {
	c, _, whc, err := o.getWebhookConfig(ctx, name)
	if err != nil {
		return err
	}
	r, err := actions.RotateSecret(ctx, c, whc, grace, o.now())
	if err != nil {
		return err
	}
	if r.EndsAt != "" {
		_, err = fmt.Fprintf(o.streams.Out, "secret/%s rotated: webhookconfig/%s signs with the new and the previous secret until %s, then with the new one alone\n", r.Secret, name, r.EndsAt)
	} else {
		_, err = fmt.Fprintf(o.streams.Out, "secret/%s rotated: webhookconfig/%s signs with the new secret alone\n", r.Secret, name)
	}
	return err
}
