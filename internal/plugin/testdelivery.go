package plugin

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/actions"
)

// tokenLayout formats the test token: RFC 3339 in UTC with nanoseconds, all
// nine digits kept so tokens sort and read alike.
const tokenLayout = actions.TestTokenLayout

func newTestCommand(o *options) *cobra.Command {
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "test NAME [--wait] [--timeout 30s]",
		Short: "Send one webhook.test event to a WebhookConfig's endpoint",
		Long: `Ask the operator to send one webhook.test event to the endpoint of a WebhookConfig.

The request is the annotation webhooks.wablast.io/test-requested-at, set to a
fresh token (the current time). The operator sends the test once, without
retries, also when the endpoint is disabled or does not subscribe to any type,
and records the outcome in status.lastTest with the token.

With --wait the command waits for that outcome and prints it: the result, the
receiver's HTTP status code, the duration and the error. It exits 0 when the
receiver answered 2xx and 1 otherwise, or when the operator did not report
within --timeout.`,
		Example: `  # Request a test delivery to the endpoint of WebhookConfig "crm"
  kubectl webhook test crm

  # Wait for the outcome; the exit code is 0 only if the receiver answered 2xx
  kubectl webhook test crm --wait -n shop

  # Give a slow receiver, or a busy operator, more time
  kubectl webhook test crm --wait --timeout 1m`,
		Args:              nameArg,
		ValidArgsFunction: o.completeNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return fmt.Errorf("--timeout must be positive, got %s", timeout)
			}
			return o.runTest(cmd.Context(), args[0], wait, timeout)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the outcome and print it; exit 1 unless it succeeded")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long --wait waits for the operator to report")
	return cmd
}

// runTest requests a test delivery and, with wait, waits for its outcome.
func (o *options) runTest(ctx context.Context, name string, wait bool, timeout time.Duration) error {
	c, ns, err := o.connect()
	if err != nil {
		return err
	}
	key := client.ObjectKey{Namespace: ns, Name: name}
	token, err := actions.RequestTest(ctx, c, key, o.now())
	if err != nil {
		return err
	}
	fmt.Fprintf(o.streams.Out, "test delivery requested for webhookconfig/%s (token %s)\n", name, token)
	if !wait {
		return nil
	}

	whc, err := o.waitFor(ctx, c, key, timeout, func(w *webhooksv1alpha1.WebhookConfig) bool {
		return w.Status.LastTest != nil && w.Status.LastTest.RequestedAt == token
	})
	if err != nil {
		return explainWaitError(err, "test result", ns, name, timeout)
	}
	if err := printTestRecord(o.streams.Out, whc.Status.LastTest); err != nil {
		return err
	}
	if whc.Status.LastTest.Result != webhooksv1alpha1.ResultSucceeded {
		return &exitError{code: 1, reason: "the test delivery did not succeed"}
	}
	return nil
}

// printTestRecord prints the outcome of a test delivery, one field a line.
func printTestRecord(out io.Writer, rec *webhooksv1alpha1.TestRecord) error {
	w := newTabWriter(out)
	fmt.Fprintf(w, "Result:\t%s\n", rec.Result)
	fmt.Fprintf(w, "Status code:\t%s\n", statusCode(rec.StatusCode))
	fmt.Fprintf(w, "Duration:\t%dms\n", rec.DurationMilliseconds)
	if rec.Error != "" {
		fmt.Fprintf(w, "Error:\t%s\n", rec.Error)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("writing the output: %w", err)
	}
	return nil
}

// statusCode renders an HTTP status code; 0 means no response arrived.
func statusCode(code int32) string {
	if code == 0 {
		return "none (no response)"
	}
	return fmt.Sprint(code)
}
