package plugin

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
)

func newReplayCommand(o *options) *cobra.Command {
	var since string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "replay NAME --since 1h|<RFC 3339>",
		Short: "Deliver again the events that failed for good since a time",
		Long: `Ask the operator to deliver again every event of a WebhookConfig's endpoint
that failed for good (retries exhausted, too old, or refused) since a time.
Each event keeps its original webhook-id, so receivers that deduplicate on it
are safe.

--since is a duration counted back from now (30m, 1h, 2d), or an RFC 3339 time
(2026-11-28T10:00:00Z). A duration becomes a UTC time with seconds precision.
The request is the annotation webhooks.wablast.io/replay-since set to that
time; the operator acts once per distinct value and records how many events it
requeued in status.lastReplay. Failed events are kept for 7 days by default.`,
		Example: `  # Replay what failed in the last hour
  kubectl webhook replay crm --since 1h

  # Replay since a point in time, and wait for the number of requeued events
  kubectl webhook replay crm --since 2026-11-28T10:00:00Z --wait -n shop`,
		Args:              nameArg,
		ValidArgsFunction: o.completeNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return fmt.Errorf("--timeout must be positive, got %s", timeout)
			}
			value, err := parseSince(since, o.now())
			if err != nil {
				return err
			}
			return o.runReplay(cmd.Context(), args[0], value, wait, timeout)
		},
	}
	cmd.Flags().StringVar(&since, "since", "", "replay events that failed since this long ago (1h, 30m, 2d) or since this RFC 3339 time (required)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the operator to report how many events it requeued")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long --wait waits for the operator to report")
	_ = cmd.MarkFlagRequired("since")
	return cmd
}

// sinceHelp says what --since accepts.
const sinceHelp = "want a duration such as 30m, 1h or 2d, or an RFC 3339 time such as 2026-11-28T10:00:00Z"

// parseSince turns a --since value into the RFC 3339 time of the
// replay-since annotation. A positive duration (a Go duration such as 90m or
// 1h30m, or a whole number of days such as 2d) counts back from now and is
// returned in UTC, truncated to the second. An RFC 3339 time is validated
// and returned as written; it must not be after now.
func parseSince(value string, now time.Time) (string, error) {
	value = strings.TrimSpace(value)
	if value == "" {
		return "", fmt.Errorf("--since is empty: %s", sinceHelp)
	}
	if d, ok := parseSinceDuration(value); ok {
		if d <= 0 {
			return "", fmt.Errorf("--since %s must be a positive duration", value)
		}
		return now.Add(-d).UTC().Truncate(time.Second).Format(time.RFC3339), nil
	}
	t, err := time.Parse(time.RFC3339, value)
	if err != nil {
		return "", fmt.Errorf("invalid --since %q: %s: %w", value, sinceHelp, err)
	}
	if t.After(now) {
		return "", fmt.Errorf("--since %s is in the future: nothing can have failed since then", value)
	}
	return value, nil
}

// parseSinceDuration parses a Go duration or a whole number of days ("2d");
// ok is false when value is neither.
func parseSinceDuration(value string) (d time.Duration, ok bool) {
	if d, err := time.ParseDuration(value); err == nil {
		return d, true
	}
	if days, found := strings.CutSuffix(value, "d"); found {
		n, err := strconv.Atoi(days)
		if err == nil && n < 1<<16 && n > -1<<16 {
			return time.Duration(n) * 24 * time.Hour, true
		}
	}
	return 0, false
}

// runReplay requests a replay since the RFC 3339 time since and, with wait,
// waits for the operator to report it.
func (o *options) runReplay(ctx context.Context, name, since string, wait bool, timeout time.Duration) error {
	c, ns, err := o.connect()
	if err != nil {
		return err
	}
	key := client.ObjectKey{Namespace: ns, Name: name}
	var whc webhooksv1alpha1.WebhookConfig
	if err := c.Get(ctx, key, &whc); err != nil {
		return explainWebhookConfigError(err, "get", ns, name)
	}
	if whc.Annotations[webhooksv1alpha1.AnnotationReplaySince] == since &&
		whc.Status.LastReplay != nil && whc.Status.LastReplay.RequestedAt == since {
		return fmt.Errorf("a replay since %s was already done for webhookconfig/%s (%d events requeued) and the operator acts once per value: pass another --since, such as %s",
			since, name, whc.Status.LastReplay.EventsRequeued, oneSecondEarlier(since))
	}
	if err := annotate(ctx, c, key, webhooksv1alpha1.AnnotationReplaySince, since); err != nil {
		return explainWebhookConfigError(err, "patch", ns, name)
	}
	fmt.Fprintf(o.streams.Out, "replay of events that failed since %s requested for webhookconfig/%s\n", since, name)
	if !wait {
		return nil
	}

	got, err := o.waitFor(ctx, c, key, timeout, func(w *webhooksv1alpha1.WebhookConfig) bool {
		return w.Status.LastReplay != nil && w.Status.LastReplay.RequestedAt == since
	})
	if err != nil {
		return explainWaitError(err, "replay", ns, name, timeout)
	}
	n := got.Status.LastReplay.EventsRequeued
	fmt.Fprintf(o.streams.Out, "%d %s requeued for delivery to webhookconfig/%s\n", n, plural(n, "event", "events"), name)
	return nil
}

// oneSecondEarlier returns the RFC 3339 time one second before since, in
// the same offset, or "an earlier time" if since does not parse.
func oneSecondEarlier(since string) string {
	t, err := time.Parse(time.RFC3339, since)
	if err != nil {
		return "an earlier time"
	}
	return t.Add(-time.Second).Format(time.RFC3339)
}

// plural picks the singular form for 1 and the plural form otherwise.
func plural(n int64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
