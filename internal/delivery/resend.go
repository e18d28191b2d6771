package delivery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/wablast/webhook-operator/internal/store"
)

// ErrNotRegistered is returned by Resend for a WebhookConfig the registry
// does not hold (deleted, not reconciled yet, or made anew under the same
// name: another UID).
var ErrNotRegistered = errors.New("the WebhookConfig is not registered")

// Resend stores the delivery of event eventID (its type and the body that
// was delivered) to WebhookConfig ns/name again, as a new delivery with its
// original webhook-id and a retry budget of its own (maxAttempts and
// maxAgeSeconds count from now), and wakes the endpoint's worker. uid, when
// not empty, must be the registered WebhookConfig's. It returns when the
// delivery is stored, with the time it was stored at.
func (d *Dispatcher) Resend(ctx context.Context, ns, name string, uid types.UID, eventID, eventType string, body []byte) (time.Time, error) {
	key := types.NamespacedName{Namespace: ns, Name: name}
	ep, ok := d.opts.Registry.Get(key)
	if !ok || uid != "" && ep.UID != uid {
		return time.Time{}, fmt.Errorf("%w: %s", ErrNotRegistered, key)
	}
	if err := d.opts.Store.Writable(); err != nil {
		return time.Time{}, err
	}
	now := d.opts.Now().UTC()
	dl := store.Delivery{EventID: eventID, EventType: eventType, AcceptedAt: now.Format(time.RFC3339Nano), Body: body}
	d.dlog.stored(ns, name, ep.UID, []store.Delivery{dl}, "Resend")
	if _, err := d.js.PublishMsg(ctx, store.DeliveryMsg(ns, name, ep.UID, &dl)); err != nil {
		return time.Time{}, fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	d.want(key)
	return now, nil
}
