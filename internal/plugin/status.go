package plugin

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/textutil"
)

// maxErrorWidth is where the recent deliveries table cuts long errors.
const maxErrorWidth = 80

func newStatusCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "status NAME",
		Short: "Show a WebhookConfig's health, counters and recent deliveries",
		Long: `Show a human summary of a WebhookConfig: its endpoint and events, whether it
is active, each condition, the delivery counters and success rate, the last
test and replay, and the last attempts, newest first.

For the raw status use: kubectl get webhookconfig NAME -o yaml.`,
		Example: `  # Summarise WebhookConfig "crm" of the current namespace
  kubectl webhook status crm

  # ... of namespace "shop" in another cluster
  kubectl webhook status crm -n shop --context prod`,
		Args:              nameArg,
		ValidArgsFunction: o.completeNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.runStatus(cmd.Context(), args[0])
		},
	}
}

// runStatus prints the summary of WebhookConfig name.
func (o *options) runStatus(ctx context.Context, name string) error {
	c, ns, whc, err := o.getWebhookConfig(ctx, name)
	if err != nil {
		return err
	}
	now := o.now()
	// The last hour comes from the delivery log; without it (not served,
	// not allowed) the rest of the summary is still worth showing.
	hour, hourErr := readLastHour(ctx, c, ns, name, now)
	if hourErr != nil {
		hourErr = explainDeliveriesError(hourErr, ns)
	}
	return renderStatus(o.streams.Out, whc, hour, hourErr, now)
}

// renderStatus writes the human summary of whc to out, with the last hour
// of the delivery log (hour, or why it could not be read: hourErr; neither:
// no such section); ages are relative to now.
func renderStatus(out io.Writer, whc *webhooksv1alpha1.WebhookConfig, hour *lastHour, hourErr error, now time.Time) error {
	st := &whc.Status
	w := newTabWriter(out)

	fmt.Fprintf(w, "Name:\t%s\n", whc.Name)
	fmt.Fprintf(w, "Namespace:\t%s\n", whc.Namespace)
	fmt.Fprintf(w, "URL:\t%s\n", whc.Spec.URL)
	fmt.Fprintf(w, "Events:\t%s\n", events(whc.Spec.Events))
	fmt.Fprintf(w, "Enabled:\t%t\n", whc.IsEnabled())
	fmt.Fprintf(w, "Active:\t%t\n", st.Active)
	if st.SecretRef != nil {
		fmt.Fprintf(w, "Signing secret:\tkey %q of Secret %q\n", st.SecretRef.Key, st.SecretRef.Name)
	}
	if len(st.Conditions) > 0 && st.ObservedGeneration != whc.Generation {
		fmt.Fprintf(w, "Note:\tstatus describes generation %d, the spec is at generation %d: the operator has not caught up yet\n",
			st.ObservedGeneration, whc.Generation)
	}

	if len(st.Conditions) == 0 {
		fmt.Fprintf(w, "Conditions:\t<none> (the operator has not reconciled this resource: check that the manager is running, %s)\n", operatorPodsHint)
	} else {
		fmt.Fprintln(w, "Conditions:")
		fmt.Fprintln(w, "  TYPE\tSTATUS\tREASON\tAGE\tMESSAGE")
		for _, c := range st.Conditions {
			fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\n", c.Type, c.Status, c.Reason, age(c.LastTransitionTime, now), oneLine(c.Message))
		}
	}

	fmt.Fprintln(w, "Deliveries:")
	fmt.Fprintf(w, "  Sent:\t%d\n", st.TotalEventsSent)
	fmt.Fprintf(w, "  Delivered:\t%d\n", st.EventsDelivered)
	fmt.Fprintf(w, "  Failed:\t%d\n", st.EventsFailed)
	fmt.Fprintf(w, "  Pending:\t%d\n", st.EventsPending)
	fmt.Fprintf(w, "  Success rate (24h):\t%s\n", orDash(st.SuccessRate))
	fmt.Fprintf(w, "  Consecutive failures:\t%d\n", st.ConsecutiveFailures)
	switch {
	case hourErr != nil:
		fmt.Fprintf(w, "Last hour:\tunavailable: %s\n", oneLine(hourErr.Error()))
	case hour != nil:
		hour.render(w, now)
	}

	if t := st.LastTest; t != nil {
		line := fmt.Sprintf("%s, HTTP %s, %dms", t.Result, orDash(codeString(t.StatusCode)), t.DurationMilliseconds)
		if t.Time != nil {
			line += ", " + age(*t.Time, now) + " ago"
		}
		if t.Error != "" {
			line += ": " + oneLine(t.Error)
		}
		fmt.Fprintf(w, "Last test:\t%s (token %s)\n", line, t.RequestedAt)
	}
	if r := st.LastReplay; r != nil {
		line := fmt.Sprintf("%d %s requeued that failed since %s", r.EventsRequeued, plural(r.EventsRequeued, "event", "events"), r.RequestedAt)
		if r.Time != nil {
			line += ", " + age(*r.Time, now) + " ago"
		}
		fmt.Fprintf(w, "Last replay:\t%s\n", line)
	}

	if len(st.RecentDeliveries) == 0 {
		fmt.Fprintln(w, "Recent deliveries:\t<none>")
	} else {
		fmt.Fprintln(w, "Recent deliveries:")
		fmt.Fprintln(w, "  TIME\tEVENT ID\tTYPE\tATTEMPT\tCODE\tDURATION\tRESULT\tERROR")
		for _, d := range st.RecentDeliveries {
			fmt.Fprintf(w, "  %s\t%s\t%s\t%d\t%s\t%dms\t%s\t%s\n",
				d.Time.UTC().Format(time.RFC3339), d.EventID, d.EventType, d.Attempt, orDash(codeString(d.StatusCode)),
				d.DurationMilliseconds, d.Result, orDash(textutil.Truncate(oneLine(d.Error), maxErrorWidth)))
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("writing the output: %w", err)
	}
	return nil
}

// newTabWriter returns the tabwriter of the plugin's human output, aligned
// as kubectl describe aligns its output.
func newTabWriter(out io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
}

// events renders the subscribed event types.
func events(types []webhooksv1alpha1.EventType) string {
	if len(types) == 1 && types[0] == webhooksv1alpha1.EventTypeAll {
		return "* (every type)"
	}
	s := make([]string, len(types))
	for i, t := range types {
		s[i] = string(t)
	}
	return strings.Join(s, ", ")
}

// age renders how long ago t was, as kubectl's AGE column does.
func age(t metav1.Time, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t.Time))
}

// codeString renders an HTTP status code, empty when no response arrived.
func codeString(code int32) string {
	if code == 0 {
		return ""
	}
	return fmt.Sprint(code)
}

// orDash returns s, or "-" when s is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine folds s onto one line so it cannot break a table.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
