package plugin

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1alpha1 "github.com/wablast/webhook-operator/api/delivery/v1alpha1"
	"github.com/wablast/webhook-operator/internal/deliverylog"
)

// states maps --state values, any case, to the API's.
var states = map[string]deliveryv1alpha1.DeliveryState{
	"pending": deliveryv1alpha1.StatePending, "retrying": deliveryv1alpha1.StateRetrying,
	"succeeded": deliveryv1alpha1.StateSucceeded, "failed": deliveryv1alpha1.StateFailed,
}

func newDeliveriesCommand(o *options) *cobra.Command {
	var state, eventType, since string
	var watchFlag bool
	cmd := &cobra.Command{
		Use:   "deliveries NAME [--state failed] [--type message.failed] [--since 1h] [-w]",
		Short: "List a WebhookConfig's deliveries from the delivery log, newest first",
		Long: `List the deliveries of one WebhookConfig from the operator's delivery log
(the aggregated API delivery.wablast.io, resource webhookdeliveries): one line
per event, with its state, attempts, the last answer's status code and when.
It is "kubectl get webhookdeliveries" with the WebhookConfig, state and type
selected for you and the event ids printed as they are.

--state is pending, retrying, succeeded or failed. --since keeps the
deliveries first accepted within that long (1h, 30m, 2d) or since an RFC 3339
time; the API does the selecting (list parameter since) and reads no further
back in the log.
-w goes on printing each delivery as an attempt joins it.`,
		Example: `  # What failed in the last hour
  kubectl webhook deliveries crm --state failed --since 1h -n shop

  # Follow the deliveries as they happen
  kubectl webhook deliveries crm -w`,
		Args:              nameArg,
		ValidArgsFunction: o.completeNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			sel := deliverySelection{webhook: args[0], eventType: eventType}
			if state != "" {
				s, ok := states[strings.ToLower(state)]
				if !ok {
					return fmt.Errorf("invalid --state %q: want pending, retrying, succeeded or failed", state)
				}
				sel.state = s
			}
			if since != "" {
				value, err := parseSince(since, o.now())
				if err != nil {
					return err
				}
				sel.since, _ = time.Parse(time.RFC3339, value)
			}
			return o.runDeliveries(cmd.Context(), sel, watchFlag)
		},
	}
	cmd.Flags().StringVar(&state, "state", "", "only deliveries in this state: pending, retrying, succeeded or failed")
	cmd.Flags().StringVar(&eventType, "type", "", "only events of this type, e.g. message.failed")
	cmd.Flags().StringVar(&since, "since", "", "only deliveries first accepted since this long ago (1h, 30m, 2d) or this RFC 3339 time")
	cmd.Flags().BoolVarP(&watchFlag, "watch", "w", false, "after the list, print each delivery again as it changes")
	return cmd
}

type deliverySelection struct {
	webhook, eventType string
	state              deliveryv1alpha1.DeliveryState
	since              time.Time
}

func (s *deliverySelection) fieldSelector() fields.Selector {
	set := fields.Set{"spec.webhook": s.webhook}
	if s.eventType != "" {
		set["spec.type"] = s.eventType
	}
	if s.state != "" {
		set["status.state"] = string(s.state)
	}
	return fields.SelectorFromSet(set)
}

func (s *deliverySelection) listOptions(ns string) []client.ListOption {
	return []client.ListOption{client.InNamespace(ns), client.MatchingFieldsSelector{Selector: s.fieldSelector()}}
}

// keeps reports whether a delivery a watch sends is one the list selected:
// the API's since is on creationTimestamp (when the event was first accepted).
func (s *deliverySelection) keeps(d *deliveryv1alpha1.WebhookDelivery) bool {
	return s.since.IsZero() || !d.CreationTimestamp.Time.Before(s.since)
}

// listDeliveries lists the selected deliveries with the API's since
// parameter (deliveryapi.SinceParam; not imported, to keep the API server
// out of the plugin), which Kubernetes' ListOptions (and so controller-runtime's
// client) has no place for.
func (o *options) listDeliveries(ctx context.Context, ns string, sel *deliverySelection) (*deliveryv1alpha1.WebhookDeliveryList, error) {
	cfg, err := o.flags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("loading the kubeconfig: %w", err)
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "kubectl-webhook"
	cfg.APIPath = "/apis"
	cfg.GroupVersion = &deliveryv1alpha1.SchemeGroupVersion
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme()).WithoutConversion()
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating the API client: %w", err)
	}
	req := rc.Get().Namespace(ns).Resource("webhookdeliveries").
		VersionedParams(&metav1.ListOptions{FieldSelector: sel.fieldSelector().String()}, metav1.ParameterCodec)
	if !sel.since.IsZero() {
		req = req.Param("since", sel.since.UTC().Format(time.RFC3339))
	}
	list := &deliveryv1alpha1.WebhookDeliveryList{}
	if err := req.Do(ctx).Into(list); err != nil {
		return nil, err
	}
	return list, nil
}

