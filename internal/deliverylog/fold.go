package deliverylog

import (
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	deliveryv1alpha1 "github.com/wablast/webhook-operator/api/delivery/v1alpha1"
	"github.com/wablast/webhook-operator/internal/store"
)

// Delivery is one folded WebhookDelivery with the stream sequences of its
// first and last records: the first orders lists (newest first), the last
// is its resource version.
type Delivery struct {
	Object   *deliveryv1alpha1.WebhookDelivery
	FirstSeq uint64
	LastSeq  uint64
}

// Folder folds records into deliveries, by name.
type Folder struct {
	ns    string
	byKey map[string]*Delivery
}

// NewFolder returns an empty Folder of namespace ns.
func NewFolder(ns string) *Folder { return &Folder{ns: ns, byKey: map[string]*Delivery{}} }

// apply folds the record r of WebhookConfig webhook, stored at sequence
// seq, and returns its delivery and whether r created it.
func (f *Folder) apply(ns, webhook string, seq uint64, r *store.LogRecord) (*Delivery, bool) {
	name := Name(webhook, r.EventID)
	key := ns + "/" + name
	d := f.byKey[key]
	created := false
	if d == nil || d.Object.Spec.WebhookUID != r.UID && r.UID != "" {
		// New, or a WebhookConfig of the same name made anew: its
		// deliveries start over (in the same place in lists: the
		// delivery's subject's first record).
		firstSeq := seq
		if d != nil {
			firstSeq = d.FirstSeq
		}
		d = &Delivery{FirstSeq: firstSeq, Object: &deliveryv1alpha1.WebhookDelivery{
			TypeMeta: metav1.TypeMeta{APIVersion: deliveryv1alpha1.SchemeGroupVersion.String(), Kind: "WebhookDelivery"},
			ObjectMeta: metav1.ObjectMeta{
				Name: name, Namespace: ns,
				Labels: map[string]string{deliveryv1alpha1.LabelWebhook: webhook},
			},
			Spec:   deliveryv1alpha1.WebhookDeliverySpec{Webhook: webhook, WebhookUID: r.UID, EventID: r.EventID},
			Status: deliveryv1alpha1.WebhookDeliveryStatus{State: deliveryv1alpha1.StatePending},
		}}
		f.byKey[key] = d
		created = true
	}
	d.LastSeq = seq
	o := d.Object
	o.ResourceVersion = strconv.FormatUint(seq, 10)
	if r.EventType != "" {
		o.Spec.Type = r.EventType
		o.Labels[deliveryv1alpha1.LabelEventType] = r.EventType
	}
	if t, err := time.Parse(time.RFC3339Nano, r.AcceptedAt); err == nil {
		at := metav1.NewTime(t)
		if o.Spec.AcceptedAt == nil || r.Kind == store.LogStored {
			o.Spec.AcceptedAt = &at
		}
		if o.CreationTimestamp.IsZero() {
			o.CreationTimestamp = at
		}
	}
	switch r.Kind {
	case store.LogStored:
		if len(r.Body) > 0 {
			o.Spec.Envelope = string(r.Body)
		} else if r.Origin == "" {
			o.Spec.Envelope = ""
		}
		o.Spec.EnvelopeBytes, o.Spec.EnvelopeSHA256 = int64(r.BodyBytes), r.BodySHA256
		if !created && (r.Origin != "" || !attemptedSince(o, r.AcceptedAt)) {
			// A replay or resend stored it again, or the event was
			// accepted again (its id forgotten): the next attempt is to
			// come. An accepted event's record that comes after its own
			// attempts (written late: it waited for its first attempt,
			// which another replica made) changes no state.
			o.Status.State = deliveryv1alpha1.StatePending
			o.Status.NextAttemptAt = nil
		}
	case store.LogAttempt:
		o.Status.Attempts = append(o.Status.Attempts, deliveryv1alpha1.DeliveryAttempt{
			Attempt: r.Attempt, Attempted: r.Attempted, Time: metav1.NewMicroTime(r.Time),
			DurationMilliseconds: r.DurationMS, Host: r.Host, StatusCode: r.StatusCode,
			Result: string(r.Result), Error: r.Error, ResponseHeaders: r.ResponseHeaders, ResponseBody: r.ResponseBody,
		})
		o.Status.NextAttemptAt = nil
		switch r.Result {
		case "Succeeded":
			o.Status.State = deliveryv1alpha1.StateSucceeded
		case "Retrying":
			o.Status.State = deliveryv1alpha1.StateRetrying
			if !r.NextAttempt.IsZero() {
				next := metav1.NewTime(r.NextAttempt)
				o.Status.NextAttemptAt = &next
			}
		default:
			o.Status.State = deliveryv1alpha1.StateFailed
		}
		if o.CreationTimestamp.IsZero() {
			o.CreationTimestamp = metav1.NewTime(r.Time)
		}
	}
	o.Labels[deliveryv1alpha1.LabelState] = string(o.Status.State)
	return d, created
}

// attemptedSince says whether o has an attempt at or after acceptedAt (an
// unreadable acceptedAt is none).
func attemptedSince(o *deliveryv1alpha1.WebhookDelivery, acceptedAt string) bool {
	n := len(o.Status.Attempts)
	if n == 0 {
		return false
	}
	t, err := time.Parse(time.RFC3339Nano, acceptedAt)
	return err == nil && !o.Status.Attempts[n-1].Time.Time.Before(t)
}
