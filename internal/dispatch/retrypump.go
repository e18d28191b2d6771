package dispatch

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wablast/webhook-operator/internal/retryqueue"
)

// With the embedded store, a delivery waiting for its next attempt is kept
// in the on-disk retry queue (internal/retryqueue), not as a JetStream
// message schedule: the schedules' state lives in the NATS server's memory
// (about 12 KB of resident memory per waiting delivery was measured during
// a receiver's outage), the queue's on disk. The pump moves the retries
// that fell due into their endpoint's subject, where the endpoint's worker
// takes them like any other delivery. With an external NATS the schedules
// stay: the managers share the store, and no manager's disk may hold a
// delivery another one must make.

// retryPumpBatch bounds the retries moved in one round.
const retryPumpBatch = 512

// retryPumpIdle is the longest the pump sleeps between reads of the queue.
const retryPumpIdle = time.Second

// encodeRetry is a retry queue entry's data: the endpoint, then the
// delivery as a batch of one (encodeBatch).
func encodeRetry(ns, name string, uid types.UID, d *delivery) []byte {
	b := make([]byte, 0, 3*binary.MaxVarintLen32+len(ns)+len(name)+len(uid))
	for _, f := range [...]string{ns, name, string(uid)} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	return append(b, encodeBatch([]delivery{*d})...)
}

// decodeRetry decodes what encodeRetry encoded.
func decodeRetry(data []byte) (ns, name string, uid types.UID, d delivery, err error) {
	var fs [3]string
	for i := range fs {
		l, n := binary.Uvarint(data)
		if n <= 0 || l > uint64(len(data)-n) {
			return "", "", "", delivery{}, fmt.Errorf("%w: truncated retry", errBadBatch)
		}
		fs[i] = string(data[n : n+int(l)])
		data = data[n+int(l):]
	}
	ds, err := decodeBatch(data, 1)
	if err != nil {
		return "", "", "", delivery{}, err
	}
	return fs[0], fs[1], types.UID(fs[2]), ds[0], nil
}

// queueRetry stores the next attempt in the on-disk retry queue, due at at.
func (w *endpointWorker) queueRetry(q *retryqueue.Queue, dl *delivery, attempt int, at time.Time) error {
	next := *dl
	next.Attempt = attempt
	return q.Put(retryqueue.Entry{
		Due:  at,
		ID:   retryToken(string(w.uid), dl.EventID, attempt),
		Data: encodeRetry(w.ns, w.name, w.uid, &next),
	})
}

// pumpRetries moves the retries that fell due from q into their endpoints'
// subjects until ctx is done. An entry is deleted from the queue only once
// JetStream acknowledged its delivery; a crash in between makes the attempt
// twice (webhooks are delivered at least once), never loses it.
func (d *Dispatcher) pumpRetries(ctx context.Context, q *retryqueue.Queue) {
	log := d.opts.Logger
	for ctx.Err() == nil {
		now := d.opts.Now()
		entries, next, err := q.Due(now, retryPumpBatch)
		if err == nil && len(entries) > 0 {
			if err = d.publishRetries(ctx, entries); err == nil {
				err = q.Delete(entries)
			}
			if err == nil {
				continue
			}
		}
		if err != nil && ctx.Err() == nil {
			log.Error(err, "Moving due retries into their endpoints' deliveries failed; trying again in a second")
			next = time.Time{}
		}
		q.Wait(ctx.Done(), next, now, retryPumpIdle)
	}
}

// publishRetries stores entries' deliveries in their endpoints' subjects
// and wakes those endpoints' workers.
func (d *Dispatcher) publishRetries(ctx context.Context, entries []retryqueue.Entry) error {
	futures := make([]jetstream.PubAckFuture, 0, len(entries))
	keys := make([]types.NamespacedName, 0, 4)
	for _, e := range entries {
		ns, name, uid, dl, err := decodeRetry(e.Data)
		if err != nil {
			// Not written by this version: nothing can deliver it, and
			// keeping it would stop the queue.
			d.opts.Logger.Error(err, "Dropping an unreadable entry of the retry queue", "id", e.ID)
			continue
		}
		f, err := d.js.PublishMsgAsync(deliveryMsg(ns, name, uid, &dl))
		if err != nil {
			return err
		}
		futures = append(futures, f)
		key := types.NamespacedName{Namespace: ns, Name: name}
		if len(keys) == 0 || keys[len(keys)-1] != key {
			keys = append(keys, key)
		}
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	d.want(keys...)
	return nil
}
