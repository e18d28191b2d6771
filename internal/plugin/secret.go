package plugin

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/wablast/webhook-operator/internal/actions"
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
	c, _, whc, err := o.getWebhookConfig(ctx, name)
	if err != nil {
		return err
	}
	secrets, err := actions.SigningSecrets(ctx, c, whc, all, o.now())
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(o.streams.Out, strings.Join(secrets, "\n"))
	return err
}
