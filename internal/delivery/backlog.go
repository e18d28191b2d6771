package delivery

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/store"
)

// backlogEvery is how often the pending deliveries and the delivery lag of
// every endpoint are read from the store (wablast_webhook_pending_deliveries,
// wablast_webhook_delivery_lag_seconds).
const backlogEvery = 5 * time.Second

// An endpoint's backlog is read from the store, off the delivery path:
//
//   - pending: the deliveries in its subject of WEBHOOK_DELIVERIES (waiting
//     for an attempt, or in flight: a message leaves the work-queue stream
//     when it is acknowledged), plus its retries waiting in the on-disk
//     retry queue (embedded store). The stream counts messages; a group
//     commit message carries several deliveries, which batchCounts adds.
//     With an external NATS a retry waits as a message schedule on a
//     subject of its own, which is not counted (listing every schedule's
//     subject every few seconds costs too much with a large outage; they
//     are in wablast_webhook_queue_depth{stream="WEBHOOK_DELIVERIES"}).
//   - lag: how long ago the event of the first delivery in its subject was
//     accepted (one direct read of the stream per endpoint that has
//     deliveries waiting). The subject is a work queue taken in order, so
//     that is the oldest delivery the endpoint's worker has yet to finish,
//     or a retry that fell due (whose event may be older than its place in
//     the queue). Retries waiting for their due time are pending, not lag:
//     they wait as long as the endpoint's policy says.

// batchCounts keeps, per endpoint, how many more deliveries than messages
// the group commit messages this manager stored and has not finished yet
// carry. Messages stored before a restart are not known to it: until they
// are delivered an endpoint's pending deliveries count them as one each.
type batchCounts struct {
	mu    sync.Mutex
	bySeq map[uint64]batchCount
	byKey map[types.NamespacedName]int
	// early holds the messages that left the stream before the batcher
	// heard its write acknowledged (the worker can be that quick), and when:
	// stored must not count those. Entries of messages it never hears of
	// (stored before a restart) are dropped after earlyFor.
	early map[uint64]time.Time
}

// earlyFor bounds how long batchCounts waits for the acknowledgement of a
// write whose message already left the stream.
const earlyFor = time.Minute

type batchCount struct {
	key   types.NamespacedName
	extra int
}

// stored records that the message at stream sequence seq carries n
// deliveries to key.
func (b *batchCounts) stored(key types.NamespacedName, seq uint64, n int) {
	if n < 2 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.early[seq]; ok {
		delete(b.early, seq)
		return
	}
	if b.bySeq == nil {
		b.bySeq, b.byKey = map[uint64]batchCount{}, map[types.NamespacedName]int{}
	}
	b.bySeq[seq] = batchCount{key: key, extra: n - 1}
	b.byKey[key] += n - 1
}

// done records that the message at stream sequence seq, which carries
// several deliveries, left the stream at now.
func (b *batchCounts) done(seq uint64, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.bySeq[seq]
	if !ok {
		if b.early == nil {
			b.early = map[uint64]time.Time{}
		}
		for s, at := range b.early {
			if now.Sub(at) > earlyFor {
				delete(b.early, s)
			}
		}
		b.early[seq] = now
		return
	}
	delete(b.bySeq, seq)
	if b.byKey[c.key] -= c.extra; b.byKey[c.key] <= 0 {
		delete(b.byKey, c.key)
	}
}

// extra returns how many deliveries key's messages carry beyond one each.
func (b *batchCounts) extra(key types.NamespacedName) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.byKey[key]
}

// forget drops key's messages (purged by Forget).
func (b *batchCounts) forget(key types.NamespacedName) {
	b.mu.Lock()
	for seq, c := range b.bySeq {
		if c.key == key {
			delete(b.bySeq, seq)
		}
	}
	delete(b.byKey, key)
	b.mu.Unlock()
}

