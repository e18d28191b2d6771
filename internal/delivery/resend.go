package delivery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
//
// succeededAt, when not zero, is when the event was delivered (its last
// attempt, as the delivery log shows it): the resend's first attempt then
// takes that success back from the status counters and the success rate,
// and the event counts by the resend's final outcome, once.
//
// failedAt, when not zero, is when the delivery failed for good (its last
// attempt, as the delivery log shows it). The event's copies in the failed
// store from about then on are then taken out once the delivery is stored,
// as a replay takes out what it requeues: a later replay does not send it
// again. And the delivery carries the failure's time, so its first attempt
// takes the failure back from the status counters and the success rate, as
// a replay's does: delivered, it counts as delivered and no longer as
// failed.
func (d *Dispatcher) Resend(ctx context.Context, ns, name string, uid types.UID, eventID, eventType string, body []byte, failedAt, succeededAt time.Time) (time.Time, error) {
	key := types.NamespacedName{Namespace: ns, Name: name}
	ep, ok := d.opts.Registry.Get(key)
	if !ok || uid != "" && ep.UID != uid {
		return time.Time{}, fmt.Errorf("%w: %s", ErrNotRegistered, key)
	}
	if err := d.opts.Store.Writable(); err != nil {
		return time.Time{}, err
	}
	// One at a time with replays: both take failures out of the failed
	// store, and a failure is taken back once.
	d.replayMu.Lock()
	defer d.replayMu.Unlock()
	now := d.opts.Now().UTC()
	dl := store.Delivery{EventID: eventID, EventType: eventType, AcceptedAt: now.Format(time.RFC3339Nano), Body: body}
	if !succeededAt.IsZero() {
		dl.ReplacesSuccess = succeededAt.UTC().Format(time.RFC3339Nano)
	}
	var failed []uint64
	if !failedAt.IsZero() {
		var err error
		if failed, dl.ReplacesFailure, err = d.failedCopies(ctx, ns, name, ep.UID, eventID, failedAt.Add(-time.Minute)); err != nil {
			return time.Time{}, fmt.Errorf("%w: reading the failed store: %w", store.ErrUnavailable, err)
		}
	}
	d.dlog.stored(ns, name, ep.UID, []store.Delivery{dl}, "Resend")
	if _, err := d.js.PublishMsg(ctx, store.DeliveryMsg(ns, name, ep.UID, &dl)); err != nil {
		return time.Time{}, fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	if len(failed) > 0 {
		stream, err := d.js.Stream(ctx, store.StreamFailed)
		if err == nil {
			for _, seq := range failed {
				if derr := stream.DeleteMsg(ctx, seq); derr != nil {
					if _, gerr := stream.GetMsg(ctx, seq); !errors.Is(gerr, jetstream.ErrMsgNotFound) {
						err = derr
					}
				}
			}
		}
		if err != nil {
			// Stored and to be delivered: a later replay may send it once more.
			d.opts.Logger.Error(err, "Taking a resent event out of the failed store failed; a replay may send it again", "namespace", ns, "name", name, "eventID", eventID)
		}
	}
	d.want(key)
	return now, nil
}

// failedCopies returns the stream sequences of the failed store's copies of
// event eventID to endpoint ns/name (of uid) stored from since on, and the
// failure time of the latest ("" when there is none).
func (d *Dispatcher) failedCopies(ctx context.Context, ns, name string, uid types.UID, eventID string, since time.Time) ([]uint64, string, error) {
	cons, err := d.js.CreateConsumer(ctx, store.StreamFailed, jetstream.ConsumerConfig{
		Description:       "Finds a resent event's failed copies",
		FilterSubject:     store.FailedSubject(ns, name),
		DeliverPolicy:     jetstream.DeliverByStartTimePolicy,
		OptStartTime:      &since,
		AckPolicy:         jetstream.AckNonePolicy,
		HeadersOnly:       true,
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
	})
	if err != nil {
		return nil, "", err
	}
	defer func() {
		_ = d.js.DeleteConsumer(context.WithoutCancel(ctx), store.StreamFailed, cons.CachedInfo().Name)
	}()
	var seqs []uint64
	var failedAt string
	for pending := cons.CachedInfo().NumPending; pending > 0; {
		batch, err := cons.Fetch(int(min(pending, 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, "", err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			pending = meta.NumPending
			h := m.Headers()
			if h.Get(store.HdrEventID) == eventID && h.Get(store.HdrEndpointUID) == string(uid) {
				seqs = append(seqs, meta.Sequence.Stream)
				failedAt = h.Get(store.HdrFailedAt)
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, "", err
		}
		if got == 0 {
			break
		}
	}
	return seqs, failedAt, nil
}
