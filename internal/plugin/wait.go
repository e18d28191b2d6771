package plugin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/actions"
)

// operatorPodsHint is the command that shows whether the operator runs.
const operatorPodsHint = actions.OperatorPodsHint

// errWaitTimeout is the cause of a wait that ran out of time.
var errWaitTimeout = errors.New("timed out waiting for the operator")

// annotate sets one annotation of the WebhookConfig key with a JSON merge
// patch, leaving every other annotation and field alone.
var annotate = actions.Annotate

// waitFor reads the WebhookConfig key every o.pollInterval until done
// returns true for it, and returns that version. It returns an error wrapping
// errWaitTimeout when timeout passes first, the context's error when ctx
// ends, and the API error when one cannot go away by retrying (the resource
// was deleted, access is denied). Other API errors are retried.
func (o *options) waitFor(ctx context.Context, c client.Client, key client.ObjectKey, timeout time.Duration,
	done func(*webhooksv1alpha1.WebhookConfig) bool) (*webhooksv1alpha1.WebhookConfig, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, errWaitTimeout)
	defer cancel()
	ticker := time.NewTicker(o.pollInterval)
	defer ticker.Stop()
	for {
		var whc webhooksv1alpha1.WebhookConfig
		err := c.Get(ctx, key, &whc)
		switch {
		case ctx.Err() != nil:
			return nil, context.Cause(ctx)
		case err == nil:
			if done(&whc) {
				return &whc, nil
			}
		case isPermanent(err):
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-ticker.C:
		}
	}
}

// explainWaitError says what a failed waitFor means for the user: what
// the operator did not report in time, or the API error explained.
func explainWaitError(err error, what, ns, name string, timeout time.Duration) error {
	switch {
	case errors.Is(err, errWaitTimeout):
		return explained(err, "the operator did not report the %s of webhookconfig/%s within %s: check that the manager is running (%s) and its logs, or wait longer with --timeout",
			what, name, timeout, operatorPodsHint)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("interrupted while waiting for the %s of webhookconfig/%s: %w", what, name, err)
	}
	return explainWebhookConfigError(err, "get", ns, name)
}
