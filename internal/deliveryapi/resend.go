package deliveryapi

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/registry/rest"

	deliveryv1alpha1 "github.com/wablast/webhook-operator/api/delivery/v1alpha1"
)

// Resender stores a delivery again (delivery.Dispatcher.Resend).
type Resender interface {
	// Resend's failedAt, when not zero, is when the delivery failed for
	// good, and succeededAt when it was delivered: that failure or success
	// is taken back once the resend is attempted, so the event is counted
	// once, by the resend's final outcome.
	Resend(ctx context.Context, ns, name string, uid types.UID, eventID, eventType string, body []byte, failedAt, succeededAt time.Time) (time.Time, error)
}

// ResendStorage serves webhookdeliveries/resend (create).
type ResendStorage struct {
	deliveries *Storage
	resender   Resender
	// notRegistered is the Resender's error for an unknown WebhookConfig.
	notRegistered error
}

var (
	_ rest.Storage      = &ResendStorage{}
	_ rest.NamedCreater = &ResendStorage{}
)

// New implements rest.Storage.
func (r *ResendStorage) New() runtime.Object { return &deliveryv1alpha1.WebhookDeliveryResend{} }

// Destroy implements rest.Storage.
func (r *ResendStorage) Destroy() {}

// Create implements rest.NamedCreater: it stores the delivery name again,
// with the body the log holds for it.
func (r *ResendStorage) Create(ctx context.Context, name string, _ runtime.Object, _ rest.ValidateObjectFunc, opts *metav1.CreateOptions) (runtime.Object, error) {
	if opts != nil && len(opts.DryRun) > 0 {
		return nil, apierrors.NewBadRequest("dry run is not supported by webhookdeliveries/resend")
	}
	obj, err := r.deliveries.Get(ctx, name, &metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	d := obj.(*deliveryv1alpha1.WebhookDelivery)
	if d.Spec.Envelope == "" {
		return nil, apierrors.NewConflict(resource, name,
			errors.New("the delivery log does not hold this delivery's body (it was over the log's body cap, or aged out), so it cannot be resent"))
	}
	// An event still on its way (its first attempt not made yet, or a
	// retry scheduled) is not resent: a second life beside the first would
	// deliver it twice and count it twice. Its nextAttemptAt says when.
	var failedAt, succeededAt time.Time
	n := len(d.Status.Attempts)
	switch {
	case d.Status.State == deliveryv1alpha1.StateFailed && n > 0:
		failedAt = d.Status.Attempts[n-1].Time.Time
	case d.Status.State == deliveryv1alpha1.StateSucceeded && n > 0:
		succeededAt = d.Status.Attempts[n-1].Time.Time
	default:
		return nil, apierrors.NewConflict(resource, name, fmt.Errorf("the delivery is %s: it is still being delivered (next attempt %s), so it is not resent; resend it once it has succeeded or failed", d.Status.State, nextAttemptText(d)))
	}
	at, err := r.resender.Resend(ctx, d.Namespace, d.Spec.Webhook, d.Spec.WebhookUID, d.Spec.EventID, d.Spec.Type, []byte(d.Spec.Envelope), failedAt, succeededAt)
	switch {
	case r.notRegistered != nil && errors.Is(err, r.notRegistered):
		return nil, apierrors.NewConflict(resource, name, fmt.Errorf("WebhookConfig %s is not registered (deleted, not ready, or made anew since)", d.Spec.Webhook))
	case err != nil:
		return nil, apierrors.NewServiceUnavailable("storing the delivery again failed: " + err.Error())
	}
	t := metav1.NewTime(at)
	return &deliveryv1alpha1.WebhookDeliveryResend{
		TypeMeta:   metav1.TypeMeta{APIVersion: deliveryv1alpha1.SchemeGroupVersion.String(), Kind: "WebhookDeliveryResend"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: d.Namespace},
		ResentAt:   &t,
	}, nil
}

// nextAttemptText says when a delivery's next attempt is due, for an error.
func nextAttemptText(d *deliveryv1alpha1.WebhookDelivery) string {
	if d.Status.NextAttemptAt == nil {
		return "as soon as the endpoint's worker gets to it"
	}
	return "at " + d.Status.NextAttemptAt.UTC().Format(time.RFC3339)
}
