package delivery

import (
	"context"
	"hash/fnv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wablast/webhook-operator/internal/retryqueue"
	"github.com/wablast/webhook-operator/internal/store"
)

// With the embedded store, a delivery waiting for its next attempt is kept
// in the on-disk retry queue (internal/retryqueue), not as a JetStream
// message schedule: the schedules' state lives in the NATS server's memory
// and so grew with a receiver's outage (docs/benchmarks.md, "Soak runs"),
// the queue's on disk. The pump moves the retries
// that fell due into their endpoint's subject, where the endpoint's worker
// takes them like any other delivery. With an external NATS the schedules
// stay: the managers share the store, and no manager's disk may hold a
// delivery another one must make.

// retryPumpBatch bounds the retries moved in one read of a partition.
const retryPumpBatch = 512

// retryPumpIdle is the longest the pump sleeps between reads of the queue.
const retryPumpIdle = time.Second

// retryHold bounds an endpoint's retries moved into its subject and not yet
// taken by its worker: retries due while the endpoint is slower than they
// fall due (a receiver that is down: every attempt fails, and each failure
// adds a retry) wait in the queue, on disk, not in the delivery stream.
const retryHold = 256

// hdrPumped marks a delivery the pump moved from the retry queue.
const hdrPumped = "Wh-Pumped"

// retryPart is an endpoint's partition of the retry queue.
func retryPart(uid types.UID) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(uid))
	return h.Sum64()
}

// pumpState counts, per partition, the retries moved into the stream and
// not yet taken by a worker.
type pumpState struct {
	mu       sync.Mutex
	inStream map[uint64]int
}

func (p *pumpState) room(pk uint64) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return retryHold - p.inStream[pk]
}

func (p *pumpState) moved(pk uint64, n int) {
	p.mu.Lock()
	p.inStream[pk] += n
	p.mu.Unlock()
}

// taken records that a worker took a moved retry; it reports whether the
// partition had been held back and has room now.
func (p *pumpState) taken(pk uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.inStream[pk]
	if n <= 0 {
		return false // moved before a restart
	}
	if n == 1 {
		delete(p.inStream, pk)
	} else {
		p.inStream[pk] = n - 1
	}
	return n == retryHold
}

// queueRetry stores the next attempt in the on-disk retry queue, due at at.
func (w *endpointWorker) queueRetry(q *retryqueue.Queue, dl *store.Delivery, attempt int, at time.Time) error {
	next := *dl
	next.Attempt = attempt
	return q.Put(retryqueue.Entry{
		Part: retryPart(w.uid),
		Due:  at,
		ID:   retryToken(string(w.uid), dl.EventID, attempt),
		Data: store.EncodeRetry(w.ns, w.name, w.uid, &next),
	})
}

// pumpRetries moves the retries that fell due from q into their endpoints'
// subjects until ctx is done, at most retryHold of an endpoint's at a time
// ahead of its worker. An entry is deleted from the queue only once
// JetStream acknowledged its delivery; a crash in between makes the attempt
// twice (webhooks are delivered at least once), never loses it.
func (d *Dispatcher) pumpRetries(ctx context.Context, q *retryqueue.Queue) {
	log := d.opts.Logger
	held := func(pk uint64) bool { return d.pump.room(pk) <= 0 }
	for ctx.Err() == nil {
		now := d.opts.Now()
		moved, failed := false, false
		for _, pk := range q.DueParts(now) {
			room := d.pump.room(pk)
			if room <= 0 {
				continue
			}
			entries, err := q.Due(pk, now, min(room, retryPumpBatch))
			if err == nil && len(entries) > 0 {
				if err = d.publishRetries(ctx, entries); err == nil {
					d.pump.moved(pk, len(entries))
					moved = true
					err = q.Delete(pk, entries)
				}
			}
			if err != nil {
				if ctx.Err() == nil {
					log.Error(err, "Moving due retries into their endpoint's deliveries failed; trying again in a second")
				}
				failed = true
				break
			}
		}
		if moved && !failed {
			continue
		}
		next := q.Next(held)
		if failed {
			next = time.Time{}
		}
		q.Wait(ctx.Done(), next, now, retryPumpIdle)
	}
}

// retryTaken is called by a worker for each message it takes: a retry the
// pump moved, taken for the first time, makes room for the next.
func (d *Dispatcher) retryTaken(uid types.UID, m jetstream.Msg) {
	q := d.opts.Store.Retries()
	if q == nil || m.Headers().Get(hdrPumped) == "" {
		return
	}
	if md, err := m.Metadata(); err != nil || md.NumDelivered != 1 {
		return
	}
	if d.pump.taken(retryPart(uid)) {
		q.Kick()
	}
}

// publishRetries stores entries' deliveries in their endpoints' subjects
// and wakes those endpoints' workers.
func (d *Dispatcher) publishRetries(ctx context.Context, entries []retryqueue.Entry) error {
	futures := make([]jetstream.PubAckFuture, 0, len(entries))
	keys := make([]types.NamespacedName, 0, 1)
	for _, e := range entries {
		ns, name, uid, dl, err := store.DecodeRetry(e.Data)
		if err != nil {
			// Not written by this version: nothing can deliver it, and
			// keeping it would stop the queue.
			d.opts.Logger.Error(err, "Dropping an unreadable entry of the retry queue", "id", e.ID)
			continue
		}
		key := types.NamespacedName{Namespace: ns, Name: name}
		if d.forgotten.stale(key, dl.AcceptedAt) {
			continue // its WebhookConfig was deleted (Forget)
		}
		msg := store.DeliveryMsg(ns, name, uid, &dl)
		msg.Header.Set(hdrPumped, "1")
		f, err := d.js.PublishMsgAsync(msg)
		if err != nil {
			return err
		}
		futures = append(futures, f)
		if len(keys) == 0 || keys[len(keys)-1] != key {
			keys = append(keys, key)
		}
	}
	if err := store.WaitAcks(ctx, futures); err != nil {
		return err
	}
	d.want(keys...)
	return nil
}
