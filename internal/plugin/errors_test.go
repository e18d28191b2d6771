package plugin

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestExplainedErrorsKeepTheirCause(t *testing.T) {
	notFound := apierrors.NewNotFound(schema.GroupResource{Group: "webhooks.wablast.io", Resource: "webhookconfigs"}, "nope")
	tests := []struct {
		name    string
		err     error
		wantMsg string
		is      func(error) bool
	}{
		{
			name:    "not found reads as a hint and is still NotFound",
			err:     explainWebhookConfigError(notFound, "get", "shop", "nope"),
			wantMsg: `webhookconfig "nope" not found in namespace "shop" (list them with: kubectl get webhookconfigs -n shop)`,
			is:      apierrors.IsNotFound,
		},
		{
			name:    "a wait that ran out of time is still the timeout",
			err:     explainWaitError(fmt.Errorf("polling: %w", errWaitTimeout), "test result", "shop", "crm", 30*time.Second),
			wantMsg: "the operator did not report the test result of webhookconfig/crm within 30s: check that the manager is running (kubectl get pods -A -l app.kubernetes.io/name=webhook-operator) and its logs, or wait longer with --timeout",
			is:      func(err error) bool { return errors.Is(err, errWaitTimeout) },
		},
		{
			name:    "an interrupted wait is still context.Canceled",
			err:     explainWaitError(context.Canceled, "replay", "shop", "crm", time.Second),
			wantMsg: "interrupted while waiting for the replay of webhookconfig/crm: context canceled",
			is:      func(err error) bool { return errors.Is(err, context.Canceled) },
		},
		{
			name:    "any other error says what was being done",
			err:     explainWebhookConfigError(errors.New("connection refused"), "get", "shop", "crm"),
			wantMsg: `cannot get webhookconfig "crm" in namespace "shop": connection refused`,
			is:      func(err error) bool { return err != nil },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err.Error() != tt.wantMsg {
				t.Errorf("message %q, want %q", tt.err.Error(), tt.wantMsg)
			}
			if !tt.is(tt.err) {
				t.Errorf("%v lost its cause", tt.err)
			}
		})
	}
}