func (o *options) runDeliveries(ctx context.Context, sel deliverySelection, follow bool) error {
	c, ns, err := o.connect()
	if err != nil {
		return err
	}
	list, err := o.listDeliveries(ctx, ns, &sel)
	if err != nil {
		return explainDeliveriesError(err, ns)
	}
	w := tabwriter.NewWriter(o.streams.Out, 0, 4, 3, ' ', 0)
	fmt.Fprintln(w, "EVENT ID\tTYPE\tSTATE\tATTEMPTS\tCODE\tLAST ATTEMPT\tNEXT ATTEMPT\tAGE")
	now := o.now()
	for i := range list.Items {
		writeDelivery(w, &list.Items[i], now)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if !follow {
		return nil
	}
	wc, ok := c.(client.WithWatch)
	if !ok {
		return fmt.Errorf("the API client cannot watch")
	}
	lo := (&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: list.ResourceVersion}}).ApplyOptions(sel.listOptions(ns))
	watcher, err := wc.Watch(ctx, &deliveryv1alpha1.WebhookDeliveryList{}, lo)
	if err != nil {
		return explainDeliveriesError(err, ns)
	}
	defer watcher.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-watcher.ResultChan():
			if !ok {
				return nil
			}
			if ev.Type == watch.Error {
				return fmt.Errorf("watching deliveries: %w", apierrors.FromObject(ev.Object))
			}
			d, ok := ev.Object.(*deliveryv1alpha1.WebhookDelivery)
			if !ok || ev.Type == watch.Deleted || !sel.keeps(d) {
				continue
			}
			writeDelivery(w, d, o.now())
			if err := w.Flush(); err != nil {
				return err
			}
		}
	}
}

func writeDelivery(w io.Writer, d *deliveryv1alpha1.WebhookDelivery, now time.Time) {
	code, last, next := "-", "-", "-"
	if n := len(d.Status.Attempts); n > 0 {
		a := &d.Status.Attempts[n-1]
		if a.StatusCode != 0 {
			code = strconv.Itoa(int(a.StatusCode))
		}
		last = duration.HumanDuration(now.Sub(a.Time.Time)) + " ago"
	}
	if d.Status.NextAttemptAt != nil {
		next = "in " + duration.HumanDuration(d.Status.NextAttemptAt.Sub(now))
	}
	fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", d.Spec.EventID, d.Spec.Type, d.Status.State, len(d.Status.Attempts),
		code, last, next, duration.HumanDuration(now.Sub(d.CreationTimestamp.Time)))
}

// explainDeliveriesError says what to do when the delivery API cannot be read.
func explainDeliveriesError(err error, ns string) error {
	switch {
	case meta.IsNoMatchError(err) || apierrors.IsNotFound(err) && strings.Contains(err.Error(), "the server could not find the requested resource"):
		return fmt.Errorf("the delivery log API (delivery.wablast.io) is not served in this cluster: is the operator installed with its APIService? (%w)", err)
	case apierrors.IsForbidden(err):
		return fmt.Errorf("not allowed to read webhookdeliveries.delivery.wablast.io in namespace %s (the \"view\" role grants it): %w", ns, err)
	}
	return err
}

func newResendCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "resend NAME EVENT_ID",
		Short: "Deliver one event again to a WebhookConfig's endpoint, with its original webhook-id",
		Long: `Deliver one event again to a WebhookConfig's endpoint now, with its original
webhook-id and the body that was delivered, whatever became of it before. The
new attempts join the same delivery in the log ("kubectl webhook deliveries").
It creates the subresource webhookdeliveries/resend of the aggregated API
delivery.wablast.io, which the "edit" role grants.`,
		Example: `  kubectl webhook resend crm evt_01HZX3 -n shop`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.runResend(cmd.Context(), args[0], args[1])
		},
	}
}

func (o *options) runResend(ctx context.Context, webhook, eventID string) error {
	c, ns, err := o.connect()
	if err != nil {
		return err
	}
	d := &deliveryv1alpha1.WebhookDelivery{}
	d.Namespace, d.Name = ns, deliverylog.Name(webhook, eventID)
	res := &deliveryv1alpha1.WebhookDeliveryResend{}
	if err := c.SubResource("resend").Create(ctx, d, res); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("the delivery log holds no delivery of event %q to WebhookConfig %s in namespace %s: %w", eventID, webhook, ns, err)
		}
		return explainDeliveriesError(err, ns)
	}
	fmt.Fprintf(o.streams.Out, "Event %s is stored again for WebhookConfig %s/%s; follow it with: kubectl webhook deliveries %s -n %s -w\n", eventID, ns, webhook, webhook, ns)
	return nil
}