// msgDone tells batchCounts that m, a message of deliveries, left the
// stream (acknowledged or terminated). Messages of one delivery, almost all
// of them under light load, cost a header lookup.
func (e *workerEnv) msgDone(m jetstream.Msg) {
	if e.batches == nil || m.Headers().Get(store.HdrBatch) == "" {
		return
	}
	if meta, err := m.Metadata(); err == nil {
		e.batches.done(meta.Sequence.Stream, e.now())
	}
}

// recordBacklog sets the pending deliveries and the delivery lag of every
// registered endpoint, and removes the series of endpoints no longer
// registered.
func (d *Dispatcher) recordBacklog(ctx context.Context) {
	m := d.opts.Metrics
	if m == nil {
		return
	}
	defer d.backlogs.Add(1)
	stream, err := d.js.Stream(ctx, store.StreamDeliveries)
	if err != nil {
		return
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(store.SubjDeliver+".>"))
	if err != nil {
		return
	}
	q := d.opts.Store.Retries()
	now := d.opts.Now()
	eps := d.opts.Registry.List()
	keys := make(map[types.NamespacedName]struct{}, len(eps))
	for i := range eps {
		ep := &eps[i]
		key := ep.Key()
		subj := store.DeliverSubject(ep.Namespace, ep.Name)
		msgs := info.State.Subjects[subj]
		pending := int64(msgs)
		if msgs > 0 {
			pending += int64(d.batches.extra(key))
		}
		if q != nil {
			pending += q.PartLen(retryPart(ep.UID))
		}
		var lag time.Duration
		if msgs > 0 {
			if accepted, ok := oldestWaiting(ctx, stream, subj, ep); ok {
				lag = max(now.Sub(accepted), 0)
			}
		}
		m.setBacklog(key, pending, lag)
		keys[key] = struct{}{}
	}
	m.keepBacklog(keys)
}

// oldestWaiting returns when the event of the first delivery stored in
// subj for ep (the earliest of a group commit message's) was accepted.
func oldestWaiting(ctx context.Context, stream jetstream.Stream, subj string, ep *endpoint.Endpoint) (time.Time, bool) {
	msg, err := stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subj))
	if err != nil {
		return time.Time{}, false
	}
	if msg.Header.Get(store.HdrEndpointUID) != string(ep.UID) {
		// Left for an earlier resource of the same name: its worker drops it.
		return time.Time{}, false
	}
	ds, err := store.DeliveriesOf(msg.Header, msg.Data)
	if err != nil {
		return time.Time{}, false
	}
	var oldest time.Time
	for i := range ds {
		at, err := time.Parse(time.RFC3339Nano, ds[i].AcceptedAt)
		if err == nil && (oldest.IsZero() || at.Before(oldest)) {
			oldest = at
		}
	}
	return oldest, !oldest.IsZero()
}

// setBacklog sets key's pending deliveries and delivery lag.
func (m *Metrics) setBacklog(key types.NamespacedName, pending int64, lag time.Duration) {
	m.Pending.WithLabelValues(key.Namespace, key.Name).Set(float64(pending))
	m.Lag.WithLabelValues(key.Namespace, key.Name).Set(lag.Seconds())
}

// keepBacklog removes the backlog series of endpoints not in keys (deleted,
// disabled or held since the last round) and remembers keys.
func (m *Metrics) keepBacklog(keys map[types.NamespacedName]struct{}) {
	m.backlogMu.Lock()
	defer m.backlogMu.Unlock()
	for key := range m.backlogKeys {
		if _, ok := keys[key]; !ok {
			m.Pending.DeleteLabelValues(key.Namespace, key.Name)
			m.Lag.DeleteLabelValues(key.Namespace, key.Name)
		}
	}
	m.backlogKeys = keys
}

// runBacklog records the backlog every backlogEvery until ctx is done.
func (d *Dispatcher) runBacklog(ctx context.Context) {
	if d.opts.Metrics == nil {
		return
	}
	t := time.NewTicker(d.opts.BacklogInterval)
	defer t.Stop()
	for {
		d.recordBacklog(ctx)
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}
